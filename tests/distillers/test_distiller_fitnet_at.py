"""Tests of `FitNetDistiller` and `AttentionDistiller`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.losses import attention_transfer_loss
from tfkd.losses import hint_loss
from test_distiller_feature import conv_net


def _pair(teacher_widths=(8, 8), student_widths=(4, 4), **student_kwargs):
    teacher = conv_net("teacher", teacher_widths, seed=10)
    student = conv_net("student", student_widths, seed=20, **student_kwargs)
    return teacher, student


# ----------------------------------------------------------------------
# FitNets.

@pytest.mark.parametrize("kwargs, check_saving", [
    (dict(alpha=0.3, teacher_layer_name=["relu1", "relu2"],
          student_layer_name=["relu1", "relu2"], regressor_activation="relu",
          stage=None),
     True),
    (dict(stage=1), False),
], ids=["single-kd-2pairs", "hint-stage"])
def test_fitnet_battery(kwargs, check_saving):
    kwargs = {"teacher_layer_name": "relu2", "student_layer_name": "relu2",
              **kwargs}
    teacher, student = _pair()
    x, y = testing.random_images(32)
    distiller = tfkd.FitNetDistiller(teacher, student, **kwargs)
    testing.run_distiller_test(
        distiller, x, y,
        expected_metrics=["hint_loss", "student_loss", "kd_loss"],
        check_saving=check_saving)


def test_fitnet_regressor_follows_fitnets():
    teacher = conv_net("teacher", (8, 8), strides=(2, 1), seed=10)  # 4x4
    student = conv_net("student", (4, 4), seed=20)  # 8x8
    distiller = tfkd.FitNetDistiller(teacher, student,
                                     teacher_layer_name="relu2",
                                     student_layer_name="relu2")
    regressor = distiller.knowledge.regressors[0]
    # 'valid' kernel of (8 − 4 + 1): output 4x4x8, as in FitNets.
    assert tuple(regressor.conv.kernel.shape) == (5, 5, 4, 8)
    assert regressor.target_size is None
    # A smaller guided map: 1x1 conv, then upsampling to the hint's size.
    up = tfkd.FitNetDistiller(
        student, teacher, teacher_layer_name="relu2",
        student_layer_name="relu2").knowledge.regressors[0]
    assert tuple(up.conv.kernel.shape) == (1, 1, 8, 4)
    assert up.target_size == (8, 8)
    # Matching shapes still get a (1x1) regressor unless regressor=False.
    same_t, same_s = _pair((8, 8), (8, 8))
    same = tfkd.FitNetDistiller(same_t, same_s, teacher_layer_name="relu2",
                                student_layer_name="relu2")
    assert len(same.knowledge.regressors) == 1
    plain = tfkd.FitNetDistiller(same_t, same_s, teacher_layer_name="relu2",
                                 student_layer_name="relu2", regressor=False)
    assert plain.knowledge.regressors == []
    config = plain.get_config()
    assert config["regressor"] is False and "adapter" not in config
    assert tfkd.FitNetDistiller.from_config(config).knowledge.regressors == []


def test_fitnet_knowledge_is_hint_loss_of_regressed_features():
    teacher, student = _pair()
    distiller = tfkd.FitNetDistiller(teacher, student,
                                     teacher_layer_name="relu2",
                                     student_layer_name="relu2", stage=None,
                                     alpha=1.0)
    x, y = testing.random_images(16)
    distiller.compile(optimizer="sgd")
    r = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    t = keras.Model(teacher.input, teacher.get_layer("relu2").output)(x)
    s = keras.Model(student.input, student.get_layer("relu2").output)(x)
    expected = hint_loss(t, distiller.knowledge.regressors[0](s))
    assert r["hint_loss"] == pytest.approx(
        float(tf.reduce_mean(expected)), rel=1e-4)
    # L_hint + beta * CE, divided by 1 + beta (FitNetDistiller's documented
    # normalisation).
    assert r["loss"] == pytest.approx(
        (r["hint_loss"] + 0.1 * r["student_loss"]) / 1.1, rel=1e-5)


def test_fitnet_hint_stage_then_kd_stage():
    teacher, student = _pair()
    distiller = tfkd.FitNetDistiller(teacher, student,
                                     teacher_layer_name="relu1",
                                     student_layer_name="relu1", alpha=0.3)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    x, y = testing.random_images(32)
    later = [np.array(w) for name in ("conv2", "logits")
             for w in student.get_layer(name).weights]
    regressor = [np.array(w)
                 for w in distiller.knowledge.regressors[0].weights]
    h1, h2 = distiller.fit_two_stage(x, y, batch_size=16, stage1_epochs=1,
                                     stage2_epochs=1, verbose=0)
    after = [np.array(w) for name in ("conv2", "logits")
             for w in student.get_layer(name).weights]
    assert h1.history["loss"][0] == pytest.approx(
        h1.history["hint_loss"][0], rel=1e-6)
    assert all(not np.array_equal(a, b) for a, b in zip(later, after))
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(
        regressor, distiller.knowledge.regressors[0].weights))


def test_fitnet_mismatch_without_regressor():
    teacher, student = _pair()
    with pytest.raises(ValueError) as info:
        tfkd.FitNetDistiller(teacher, student, teacher_layer_name="relu2",
                             student_layer_name="relu2", regressor=False)
    message = str(info.value)
    assert "(None, 8, 8, 8)" in message and "(None, 8, 8, 4)" in message
    assert "regressor=True" in message


def test_fitnet_bad_layers():
    teacher, student = _pair()
    with pytest.raises(ValueError, match="logits"):
        tfkd.FitNetDistiller(teacher, student, teacher_layer_name="relu2",
                             student_layer_name="logits")
    with pytest.raises(ValueError, match="not a layer"):
        tfkd.FitNetDistiller(teacher, student, teacher_layer_name="hint",
                             student_layer_name="relu2")


# ----------------------------------------------------------------------
# Attention transfer.

@pytest.mark.parametrize("kwargs, check_saving", [
    (dict(teacher_layer_name=["relu1", "relu2"], student_layer_name=["relu1",
                                                                     "relu2"]),
     True),
    (dict(stage=2, alpha=0.3), False),
], ids=["single-2pairs", "stage2-kd"])
def test_attention_battery(kwargs, check_saving):
    kwargs = {"teacher_layer_name": "relu2", "student_layer_name": "relu2",
              **kwargs}
    teacher, student = _pair()
    x, y = testing.random_images(32)
    distiller = tfkd.AttentionDistiller(teacher, student, **kwargs)
    testing.run_distiller_test(
        distiller, x, y,
        expected_metrics=["attention_loss", "student_loss", "kd_loss"],
        check_saving=check_saving)


def test_attention_objective_and_weight():
    teacher, student = _pair()  # channel counts differ: no adapter needed
    distiller = tfkd.AttentionDistiller(
        teacher, student, teacher_layer_name=["relu1", "relu2"],
        student_layer_name=["relu1", "relu2"], alpha=0.3,
    )
    assert distiller.beta == 50.0 and distiller.knowledge.adapters == []
    x, y = testing.random_images(16)
    distiller.compile(optimizer="sgd")
    r = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    expected = 0.0
    for name in ("relu1", "relu2"):
        t = keras.Model(teacher.input, teacher.get_layer(name).output)(x)
        s = keras.Model(student.input, student.get_layer(name).output)(x)
        expected += float(tf.reduce_mean(attention_transfer_loss(t, s)))
    assert r["attention_loss"] == pytest.approx(expected, rel=1e-4)
    class_loss = 0.3 * r["student_loss"] + 0.7 * r["kd_loss"]
    # L_Class + beta * L_AT, divided by 2 (AttentionDistiller's documented
    # normalisation).
    assert r["loss"] == pytest.approx(
        (class_loss + 50.0 * r["attention_loss"]) / 2, rel=1e-5)
    distiller.set_stage(1)
    r1 = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    assert r1["loss"] == pytest.approx(50.0 * expected, rel=1e-4)


def test_attention_spatial_mismatch_and_resize_adapter():
    teacher = conv_net("teacher", (8, 8), seed=10)
    student = conv_net("student", (4, 4), strides=(2, 1), seed=20)
    with pytest.raises(ValueError) as info:
        tfkd.AttentionDistiller(teacher, student, teacher_layer_name="relu2",
                                student_layer_name="relu2")
    message = str(info.value)
    assert "(None, 8, 8, 8)" in message and "(None, 4, 4, 4)" in message
    assert "adapter=True" in message and "spatial" in message
    distiller = tfkd.AttentionDistiller(teacher, student,
                                        teacher_layer_name="relu2",
                                        student_layer_name="relu2",
                                        adapter=True)
    adapter = distiller.knowledge.adapters[0]
    assert adapter.filters is None and adapter.target_size == (8, 8)
    with pytest.raises(ValueError, match="mode"):
        tfkd.AttentionDistiller(teacher, student, teacher_layer_name="relu2",
                                student_layer_name="relu2", mode="l2")


def test_attention_self_taught_gets_zero_gradient():
    teacher = conv_net("teacher", (4, 8), seed=10)
    student = conv_net("student", (4, 4), self_taught=4, seed=20)
    distiller = tfkd.AttentionDistiller(
        teacher, student, teacher_layer_name="relu1",
        student_layer_name="relu1",
        stage=1)
    layer = student.get_layer("conv1")
    x, _ = testing.random_images(8)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(distiller.compute_terms(
            x, training=True)["attention_loss"])
    g_guided, g_self = tape.gradient(
        loss, [layer.guided_kernel, layer.self_taught_kernel])
    assert np.any(np.array(g_guided) != 0)
    assert g_self is None or not np.any(np.array(g_self))


# ----------------------------------------------------------------------
# Compilation modes.

def _fit_one_step(distiller, batch_size=16, **compile_kwargs):
    distiller.compile(optimizer="adam", **compile_kwargs)
    x, y = testing.random_images(16)
    before = [np.array(w) for w in distiller.student.trainable_weights]
    # A two-stage distiller needs an epoch per stage.
    epochs = 2 if getattr(distiller, "two_stage", False) else 1
    history = distiller.fit(x, y, batch_size=batch_size, epochs=epochs,
                            verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert any(not np.array_equal(a, np.array(b)) for a, b in zip(
        before, distiller.student.trainable_weights))


def test_jit_compile_steps():
    teacher = conv_net("teacher", (8, 8), seed=10)
    student = conv_net("student", (4, 4), strides=(2, 1), seed=20)
    _fit_one_step(tfkd.FitNetDistiller(
        teacher, student, teacher_layer_name="relu2",
        student_layer_name="relu2",
        alpha=0.3), jit_compile=True)
    _fit_one_step(tfkd.AttentionDistiller(
        teacher, student, teacher_layer_name="relu2",
        student_layer_name="relu2",
        adapter=True, stage=1), jit_compile=True)


def test_mixed_precision_steps():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    teacher, student = _pair()
    fitnet = tfkd.FitNetDistiller(teacher, student, teacher_layer_name="relu2",
                                  student_layer_name="relu2", alpha=0.3)
    assert fitnet.knowledge.regressors[0].dtype_policy.name == "mixed_float16"
    # Small batches: the loss scale starts at 2**15 and halves on each
    # overflowing (skipped) step before the weights move.
    _fit_one_step(fitnet, batch_size=1)
    _fit_one_step(tfkd.AttentionDistiller(
        teacher, student, teacher_layer_name=["relu1", "relu2"],
        student_layer_name=["relu1", "relu2"], alpha=0.3), batch_size=1)


def test_split_epochs_gives_each_stage_its_share():
    from fractions import Fraction

    from tfkd.distillers.feature import split_epochs

    assert split_epochs(30) == (15, 15)
    assert split_epochs(5) == (2, 3)
    sixth = tfkd.FitNetDistiller.stage1_share
    assert sixth == Fraction(1, 6)
    assert tfkd.CorrelationDistiller.stage1_share == Fraction(1, 2)
    assert [split_epochs(n, sixth) for n in (2, 6, 11, 12, 30)] == [
        (1, 1), (1, 5), (1, 10), (2, 10), (5, 25)]
    assert split_epochs(2, 0.99) == (1, 1)
    for bad in (0, 1, 1.5, -0.1, True, "1/6"):
        with pytest.raises(ValueError, match="stage1_share"):
            split_epochs(10, bad)


def test_registry_fitnet_trains_both_stages_in_the_budget():
    # Single-stage FitNets (the old registry default) let the summed hint
    # (thousands) swamp the class loss at beta = 0.1: 13 % on the digits
    # with 6 labels a class. The method now trains FitNets' two stages.
    from tfkd.distillers import registry

    teacher, student = _pair()
    distiller = registry.build("fitnet", teacher, student,
                               feature_layers=("relu1", "relu1"))
    assert distiller.stage == 1 and distiller.two_stage
    assert registry.get("fitnet").defaults()["stage"] == "both"
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    x, y = testing.random_images(32)
    history = distiller.fit(x, y, batch_size=16, epochs=7, verbose=0)
    assert distiller.stage == 2
    assert history.epoch == list(range(7))
    assert len(history.history["loss"]) == 7
    # Stage 1 (a sixth of 7 epochs: 1) minimises the hint alone, stage 2
    # (6 epochs) L_Class = 0.3 CE + 0.7 KD (the default alpha: FitNets' KD
    # stage); half and half would still be hinting at epoch 1.
    assert history.history["loss"][0] == pytest.approx(
        history.history["hint_loss"][0], rel=1e-6)
    for epoch in (1, 6):
        assert history.history["loss"][epoch] == pytest.approx(
            0.3 * history.history["student_loss"][epoch]
            + 0.7 * history.history["kd_loss"][epoch], rel=1e-5)
    with pytest.raises(ValueError, match="epochs >= 2"):
        registry.build("fitnet", teacher, student,
                       feature_layers=("relu1", "relu1")).fit(
            x, y, epochs=1, verbose=0)
