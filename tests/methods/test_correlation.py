"""Tests of `tfkd.methods.correlation` against a NumPy reference of the
formula in docs/methods/correlation.md."""

import re
from itertools import product

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods import correlation as correlation_module
from tfkd.methods.correlation import CorrelationLoss
from tfkd.methods.correlation import channel_gram
from tfkd.methods.correlation import correlation_loss
from tfkd.methods.correlation import spatial_gram
from tfkd.methods.correlation import standardize



RUNNERS = ["eager", "jit"]
MODES = ["channel", "spatial", "both"]


def cases(every, jit_subset):
    """All `every` cases eagerly, and the `jit_subset` also under XLA (each
    XLA case costs a compile, which dominates the run time)."""
    return ([tuple(c) + ("eager",) for c in every]
            + [tuple(c) + ("jit",) for c in jit_subset])


def run(fn, *args, runner="eager", **kwargs):
    """Calls `fn` eagerly or inside `tf.function(jit_compile=True)`."""
    args = [tf.constant(a) for a in args]
    if runner == "jit":
        return tf.function(lambda *a: fn(*a, **kwargs),
                           jit_compile=True)(*args).numpy()
    return fn(*args, **kwargs).numpy()


_COMPILED = {}


def value_and_student_grad(fn, t, s, runner="eager", **kwargs):
    """Loss and its gradient w.r.t. the student, eagerly or under XLA (the
    compiled function is cached, so same-shape calls compile once)."""
    t, s = tf.constant(t), tf.constant(s)

    def f(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = fn(t, s, **kwargs)
        return loss, tape.gradient(loss, s)

    if runner == "jit":
        key = (fn, tuple(sorted(kwargs.items())))
        f = _COMPILED.setdefault(key, tf.function(f, jit_compile=True))
    loss, grad = f(t, s)
    return loss.numpy(), grad.numpy()


# ---------------- NumPy reference (docs/methods/correlation.md's formula)
def np_matrix(f):
    """One example `(H, W, N)` -> `F` of shape `(M, N)`, rows row-major."""
    h, w, n = f.shape
    F = np.zeros((h * w, n))
    for y in range(h):
        for x in range(w):
            F[y * w + x] = f[y, x]
    return F


def np_channel_gram(features):
    out = []
    for f in np.asarray(features, np.float64):
        F = np_matrix(f)
        n = F.shape[1]
        C = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                C[i, j] = sum(F[k, i] * F[k, j] for k in range(F.shape[0]))
        out.append(C)
    return np.array(out)


def np_spatial_gram(features):
    out = []
    for f in np.asarray(features, np.float64):
        F = np_matrix(f)
        m = F.shape[0]
        S = np.zeros((m, m))
        for i in range(m):
            for j in range(m):
                S[i, j] = np.dot(F[i], F[j])
        out.append(S)
    return np.array(out)


def np_norm(X):
    """Subtract the mean of all elements, divide by their population std."""
    X = np.asarray(X, np.float64)
    std = X.std()
    return np.zeros_like(X) if std == 0 else (X - X.mean()) / std


def np_correlation(t, s, mode):
    def one(gram):
        gt, gs = gram(t), gram(s)
        return np.array([
            np.sqrt(np.sum((np_norm(gs[b]).ravel()
                            - np_norm(gt[b]).ravel()) ** 2))
            for b in range(len(gt))
        ])

    if mode == "channel":
        return one(np_channel_gram)
    if mode == "spatial":
        return one(np_spatial_gram)
    return 0.5 * (one(np_channel_gram) + one(np_spatial_gram))


def features(shape, seed, offset=0.0):
    rng = np.random.RandomState(seed)
    return (rng.randn(*shape) + offset).astype(np.float32)


# ------------------------------------------------------------------ grams
@pytest.mark.parametrize("shape,runner", cases(
    [((1, 2, 2, 3),), ((3, 4, 4, 5),), ((2, 3, 5, 2),)], [((3, 4, 4, 5),)]))
def test_grams_match_reference(shape, runner):
    f = features(shape, seed=0)
    c = run(channel_gram, f, runner=runner)
    s = run(spatial_gram, f, runner=runner)
    m = shape[1] * shape[2]
    assert c.shape == (shape[0], shape[3], shape[3])
    assert s.shape == (shape[0], m, m)
    np.testing.assert_allclose(c, np_channel_gram(f), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s, np_spatial_gram(f), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ standardize
@pytest.mark.parametrize("shape,offset,runner", cases(
    [((1, 5), 0.0), ((3, 4, 4), 0.0), ((2, 6, 6), 100.0)],
    [((2, 6, 6), 100.0)]))
def test_standardize_matches_exact_formula(shape, offset, runner):
    # offset = 100 std: the epsilon guard must still be negligible (<= 1e-6
    # relative) when the mean dominates, as it does for ReLU Grams.
    x = features(shape, seed=1, offset=offset)
    got = run(standardize, x, runner=runner)
    want = np.array([np_norm(e) for e in x.astype(np.float64)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    flat = got.reshape(shape[0], -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_standardize_epsilon_relative_effect_below_1e6(offset):
    # Same float32 arithmetic with and without (epsilon=1e-12) the guard:
    # the ratio isolates the guard's effect, which must stay <= 1e-6 up to
    # a mean of 1000 std (the documented bound).
    x = features((2, 64), seed=2, offset=offset)
    guarded = standardize(x).numpy()
    unguarded = standardize(x, epsilon=1e-12).numpy()
    np.testing.assert_allclose(guarded, unguarded, rtol=1e-6, atol=0)


@pytest.mark.parametrize("value,runner", cases(
    product([0.0, 0.1, 7.3, -2.0, 1e6]), [(0.0,), (7.3,)]))
def test_standardize_constant_gives_zero_and_finite_grad(value, runner):
    x = np.full((2, 4, 4), value, np.float32)
    out, grad = value_and_student_grad(
        lambda _, s: tf.reduce_sum(standardize(s)), x, x, runner=runner)
    np.testing.assert_array_equal(run(standardize, x, runner=runner), 0.0)
    assert np.all(np.isfinite(grad))


# ------------------------------------------------------------ loss values
CASES = [
    # teacher shape, student shape, modes allowed
    ((1, 2, 2, 3), (1, 2, 2, 3), MODES),
    ((3, 4, 4, 5), (3, 4, 4, 5), MODES),
    ((2, 3, 5, 4), (2, 3, 5, 2), ["spatial"]),   # channels differ
    ((2, 4, 4, 3), (2, 2, 2, 3), ["channel"]),   # spatial sizes differ
]


@pytest.mark.parametrize("t_shape,s_shape,mode,runner", cases(
    [(t, s, m) for t, s, modes in CASES for m in modes],
    [(t, s, m) for t, s, modes in CASES[1:] for m in modes],
))
def test_correlation_loss_matches_reference(t_shape, s_shape, mode, runner):
    t = features(t_shape, seed=3)
    s = features(s_shape, seed=4)
    got = run(correlation_loss, t, s, runner=runner, mode=mode)
    assert got.shape == (t_shape[0],)
    np.testing.assert_allclose(got, np_correlation(t, s, mode), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("n", [4, 9])
@pytest.mark.parametrize("mode", MODES)
def test_norm_is_not_squared(n, mode):
    # Teacher F = I (orthonormal channels and positions): both Grams are
    # I_n, whose standardisation has squared norm n². Student: constant
    # map, whose Grams standardise to 0. So the loss is n (linear in n); a
    # squared norm would give n².
    side = int(np.sqrt(n))
    t = np.eye(n, dtype=np.float32).reshape(1, side, side, n)
    s = np.ones((1, side, side, n), np.float32)
    np.testing.assert_allclose(correlation_loss(t, s, mode=mode).numpy(),
                               [float(n)], rtol=1e-5)
    np.testing.assert_allclose(correlation_loss(s, t, mode=mode).numpy(),
                               [float(n)], rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_invariant_to_feature_scale(mode):
    # The Grams are standardised, so scaling either side changes nothing.
    t = features((2, 3, 3, 4), seed=5)
    s = features((2, 3, 3, 4), seed=6)
    base = correlation_loss(t, s, mode=mode).numpy()
    for ct, cs in [(1e-3, 1.0), (1.0, 250.0), (7.0, 0.01)]:
        np.testing.assert_allclose(
            correlation_loss(ct * t, cs * s, mode=mode).numpy(), base,
            rtol=1e-4, atol=1e-5)


# ------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("mode", MODES)
def test_identical_features_zero_loss_and_zero_grad(mode, runner):
    t = features((2, 3, 3, 4), seed=7)
    loss, grad = value_and_student_grad(correlation_loss, t, t,
                                        runner=runner, mode=mode)
    np.testing.assert_allclose(loss, 0.0, atol=1e-6)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("mode", MODES)
def test_all_zero_feature_maps(mode, runner):
    zeros = np.zeros((2, 3, 3, 4), np.float32)
    s = features((2, 3, 3, 4), seed=8)
    # Both zero: loss 0, gradient 0.
    loss, grad = value_and_student_grad(correlation_loss, zeros, zeros,
                                        runner=runner, mode=mode)
    np.testing.assert_array_equal(loss, 0.0)
    np.testing.assert_array_equal(grad, 0.0)
    # Zero teacher: its Grams standardise to 0, so the loss is the norm of
    # the student's standardised Grams, sqrt(#elements): N = 4 and M = 9.
    loss, grad = value_and_student_grad(correlation_loss, zeros, s,
                                        runner=runner, mode=mode)
    want = {"channel": 4.0, "spatial": 9.0, "both": 6.5}[mode]
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert np.all(np.isfinite(grad))
    # Zero student: finite gradient too.
    loss, grad = value_and_student_grad(correlation_loss, s, zeros,
                                        runner=runner, mode=mode)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("mode", MODES)
def test_constant_feature_maps_stay_finite(mode):
    t = np.full((2, 3, 3, 4), 0.7, np.float32)
    s = np.full((2, 3, 3, 4), 3.0, np.float32)
    loss, grad = value_and_student_grad(correlation_loss, t, s, mode=mode)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, 0.0, atol=1e-3)


def test_gradient_matches_finite_differences():
    t = features((1, 2, 2, 3), seed=9).astype(np.float64)
    s = features((1, 2, 2, 3), seed=10).astype(np.float64)
    _, grad = value_and_student_grad(
        lambda a, b: tf.reduce_sum(correlation_loss(a, b)), t, s)
    h = 1e-3
    fd = np.zeros_like(s)
    for idx in np.ndindex(s.shape):
        sp, sm = s.copy(), s.copy()
        sp[idx] += h
        sm[idx] -= h
        fd[idx] = (np_correlation(t, sp, "both")[0]
                   - np_correlation(t, sm, "both")[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-3)


# ------------------------------------------------------------ golden values
def test_golden_values():
    t = features((2, 3, 3, 4), seed=11)
    s = features((2, 3, 3, 4), seed=12)
    golden = {
        "channel": [4.223516, 2.3301158],
        "spatial": [11.334691, 11.390731],
        "both": [7.7791033, 6.860423],
    }
    for mode, want in golden.items():
        np.testing.assert_allclose(correlation_loss(t, s, mode=mode).numpy(),
                                   want, rtol=1e-5)


# ----------------------------------------------- kernel form (no big Gram)
# `correlation_loss` computes each distance through Q × Q products when
# they are cheaper than the P × P Grams (module docstring). These tests
# compare it with the direct formula on shapes that select either form.

def np_direct(t, s, mode):
    """docs/methods/correlation.md's formula in float64, vectorised (Grams by matrix product)."""
    t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)

    def grams(f, gram):
        F = f.reshape(f.shape[0], -1, f.shape[3])
        spec = "bmi,bmj->bij" if gram == "channel" else "bic,bjc->bij"
        return np.einsum(spec, F, F)

    def one(gram):
        return np.array([np.linalg.norm(np_norm(a) - np_norm(b))
                         for a, b in zip(grams(s, gram), grams(t, gram))])

    if mode == "both":
        return 0.5 * (one("channel") + one("spatial"))
    return one(mode)


def tf_direct(t, s, mode):
    """The direct formula in float64 TensorFlow, for reference gradients."""
    t, s = tf.cast(t, tf.float64), tf.cast(s, tf.float64)

    def norm(x):
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        centred = x - tf.reduce_mean(x, axis=1, keepdims=True)
        return centred / tf.sqrt(
            tf.reduce_mean(tf.square(centred), axis=1, keepdims=True))

    def gram(f, kind):
        f = tf.reshape(f, [tf.shape(f)[0], -1, f.shape[3]])
        return tf.matmul(f, f, transpose_a=kind == "channel",
                         transpose_b=kind == "spatial")

    def one(kind):
        return tf.norm(norm(gram(s, kind)) - norm(gram(t, kind)), axis=1)

    if mode == "both":
        return 0.5 * (one("channel") + one("spatial"))
    return one(mode)


def relu_features(shape, seed, offset=0.5):
    """Non-negative, mean-dominated maps like a ReLU layer's."""
    return np.maximum(features(shape, seed, offset=offset), 0.0)


# teacher shape, student shape, modes; the comment says which form each
# Gram takes (channel: P = N, Q = H·W; spatial: P = H·W, Q = N).
KERNEL_CASES = [
    ((2, 2, 2, 48), (2, 2, 2, 48), MODES),       # M ≪ N: channel kernel
    ((2, 8, 8, 3), (2, 8, 8, 3), MODES),         # N ≪ M: spatial kernel
    ((2, 4, 4, 10), (2, 4, 4, 10), MODES),       # M ≈ N: spatial kernel
    ((2, 4, 4, 16), (2, 4, 4, 16), MODES),       # M = N: both direct
    ((2, 8, 8, 6), (2, 8, 8, 3), ["spatial"]),   # N_T ≠ N_S, kernel
    ((2, 4, 4, 40), (2, 2, 2, 40), ["channel"]),  # M_T ≠ M_S, kernel
    ((1, 3, 3, 32), (1, 3, 3, 32), MODES),       # batch 1
]


def test_form_is_chosen_by_shape():
    form = correlation_module._gram_form
    assert form((2, 2, 2, 48), (2, 2, 2, 48), "channel") == "kernel"
    assert form((2, 2, 2, 48), (2, 2, 2, 48), "spatial") == "direct"
    assert form((2, 8, 8, 3), (2, 8, 8, 3), "channel") == "direct"
    assert form((2, 8, 8, 3), (2, 8, 8, 3), "spatial") == "kernel"
    assert form((2, 4, 4, 16), (2, 4, 4, 16), "spatial") == "direct"
    assert form((2, 8, 8, 6), (2, 8, 8, 3), "spatial") == "kernel"
    # Unknown sizes: the direct form, which needs no decision.
    assert form((None, None, None, 3), (None, None, None, 3),
                "spatial") == "direct"


@pytest.mark.parametrize("t_shape,s_shape,mode,runner", cases(
    [(t, s, m) for t, s, modes in KERNEL_CASES for m in modes],
    # Under XLA (a compile each): both kernel forms, unequal sides.
    [KERNEL_CASES[0][:2] + ("both",), KERNEL_CASES[4][:2] + ("spatial",),
     KERNEL_CASES[5][:2] + ("channel",)],
))
def test_matches_direct_formula(t_shape, s_shape, mode, runner):
    t = relu_features(t_shape, seed=20)
    s = relu_features(s_shape, seed=21)
    got = run(correlation_loss, t, s, runner=runner, mode=mode)
    assert got.shape == (t_shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(got, np_direct(t, s, mode), rtol=1e-5)


@pytest.mark.parametrize("t_shape,s_shape,mode,dtype", [
    ((2, 2, 2, 48), (2, 2, 2, 48), "both", "float16"),
    ((2, 8, 8, 6), (2, 8, 8, 3), "spatial", "bfloat16"),
])
def test_low_precision_inputs_compute_in_float32(t_shape, s_shape, mode,
                                                 dtype):
    # The loss of the low-precision inputs, computed in float32 (a float16
    # or bfloat16 Gram would be off by ~1e-3), under XLA.
    t = tf.cast(relu_features(t_shape, seed=22), dtype)
    s = tf.cast(relu_features(s_shape, seed=23), dtype)
    got = tf.function(lambda a, b: correlation_loss(a, b, mode=mode),
                      jit_compile=True)(t, s)
    assert got.dtype == tf.float32
    want = np_direct(tf.cast(t, tf.float64).numpy(),
                     tf.cast(s, tf.float64).numpy(), mode)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("shape,gram", [
    ((2, 4, 4, 16), "channel"), ((2, 4, 4, 16), "spatial"),  # M = N
    ((2, 2, 2, 8), "spatial"),    # N > M: where the direct form is chosen
    ((2, 1, 1, 5), "spatial"),    # a 1 × 1 Gram standardises to 0
])
def test_kernel_form_exact_on_any_shape(shape, gram):
    # The form choice is only about cost: forced on shapes where the
    # direct form is chosen, the kernel form is still exact.
    t = relu_features(shape, seed=24)
    s = features(shape, seed=25)
    flat = correlation_module._flatten_features
    got = correlation_module._kernel_distance(
        flat(tf.constant(t)), flat(tf.constant(s)), gram).numpy()
    np.testing.assert_allclose(got, np_direct(t, s, gram), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("t_shape,s_shape,mode,runner", [
    ((2, 2, 2, 48), (2, 2, 2, 48), "channel", "eager"),
    ((2, 8, 8, 6), (2, 8, 8, 3), "spatial", "eager"),
    ((2, 4, 4, 40), (2, 2, 2, 40), "channel", "eager"),
    ((1, 3, 3, 32), (1, 3, 3, 32), "both", "eager"),
    ((2, 8, 8, 6), (2, 8, 8, 3), "spatial", "jit"),
])
def test_gradient_matches_direct_form(t_shape, s_shape, mode, runner):
    t = relu_features(t_shape, seed=26)
    s = relu_features(s_shape, seed=27)
    _, grad = value_and_student_grad(correlation_loss, t, s, runner=runner,
                                     mode=mode)
    _, want = value_and_student_grad(tf_direct, t, s.astype(np.float64),
                                     mode=mode)
    np.testing.assert_allclose(grad, want, rtol=0,
                               atol=2e-5 * np.max(np.abs(want)))


@pytest.mark.parametrize("shape,mode,delta,runner", cases(
    [(shape, mode, delta)
     for shape, mode in [((2, 2, 2, 48), "channel"), ((2, 8, 8, 3), "spatial")]
     for delta in (1e-3, 1e-5)],
    [((2, 2, 2, 48), "channel", 1e-5), ((2, 8, 8, 3), "spatial", 1e-5)],
))
def test_near_identical_features_accurate(shape, mode, delta, runner):
    # Student = teacher + a small perturbation: the distance is small and
    # the kernel form's terms (near 1) cancel; in float32 alone it would
    # be off by ~100% at delta = 1e-5. The float64 recomputation keeps
    # value and gradient as accurate as the direct formula in float64.
    t = relu_features(shape, seed=28)
    s = (t + delta * features(shape, seed=29)).astype(np.float32)
    loss, grad = value_and_student_grad(correlation_loss, t, s,
                                        runner=runner, mode=mode)
    want, want_grad = value_and_student_grad(
        tf_direct, t.astype(np.float64), s.astype(np.float64), mode=mode)
    assert np.all(loss > 0)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    np.testing.assert_allclose(grad, want_grad, rtol=0,
                               atol=1e-3 * np.max(np.abs(want_grad)))


@pytest.mark.parametrize("shape,mode,runner", cases(
    [((2, 2, 2, 48), "channel"), ((2, 8, 8, 3), "spatial"),
     ((2, 2, 2, 48), "both")],
    [((2, 2, 2, 48), "channel"), ((2, 8, 8, 3), "spatial")],
))
def test_kernel_identical_features_exact_zero(shape, mode, runner):
    t = relu_features(shape, seed=30)
    loss, grad = value_and_student_grad(correlation_loss, t, t.copy(),
                                        runner=runner, mode=mode)
    np.testing.assert_array_equal(loss, 0.0)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("shape,mode,p", [
    ((2, 2, 2, 48), "channel", 48), ((2, 8, 8, 3), "spatial", 64),
])
def test_kernel_zero_and_constant_maps(shape, mode, p, runner):
    rand = relu_features(shape, seed=31)
    zeros = np.zeros(shape, np.float32)
    const_a = np.full(shape, 0.7, np.float32)
    const_b = np.full(shape, 3.0, np.float32)
    # A Gram that standardises to 0 leaves the norm of the other side's
    # standardised Gram: sqrt(#elements) = P. The spatial Gram of a
    # constant map is constant; its channel Gram is not (use zeros).
    zero_like = zeros if mode == "channel" else const_a
    for t, s, want in [(zeros, zeros, 0.0), (const_a, const_b, 0.0),
                       (zero_like, rand, p), (rand, zero_like, p),
                       (zeros, rand, p)]:
        loss, grad = value_and_student_grad(correlation_loss, t, s,
                                            runner=runner, mode=mode)
        np.testing.assert_allclose(loss, want, rtol=1e-5, atol=0)
        assert np.all(np.isfinite(grad))
        if want == 0.0:
            np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("scale", [1e-4, 1e5])
@pytest.mark.parametrize("shape,mode", [
    ((2, 2, 2, 48), "channel"), ((2, 8, 8, 3), "spatial"),
])
def test_kernel_large_and_small_magnitudes(shape, mode, scale):
    # Gram entries of 1e5-sized features reach 1e12 and their squares
    # 1e24 (float32 overflows at 3e38); each side is rescaled first.
    t = relu_features(shape, seed=32)
    s = features(shape, seed=33)
    loss, grad = value_and_student_grad(
        correlation_loss, scale * t, (scale * s).astype(np.float32),
        mode=mode)
    np.testing.assert_allclose(loss, np_direct(t, s, mode), rtol=1e-5)
    assert np.all(np.isfinite(grad))


def compiled_shapes(fn, *args):
    """Shapes of every array in the HLO of `fn` (loss + gradient) under
    XLA, conditional branches included."""
    def loss_and_grad(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = fn(t, s)
        return loss, tape.gradient(loss, s)

    hlo = tf.function(loss_and_grad, jit_compile=True) \
        .experimental_get_compiler_ir(*args)(stage="hlo")
    return set(re.findall(r"[a-z]+\d+\[([\d,]*)\]", hlo))


@pytest.mark.parametrize("shape,mode,big", [
    ((2, 2, 2, 96), "channel", 96),   # no 96 × 96 channel Gram
    ((2, 16, 16, 3), "spatial", 256),  # no 256 × 256 spatial Gram
    ((2, 2, 2, 96), "both", 96),
])
def test_no_large_gram_is_built(shape, mode, big):
    t = tf.constant(features(shape, seed=34))
    s = tf.constant(features(shape, seed=35))
    gram = f"{shape[0]},{big},{big}"
    # The detector works: the direct form does build that Gram ...
    direct_mode = "spatial" if mode == "spatial" else "channel"
    direct = compiled_shapes(
        lambda a, b: correlation_module._direct_distance(
            a, b, direct_mode, 4096), t, s)
    assert gram in direct
    # ... and correlation_loss, value and gradient, does not.
    shapes = compiled_shapes(
        lambda a, b: correlation_loss(a, b, mode=mode), t, s)
    assert gram not in shapes
    assert max(int(d) for dims in shapes for d in dims.split(",") if d) \
        <= max(big, shape[1] * shape[2] * shape[3])


# ---------------------------------------------------------- Keras wrapper
def test_keras_wrapper_reduction_and_config():
    t = features((3, 2, 2, 3), seed=13)
    s = features((3, 2, 2, 3), seed=14)
    loss = CorrelationLoss(mode="channel")
    np.testing.assert_allclose(
        float(loss(t, s)),
        np.mean(correlation_loss(t, s, mode="channel").numpy()), rtol=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, CorrelationLoss)
    assert restored.get_config() == loss.get_config()
    assert restored.mode == "channel"
    with pytest.raises(ValueError, match="mode"):
        CorrelationLoss(mode="gram")


# --------------------------------------------------------------- bad input
def test_bad_mode():
    f = features((1, 2, 2, 3), seed=0)
    with pytest.raises(ValueError, match=r"mode.*Received: mode='Channel'"):
        correlation_loss(f, f, mode="Channel")


def test_channel_mismatch_names_shapes_and_adapter():
    t = np.zeros((2, 4, 4, 8), np.float32)
    s = np.zeros((2, 4, 4, 3), np.float32)
    for mode in ("channel", "both"):
        with pytest.raises(ValueError,
                           match="pass adapter=True to the distiller") as e:
            correlation_loss(t, s, mode=mode)
        msg = str(e.value)
        assert "(2, 4, 4, 8)" in msg and "(2, 4, 4, 3)" in msg
        assert "pass adapter=True to the distiller" in msg
    assert correlation_loss(t, s, mode="spatial").shape == (2,)


def test_spatial_mismatch_names_shapes_and_adapter():
    t = np.zeros((2, 4, 4, 3), np.float32)
    s = np.zeros((2, 2, 4, 3), np.float32)
    for mode in ("spatial", "both"):
        with pytest.raises(ValueError,
                           match="pass adapter=True to the distiller") as e:
            correlation_loss(t, s, mode=mode)
        msg = str(e.value)
        assert "(2, 4, 4, 3)" in msg and "(2, 2, 4, 3)" in msg
        assert "pass adapter=True to the distiller" in msg
    assert correlation_loss(t, s, mode="channel").shape == (2,)


def test_max_spatial_positions():
    big = tf.zeros((1, 65, 65, 1))  # 4225 positions > 4096.
    with pytest.raises(ValueError, match="max_spatial_positions=4096") as e:
        spatial_gram(big)  # Always builds the M × M Gram.
    assert "Pool" in str(e.value) and "(1, 65, 65, 1)" in str(e.value)
    # One channel: the spatial loss takes the kernel form (a 1 × 1
    # product), builds no M × M Gram, so nothing is refused.
    for mode in MODES:
        np.testing.assert_array_equal(
            correlation_loss(big, big, mode=mode).numpy(), [0.0])
    # As many channels as positions: the direct form (M × M Grams) is the
    # cheaper one, so the limit applies to it.
    wide = features((1, 3, 3, 8), seed=0)
    for mode in ("spatial", "both"):
        with pytest.raises(ValueError, match="max_spatial_positions=8") \
                as e:
            correlation_loss(wide, wide, mode=mode, max_spatial_positions=8)
        assert "(1, 3, 3, 8)" in str(e.value) and "Pool" in str(e.value)
    assert correlation_loss(wide, wide, mode="channel",
                            max_spatial_positions=8).shape == (1,)
    assert correlation_loss(wide, wide, max_spatial_positions=9).shape \
        == (1,)
    # Few channels: kernel form, accepted whatever the limit.
    narrow = features((1, 3, 3, 2), seed=0)
    assert correlation_loss(narrow, narrow, mode="spatial",
                            max_spatial_positions=1).shape == (1,)
    with pytest.raises(ValueError, match="max_spatial_positions"):
        correlation_loss(narrow, narrow, max_spatial_positions=0)


def test_wrong_rank_and_batch():
    with pytest.raises(ValueError, match="teacher_features.*rank 4"):
        correlation_loss(np.zeros((2, 4, 3)), np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="features.*rank 4"):
        channel_gram(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="batch size"):
        correlation_loss(np.zeros((2, 2, 2, 3)), np.zeros((3, 2, 2, 3)))


def test_non_numeric_input():
    f = np.zeros((1, 2, 2, 1), np.float32)
    with pytest.raises(TypeError, match="teacher_features"):
        correlation_loss([[[["a"]]]], f)
    with pytest.raises(TypeError, match="student_features"):
        correlation_loss(f, object())
