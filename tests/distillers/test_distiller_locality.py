"""Tests of `tfkd.LocalityPreservingDistiller` (LP paper, eq. 8)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.distillers import registry


def _pair(**kwargs):
    teacher = testing.tiny_conv_model("teacher", width=16, seed=1, **kwargs)
    student = testing.tiny_conv_model("student", width=4, seed=2, **kwargs)
    return teacher, student


def _np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_lp(f_t, f_s, k, sigma=None, normalize=None):
    """Literal NumPy eq. 5-6 with the σ rule of docs/methods/lp.md, in float64 and loops;
    `normalize="l2"` first scales each example's features to unit length."""
    f_t = f_t.reshape(len(f_t), -1).astype(np.float64)
    f_s = f_s.reshape(len(f_s), -1).astype(np.float64)
    if normalize == "l2":
        f_t = f_t / np.maximum(np.linalg.norm(f_t, axis=1, keepdims=True),
                               1e-6)
        f_s = f_s / np.maximum(np.linalg.norm(f_s, axis=1, keepdims=True),
                               1e-6)
    m = len(f_t)
    k = min(k, m - 1)
    d_t = ((f_t[:, None] - f_t[None]) ** 2).sum(-1)
    neighbours = []
    for i in range(m):
        order = [j for j in np.argsort(d_t[i], kind="stable") if j != i]
        neighbours.append(order[:k])
    pairs = [(i, j) for i in range(m) for j in neighbours[i]]
    sigma_sq = (np.mean([d_t[i, j] for i, j in pairs]) if sigma is None
                else sigma**2)
    total = sum(np.exp(-d_t[i, j] / sigma_sq)
                * ((f_s[i] - f_s[j]) ** 2).sum() for i, j in pairs)
    return total / (2 * m)


def _features(model, layer, x):
    view = keras.Model(model.input, model.get_layer(layer).output)
    return np.array(view(x, training=False))


# --------------------------------------------------------------------------
# The uniform battery.


@pytest.mark.parametrize("taps", [("conv2", "conv1"),
                                  (["conv1", "conv2"], ["conv1", "conv2"])])
def test_fit_battery(taps):
    teacher, student = _pair()
    x, y = testing.random_images(48)
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name=taps[0],
        student_layer_name=taps[1],
        k=3, sigma=None,
    )
    testing.run_distiller_test(
        distiller, x, y,
        expected_metrics=["student_loss", "soft_loss", "lp_loss"],
    )


def test_registry_builds_lp_with_paper_defaults():
    teacher, student = _pair()
    distiller = registry.build("lp", teacher, student,
                               feature_layers=("conv2", "conv2"))
    assert isinstance(distiller, tfkd.LocalityPreservingDistiller)
    lp = distiller.term("lp")
    assert (lp.k, distiller.gamma, distiller.lam, distiller.temperature,
            lp.sigma) == (5, 1.0, 2.0, 0.5, None)
    # tfkd's one departure, documented beside the paper's form.
    assert lp.normalize == "l2"


def test_config_keeps_hyperparameters():
    teacher, student = _pair()
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv1",
        k=4, gamma=0.5, lam=1.5, temperature=2.0, sigma=3.0,
        normalize=None,
    )
    config = distiller.get_config()
    assert "alpha" not in config
    clone = tfkd.LocalityPreservingDistiller.from_config(config)
    lp = clone.term("lp")
    assert (lp.k, clone.gamma, clone.lam, clone.temperature,
            lp.sigma, lp.normalize) == (4, 0.5, 1.5, 2.0, 3.0, None)
    assert clone.teacher_taps == ["conv2"]
    assert clone.student_taps == ["conv1"]


# --------------------------------------------------------------------------
# The objective is eq. 8 as docs/methods/lp.md reads it.


@pytest.mark.parametrize("sigma, normalize", [(None, None), (2.0, None),
                                               (None, "l2"), (0.5, "l2")])
