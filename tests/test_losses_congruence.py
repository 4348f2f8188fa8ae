"""Tests of `tfkd.losses.correlation_congruence_loss` (CC, Peng et al.)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfkd.losses.congruence import correlation_congruence_loss

from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import check_live_hyperparameters
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads


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
