"""Tests of `tfkd.losses.probabilistic_transfer_loss` (PKT, Passalis &
Tefas).

The PKT term.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfkd.methods.pkt import probabilistic_transfer_loss
from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads
import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.pkt import ProbabilisticTransferDistillation


# ----------------------------- NumPy reference (the authors' code's form)
def np_probabilities(f, eps):
    f = np.asarray(f, np.float64).reshape(len(f), -1)
    b = len(f)
    unit = np.array([v / (np.sqrt(np.sum(v**2)) + eps) for v in f])
    k = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            k[i, j] = (np.dot(unit[i], unit[j]) + 1.0) / 2.0
    return k / k.sum(axis=1, keepdims=True)


def np_pkt(t, s, eps=1e-7):
    p_t, p_s = np_probabilities(t, eps), np_probabilities(s, eps)
    b = len(t)
    total = 0.0
    for i in range(b):
        for j in range(b):
            total += p_t[i, j] * np.log((p_t[i, j] + eps) / (p_s[i, j] + eps))
    return total / b**2


def features(shape, seed, scale=1.0):
    rng = np.random.RandomState(seed)
    return (scale * rng.randn(*shape)).astype(np.float32)


SHAPES = [
    ((1, 3), (1, 2)),
    ((2, 4), (2, 4)),
    ((6, 2, 2, 3), (6, 5)),
    ((10, 8), (10, 3, 1)),
]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("t_shape,s_shape,eps,runner", cases(
    [(t, s, eps) for t, s in SHAPES for eps in (1e-7, 1e-2)],
    [(t, s, 1e-7) for t, s in SHAPES[2:]]))
def test_matches_reference(t_shape, s_shape, eps, runner):
    t, s = features(t_shape, 0), features(s_shape, 1)
    got = run(probabilistic_transfer_loss, t, s, runner=runner, eps=eps)
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, np_pkt(t, s, eps), rtol=1e-4, atol=1e-7)


def test_zero_when_cosines_match():
    t = features((5, 4), 2)
    rotation, _ = np.linalg.qr(features((4, 4), 3).astype(np.float64))
    s = (3.0 * t @ rotation).astype(np.float32)
    np.testing.assert_allclose(probabilistic_transfer_loss(t, s), 0.0,
                               atol=1e-6)


def test_gradient_matches_finite_differences():
    t, s = features((4, 3), 4), features((4, 2), 5)
    _, (g_t, g_s) = value_and_grads(probabilistic_transfer_loss, t, s)
    np.testing.assert_allclose(g_s, numeric_grad(lambda x: np_pkt(t, x), s),
                               rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(g_t, numeric_grad(lambda x: np_pkt(x, s), t),
                               rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(probabilistic_transfer_loss, jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 4]),
                                      tf.TensorSpec([None, 3])])
    t, s = features((6, 4), 6), features((6, 3), 7)
    for b in (1, 2, 6):
        np.testing.assert_allclose(fn(t[:b], s[:b]).numpy(),
                                   np_pkt(t[:b], s[:b]), rtol=1e-4,
                                   atol=1e-7)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_zero_rows_and_extreme_scales_stay_finite(runner):
    t, s = features((5, 4), 8), features((5, 3), 9)
    t[2] = 0.0
    s[[0, 4]] = 0.0
    value, grads = value_and_grads(probabilistic_transfer_loss, t, s,
                                   runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_pkt(t, s), rtol=1e-4)
    # No gradient flows into an all-zero example through its norm (the
    # authors' code would give ~1 / eps = 1e7 there).
    assert np.abs(grads[1][[0, 4]]).max() < 1.0
    for t, s in [(np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32)),
                 (features((4, 3), 10, 1e4), features((4, 2), 11, 1e-3))]:
        value, grads = value_and_grads(probabilistic_transfer_loss, t, s,
                                       runner="eager")
        assert_finite(value, *grads)
        np.testing.assert_allclose(value, np_pkt(t, s), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, s = features((5, 6), 12), features((5, 3), 13)
    got = run(probabilistic_transfer_loss, t, s, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in (t, s)]
    np.testing.assert_allclose(got, np_pkt(*rounded), rtol=1e-4)


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s = features((6, 2, 2, 2), 123), features((6, 5), 124)
    np.testing.assert_allclose(
        [probabilistic_transfer_loss(t, s).numpy(),
         probabilistic_transfer_loss(t[:3], s[:3], eps=0.01).numpy()],
        [0.053125698, 0.007829915], rtol=1e-5)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("eps,error", [(0.0, ValueError), (-1e-7, ValueError),
                                       ("1e-7", TypeError)])
def test_bad_eps(eps, error):
    f = np.zeros((3, 2), np.float32)
    with pytest.raises(error, match=r"`eps`.*Received: eps="):
        probabilistic_transfer_loss(f, f, eps=eps)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"same batch size.*\(3, 2\).*"
                       r"\(4, 2\)"):
        probabilistic_transfer_loss(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`teacher_features` must have "
                       r"rank >= 2"):
        probabilistic_transfer_loss(np.zeros((3,)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="student_features"):
        probabilistic_transfer_loss([[1.0]], [["a"]])


# --- The term (formerly tests/test_term_pkt.py) ---

def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: ProbabilisticTransferDistillation("conv2", "conv2"),
        reference=probabilistic_transfer_loss)


def test_pooled_embeddings_of_different_sizes():
    _pooled_value_and_gradient(
        ProbabilisticTransferDistillation("pool", "pool"),
        probabilistic_transfer_loss)


def test_method_is_registered_with_the_code_weight():
    spec = registry.get("pkt")
    assert spec.term is ProbabilisticTransferDistillation
    assert spec.arguments()["weight"] == 30000.0
    distiller = registry.build(
        "pkt", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("pool", "pool"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [30000.0, 2.0]
    assert distiller.student_loss_weight == 0.5
    assert distiller.term("pkt").batch_level


def test_several_pairs_are_summed():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    x, _ = testing.random_images(8, seed=2)

    def taps(model, names):
        return keras.Model(model.inputs,
                           [model.get_layer(n).output for n in names])(x)

    term = ProbabilisticTransferDistillation(["conv1", "pool"],
                                             ["conv1", "pool"])
    t, s = taps(teacher, ["conv1", "pool"]), taps(student, ["conv1", "pool"])
    want = (probabilistic_transfer_loss(t[0], s[0])
            + probabilistic_transfer_loss(t[1], s[1]))
    assert abs(float(term.compute_loss(t, s)) - float(want)) < 1e-7


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