def test_objective_matches_eq8_by_hand(sigma, normalize):
    teacher, student = _pair()
    x, y = testing.random_images(24, seed=5)
    k, gamma, lam, tau = 3, 0.7, 2.0, 0.5
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv1",
        k=k, gamma=gamma, lam=lam, temperature=tau, sigma=sigma,
        normalize=normalize,
    )
    distiller.compile(optimizer="sgd")
    r = distiller.evaluate(x, y, batch_size=len(x), return_dict=True,
                           verbose=0)

    t_logits = np.array(teacher(x, training=False), np.float64)
    s_logits = np.array(student(x, training=False), np.float64)
    f_t = _features(teacher, "conv2", x)  # (24, 8, 8, 16)
    f_s = _features(student, "conv1", x)  # (24, 8, 8, 4): d_T != d_S
    # NumPy references.
    ce = -_np_log_softmax(s_logits)[np.arange(len(y)), y].mean()
    p_t = np.exp(_np_log_softmax(t_logits / tau))
    soft = -(p_t * _np_log_softmax(s_logits / tau)).sum(-1).mean()
    lp = _np_lp(f_t, f_s, k, sigma, normalize)
    np.testing.assert_allclose(r["student_loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(r["soft_loss"], soft, rtol=1e-5)
    np.testing.assert_allclose(r["lp_loss"], lp, rtol=1e-4)
    # Eq. 8, divided by 2 (the preset's normalisation into the engine's
    # convention: student_loss_weight 0.5, term weights lam and gamma).
    np.testing.assert_allclose(r["loss"], (ce + lam * soft + gamma * lp) / 2,
                               rtol=1e-4)
    # ... and the library's loss functions agree.
    np.testing.assert_allclose(
        r["soft_loss"],
        float(np.mean(tfkd.losses.soft_cross_entropy(t_logits, s_logits,
                                                     tau))), rtol=1e-5)
    if normalize is None:  # The paper's form is the pure function.
        np.testing.assert_allclose(
            r["lp_loss"],
            float(tfkd.losses.locality_preserving_loss(f_t, f_s, k=k,
                                                       sigma=sigma)),
            rtol=1e-5)


def test_several_pairs_sum_their_lp_terms():
    teacher, student = _pair()
    x, y = testing.random_images(16, seed=7)
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name=["conv1", "conv2"],
        student_layer_name=["conv1", "conv2"], k=2,
    )
    distiller.compile(optimizer="sgd")
    r = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    expected = sum(
        _np_lp(_features(teacher, n, x), _features(student, n, x), 2,
               normalize="l2")
        for n in ("conv1", "conv2")
    )
    np.testing.assert_allclose(r["lp_loss"], expected, rtol=1e-4)


def test_sample_weights_scale_per_example_terms_only():
    teacher, student = _pair()
    x, y = testing.random_images(16, seed=8)
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv2")
    distiller.compile(optimizer="sgd")
    plain = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                               verbose=0)
    weighted = distiller.evaluate(x, y, sample_weight=np.full(16, 2.0),
                                  batch_size=16, return_dict=True, verbose=0)
    assert weighted["student_loss"] == pytest.approx(2 * plain["student_loss"])
    assert weighted["soft_loss"] == pytest.approx(2 * plain["soft_loss"])
    assert weighted["lp_loss"] == pytest.approx(plain["lp_loss"])


# --------------------------------------------------------------------------
# Gradients: the student learns, the teacher does not.


def test_lp_gradient_reaches_student_up_to_tap_only():
    teacher, student = _pair(depth=3)
    x, y = testing.random_images(16, seed=9)
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv3",
        student_layer_name="conv2")
    with tf.GradientTape(persistent=True) as tape:
        _, reduced, *_ = distiller.compute_losses(x, y, training=True)
    lp_grads = tape.gradient(
        reduced["lp_loss"], student.trainable_weights + teacher.weights)
    by_name = dict(zip(
        [w.path for w in student.trainable_weights + teacher.weights],
        lp_grads))
    # Layers up to the student's tap get an LP gradient, later ones none.
    for name, grad in by_name.items():
        if name.startswith("student/conv1") or name.startswith(
                "student/conv2"):
            assert grad is not None and np.any(np.array(grad) != 0), name
        else:
            assert grad is None or not np.any(np.array(grad)), name
    # The total reaches every student weight and no teacher weight.
    total_grads = tape.gradient(
        reduced["student_loss"] + reduced["soft_loss"] + reduced["lp_loss"],
        teacher.weights)
    assert all(g is None for g in total_grads)
    assert not teacher.trainable
    assert distiller.step_variables() == list(
        student.trainable_weights)  # No new weights.


