"""Tests of `tfkd.losses.correlation_congruence_loss` (CC, Peng et al.).

The CC (correlation congruence) term.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.cc import correlation_congruence_loss
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
from tfkd.methods.cc import CorrelationCongruenceDistillation


# ------------------------------------------------ NumPy reference (paper)
def np_kernel(f, gamma, order):
    f = np.asarray(f, np.float64).reshape(len(f), -1)
    f = np.array([v / np.linalg.norm(v) if np.any(v) else v for v in f])
    b = len(f)
    k = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            x = np.dot(f[i], f[j])
            k[i, j] = sum(math.exp(-2 * gamma) * (2 * gamma) ** p
                          / math.factorial(p) * x**p
                          for p in range(order + 1))
    return k


def np_cc(t, s, gamma=0.4, order=2):
    b = len(t)
    return np.sum((np_kernel(t, gamma, order)
                   - np_kernel(s, gamma, order)) ** 2) / b**2


def features(shape, seed, scale=1.0):
    rng = np.random.RandomState(seed)
    return (scale * rng.randn(*shape)).astype(np.float32)


SHAPES = [
    ((1, 3), (1, 2)),
    ((2, 4), (2, 4)),
    ((6, 2, 2, 3), (6, 5)),
    ((9, 16), (9, 3)),
]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("t_shape,s_shape,gamma,order,runner", cases(
    [(t, s, g, p) for t, s in SHAPES for g, p in [(0.4, 2), (1.5, 1),
                                                   (0.1, 5)]],
    [(t, s, 0.4, 2) for t, s in SHAPES[2:]]))
def test_matches_reference(t_shape, s_shape, gamma, order, runner):
    t, s = features(t_shape, 0), features(s_shape, 1)
    got = run(correlation_congruence_loss, t, s, runner=runner, gamma=gamma,
              order=order)
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, np_cc(t, s, gamma, order), rtol=1e-4,
                               atol=1e-7)


def test_high_order_approximates_the_gaussian_kernel():
    # With unit vectors, exp(−γ‖f_i − f_j‖²) = e^{−2γ} e^{2γ cos}: the
    # Taylor series converges to the exact RBF kernel.
    t, s = features((5, 4), 2), features((5, 3), 3)

    def rbf(f, gamma):
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        d = ((f[:, None] - f[None]) ** 2).sum(-1)
        return np.exp(-gamma * d)

    exact = np.sum((rbf(t, 0.4) - rbf(s, 0.4)) ** 2) / 25
    np.testing.assert_allclose(
        correlation_congruence_loss(t, s, gamma=0.4, order=12), exact,
        rtol=1e-5)


def test_gradient_matches_finite_differences():
    t, s = features((4, 3), 4), features((4, 2), 5)
    _, (g_t, g_s) = value_and_grads(
        lambda a, b: correlation_congruence_loss(a, b, gamma=0.7, order=3),
        t, s)
    np.testing.assert_allclose(
        g_s, numeric_grad(lambda x: np_cc(t, x, 0.7, 3), s), rtol=1e-3,
        atol=1e-7)
    np.testing.assert_allclose(
        g_t, numeric_grad(lambda x: np_cc(x, s, 0.7, 3), t), rtol=1e-3,
        atol=1e-7)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(correlation_congruence_loss,
                     jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 4]),
                                      tf.TensorSpec([None, 3])])
    t, s = features((6, 4), 6), features((6, 3), 7)
    for b in (1, 2, 6):
        np.testing.assert_allclose(fn(t[:b], s[:b]).numpy(),
                                   np_cc(t[:b], s[:b]), rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_zero_rows_and_extreme_scales_stay_finite(runner):
    t, s = features((5, 4), 8), features((5, 3), 9)
    t[1] = 0.0
    s[[2, 3]] = 0.0
    s[0] *= 1e4
    value, grads = value_and_grads(correlation_congruence_loss, t, s,
                                   runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_cc(t, s), rtol=1e-4)
    assert np.all(grads[1][[2, 3]] == 0.0)
    zeros = np.zeros((3, 4), np.float32)
    value, grads = value_and_grads(correlation_congruence_loss, zeros, zeros,
                                   runner="eager")
    assert value == 0.0
    assert_finite(*grads)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, s = features((5, 6), 10), features((5, 3), 11)
    got = run(correlation_congruence_loss, t, s, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in (t, s)]
    np.testing.assert_allclose(got, np_cc(*rounded), rtol=1e-4)


def test_live_gamma():
    t, s = features((5, 4), 12), features((5, 3), 13)
    check_live_hyperparameters(
        lambda a, b, gamma: correlation_congruence_loss(a, b, gamma=gamma,
                                                        order=3),
        (t, s), dict(gamma=0.4), dict(gamma=1.5))


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s = features((6, 2, 2, 2), 123), features((6, 5), 124)
    np.testing.assert_allclose(
        [correlation_congruence_loss(t, s).numpy(),
         correlation_congruence_loss(t, s, gamma=1.0, order=4).numpy()],
        [0.05896388, 0.057862565], rtol=1e-5)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,error,match", [
    ({"gamma": 0.0}, ValueError, r"`gamma` must be a finite number > 0\. "
     r"Received: gamma=0\.0"),
    ({"gamma": "0.4"}, TypeError, r"`gamma`.*Received: gamma='0.4'"),
    ({"order": 0}, ValueError, r"`order` must be an integer >= 1\. "
     r"Received: order=0"),
    ({"order": 2.0}, TypeError, r"`order`.*Received: order=2\.0"),
])
def test_bad_hyperparameters(kwargs, error, match):
    f = np.zeros((3, 2), np.float32)
    with pytest.raises(error, match=match):
        correlation_congruence_loss(f, f, **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"same batch size.*\(3, 2\).*"
                       r"\(4, 2\)"):
        correlation_congruence_loss(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`student_embeddings` must have "
                       r"rank >= 2"):
        correlation_congruence_loss(np.zeros((3, 2)), np.zeros((3,)))
    with pytest.raises(TypeError, match="teacher_embeddings"):
        correlation_congruence_loss([["a"]], [[1.0]])


# --- The term (formerly tests/test_term_cc.py) ---

def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: CorrelationCongruenceDistillation(0.4, 2, "conv2", "conv2"),
        reference=lambda t, s: correlation_congruence_loss(t, s, gamma=0.4,
                                                           order=2))


def test_pooled_embeddings_and_other_order():
    _pooled_value_and_gradient(
        CorrelationCongruenceDistillation(0.8, 3, "pool", "pool"),
        lambda t, s: correlation_congruence_loss(t, s, gamma=0.8, order=3))


def test_method_is_registered_with_its_weight():
    spec = registry.get("cc")
    assert spec.term is CorrelationCongruenceDistillation
    arguments = spec.arguments()
    assert (arguments["gamma"], arguments["order"],
            arguments["weight"]) == (0.4, 2, 100.0)
    distiller = registry.build(
        "cc", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("pool", "pool"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [100.0, 2.0]
    assert distiller.term("cc").batch_level


def test_gamma_is_live_order_is_checked():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    distiller = tfkd.Distiller(
        teacher, student,
        [CorrelationCongruenceDistillation(0.4, 2, "conv2", "conv2")])
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=2)
    first = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                               verbose=0)["cc_loss"]
    distiller.set_hyperparameter("cc/gamma", 1.0)
    second = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                                verbose=0)["cc_loss"]
    t, s = (distiller.teacher_forward(x)[1][0],
            distiller.student_forward(x, False)[1][0])
    np.testing.assert_allclose(
        second, float(correlation_congruence_loss(t, s, gamma=1.0)),
        rtol=1e-5)
    assert first != second
    with pytest.raises(ValueError, match=r"`order` must be an integer >= 1"
                                         r"\. Received: order=0"):
        CorrelationCongruenceDistillation(order=0)
    with pytest.raises(ValueError, match=r"`gamma` must be a finite number "
                                         r"> 0"):
        CorrelationCongruenceDistillation(gamma=0.0)


def test_config_round_trip():
    term = CorrelationCongruenceDistillation(0.5, 3, "a", "b")
    clone = CorrelationCongruenceDistillation.from_config(term.get_config())
    assert clone.get_config() == term.get_config()


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
