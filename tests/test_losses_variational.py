"""Tests of `tfkd.losses.vid_loss` (VID, Ahn et al.)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfkd.losses.variational import vid_log_scale_for_variance
from tfkd.losses.variational import vid_loss

from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads


# --------------------------------- NumPy reference (the authors' code's form)
def np_softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def np_vid(t, mu, log_scale):
    t = np.asarray(t, np.float64)
    mu = np.asarray(mu, np.float64)
    out = []
    for tb, mb in zip(t, mu):
        total, count = 0.0, 0
        for idx in np.ndindex(*tb.shape):
            var = np_softplus(float(log_scale[idx[-1]])) + 1e-5
            total += 0.5 * ((mb[idx] - tb[idx]) ** 2 / var + math.log(var))
            count += 1
        out.append(total / count)
    return np.array(out)


def inputs(shape, seed, scale=1.0):
    rng = np.random.RandomState(seed)
    t = (scale * rng.randn(*shape)).astype(np.float32)
    mu = (scale * rng.randn(*shape)).astype(np.float32)
    log_scale = rng.uniform(-3.0, 5.0, size=shape[-1]).astype(np.float32)
    return t, mu, log_scale


SHAPES = [(1, 2, 2, 1), (2, 3, 3, 4), (4, 2, 5, 3), (3, 6)]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("shape,runner", cases(
    [(s,) for s in SHAPES], [(SHAPES[1],), (SHAPES[3],)]))
def test_matches_reference(shape, runner):
    t, mu, log_scale = inputs(shape, sum(shape))
    got = run(vid_loss, t, mu, log_scale, runner=runner)
    assert got.shape == (shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(got, np_vid(t, mu, log_scale), rtol=1e-5,
                               atol=1e-6)


def test_log_scale_for_variance_inverts_the_parametrisation():
    for variance in (5.0, 1.0, 1e-3, 100.0, np.float32(2.0)):
        log_scale = vid_log_scale_for_variance(variance)
        np.testing.assert_allclose(np_softplus(log_scale) + 1e-5, variance,
                                   rtol=1e-9)
    # The authors' initial value: log(exp(5 − 1e-5) − 1).
    np.testing.assert_allclose(vid_log_scale_for_variance(5.0),
                               np.log(np.exp(5.0 - 1e-5) - 1.0), rtol=1e-12)


def test_gradients_match_finite_differences():
    t, mu, log_scale = inputs((2, 2, 2, 3), 1)
    _, (g_t, g_mu, g_ls) = value_and_grads(vid_loss, t, mu, log_scale,
                                           wrt=(0, 1, 2))
    np.testing.assert_allclose(
        g_mu, numeric_grad(lambda x: np_vid(t, x, log_scale), mu),
        rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        g_t, numeric_grad(lambda x: np_vid(x, mu, log_scale), t),
        rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        g_ls, numeric_grad(lambda x: np_vid(t, mu, x), log_scale),
        rtol=1e-4, atol=1e-7)


def test_optimal_variance_is_the_mean_squared_error():
    # d/dσ² of ½(e²/σ² + log σ²) is 0 at σ² = e²: the learned variance
    # tracks the per-channel residual.
    t, mu, _ = inputs((4, 3, 3, 2), 2)
    mse = np.mean((mu - t) ** 2, axis=(0, 1, 2))
    log_scale = np.array([vid_log_scale_for_variance(float(v)) for v in mse],
                         np.float32)
    _, (g_ls,) = value_and_grads(vid_loss, t, mu, log_scale, wrt=(2,))
    np.testing.assert_allclose(g_ls, 0.0, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(vid_loss, jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 2, 2, 3]),
                                      tf.TensorSpec([None, 2, 2, 3]),
                                      tf.TensorSpec([3])])
    t, mu, log_scale = inputs((5, 2, 2, 3), 3)
    for b in (1, 5):
        np.testing.assert_allclose(fn(t[:b], mu[:b], log_scale).numpy(),
                                   np_vid(t[:b], mu[:b], log_scale),
                                   rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_extreme_inputs_stay_finite(runner):
    t, mu, _ = inputs((3, 2, 2, 4), 4)
    t[0] = 0.0
    mu[0] = 0.0
    t[1] *= 1e4
    log_scale = np.array([-100.0, 100.0, 0.0, -20.0], np.float32)
    value, grads = value_and_grads(vid_loss, t, mu, log_scale, wrt=(0, 1, 2),
                                   runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_vid(t, mu, log_scale), rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, mu, log_scale = inputs((2, 3, 3, 4), 5)
    got = run(vid_loss, t, mu, log_scale, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy()
               for x in (t, mu, log_scale)]
    np.testing.assert_allclose(got, np_vid(*rounded), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, mu, log_scale = inputs((3, 2, 2, 3), 123)
    np.testing.assert_allclose(vid_loss(t, mu, log_scale).numpy(),
                               [1.4278665, 0.74623054, 0.500296], rtol=1e-5)


# ----------------------------------------------------------------- bad input
def test_bad_shapes():
    t = np.zeros((2, 3, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"`teacher_features` and "
                       r"`predicted_mean` must have the same shape.*"
                       r"\(2, 3, 3, 4\).*\(2, 3, 3, 2\)"):
        vid_loss(t, np.zeros((2, 3, 3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"`log_scale` must have one entry "
                       r"per channel.*log_scale.shape=\(3,\)"):
        vid_loss(t, t, np.zeros(3))
    with pytest.raises(ValueError, match=r"`log_scale` must have rank 1 "
                       r"\(C,\)"):
        vid_loss(t, t, np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"`teacher_features` must have rank "
                       r">= 2"):
        vid_loss(np.zeros(4), np.zeros(4), np.zeros(4))
    with pytest.raises(TypeError, match="predicted_mean"):
        vid_loss([[1.0]], [["b"]], [0.0])


@pytest.mark.parametrize("variance,error", [(1e-5, ValueError),
                                            (0.0, ValueError),
                                            ("5", TypeError)])
def test_bad_variance(variance, error):
    with pytest.raises(error, match=r"`variance`.*Received: variance="):
        vid_log_scale_for_variance(variance)
