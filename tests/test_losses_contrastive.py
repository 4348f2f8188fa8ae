"""Tests of `tfkd.losses.contrastive_representation_loss` (CRD, Tian et al.)
and its helpers `contrastive_normalizer`, `contrastive_memory_update`."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfkd.losses.contrastive import contrastive_memory_update
from tfkd.losses.contrastive import contrastive_normalizer
from tfkd.losses.contrastive import contrastive_representation_loss

from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import check_live_hyperparameters
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads

EPS = 1e-7


# ------------------------------- NumPy reference (the authors' code's form)
def np_scores(anchor, rows, temperature):
    anchor = np.asarray(anchor, np.float64)
    rows = np.asarray(rows, np.float64)
    return np.array([[np.exp(np.dot(rows[b, k], anchor[b]) / temperature)
                      for k in range(rows.shape[1])]
                     for b in range(rows.shape[0])])


def np_normalizer(anchor, rows, n, temperature):
    return np.mean(np_scores(anchor, rows, temperature)) * n


def np_contrast_loss(p, n):
    """ContrastLoss of the code on P = exp(score / τ) / Z."""
    b, k1 = p.shape
    m = k1 - 1
    pn = 1.0 / n
    total = 0.0
    for i in range(b):
        total += math.log(p[i, 0] / (p[i, 0] + m * pn + EPS))
        for k in range(1, k1):
            total += math.log(m * pn / (p[i, k] + m * pn + EPS))
    return -total / b


def np_crd(t, s, t_rows, s_rows, n, temperature=0.07, z_t=None, z_s=None):
    out_t = np_scores(t, s_rows, temperature)   # teacher anchor (code: v2)
    out_s = np_scores(s, t_rows, temperature)   # student anchor (code: v1)
    z_t = np.mean(out_t) * n if z_t is None else z_t
    z_s = np.mean(out_s) * n if z_s is None else z_s
    return np_contrast_loss(out_t / z_t, n) + np_contrast_loss(out_s / z_s, n)


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def inputs(b, k, dim, seed):
    rng = np.random.RandomState(seed)
    return (unit(rng.randn(b, dim)), unit(rng.randn(b, dim)),
            unit(rng.randn(b, k + 1, dim)), unit(rng.randn(b, k + 1, dim)))


SIZES = [(1, 1, 2), (2, 3, 4), (5, 16, 8), (8, 64, 16)]


def crd(*args, **kwargs):
    return contrastive_representation_loss(*args, **kwargs)


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("size,n,temperature,normalized,runner", cases(
    [(z, n, tau, norm) for z in SIZES for n, tau in [(100, 0.07), (7, 1.0)]
     for norm in (False, True)],
    [(SIZES[2], 100, 0.07, False), (SIZES[3], 50000, 0.07, True)]))
def test_matches_reference(size, n, temperature, normalized, runner):
    t, s, t_rows, s_rows = inputs(*size, seed=sum(size))
    kwargs = {}
    if normalized:  # fixed normalisers, e.g. those of an earlier batch
        kwargs = {"teacher_normalizer": 3.0 * n, "student_normalizer": 0.5 * n}
    got = run(crd, t, s, t_rows, s_rows, runner=runner, dataset_size=n,
              temperature=temperature, **kwargs)
    want = np_crd(t, s, t_rows, s_rows, n, temperature,
                  kwargs.get("teacher_normalizer"),
                  kwargs.get("student_normalizer"))
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_normalizer_matches_reference_and_the_default():
    t, s, t_rows, s_rows = inputs(4, 8, 6, seed=1)
    z_t = contrastive_normalizer(t, s_rows, dataset_size=1000)
    z_s = contrastive_normalizer(s, t_rows, dataset_size=1000)
    np.testing.assert_allclose(z_t, np_normalizer(t, s_rows, 1000, 0.07),
                               rtol=1e-5)
    np.testing.assert_allclose(z_s, np_normalizer(s, t_rows, 1000, 0.07),
                               rtol=1e-5)
    # Passing the first batch's estimates (as numbers or tensors) equals
    # letting the loss estimate them.
    default = crd(t, s, t_rows, s_rows, dataset_size=1000)
    for z in [(float(z_t), float(z_s)), (z_t, z_s),
              (tf.Variable(z_t), tf.Variable(z_s))]:
        np.testing.assert_allclose(
            crd(t, s, t_rows, s_rows, dataset_size=1000,
                teacher_normalizer=z[0], student_normalizer=z[1]),
            default, rtol=1e-6)


def test_memory_update_matches_reference():
    rng = np.random.RandomState(2)
    rows, e = unit(rng.randn(5, 4)), unit(rng.randn(5, 4))
    for m in (0.0, 0.5, 0.9, 1.0):
        mixed = m * rows.astype(np.float64) + (1 - m) * e
        want = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
        got = run(lambda r, x: contrastive_memory_update(r, x, momentum=m),
                  rows, e, runner="jit")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Opposite rows cancel at m = 0.5: the zero row stays 0, not NaN.
    got = contrastive_memory_update(rows, -rows).numpy()
    assert np.all(got == 0.0)
    # No gradient flows through the update.
    _, grads = value_and_grads(contrastive_memory_update, rows, e)
    assert all(np.all(g == 0.0) for g in grads)


def test_gradients_match_finite_differences():
    t, s, t_rows, s_rows = inputs(3, 4, 3, seed=3)
    z = {"teacher_normalizer": 40.0, "student_normalizer": 60.0}
    _, (g_t, g_s, g_tr, g_sr) = value_and_grads(
        lambda *a: crd(*a, dataset_size=20, temperature=0.5, **z),
        t, s, t_rows, s_rows, wrt=(0, 1, 2, 3))
    ref = dict(n=20, temperature=0.5, z_t=40.0, z_s=60.0)
    np.testing.assert_allclose(
        g_s, numeric_grad(lambda x: np_crd(t, x, t_rows, s_rows, **ref), s),
        rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        g_t, numeric_grad(lambda x: np_crd(x, s, t_rows, s_rows, **ref), t),
        rtol=1e-4, atol=1e-6)
    # The memory-bank rows are constants.
    assert np.all(g_tr == 0.0) and np.all(g_sr == 0.0)


def test_estimated_normalizer_carries_no_gradient():
    t, s, t_rows, s_rows = inputs(3, 4, 3, seed=4)
    _, (g_s,) = value_and_grads(
        lambda *a: crd(*a, dataset_size=20, temperature=0.5),
        t, s, t_rows, s_rows, wrt=(1,))
    z_s = np_normalizer(s, t_rows, 20, 0.5)
    z_t = np_normalizer(t, s_rows, 20, 0.5)
    want = numeric_grad(lambda x: np_crd(t, x, t_rows, s_rows, 20, 0.5,
                                         z_t, z_s), s)
    np.testing.assert_allclose(g_s, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch_and_negatives(runner):
    fn = tf.function(
        lambda *a: crd(*a, dataset_size=500), jit_compile=runner == "jit",
        input_signature=[tf.TensorSpec([None, 4])] * 2
        + [tf.TensorSpec([None, None, 4])] * 2)
    for b, k in [(1, 1), (3, 10)]:
        args = inputs(b, k, 4, seed=5)
        np.testing.assert_allclose(fn(*args).numpy(), np_crd(*args, 500),
                                   rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_extreme_scores_and_zero_embeddings_stay_finite(runner):
    t, s, t_rows, s_rows = inputs(4, 6, 5, seed=6)
    s[0] = 0.0
    t_rows[1] = 0.0
    # τ = 1e-3 gives scores up to ±1000 (exp overflows float32), and with
    # tiny normalisers P ≫ c while with huge ones P ≪ c.
    for kwargs in [dict(temperature=1e-3),
                   dict(temperature=1e-3, teacher_normalizer=1e-30,
                        student_normalizer=1e30)]:
        value, grads = value_and_grads(
            lambda *a: crd(*a, dataset_size=1000, **kwargs),
            t, s, t_rows, s_rows, runner=runner)
        assert_finite(value, *grads)
    value, grads = value_and_grads(
        lambda *a: crd(*a, dataset_size=1000), t, s, t_rows, s_rows)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_crd(t, s, t_rows, s_rows, 1000),
                               rtol=1e-5)
    zeros = [np.zeros_like(x) for x in (t, s, t_rows, s_rows)]
    value, grads = value_and_grads(lambda *a: crd(*a, dataset_size=10),
                                   *zeros, runner="eager")
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_crd(*zeros, 10), rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    args = inputs(3, 8, 6, seed=7)
    got = run(crd, *args, dtype=dtype, dataset_size=100)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in args]
    np.testing.assert_allclose(got, np_crd(*rounded, 100), rtol=1e-4)


def test_live_temperature_and_momentum():
    args = inputs(3, 5, 4, seed=8)
    check_live_hyperparameters(
        lambda *a, temperature: crd(*a, dataset_size=100,
                                    temperature=temperature),
        args, dict(temperature=0.07), dict(temperature=0.5))
    check_live_hyperparameters(
        contrastive_memory_update, args[:2], dict(momentum=0.5),
        dict(momentum=0.9))


# ------------------------------------------------------------- golden values
def test_golden_values():
    args = inputs(4, 16, 8, seed=123)
    np.testing.assert_allclose(
        [crd(*args, dataset_size=1000).numpy(),
         crd(*args, dataset_size=50, temperature=0.5, teacher_normalizer=80.0,
             student_normalizer=90.0).numpy(),
         contrastive_normalizer(args[0], args[3], dataset_size=1000).numpy()],
        [26.059868, 9.044973, 448773.53], rtol=1e-5)


# ----------------------------------------------------------------- bad input
ARGS = inputs(2, 3, 4, seed=0)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"dataset_size": 0}, ValueError, r"`dataset_size` must be an integer "
     r">= 1\. Received: dataset_size=0"),
    ({"dataset_size": 10.0}, TypeError, r"`dataset_size`.*Received: "
     r"dataset_size=10\.0"),
    ({"dataset_size": 10, "temperature": 0.0}, ValueError,
     r"`temperature`.*Received: temperature=0\.0"),
    ({"dataset_size": 10, "teacher_normalizer": -1.0}, ValueError,
     r"`teacher_normalizer` must be a finite number > 0\. Received: "
     r"teacher_normalizer=-1\.0"),
    ({"dataset_size": 10, "student_normalizer": tf.ones([2])}, ValueError,
     r"`student_normalizer` must have rank 0"),
])
def test_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        crd(*ARGS, **kwargs)


def test_bad_shapes():
    t, s, t_rows, s_rows = ARGS
    with pytest.raises(ValueError, match=r"`teacher_embeddings` and "
                       r"`student_embeddings` must have the same shape"):
        crd(t, s[:, :3], t_rows, s_rows, dataset_size=10)
    with pytest.raises(ValueError, match=r"`teacher_bank_rows` must hold the "
                       r"positive \(row 0\) and at least one negative.*"
                       r"\(2, 1, 4\)"):
        crd(t, s, t_rows[:, :1], s_rows, dataset_size=10)
    with pytest.raises(ValueError, match=r"`student_bank_rows` must have the "
                       r"batch size and the embedding size of "
                       r"`teacher_embeddings`.*\(2, 4, 3\).*\(2, 4\)"):
        crd(t, s, t_rows, s_rows[..., :3], dataset_size=10)
    with pytest.raises(ValueError, match=r"`teacher_bank_rows` must have "
                       r"rank 3 \(batch, K \+ 1, dim\)"):
        crd(t, s, t_rows[:, 0], s_rows, dataset_size=10)
    with pytest.raises(ValueError, match=r"`bank_rows` and `embeddings` must "
                       r"have the same shape"):
        contrastive_memory_update(t, t[:, :2])
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\]"):
        contrastive_memory_update(t, t, momentum=1.5)
