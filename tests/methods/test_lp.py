"""Tests of `tfkd.methods.lp` (LP loss) against a NumPy reference."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.lp import locality_preserving_loss



RUNNERS = ["eager", "jit"]


# ------------------------- NumPy reference (docs/methods/lp.md's formula)
def np_lp_weights(t, k, sigma=None):
    """The `m × m` matrix of `a_ij` (0 outside the kNN of `i`)."""
    ft = np.asarray(t, np.float64).reshape(len(t), -1)
    m = len(ft)
    d_t = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            d_t[i, j] = np.sum((ft[i] - ft[j]) ** 2)
    k_eff = min(k, m - 1)
    # N(i): the k nearest j != i; equal distances -> lower index first.
    neighbours = [sorted((j for j in range(m) if j != i),
                         key=lambda j: (d_t[i, j], j))[:k_eff]
                  for i in range(m)]
    pairs = [(i, j) for i in range(m) for j in neighbours[i]]
    if sigma is None:
        sigma_sq = np.mean([d_t[i, j] for i, j in pairs]) if pairs else 0.0
    else:
        sigma_sq = sigma**2
    a = np.zeros((m, m))
    for i, j in pairs:
        a[i, j] = 1.0 if sigma_sq == 0 else math.exp(-d_t[i, j] / sigma_sq)
    return a


def np_lp(t, s, k, sigma=None):
    a = np_lp_weights(t, k, sigma)
    fs = np.asarray(s, np.float64).reshape(len(s), -1)
    m = len(fs)
    total = 0.0
    for i in range(m):
        for j in range(m):
            if a[i, j]:
                total += a[i, j] * np.sum((fs[i] - fs[j]) ** 2)
    return total / (2 * m)


def np_lp_student_grad(t, s, k, sigma=None):
    """dL/df_S^i = (1/m) Σ_j (a_ij + a_ji)(f_S^i − f_S^j)."""
    a = np_lp_weights(t, k, sigma)
    fs = np.asarray(s, np.float64).reshape(len(s), -1)
    m = len(fs)
    g = np.zeros_like(fs)
    for i in range(m):
        for j in range(m):
            g[i] += (a[i, j] + a[j, i]) * (fs[i] - fs[j]) / m
    return g.reshape(np.shape(s))


def run(t, s, runner="eager", **kwargs):
    t, s = tf.constant(t), tf.constant(s)
    fn = lambda a, b: locality_preserving_loss(a, b, **kwargs)  # noqa: E731
    if runner == "jit":
        fn = tf.function(fn, jit_compile=True)
    return fn(t, s).numpy()


def grads(t, s, runner="eager", **kwargs):
    t, s = tf.constant(t), tf.constant(s)

    def f(t, s):
        with tf.GradientTape() as tape:
            tape.watch([t, s])
            loss = locality_preserving_loss(t, s, **kwargs)
        g_t, g_s = tape.gradient(loss, [t, s])
        return loss, (tf.zeros([0]) if g_t is None else g_t), g_s

    if runner == "jit":
        f = tf.function(f, jit_compile=True)
    return [x.numpy() for x in f(t, s)]


def features(shape, seed):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


SHAPES = [
    # teacher, student (d_T != d_S allowed)
    ((1, 3), (1, 2)),
    ((2, 4), (2, 4)),
    ((6, 3, 3, 2), (6, 5)),
    ((10, 8), (10, 3)),
]


def cases(every, jit_subset):
    """All `every` cases eagerly, and the `jit_subset` also under XLA (each
    XLA case costs a compile, which dominates the run time)."""
    return ([tuple(c) + ("eager",) for c in every]
            + [tuple(c) + ("jit",) for c in jit_subset])


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("t_shape,s_shape,k,sigma,runner", cases(
    [(t, s, k, sigma) for t, s in SHAPES for k in (1, 5, 50)
     for sigma in (None, 2.5)],
    [(*SHAPES[0], 5, None)]
    + [(t, s, k, None) for t, s in SHAPES[2:] for k in (1, 5, 50)],
))
def test_matches_reference(t_shape, s_shape, k, sigma, runner):
    t, s = features(t_shape, seed=0), features(s_shape, seed=1)
    got = run(t, s, runner=runner, k=k, sigma=sigma)
    assert got.shape == ()
    np.testing.assert_allclose(got, np_lp(t, s, k, sigma), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("sigma", [None, 0.7])
def test_student_gradient_only(sigma, runner):
    t, s = features((8, 6), seed=2), features((8, 2, 2), seed=3)
    _, g_t, g_s = grads(t, s, runner=runner, k=3, sigma=sigma)
    # The teacher side carries no gradient (None, reported here as empty).
    assert g_t.size == 0 or np.all(g_t == 0)
    np.testing.assert_allclose(g_s, np_lp_student_grad(t, s, 3, sigma),
                               rtol=1e-4, atol=1e-5)


def test_batch_of_one_is_zero():
    for k in (1, 5):
        loss, _, g_s = grads(features((1, 4), 0), features((1, 3), 1), k=k)
        assert loss == 0.0
        np.testing.assert_array_equal(g_s, 0.0)


def test_batch_of_two():
    # k is clipped to 1; σ² = D_T, so a = e^-1 and L = e^-1 · D_S / 2.
    t = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)    # D_T = 25
    s = np.array([[1.0], [3.0]], np.float32)              # D_S = 4
    np.testing.assert_allclose(
        run(t, s, k=5), math.exp(-1) * 4 / 2, rtol=1e-6)
    np.testing.assert_allclose(
        run(t, s, k=1, sigma=5.0), math.exp(-1) * 4 / 2, rtol=1e-6)
    np.testing.assert_allclose(
        run(t, s, k=1, sigma=10.0), math.exp(-0.25) * 4 / 2, rtol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_ties_resolved_by_index(k, runner):
    # One-hot teacher rows: every pair is at distance 2, exactly. N(i) must
    # then be the k lowest indices != i, eagerly and under XLA.
    t = np.eye(7, dtype=np.float32)
    s = features((7, 3), seed=4)
    np.testing.assert_allclose(run(t, s, runner=runner, k=k),
                               np_lp(t, s, k), rtol=1e-5)
    # Sanity: a different tie-break (highest indices) would change the loss.
    a = np.zeros((7, 7))
    for i in range(7):
        for j in [j for j in range(6, -1, -1) if j != i][:k]:
            a[i, j] = math.exp(-1)
    other = sum(a[i, j] * np.sum((s[i] - s[j]) ** 2)
                for i in range(7) for j in range(7)) / 14
    assert not np.isclose(np_lp(t, s, k), other)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch_under_jit(runner):
    fn = tf.function(
        lambda t, s: locality_preserving_loss(t, s, k=5),
        jit_compile=runner == "jit",
        input_signature=[tf.TensorSpec([None, 6]), tf.TensorSpec([None, 3])],
    )
    t, s = features((9, 6), seed=5), features((9, 3), seed=6)
    for m in (1, 2, 4, 9):
        np.testing.assert_allclose(fn(t[:m], s[:m]).numpy(),
                                   np_lp(t[:m], s[:m], 5), rtol=1e-4,
                                   atol=1e-7)


# -------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_identical_teacher_samples(runner):
    # All D_T = 0, so σ² = 0: the weights must be 1, not NaN.
    t = np.full((6, 4), 3.3, np.float32)
    s = features((6, 2), seed=7)
    loss, _, g_s = grads(t, s, runner=runner, k=2)
    assert np.isfinite(loss) and np.all(np.isfinite(g_s))
    np.testing.assert_allclose(loss, np_lp(t, s, 2), rtol=1e-5)
    np.testing.assert_allclose(g_s, np_lp_student_grad(t, s, 2), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_all_zero_and_identical_student(runner):
    zeros = np.zeros((5, 4), np.float32)
    loss, _, g_s = grads(zeros, zeros, runner=runner)
    assert loss == 0.0 and np.all(g_s == 0.0)
    t = features((5, 4), seed=8)
    loss, _, g_s = grads(t, np.ones((5, 3), np.float32), runner=runner)
    assert loss == 0.0 and np.all(np.isfinite(g_s))


def test_large_distances_stay_finite():
    t = 1e4 * features((6, 5), seed=9)
    s = 1e3 * features((6, 5), seed=10)
    loss, _, g_s = grads(t, s, sigma=1e-3)  # every weight underflows to 0
    assert loss == 0.0 and np.all(np.isfinite(g_s))
    loss, _, g_s = grads(t, s)
    assert np.isfinite(loss) and np.all(np.isfinite(g_s))
    np.testing.assert_allclose(loss, np_lp(t, s, 5), rtol=1e-3)


# ------------------------------------------------------------ golden values
def test_golden_values():
    t, s = features((8, 2, 2, 3), seed=11), features((8, 5), seed=12)
    np.testing.assert_allclose(
        [run(t, s, k=5), run(t, s, k=2, sigma=3.0), run(t, s, k=1)],
        [8.751047, 1.8330073, 1.0516154], rtol=1e-5)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("k,error", [(0, ValueError), (-3, ValueError),
                                     (2.5, TypeError), (True, TypeError),
                                     ("5", TypeError)])
def test_bad_k(k, error):
    f = features((4, 2), 0)
    with pytest.raises(error, match=r"`k`.*Received: k="):
        locality_preserving_loss(f, f, k=k)


@pytest.mark.parametrize("sigma,error", [(0.0, ValueError), (-1.0, ValueError),
                                         (float("inf"), ValueError),
                                         ("1", TypeError)])
def test_bad_sigma(sigma, error):
    f = features((4, 2), 0)
    with pytest.raises(error, match=r"`sigma`.*Received: sigma="):
        locality_preserving_loss(f, f, sigma=sigma)


def test_batch_mismatch_and_rank():
    with pytest.raises(ValueError, match="batch size") as e:
        locality_preserving_loss(np.zeros((4, 3)), np.zeros((5, 3)))
    assert "(4, 3)" in str(e.value) and "(5, 3)" in str(e.value)
    assert "batch size" in str(e.value)
    with pytest.raises(ValueError, match="teacher_features.*rank >= 2"):
        locality_preserving_loss(np.zeros((4,)), np.zeros((4, 3)))


def test_non_numeric_input():
    with pytest.raises(TypeError, match="student_features"):
        locality_preserving_loss(np.zeros((2, 2)), [["a", "b"], ["c", "d"]])
