"""Tests of `tfkd.losses.relational_loss` (RKD, Park et al.).

The RKD term: value, live weights, shapes.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfkd.methods.rkd import relational_loss
from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import check_live_hyperparameters
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads
import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.rkd import RelationalDistillation


# --------------------------------- NumPy reference (paper + code's means)
def np_huber(x):
    return 0.5 * x**2 if abs(x) < 1.0 else abs(x) - 0.5


def np_distances(e):
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    b = len(e)
    d = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if i != j:
                d[i, j] = max(np.linalg.norm(e[i] - e[j]), 1e-6)
    pairs = [d[i, j] for i in range(b) for j in range(b) if i != j]
    return d / np.mean(pairs) if pairs else d


def np_unit(v):
    n = np.linalg.norm(v)
    return v / n if n > 0 else np.zeros_like(v)


def np_angles(e):
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    b = len(e)
    a = np.zeros((b, b, b))
    for i in range(b):
        for j in range(b):
            for k in range(b):
                a[i, j, k] = np.dot(np_unit(e[j] - e[i]), np_unit(e[k] - e[i]))
    return a


def np_rkd(t, s, distance_weight=25.0, angle_weight=50.0):
    b = len(t)
    dt, ds = np_distances(t), np_distances(s)
    at, as_ = np_angles(t), np_angles(s)
    loss_d = sum(np_huber(ds[i, j] - dt[i, j])
                 for i in range(b) for j in range(b)) / b**2
    loss_a = sum(np_huber(as_[i, j, k] - at[i, j, k]) for i in range(b)
                 for j in range(b) for k in range(b)) / b**3
    return distance_weight * loss_d + angle_weight * loss_a


def features(shape, seed, scale=1.0):
    rng = np.random.RandomState(seed)
    return (scale * rng.randn(*shape)).astype(np.float32)


SHAPES = [
    ((2, 3), (2, 5)),
    ((3, 4), (3, 4)),
    ((6, 2, 2, 3), (6, 5)),
    ((9, 8), (9, 3)),
]
WEIGHTS = [(25.0, 50.0), (1.0, 0.0), (0.0, 2.0)]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("t_shape,s_shape,weights,runner", cases(
    [(t, s, w) for t, s in SHAPES for w in WEIGHTS],
    [(t, s, WEIGHTS[0]) for t, s in SHAPES[2:]]))
def test_matches_reference(t_shape, s_shape, weights, runner):
    t, s = features(t_shape, 0), features(s_shape, 1)
    dw, aw = weights
    got = run(relational_loss, t, s, runner=runner, distance_weight=dw,
              angle_weight=aw)
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, np_rkd(t, s, dw, aw), rtol=1e-4,
                               atol=1e-6)


def test_invariant_to_scale_rotation_and_translation():
    t = features((7, 3), 2)
    rotation, _ = np.linalg.qr(features((3, 3), 3).astype(np.float64))
    s = (2.5 * t @ rotation + 4.0).astype(np.float32)
    np.testing.assert_allclose(relational_loss(t, s), 0.0, atol=1e-4)


def test_batch_of_one_is_zero():
    value, (_, g_s) = value_and_grads(relational_loss, features((1, 3), 4),
                                      features((1, 2), 5))
    assert value == 0.0 and np.all(g_s == 0.0)


def test_gradient_matches_finite_differences():
    t, s = features((4, 3), 6), features((4, 2), 7)
    _, (g_t, g_s) = value_and_grads(relational_loss, t, s)
    np.testing.assert_allclose(g_s, numeric_grad(lambda x: np_rkd(t, x), s),
                               rtol=1e-3, atol=1e-5)
    assert np.all(g_t == 0.0)  # the teacher side is a constant


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(relational_loss, jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 4]),
                                      tf.TensorSpec([None, 2, 3])])
    t, s = features((5, 4), 8), features((5, 2, 3), 9)
    for b in (1, 2, 5):
        np.testing.assert_allclose(fn(t[:b], s[:b]).numpy(),
                                   np_rkd(t[:b], s[:b]), rtol=1e-4,
                                   atol=1e-6)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_coincident_zero_and_large_embeddings_stay_finite(runner):
    t, s = features((5, 4), 10), features((5, 3), 11)
    s[1] = s[3]          # two coincident student embeddings
    t[0] = 0.0
    s[[0, 2]] = 0.0      # ... and two all-zero ones
    value, grads = value_and_grads(relational_loss, t, s, runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_rkd(t, s), rtol=1e-4)
    assert np.abs(grads[1]).max() < 1e3
    for t, s in [(np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32)),
                 (features((4, 3), 12, 1e4), features((4, 2), 13, 1e-4))]:
        value, grads = value_and_grads(relational_loss, t, s, runner="eager")
        assert_finite(value, *grads)
        np.testing.assert_allclose(value, np_rkd(t, s), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, s = features((5, 6), 14), features((5, 3), 15)
    got = run(relational_loss, t, s, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in (t, s)]
    np.testing.assert_allclose(got, np_rkd(*rounded), rtol=1e-4)


def test_live_weights():
    t, s = features((5, 3), 16), features((5, 2), 17)
    check_live_hyperparameters(
        relational_loss, (t, s), dict(distance_weight=25.0, angle_weight=50.0),
        dict(distance_weight=0.0, angle_weight=2.0))


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s = features((6, 2, 2, 2), 123), features((6, 5), 124)
    np.testing.assert_allclose(
        [relational_loss(t, s).numpy(),
         relational_loss(t, s, distance_weight=1.0, angle_weight=0.0).numpy(),
         relational_loss(t, s, distance_weight=0.0, angle_weight=1.0).numpy()],
        [8.945257, 0.09940807, 0.12920111], rtol=1e-5)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,error,match", [
    ({"distance_weight": -1.0}, ValueError,
     r"`distance_weight` must be a finite number >= 0\. Received: "
     r"distance_weight=-1\.0"),
    ({"angle_weight": "50"}, TypeError, r"`angle_weight`.*Received: "
     r"angle_weight='50'"),
])
def test_bad_weights(kwargs, error, match):
    f = np.zeros((3, 2), np.float32)
    with pytest.raises(error, match=match):
        relational_loss(f, f, **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"same batch size.*\(3, 2\).*"
                       r"\(4, 2\)"):
        relational_loss(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`teacher_embeddings` must have "
                       r"rank >= 2"):
        relational_loss(np.zeros((3,)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="student_embeddings"):
        relational_loss([[1.0]], [["a"]])


# --- The term (formerly tests/test_term_rkd.py) ---

def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: RelationalDistillation(25.0, 50.0, "conv2", "conv2"),
        reference=lambda t, s: relational_loss(t, s, distance_weight=25.0,
                                               angle_weight=50.0))


def test_pooled_embeddings_of_different_sizes():
    _pooled_value_and_gradient(
        RelationalDistillation(10.0, 20.0, "pool", "pool"),
        lambda t, s: relational_loss(t, s, distance_weight=10.0,
                                     angle_weight=20.0))


def test_method_is_registered_with_the_code_weights():
    spec = registry.get("rkd")
    assert spec.term is RelationalDistillation
    arguments = spec.arguments()
    assert (arguments["distance_weight"], arguments["angle_weight"]) == (
        25.0, 50.0)
    distiller = registry.build(
        "rkd", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("pool", "pool"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [1.0, 2.0]
    assert distiller.student_loss_weight == 0.5
    assert distiller.term("rkd").batch_level


def test_weights_are_live():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    term = RelationalDistillation(25.0, 50.0, "pool", "pool")
    distiller = tfkd.Distiller(teacher, student, [term])
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=2)
    distiller.evaluate(x, y, batch_size=16, verbose=0)
    distiller.set_hyperparameter("rkd/angle_weight", 0.0)
    logs = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                              verbose=0)
    def pool(model):
        return keras.Model(model.inputs, model.get_layer("pool").output)(x)

    want = relational_loss(pool(teacher), pool(student),
                           distance_weight=25.0, angle_weight=0.0)
    np.testing.assert_allclose(logs["rkd_loss"], float(want), rtol=1e-5)
    with pytest.raises(ValueError, match=r"`distance_weight` must be a "
                                         r"finite number >= 0"):
        RelationalDistillation(distance_weight=-1.0)


def test_config_round_trip():
    term = RelationalDistillation(5.0, 7.0, "a", "b")
    clone = RelationalDistillation.from_config(term.get_config())
    assert clone.get_config() == term.get_config()
    assert (clone.distance_weight, clone.angle_weight) == (5.0, 7.0)


def _pooled_value_and_gradient(term, reference):
    """The term on the pooled embeddings (8 vs 4 features) equals the
    function, and its gradient reaches the student's convolutions."""
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    distiller = tfkd.Distiller(teacher, student, [term])
    x, y = testing.random_images(16, seed=3)
    with tf.GradientTape() as tape:
        got = distiller.compute_terms(x, y, training=True)[
            f"{term.name}_loss"]
    grads = tape.gradient(got, student.get_layer("conv2").trainable_weights)
    assert all(g is not None and np.any(np.array(g) != 0) for g in grads)
    t = distiller.teacher_forward(x)[1][0]
    s = distiller.student_forward(x, False)[1][0]
    assert t.shape == (16, 8) and s.shape == (16, 4)
    np.testing.assert_allclose(float(got), float(reference(t, s)),
                               rtol=1e-5, atol=1e-6)