def test_fit_changes_student_not_teacher():
    teacher, student = _pair()
    x, y = testing.random_images(32, seed=10)
    t_before = [np.array(w) for w in teacher.weights]
    s_before = [np.array(w) for w in student.weights]
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv2",
        lam=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for a, b in zip(t_before, teacher.weights):
        np.testing.assert_array_equal(a, np.array(b))
    assert all(not np.array_equal(a, np.array(b))
               for a, b in zip(s_before, student.weights))


# --------------------------------------------------------------------------
# Compiled, mixed-precision and distributed steps.


def test_jit_compile_step():
    teacher, student = _pair()
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv1")
    distiller.compile(optimizer="adam", jit_compile=True)
    x, y = testing.random_images(40)
    # 40 = 16 + 16 + 8: the last, smaller batch recompiles with its own k.
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert history.history["lp_loss"][0] > 0


def test_mixed_float16_step():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    teacher, student = _pair()
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv1")
    distiller.compile(optimizer="adam")
    assert isinstance(distiller.optimizer,
                      keras.optimizers.LossScaleOptimizer)
    # 6 steps: the LP gradients overflow float16 at the initial loss scale
    # 2^15, so the dynamic scale skips the first steps and halves, as
    # designed; later steps update the student.
    x, y = testing.random_images(96)
    before = [np.array(w) for w in student.trainable_weights]
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert history.history["lp_loss"][0] > 0
    assert student.trainable_weights[0].dtype == "float32"
    assert any(not np.array_equal(b, np.array(a))
               for b, a in zip(before, student.trainable_weights))


def test_mirrored_strategy_searches_neighbours_per_replica():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (set up in conftest)")
    x, y = testing.random_images(32, seed=11)
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    with strategy.scope():
        teacher, student = _pair()
        distiller = tfkd.LocalityPreservingDistiller(
            teacher, student, teacher_layer_name="conv2",
            student_layer_name="conv1",
            k=3)
        distiller.compile(optimizer="sgd")
    r = distiller.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    f_t = _features(teacher, "conv2", x)
    f_s = _features(student, "conv1", x)
    per_replica = [_np_lp(f_t[:16], f_s[:16], 3, normalize="l2"),
                   _np_lp(f_t[16:], f_s[16:], 3, normalize="l2")]
    np.testing.assert_allclose(r["lp_loss"], np.mean(per_replica),
                               rtol=1e-4)
    assert not np.isclose(r["lp_loss"], _np_lp(f_t, f_s, 3, normalize="l2"),
                          rtol=1e-3)


# --------------------------------------------------------------------------
# Real data.


def test_trains_on_digits_without_nan():
    keras.utils.set_random_seed(0)
    data = tfkd.data.load_digits(image_size=16, batch_size=64)
    teacher = tfkd.models.digits_teacher()
    teacher.compile(
        optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(data.train, epochs=3, verbose=0)
    student = tfkd.models.digits_student()
    # The embedding (`gap`), the layer the registry taps for LP on the
    # digits pair.
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="gap", student_layer_name="gap")
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3),
                      metrics=["accuracy"])
    history = distiller.fit(
        data.train, validation_data=data.validation, epochs=3, verbose=0,
        callbacks=[tfkd.callbacks.StopOnNonFiniteLoss()])
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), name
    assert history.history["lp_loss"][-1] > 0
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["student_loss"][-1] < history.history[
        "student_loss"][0]


# --------------------------------------------------------------------------
# The defaults do not collapse a student (issue 19).


