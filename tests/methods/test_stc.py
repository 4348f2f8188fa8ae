"""Tests of `tfkd.CollaborationDistiller` (student-teacher collaboration)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.distillers.collaboration import CollaborationDistiller
from tfkd.methods import kd as kd_losses
from tfkd.models import cifar_resnet
from tfkd.models import split_model

SHAPE = (8, 8, 3)
TERMS = ["stc_loss", "student_loss", "kd_loss"]


def _tiny_resnet(width=16, outputs=10, name="tiny_resnet"):
    """Stem, one residual block (8x8), one strided conv block (4x4)."""
    init = keras.initializers.GlorotUniform
    inputs = keras.Input(SHAPE, name="images")
    x = keras.layers.Conv2D(width, 3, padding="same", name="stem_conv",
                            kernel_initializer=init(1))(inputs)
    x = keras.layers.ReLU(name="stem_relu")(x)
    h = keras.layers.Conv2D(width, 3, padding="same", name="b1_conv1",
                            kernel_initializer=init(2))(x)
    h = keras.layers.ReLU(name="b1_relu1")(h)
    h = keras.layers.Conv2D(width, 3, padding="same", name="b1_conv2",
                            kernel_initializer=init(3))(h)
    x = keras.layers.Add(name="b1_add")([x, h])
    x = keras.layers.ReLU(name="block1_out")(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same",
                            name="b2_conv", kernel_initializer=init(4))(x)
    x = keras.layers.BatchNormalization(name="b2_bn")(x)
    x = keras.layers.ReLU(name="block2_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    y = keras.layers.Dense(outputs, name="logits",
                           kernel_initializer=init(5))(x)
    return keras.Model(inputs, y, name=name)


def _teacher(depth=8, outputs=10):
    keras.utils.set_random_seed(0)
    return cifar_resnet(depth, num_classes=outputs, input_shape=SHAPE)


def _adapter_pair(**kwargs):
    """ResNet-8 cut at 4x4x32 vs an 8-wide student cut at 8x8x8."""
    teacher, student = _teacher(), _tiny_resnet(width=8)
    kwargs.setdefault("adapter", True)
    return CollaborationDistiller(
        teacher, student, teacher_layer_name="stage2_block1_out",
        student_layer_name="block1_out", **kwargs)


def _small_adapter_pair(**kwargs):
    """Like `_adapter_pair` with a smaller teacher (fast XLA compiles)."""
    teacher = _tiny_resnet(width=16, name="tiny_teacher")
    return CollaborationDistiller(
        teacher, _tiny_resnet(width=8), teacher_layer_name="block2_out",
        student_layer_name="block1_out", adapter=True, **kwargs)


def _weights(variables):
    return [np.array(v) for v in variables]


def test_fit_battery_resnet20_pair_without_adapter():
    teacher = _teacher(depth=20)
    student = _tiny_resnet(width=16)
    x, y = testing.random_images(32, SHAPE)
    distiller = CollaborationDistiller(
        teacher, student, teacher_layer_name="stage2_block3_out",
        student_layer_name="block2_out", alpha=0.3)
    assert distiller.stc.adapter_layer is None
    back = distiller.stc.teacher_back
    # The back reuses the teacher's variables: frozen, not copies.
    teacher_ids = {id(v) for v in teacher.weights}
    assert back.weights and all(id(v) in teacher_ids for v in back.weights)
    back_before = _weights(back.weights)
    testing.run_distiller_test(distiller, x, y, expected_metrics=TERMS)
    for before, after in zip(back_before, _weights(back.weights)):
        np.testing.assert_array_equal(before, after)
    assert not teacher.trainable
    ids = {id(v) for v in distiller.step_variables()}
    assert ids == {id(v) for v in student.trainable_weights}


@pytest.mark.parametrize("target", ["teacher", "soft", "labels"])
def test_loss_terms_match_formulas(target):
    distiller = _adapter_pair(alpha=0.3, temperature=2.0, kd_weight=0.5,
                              kd_temperature=3.0, target=target)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, SHAPE)
    r = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    teacher, student = distiller.teacher, distiller.student
    front = split_model(student, "block1_out")[0]
    back = split_model(teacher, "stage2_block1_out")[1]
    o_c = back(distiller.stc.adapter_layer(front(x)), training=False)
    o_t = teacher(x, training=False)
    s = student(x, training=False)
    expected_stc = {
        "teacher": kd_losses.soft_cross_entropy(o_t, o_c, 2.0),
        "soft": 9.0 * kd_losses.soft_cross_entropy(o_t, o_c, 3.0),
        "labels": kd_losses.cross_entropy(y, o_c),
    }[target]
    ce = keras.losses.sparse_categorical_crossentropy(y, s, from_logits=True)
    kd = kd_losses.kd_loss(o_t, s, 3.0)
    assert r["stc_loss"] == pytest.approx(float(np.mean(expected_stc)),
                                          rel=1e-4)
    assert r["student_loss"] == pytest.approx(float(np.mean(ce)), rel=1e-4)
    assert r["kd_loss"] == pytest.approx(float(np.mean(kd)), rel=1e-4)
    # Eqs. 3-5, divided by 1 + kd_weight (the preset's normalisation).
    assert r["loss"] == pytest.approx(
        (0.3 * r["stc_loss"] + 0.7 * r["student_loss"]
         + 0.5 * r["kd_loss"]) / 1.5, rel=1e-5)


def test_stc_loss_trains_the_front_only_through_the_frozen_back():
    distiller = _adapter_pair(alpha=1.0, kd_weight=0.0)
    student = distiller.student
    front, back = split_model(student, "block1_out")
    front_ids = {id(v) for v in front.trainable_weights}
    back_vars = [v for v in student.trainable_weights
                 if id(v) not in front_ids]
    assert back_vars and front_ids
    x, y = testing.random_images(16, SHAPE)
    with tf.GradientTape() as tape:
        terms = distiller.compute_terms(x, y, training=True)
        stc = tf.reduce_mean(terms["stc_loss"])
    back_ids = {id(v) for v in distiller.stc.teacher_back.weights}
    teacher_front = [v for v in distiller.teacher.weights
                     if id(v) not in back_ids]
    adapter_vars = distiller.stc.adapter_layer.trainable_weights
    groups = [front.trainable_weights, back_vars, adapter_vars,
              teacher_front]
    grads = tape.gradient(stc, [v for group in groups for v in group])
    split, start = [], 0
    for group in groups:
        split.append(grads[start:start + len(group)])
        start += len(group)
    front_grads, back_grads, adapter_grads, teacher_front_grads = split
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
               for g in front_grads + adapter_grads)
    assert all(g is None or not np.any(np.array(g)) for g in back_grads)
    # O_t = T(x) is a constant target: the teacher's front gets nothing.
    assert all(g is None for g in teacher_front_grads)

    # The same through fit with alpha = 1 (class loss weighted 0): the
    # student's back is bit-for-bit unchanged, its front and the adapter
    # moved, the teacher (and so its back) did not.
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    back_before = _weights(back_vars)
    front_before = _weights(front.trainable_weights)
    teacher_before = _weights(distiller.teacher.weights)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for b, a in zip(back_before, _weights(back_vars)):
        np.testing.assert_array_equal(b, a)
    assert all(not np.array_equal(b, a) for b, a in
               zip(front_before, _weights(front.trainable_weights)))
    for b, a in zip(teacher_before, _weights(distiller.teacher.weights)):
        np.testing.assert_array_equal(b, a)


def test_adapter_is_owned_trained_and_saved(tmp_path):
    distiller = _adapter_pair()
    adapter = distiller.stc.adapter_layer
    assert [layer.name for layer in adapter.layers] == [
        "stc_adapter_resize", "stc_adapter_conv"]
    assert adapter.output_shape == (None, 4, 4, 32)
    student_params = distiller.student.count_params()
    x, y = testing.random_images(32, SHAPE)
    before = _weights(adapter.weights)
    testing.run_distiller_test(distiller, x, y, expected_metrics=TERMS,
                               check_saving=False)
    assert all(not np.array_equal(b, a)
               for b, a in zip(before, _weights(adapter.weights)))
    assert distiller.student.count_params() == student_params
    path = str(tmp_path / "stc.keras")
    distiller.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert isinstance(restored, CollaborationDistiller)
    for a, b in zip(adapter.weights, restored.stc.adapter_layer.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    r1 = distiller.evaluate(x, y, return_dict=True, verbose=0)
    restored.compile(optimizer="sgd")
    r2 = restored.evaluate(x, y, return_dict=True, verbose=0)
    assert r2["stc_loss"] == pytest.approx(r1["stc_loss"], rel=1e-5)


def test_channel_only_adapter_has_no_resize():
    teacher, student = _teacher(), _tiny_resnet(width=8)
    distiller = CollaborationDistiller(
        teacher, student, teacher_layer_name="stage1_block1_out",
        student_layer_name="block1_out", adapter=True)
    assert [layer.name for layer in distiller.stc.adapter_layer.layers] == [
        "stc_adapter_conv"]


def test_shape_mismatch_without_adapter_names_both_shapes():
    teacher, student = _teacher(), _tiny_resnet(width=8)
    with pytest.raises(ValueError, match=r"adapter=True") as info:
        CollaborationDistiller(teacher, student,
                               teacher_layer_name="stage2_block1_out",
                               student_layer_name="block1_out")
    assert "(None, 8, 8, 8)" in str(info.value)
    assert "(None, 4, 4, 32)" in str(info.value)


def test_regression_head_with_huber(tmp_path):
    teacher = _teacher(outputs=1)
    student = _tiny_resnet(width=16, outputs=1)
    rng = np.random.default_rng(0)
    x = rng.random((32,) + SHAPE, dtype=np.float32)
    y = (3.0 * x.mean(axis=(1, 2, 3))[:, None] + 2.0).astype("float32")
    distiller = CollaborationDistiller(
        teacher, student, teacher_layer_name="stage2_block1_out",
        student_layer_name="block2_out",
        collaboration_loss=keras.losses.Huber(reduction=None),
        student_loss="huber")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = distiller.fit(x, y, batch_size=16, epochs=3, verbose=0,
                            validation_data=(x, y))
    # A custom head's loss: no KD term by default.
    assert set(history.history) == {"loss", "stc_loss", "student_loss",
                                    "distillation_loss", "total_loss",
                                    "val_loss", "val_stc_loss",
                                    "val_student_loss",
                                    "val_distillation_loss",
                                    "val_total_loss"}
    assert history.history["student_loss"][-1] < history.history[
        "student_loss"][0]
    r = distiller.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    front = split_model(student, "block2_out")[0]
    o_c = distiller.stc.teacher_back(front(x), training=False)
    huber = keras.losses.Huber(reduction=None)
    assert r["stc_loss"] == pytest.approx(
        float(np.mean(huber(teacher(x), o_c))), rel=1e-4)
    assert r["student_loss"] == pytest.approx(
        float(np.mean(huber(y, student(x)))), rel=1e-4)

    config = distiller.get_config()
    assert config["collaboration_loss"]["class_name"] == "Huber"
    clone = CollaborationDistiller.from_config(config)
    assert isinstance(clone.stc.collaboration_loss, keras.losses.Huber)
    assert clone.stc.collaboration_loss.reduction is None
    path = str(tmp_path / "regression.keras")
    distiller.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(restored.predict(x, verbose=0),
                               distiller.predict(x, verbose=0), atol=1e-6)


def test_jit_compile_step_with_resize_adapter():
    distiller = _small_adapter_pair(kd_weight=0.5)
    assert distiller.stc.adapter_layer.layers[0].name == "stc_adapter_resize"
    distiller.compile(optimizer="adam", jit_compile=True)
    x, y = testing.random_images(32, SHAPE)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())


def test_mixed_float16_step():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    distiller = _small_adapter_pair()
    assert distiller.stc.adapter_layer.layers[-1].compute_dtype == "float16"
    distiller.compile(optimizer="adam")
    assert isinstance(distiller.optimizer,
                      keras.optimizers.LossScaleOptimizer)
    x, y = testing.random_images(32, SHAPE)
    before = _weights(distiller.student.trainable_weights)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert any(not np.array_equal(b, a) for b, a in
               zip(before, _weights(distiller.student.trainable_weights)))


def _build(teacher_layer_name="stage2_block1_out",
           student_layer_name="block1_out",
           **kwargs):
    kwargs.setdefault("adapter", True)
    return CollaborationDistiller(_teacher(), _tiny_resnet(width=8),
                                  teacher_layer_name=teacher_layer_name,
                                  student_layer_name=student_layer_name,
                                  **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"teacher_layer_name": "nope"}, ValueError,
     r"'nope'.*Existing layer.*'stage1_block1_out'"),
    ({"student_layer_name": "nope"}, ValueError,
     r"'nope'.*Existing layer.*'block1_out'"),
    ({"teacher_layer_name": "stage1_block1_relu1"}, ValueError,
     r"teacher_layer.*2 tensors cross the cut.*'stage1_block1_out'"),
    ({"student_layer_name": "b1_relu1"}, ValueError,
     r"student_layer.*2 tensors cross the cut"),
    ({"teacher_layer_name": ["stage1_block1_out", "stage2_block1_out"]},
     ValueError, r"exactly one layer"),
    ({"teacher_layer_name": None}, ValueError, r"exactly one layer"),
    ({"target": "hard"}, ValueError, r"target='hard'"),
    ({"kd_weight": -1.0}, ValueError, r"kd_weight=-1.0"),
    ({"alpha": 1.5}, ValueError, r"alpha=1.5"),
    ({"adapter": "yes"}, TypeError, r"adapter='yes'"),
    ({"collaboration_loss": keras.losses.Huber()}, ValueError,
     r"reduction=None"),
    ({"collaboration_loss": 3}, TypeError, r"collaboration_loss=3"),
    ({"collaboration_loss": "no_such_loss"}, ValueError,
     r"collaboration_loss='no_such_loss'"),
    ({"target": "soft", "collaboration_loss": "huber"}, ValueError,
     r"target='soft'"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _build(**kwargs)


def test_rank_mismatch_cannot_be_adapted():
    with pytest.raises(ValueError, match=r"ranks differ"):
        _build(teacher_layer_name="pool", student_layer_name="block1_out")


def test_registered_for_the_demo():
    from tfkd.distillers import registry

    assert "stc" in registry.method_names()
    teacher = tfkd.models.digits_teacher()
    student = tfkd.models.digits_student()
    distiller = registry.build("stc", teacher, student,
                               feature_layers=registry.digits_taps())
    assert isinstance(distiller, CollaborationDistiller)
    assert distiller.stc.adapter_layer is not None
