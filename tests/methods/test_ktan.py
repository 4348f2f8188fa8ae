"""Tests of KTAN: regressor arithmetic, discriminator, two-phase distiller."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.layers import TeacherToStudent
from tfkd.layers import pretrain_regressor
from tfkd.layers import regressor_kernel_size
from tfkd.layers import upsampling_factor
from tfkd.methods import ktan as ktan_losses
from tfkd.models import build_discriminator

KTAN_METRICS = ["student_loss", "mse_loss", "adv_loss", "kd_loss", "d_loss",
                "d_accuracy"]


def _np(variables):
    return [v.numpy().copy() for v in variables]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _pooled_teacher(name="teacher", width=16, seed=1):
    """Teacher whose tapped map (`pool`ed, 4×4) is smaller than 8×8."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                            kernel_initializer=init, name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _distiller(pretrain_steps=2, alpha=0.6, teacher=None, student=None,
               **kwargs):
    teacher = teacher or testing.tiny_conv_model("teacher", width=16, seed=1)
    student = student or testing.tiny_conv_model("student", width=4, seed=2)
    kwargs.setdefault("teacher_layer_name", "conv2")
    kwargs.setdefault("student_layer_name", "conv2")
    kwargs.setdefault("beta", 0.5)
    kwargs.setdefault("discriminator_width", 8)
    return tfkd.AdversarialDistiller(
        teacher, student, alpha=alpha, pretrain_steps=pretrain_steps,
        **kwargs)


# ----------------------------------------------------------------------
# Teacher-to-student regressor.

@pytest.mark.parametrize("m_t, m_s, padding, strides, kernel", [
    (8, 8, 0, 1, 1),      # same size: 1×1 conv
    (8, 4, 0, 1, 5),      # (8 - 5)/1 + 1 = 4
    (8, 4, 0, 2, 2),      # (8 - 2)/2 + 1 = 4
    (8, 4, 1, 2, 4),      # (8 + 2 - 4)/2 + 1 = 4
    (7, 3, 0, 3, 1),      # (7 - 1)/3 + 1 = 3
    (32, 4, 0, 8, 8),     # CIFAR-like 32 -> 4
    (4, 8, 0, 1, 1),      # upsampled ×2 to 8, then 1×1
    (3, 8, 0, 1, 2),      # upsampled ×3 to 9, then 2×2
    (2, 4, 1, 1, 3),      # upsampled ×2 to 4, padded to 6, then 3×3
])
def test_kernel_size_arithmetic(m_t, m_s, padding, strides, kernel):
    k = regressor_kernel_size(m_t, m_s, padding=padding, strides=strides)
    assert k == kernel
    r = upsampling_factor(m_t, m_s)
    assert (r * m_t + 2 * padding - k) / strides + 1 == m_s
    assert r == (1 if m_t >= m_s else -(-m_s // m_t))
    layer = TeacherToStudent(3, m_t, m_s, padding=padding, strides=strides)
    out = layer(np.ones((2, m_t, m_t, 5), "float32"))
    assert tuple(out.shape) == (2, m_s, m_s, 3)
    assert layer.kernel.shape == (k, k, 5, 3)


def test_kernel_size_per_axis():
    assert regressor_kernel_size((8, 6), (4, 4), padding=1) == (7, 5)
    assert regressor_kernel_size((2, 8), (4, 4)) == (1, 5)
    assert upsampling_factor((2, 8), (4, 4)) == (2, 1)
    layer = TeacherToStudent(2, (8, 6), (4, 3))
    assert tuple(layer(np.zeros((1, 8, 6, 3), "float32")).shape) == \
        (1, 4, 3, 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(teacher_size=8, student_size=8, strides=2), "Reduce `strides`"),
    (dict(teacher_size=8, student_size=4, strides=3), "K=\\(-1, -1\\)"),
    (dict(teacher_size=0, student_size=4), "teacher_size"),
    (dict(teacher_size=8, student_size=(4, 4, 4)), "student_size"),
    (dict(teacher_size=8, student_size=4, padding=-1), "padding"),
    (dict(teacher_size=8, student_size=4, strides=0), "strides"),
    (dict(teacher_size=8.0, student_size=4), "teacher_size"),
    (dict(teacher_size=True, student_size=4), "teacher_size"),
])
def test_kernel_size_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        regressor_kernel_size(**kwargs)
    with pytest.raises(ValueError, match=match):
        TeacherToStudent(4, **kwargs)