def _fit_lp_on_wide_map(normalize):
    """LP (`lam=0`: class loss + LP only) tapping the digits student's
    widest map, `block2_relu` (8×8×16 = 1,024 values), 300 labelled
    images, 4 epochs. Returns (train accuracy per epoch, last student
    loss, the spread of the student's features over examples)."""
    data = tfkd.data.digits_arrays(image_size=16, seed=0,
                                   labels_per_class=30)
    x, y = tfkd.data.labelled_only(data.train)
    keras.utils.set_random_seed(0)
    teacher = tfkd.models.digits_teacher()
    student = tfkd.models.digits_student()
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="block2_relu",
        student_layer_name="block2_relu", lam=0.0, normalize=normalize)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2),
                      metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=60, epochs=4, verbose=0)
    features = _features(student, "block2_relu", x[:200]).reshape(200, -1)
    spread = float(features.std(axis=0).mean())
    return (history.history["accuracy"],
            history.history["student_loss"][-1], spread)


def test_default_lp_does_not_collapse_a_student_on_a_wide_map():
    """Measured (issue 19): on raw features (the paper's form) the LP term
    on this 1,024-value map starts ~150 against a class loss of ~2.4 and
    the student maps every image to one point: 13-17 % test accuracy after
    30 epochs (3 seeds; the student alone 71-82 %). The collapse shows in
    4 epochs: the class loss stays at ln 10 ≈ 2.30 (chance) and the
    features stop varying between images. With the default unit-length
    features the class loss drives training as it does alone."""
    raw_accuracy, raw_loss, raw_spread = _fit_lp_on_wide_map(None)
    accuracy, loss, spread = _fit_lp_on_wide_map("l2")
    assert max(raw_accuracy) <= 0.2 and raw_loss > 2.25, (raw_accuracy,
                                                          raw_loss)
    assert accuracy[-1] >= 0.35 and loss < 2.15, (accuracy, loss)
    assert raw_spread < 0.7 * spread, (raw_spread, spread)


# --------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("kwargs, error, match", [
    ({"k": 0}, ValueError, "k=0"),
    ({"k": 2.5}, TypeError, "k=2.5"),
    ({"k": True}, TypeError, "k=True"),
    ({"gamma": -1.0}, ValueError, "gamma=-1.0"),
    ({"lam": -0.5}, ValueError, "lam=-0.5"),
    ({"temperature": 0.0}, ValueError, "temperature=0.0"),
    ({"sigma": 0.0}, ValueError, "sigma=0.0"),
    ({"sigma": "wide"}, TypeError, "sigma='wide'"),
    ({"normalize": "l1"}, ValueError, r"`normalize` must be one of 'l2' \(unit-length.*"
                                      r"normalize='l1'"),
    ({"normalize": True}, ValueError, "normalize=True"),
    ({"teacher_layer_name": None}, ValueError, "teacher_layer_name=None"),
    ({"student_layer_name": []}, ValueError, r"student_layer_name=\[\]"),
    ({"teacher_layer_name": ["conv1", "conv2"]}, ValueError, "same length"),
    ({"student_layer_name": "nope"}, ValueError, "'nope' is not a layer"),
])
def test_bad_arguments(kwargs, error, match):
    teacher, student = _pair()
    args = {"teacher_layer_name": "conv2", "student_layer_name": "conv2",
              **kwargs}
    with pytest.raises(error, match=match):
        tfkd.LocalityPreservingDistiller(teacher, student, **args)


def test_layer_names_are_required_keywords():
    teacher, student = _pair()
    with pytest.raises(ValueError, match="`teacher_layer_name` must name at "
                                         "least one layer.*teacher_layer_name="
                                         "None"):
        tfkd.LocalityPreservingDistiller(teacher, student)


def test_mismatched_logits_are_refused():
    teacher = testing.tiny_conv_model("teacher", num_classes=10)
    student = testing.tiny_conv_model("student", num_classes=5)
    with pytest.raises(
            ValueError,
            match=r"The teacher outputs 10 logits and the student 5, but the "
                  r"terms \['soft'\] compare them class by class\. Received: "
                  r"teacher logits of shape \(None, 10\), student logits of "
                  r"shape \(None, 5\)"):
        tfkd.LocalityPreservingDistiller(
            teacher, student, teacher_layer_name="conv2",
            student_layer_name="conv2")