def test_regressor_layer_errors_and_serialisation():
    with pytest.raises(ValueError, match="student_channels"):
        TeacherToStudent(0, 8, 4)
    with pytest.raises(ValueError, match="interpolation"):
        TeacherToStudent(4, 4, 8, interpolation="cubic")
    with pytest.raises(ValueError, match="teacher_size"):
        TeacherToStudent(4, 8, 4)(np.zeros((1, 6, 6, 2), "float32"))
    layer = TeacherToStudent(4, 2, 4, padding=1, activation="relu",
                             interpolation="bilinear", name="r")
    x = np.random.default_rng(0).random((2, 2, 2, 3)).astype("float32")
    y = layer(x)
    assert np.all(y.numpy() >= 0)
    clone = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, TeacherToStudent)
    assert clone.kernel_size == layer.kernel_size == (3, 3)
    assert clone.built  # built from the saved build config
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), y, atol=1e-6)
    assert keras.saving.get_registered_name(TeacherToStudent) == \
        "tfkd>TeacherToStudent"


def test_pretrain_regressor_trains_only_regressor():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    teacher_weights = _np(teacher.weights)
    regressor = TeacherToStudent(4, 8, 8, trainable=False)
    regressor.build((None, 8, 8, 8))
    before = _np(regressor.weights)
    x, y = testing.random_images(64)
    history = pretrain_regressor(teacher, "conv2", regressor, (x, y),
                                 num_classes=10, epochs=2,
                                 optimizer=keras.optimizers.Adam(0.01))
    assert set(history.history) == {"loss", "accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not _same(before, _np(regressor.weights))
    assert _same(teacher_weights, _np(teacher.weights))
    assert teacher.trainable and not regressor.trainable  # flags restored
    assert len(regressor.weights) == 2  # the temporary head is not kept
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    pretrain_regressor(teacher, "conv2", regressor, ds, num_classes=10)
    with pytest.raises(ValueError, match="teacher_layer"):
        pretrain_regressor(teacher, "nope", regressor, (x, y), 10)
    with pytest.raises(ValueError, match="num_classes"):
        pretrain_regressor(teacher, "conv2", regressor, (x, y), 1)
    with pytest.raises(TypeError, match="regressor"):
        pretrain_regressor(teacher, "conv2", "conv", (x, y), 10)


# ----------------------------------------------------------------------
# Losses and discriminator.

def test_ktan_losses_match_numpy():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    np.testing.assert_allclose(ktan_losses.ktan_mse_loss(t, s),
                               ((t - s) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
    real, fake = rng.normal(size=(4, 1)), rng.normal(size=(4, 1))
    sig = 1 / (1 + np.exp(-np.concatenate([real, fake], 1)))
    np.testing.assert_allclose(
        ktan_losses.discriminator_loss(real, fake),
        -np.log(sig[:, 0]) - np.log(1 - sig[:, 1]), rtol=1e-5)
    np.testing.assert_allclose(ktan_losses.adversarial_loss(fake),
                               -np.log(sig[:, 1]), rtol=1e-5)
    jitted = tf.function(ktan_losses.adversarial_loss, jit_compile=True)
    np.testing.assert_allclose(jitted(tf.constant([[-300.0]])), [300.0])
    with pytest.raises(ValueError, match="same shape"):
        ktan_losses.ktan_mse_loss(t, s[:, :2])


def test_discriminator_structure_and_errors():
    model = build_discriminator((4, 4, 16), width=8)
    assert [layer.name for layer in model.layers][1:] == [
        "d_conv1", "d_act1", "d_conv2", "d_act2", "d_pool", "d_logit",
        "d_probability"]
    assert sum(isinstance(layer, keras.layers.Conv2D)
               for layer in model.layers) == 2
    p = model.predict(np.random.rand(3, 4, 4, 16), verbose=0)
    assert p.shape == (3, 1) and np.all((p > 0) & (p < 1))
    for bad, received in [(dict(input_shape=(4, 4)), r"input_shape=\(4, 4\)"),
                          (dict(input_shape=(4, 4, 0)),
                           r"input_shape=\(4, 4, 0\)"),
                          (dict(input_shape=(4, 4, 2), width=0), "width=0")]:
        with pytest.raises(ValueError, match=f"Received: {received}"):
            build_discriminator(**bad)


# ----------------------------------------------------------------------
# The distiller.

def test_fit_battery():
    x, y = testing.random_images(48)
    distiller = _distiller(pretrain_steps=1, kd_weight=0.5)
    testing.run_distiller_test(
        distiller, x, y, expected_metrics=KTAN_METRICS,
        compile_kwargs={"discriminator_optimizer":
                        keras.optimizers.SGD(0.05)})
    assert int(distiller.step_counter.numpy()) == 3
    assert distiller.discriminator_optimizer.iterations.numpy() == 2


def test_owned_parts_and_default_regressor():
    distiller = _distiller()
    student_ids = {id(v) for v in distiller.student.weights}
    for part in (distiller.term("mse").regressor,
                 distiller.term("adv").discriminator):
        assert part.weights and all(id(v) in {id(w) for w in
                                              distiller.weights}
                                    for v in part.weights)
        assert not any(id(v) in student_ids for v in part.weights)
    assert {id(v) for v in distiller.step_variables()} == {
        id(v) for v in distiller.student.trainable_weights}
    assert not distiller.term("mse").regressor.trainable
    # The student's conv2 is a ReLU output, so the default regressor is too.
    assert distiller.term("mse").regressor.activation is keras.activations.relu
    assert distiller.term("mse").regressor.kernel_size == (1, 1)
    # A smaller teacher map takes the upsampling path.
    up = _distiller(teacher=_pooled_teacher(), teacher_layer_name="pool1")
    assert up.term("mse").regressor.upsampling == (2, 2)
    assert up.term("mse").teacher_map_shape == (4, 4, 16)
    assert up.term("mse").student_map_shape == (8, 8, 4)


def test_phase_switch_at_exactly_pretrain_steps():
    distiller = _distiller(pretrain_steps=2)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01),
                      discriminator_optimizer=keras.optimizers.Adam(0.01))
    x, y = testing.random_images(16)
    frozen = (distiller.teacher.weights
              + distiller.term("mse").regressor.weights)
    frozen_before = _np(frozen)
    for step in range(1, 5):
        d_before = _np(distiller.term("adv").discriminator.weights)
        s_before = _np(distiller.student.weights)
        logs = distiller.train_on_batch(x, y, return_dict=True)
        adversarial = step > 2
        assert int(distiller.step_counter.numpy()) == step
        assert distiller.optimizer.iterations.numpy() == step
        assert distiller.discriminator_optimizer.iterations.numpy() == \
            max(0, step - 2)
        d_after = _np(distiller.term("adv").discriminator.weights)
        assert _same(d_before, d_after) is not adversarial
        assert not _same(s_before, _np(distiller.student.weights))
        for name in ("adv_loss", "d_loss", "d_accuracy"):
            assert (logs[name] != 0.0) is adversarial or name == "d_accuracy"
        # The default kd_weight = 3 ("KD+KTAN").
        expected = (logs["student_loss"] + 0.5 * logs["mse_loss"]
                    + 3.0 * logs["kd_loss"] + (
            0.6 * logs["adv_loss"] if adversarial else 0.0)) / 2
        assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert _same(frozen_before, _np(frozen))


@pytest.mark.parametrize("alpha", [0.6, 0.0])
def test_one_phase2_step_is_a_discriminator_then_a_student_step(alpha):
    """Reproduces one phase-2 step by hand with plain SGD.

    The discriminator moves by its own loss's gradient only; the student
    then moves by the gradient of its objective evaluated with the updated
    discriminator (and with alpha = 0, DLN, independently of it).
    """
    lr_s, lr_d = 0.1, 0.5
    distiller = _distiller(pretrain_steps=0, alpha=alpha, kd_weight=0.3)
    distiller.compile(optimizer=keras.optimizers.SGD(lr_s),
                      discriminator_optimizer=keras.optimizers.SGD(lr_d))
    x, y = testing.random_images(16, seed=4)
    student, disc = distiller.student, distiller.term("adv").discriminator
    s0, d0 = _np(student.trainable_weights), _np(disc.trainable_weights)

    _, (t_map,) = distiller.teacher_forward(x)
    target = distiller.terms["mse"].regress(t_map)
    _, (m_s,) = distiller.student_forward(x, training=True)
    with tf.GradientTape() as tape:
        d_loss = tf.reduce_mean(distiller.terms["adv"].discriminator_terms(
            target, m_s)[0])
    g_d = tape.gradient(d_loss, disc.trainable_weights)
    d1 = [w - lr_d * g.numpy() for w, g in zip(d0, g_d)]
    for v, w in zip(disc.trainable_weights, d1):
        v.assign(w)
    with tf.GradientTape() as tape:
        terms = distiller.compute_terms(x, y, training=True)
        ce = keras.losses.sparse_categorical_crossentropy(
            y, distiller.student(x, training=True), from_logits=True)
        # KTAN's objective, divided by 2 (the preset's documented
        # normalisation into the engine's convention).
        total = (tf.reduce_mean(ce)
                 + 0.5 * tf.reduce_mean(terms["mse_loss"])
                 + alpha * tf.reduce_mean(terms["adv_loss"])
                 + 0.3 * tf.reduce_mean(terms["kd_loss"])) / 2
    g_s = tape.gradient(total, student.trainable_weights)
    s1 = [w - lr_s * g.numpy() for w, g in zip(s0, g_s)]
    for v, w in zip(disc.trainable_weights, d0):
        v.assign(w)

    logs = distiller.train_on_batch(x, y, return_dict=True)
    for got, want in zip(_np(disc.trainable_weights), d1):
        np.testing.assert_allclose(got, want, atol=1e-5)
    for got, want in zip(_np(student.trainable_weights), s1):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert logs["d_loss"] == pytest.approx(float(d_loss), rel=1e-5)


def test_keras_round_trip_resumes_in_the_right_phase(tmp_path):
    x, y = testing.random_images(32)
    distiller = _distiller(pretrain_steps=3)
    distiller.compile(optimizer="adam", discriminator_optimizer="adam")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 2 steps
    path = str(tmp_path / "ktan.keras")
    distiller.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, tfkd.AdversarialDistiller)
    assert int(restored.step_counter.numpy()) == 2
    assert isinstance(restored.discriminator_optimizer, keras.optimizers.Adam)
    assert restored.discriminator_optimizer is not restored.optimizer
    d_before = _np(restored.term("adv").discriminator.weights)
    restored.train_on_batch(x[:16], y[:16])   # step 3: still phase 1
    assert _same(d_before, _np(restored.term("adv").discriminator.weights))
    restored.train_on_batch(x[:16], y[:16])   # step 4: phase 2
    assert not _same(d_before, _np(restored.term("adv").discriminator.weights))
    # Mid phase 2: the round trip carries both optimizers' states.
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    distiller.save(path)
    restored = keras.models.load_model(path)
    assert restored.discriminator_optimizer.iterations.numpy() == 1
    for a, b in zip(distiller.discriminator_optimizer.variables,
                    restored.discriminator_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for model in (distiller, restored):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(distiller.weights, restored.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_cached_teacher_outputs():
    distiller = _distiller(pretrain_steps=1)
    distiller.compile(optimizer="adam", discriminator_optimizer="adam")
    x, y = testing.random_images(32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cached = tfkd.data.cache_teacher_outputs(distiller, data, shuffle=False)
    inputs = next(iter(cached))[0]
    np.testing.assert_allclose(  # the cache holds R(m_t)
        inputs["teacher_features"][0],
        distiller.teacher_forward(inputs["images"])[1][0], atol=1e-6)
    teacher_weights = _np(distiller.teacher.weights)
    history = distiller.fit(cached, validation_data=cached, epochs=1,
                            verbose=0)
    assert history.history["d_loss"][0] > 0
    assert history.history["val_d_loss"][0] > 0
    assert _same(teacher_weights, _np(distiller.teacher.weights))


def test_tf_checkpoint_restores_counter_and_optimizers(tmp_path):
    x, y = testing.random_images(32)
    distiller = _distiller(pretrain_steps=1)
    distiller.compile(optimizer="adam", discriminator_optimizer="sgd")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tf.train.Checkpoint(distiller=distiller).save(
        str(tmp_path / "ckpt"))
    fresh = _distiller(pretrain_steps=1)
    fresh.compile(optimizer="adam", discriminator_optimizer="sgd")
    tf.train.Checkpoint(distiller=fresh).restore(path).assert_consumed()
    assert int(fresh.step_counter.numpy()) == 2
    assert fresh.optimizer.iterations.numpy() == 2
    assert fresh.discriminator_optimizer.iterations.numpy() == 1
    for a, b in zip(distiller.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_backup_and_restore_resumes_in_the_right_phase(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def run(callbacks):
        keras.utils.set_random_seed(0)  # same regressor and discriminator
        distiller = _distiller(pretrain_steps=3)
        distiller.compile(optimizer=keras.optimizers.Adam(0.01),
                          discriminator_optimizer=keras.optimizers.Adam(0.01))
        distiller.fit(x, y, batch_size=16, epochs=4, verbose=0,
                      shuffle=False, callbacks=callbacks)
        return distiller

    x, y = testing.random_images(32)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run([backup, Interrupt()])   # stops after 2 epochs = 4 steps
    resumed = run([backup])
    reference = run([])
    assert int(resumed.step_counter.numpy()) == 8
    assert resumed.discriminator_optimizer.iterations.numpy() == 5
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_trains_nan_free_on_digits():
    data = tfkd.data.load_digits(image_size=8, batch_size=64)
    teacher = tfkd.models.digits_teacher(input_shape=(8, 8, 1))
    teacher.compile(optimizer=keras.optimizers.Adam(0.003),
                    loss=keras.losses.SparseCategoricalCrossentropy(
                        from_logits=True))
    teacher.fit(data.train, epochs=2, verbose=0)
    layer = tfkd.models.DIGITS_FEATURE_LAYER
    distiller = _distiller(
        teacher=teacher, pretrain_steps=10, kd_weight=0.5,
        student=tfkd.models.digits_student(input_shape=(8, 8, 1)),
        teacher_layer_name=layer, student_layer_name=layer)
    pre = distiller.pretrain_regressor(
        data.train, epochs=1, optimizer=keras.optimizers.Adam(0.01))
    assert np.isfinite(pre.history["loss"][0])
    distiller.compile(optimizer=keras.optimizers.Adam(0.01),
                      discriminator_optimizer=keras.optimizers.Adam(1e-3),
                      metrics=["accuracy"])
    history = distiller.fit(data.train, validation_data=data.validation,
                            epochs=2, verbose=0,
                            callbacks=[StopOnNonFiniteLoss()])
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), name
    assert history.history["d_loss"][-1] > 0
    assert history.history["val_accuracy"][-1] > 0.4


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    distiller = _distiller(pretrain_steps=1)
    distiller.compile(optimizer="adam", discriminator_optimizer="adam")
    scaled = policy == "mixed_float16"
    for optimizer in (distiller.optimizer, distiller.discriminator_optimizer):
        assert isinstance(optimizer,
                          keras.optimizers.LossScaleOptimizer) is scaled
    d_before = _np(distiller.term("adv").discriminator.weights)
    x, y = testing.random_images(32)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert not _same(d_before,
                     _np(distiller.term("adv").discriminator.weights))
    assert distiller.term("adv").discriminator.weights[0].dtype == "float32"


def test_jit_compile():
    distiller = _distiller(pretrain_steps=1)
    distiller.compile(optimizer="adam", discriminator_optimizer="adam",
                      jit_compile=True)
    x, y = testing.random_images(32)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["d_loss"][0])
    assert distiller.discriminator_optimizer.iterations.numpy() == 1


def test_config_round_trip():
    regressor = TeacherToStudent(4, 8, 8, activation=None, name="my_r")
    distiller = _distiller(pretrain_steps=7, alpha=0.0, kd_weight=0.2,
                           regressor=regressor, temperature=2.0)
    config = distiller.get_config()
    clone = tfkd.AdversarialDistiller.from_config(config)
    assert (clone.alpha, clone.beta, clone.pretrain_steps, clone.kd_weight,
            clone.temperature) == (0.0, 0.5, 7, 0.2, 2.0)
    assert clone.teacher_taps == ["conv2"]
    assert clone.term("mse").regressor.name == "my_r"
    assert clone.term("mse").regressor.activation is keras.activations.linear
    assert json.loads(json.dumps(clone.get_config())) == json.loads(
        json.dumps(config))


def _bad(**kwargs):
    return lambda: _distiller(**kwargs)


@pytest.mark.parametrize("factory, error, match", [
    (_bad(alpha=-1.0), ValueError, "alpha"),
    (_bad(beta=-0.5), ValueError, "beta"),
    (_bad(kd_weight=-1.0), ValueError, "kd_weight"),
    (_bad(temperature=0.0), ValueError, "temperature"),
    (_bad(pretrain_steps=-1), ValueError, "pretrain_steps"),
    (_bad(pretrain_steps=1.5), ValueError, "pretrain_steps"),
    (_bad(discriminator_width=0), ValueError, "discriminator_width"),
    (_bad(teacher_layer_name=["conv1", "conv2"]), ValueError, "teacher_layer"),
    (_bad(student_layer_name=None), ValueError, "student_layer"),
    (_bad(student_layer_name="nope"), ValueError, "student_layer"),
    (_bad(student_layer_name="logits"), ValueError, "feature map"),
    (_bad(regressor="conv"), TypeError, "regressor"),
    (_bad(regressor=TeacherToStudent(5, 8, 8)), ValueError, "regressor"),
])
def test_bad_constructor_arguments(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_bad_compile_arguments():
    distiller = _distiller()
    optimizer = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="different optimizer"):
        distiller.compile(optimizer=optimizer,
                          discriminator_optimizer=optimizer)
    # `loss` is the student loss, as for every distiller (it used to be
    # refused here and silently ignored elsewhere); probabilities are not.
    with pytest.raises(ValueError, match="treats the student's outputs as "
                                         "probabilities"):
        distiller.compile(optimizer="adam",
                          loss="sparse_categorical_crossentropy")
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(distiller.discriminator_optimizer,
                      keras.optimizers.Adam)
    assert distiller.discriminator_optimizer is not distiller.optimizer


def test_default_discriminator_optimizer_is_slower_than_the_students():
    # At the student's own rate the discriminator saturated within an
    # epoch on the digits pair and `-log D(m_s)` collapsed the student to
    # chance (11.6 % vs 95.4 % alone); the default now runs it at 1/100.
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, 100)
    distiller = _distiller()
    distiller.compile(optimizer=keras.optimizers.Adam(schedule))
    d_rate = distiller.discriminator_optimizer._learning_rate
    assert d_rate.initial_learning_rate == pytest.approx(3e-5)
    assert d_rate.decay_steps == 100
    assert schedule.initial_learning_rate == pytest.approx(3e-3)
    distiller = _distiller()
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
                      discriminator_learning_rate_scale=0.5)
    assert float(distiller.discriminator_optimizer.learning_rate) == \
        pytest.approx(5e-4)
    # An explicit discriminator optimizer is used as given.
    distiller = _distiller()
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
                      discriminator_optimizer=keras.optimizers.Adam(2e-3))
    assert float(distiller.discriminator_optimizer.learning_rate) == \
        pytest.approx(2e-3)
    with pytest.raises(ValueError, match="discriminator_learning_rate_scale"):
        _distiller().compile(optimizer="adam",
                             discriminator_learning_rate_scale=0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_non_finite_discriminator_step_changes_no_weight(jit_compile):
    # Both of KTAN's optimizers are guarded: a discriminator with a NaN
    # weight (non-finite `d_loss` and gradients) stops the first step
    # before the discriminator's or the student's update, naming `d_loss`.
    # (No regressor pre-training: it trains the regressor, by design.)
    distiller = _distiller(pretrain_steps=0, regressor_pretrained=True)
    distiller.compile(optimizer="adam", discriminator_optimizer="adam",
                      jit_compile=jit_compile)
    kernel = distiller.term("adv").discriminator.trainable_variables[0]
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    x, y = testing.random_images(16)
    before = [np.array(w) for w in distiller.weights]
    with pytest.raises(tfkd.callbacks.NonFiniteDataError,
                       match=r"Non-finite gradients at training batch 0 of "
                             r"epoch 0.*`d_loss`"):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert distiller.optimizer.iterations.numpy() == 0
    assert distiller.discriminator_optimizer.iterations.numpy() == 0
    for value, variable in zip(before, distiller.weights):
        np.testing.assert_array_equal(np.array(variable), value,
                                      err_msg=variable.path)
