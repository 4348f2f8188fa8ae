"""Tests of `tfkd.methods.attention` against a NumPy reference of the
formula in docs/methods/attention.md."""

from itertools import product

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.attention import AttentionTransferLoss
from tfkd.methods.attention import attention_map
from tfkd.methods.attention import attention_transfer_loss



RUNNERS = ["eager", "jit"]
AT_SHAPES = [
    ((1, 2, 2, 3), (1, 2, 2, 5)),
    ((3, 4, 4, 8), (3, 4, 4, 2)),   # channel counts may differ
    ((2, 3, 5, 4), (2, 3, 5, 4)),
]


def cases(every, jit_subset):
    """All `every` cases eagerly, and the `jit_subset` also under XLA (each
    XLA case costs a compile, which dominates the run time)."""
    return ([tuple(c) + ("eager",) for c in every]
            + [tuple(c) + ("jit",) for c in jit_subset])


def run(fn, *args, runner="eager", **kwargs):
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


# ------------------ NumPy reference (docs/methods/attention.md's formula)
def np_attention(features, p):
    """Q = Σ_c |F_c|^p, flattened row-major, divided by its L2 norm."""
    out = []
    for f in np.asarray(features, np.float64):
        h, w, c = f.shape
        q = np.zeros(h * w)
        for y in range(h):
            for x in range(w):
                q[y * w + x] = sum(abs(f[y, x, k]) ** p for k in range(c))
        norm = np.sqrt(np.sum(q**2))
        out.append(q / norm if norm > 0 else q)
    return np.array(out)


def np_at(t, s, p, mode):
    d = np_attention(s, p) - np_attention(t, p)
    if mode == "code":
        return np.array([np.mean(row**2) for row in d])
    return np.array([np.sqrt(np.sum(row**2)) for row in d])


def features(shape, seed):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("shape,p,runner", cases(
    product([(1, 2, 2, 3), (3, 4, 4, 8), (2, 3, 5, 1)], [1, 2, 3.5]),
    product([(3, 4, 4, 8)], [2, 3.5])))
def test_attention_map_matches_reference(shape, p, runner):
    f = features(shape, seed=0)
    got = run(attention_map, f, runner=runner, p=p)
    assert got.shape == (shape[0], shape[1] * shape[2])
    np.testing.assert_allclose(got, np_attention(f, p), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("t_shape,s_shape,p,mode,runner", cases(
    [(t, s, p, m) for t, s in AT_SHAPES for p in (1, 2)
     for m in ("code", "paper")],
    [(*AT_SHAPES[1], 2, "code"), (*AT_SHAPES[1], 2, "paper"),
     (*AT_SHAPES[0], 1, "paper")],
))
def test_loss_matches_reference(t_shape, s_shape, p, mode, runner):
    t, s = features(t_shape, seed=1), features(s_shape, seed=2)
    got = run(attention_transfer_loss, t, s, runner=runner, p=p, mode=mode)
    assert got.shape == (t_shape[0],)
    np.testing.assert_allclose(got, np_at(t, s, p, mode), rtol=1e-4,
                               atol=1e-7)


def test_code_and_paper_forms_relation():
    # code = ‖d‖² / (H·W), paper = ‖d‖: code == paper² / positions.
    t, s = features((3, 4, 5, 6), seed=3), features((3, 4, 5, 2), seed=4)
    code = attention_transfer_loss(t, s, mode="code").numpy()
    paper = attention_transfer_loss(t, s, mode="paper").numpy()
    np.testing.assert_allclose(code, paper**2 / 20, rtol=1e-5)


def test_invariant_to_feature_scale():
    t, s = features((2, 3, 3, 4), seed=5), features((2, 3, 3, 4), seed=6)
    base = attention_transfer_loss(t, s).numpy()
    np.testing.assert_allclose(
        attention_transfer_loss(1e3 * t, 1e-2 * s).numpy(), base, rtol=1e-4)


# -------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("mode", ["code", "paper"])
def test_identical_features_zero_loss_and_grad(mode, runner):
    t = features((2, 3, 3, 4), seed=7)
    loss, grad = value_and_student_grad(attention_transfer_loss, t, t,
                                        runner=runner, mode=mode)
    np.testing.assert_allclose(loss, 0.0, atol=1e-7)
    assert np.all(np.isfinite(grad))
    if runner == "eager" or mode == "code":
        np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    # Under XLA the two sides may be fused differently and differ by
    # round-off; the paper form's norm then has its true slope (a unit
    # direction), which is finite but not zero.


@pytest.mark.parametrize("p,mode,runner", cases(
    product([0.5, 1, 2], ["code", "paper"]),
    product([0.5], ["code", "paper"])))
def test_all_zero_feature_maps(p, mode, runner):
    zeros = np.zeros((2, 3, 3, 4), np.float32)
    s = features((2, 3, 3, 4), seed=8)
    s[0, 0, 0] = 0.0  # exact zeros inside a non-zero map too
    np.testing.assert_array_equal(run(attention_map, zeros, p=p), 0.0)
    for a, b in [(zeros, zeros), (zeros, s), (s, zeros)]:
        loss, grad = value_and_student_grad(attention_transfer_loss, a, b,
                                            runner=runner, p=p, mode=mode)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    # A zero teacher map gives q_T = 0, so the loss is ‖q_S‖² / M = 1 / 9
    # (code) or ‖q_S‖ = 1 (paper).
    loss, _ = value_and_student_grad(attention_transfer_loss, zeros, s,
                                     p=p, mode=mode)
    np.testing.assert_allclose(loss, 1 / 9 if mode == "code" else 1.0,
                               rtol=1e-5)


# ------------------------------------------------------------ golden values
def test_golden_values():
    t, s = features((2, 3, 3, 4), seed=11), features((2, 3, 3, 2), seed=12)
    np.testing.assert_allclose(
        attention_transfer_loss(t, s).numpy(), [0.13220745, 0.1017945],
        rtol=1e-5)
    np.testing.assert_allclose(
        attention_transfer_loss(t, s, p=1, mode="paper").numpy(),
        [0.7484368, 0.6835806], rtol=1e-5)


# ----------------------------------------------------------- Keras wrapper
def test_keras_wrapper():
    t, s = features((3, 2, 2, 4), seed=13), features((3, 2, 2, 2), seed=14)
    loss = AttentionTransferLoss(p=1, mode="paper")
    np.testing.assert_allclose(
        float(loss(t, s)), np_at(t, s, 1, "paper").mean(), rtol=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, AttentionTransferLoss)
    assert restored.get_config() == loss.get_config()
    assert (restored.p, restored.mode) == (1.0, "paper")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("p", [0, -2.0, float("nan")])
def test_bad_p(p):
    f = features((1, 2, 2, 3), seed=0)
    with pytest.raises(ValueError, match="`p`.*Received: p="):
        attention_transfer_loss(f, f, p=p)
    with pytest.raises(ValueError, match="`p`"):
        attention_map(f, p=p)
    with pytest.raises(ValueError, match="`p`"):
        AttentionTransferLoss(p=p)


def test_non_numeric_p():
    f = features((1, 2, 2, 3), seed=0)
    with pytest.raises(TypeError, match="`p`"):
        attention_transfer_loss(f, f, p="2")


def test_bad_mode():
    f = features((1, 2, 2, 3), seed=0)
    with pytest.raises(ValueError, match="Received: mode='mse'"):
        attention_transfer_loss(f, f, mode="mse")


def test_spatial_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 3\)") as e:
        attention_transfer_loss(np.zeros((2, 4, 4, 3)), np.zeros((2, 2, 2, 3)))
    msg = str(e.value)
    assert "(2, 4, 4, 3)" in msg and "(2, 2, 2, 3)" in msg
    assert "teacher_features" in msg and "student_features" in msg


def test_wrong_rank_and_non_numeric():
    with pytest.raises(ValueError, match="student_features.*rank 4"):
        attention_transfer_loss(np.zeros((2, 4, 4, 3)), np.zeros((2, 16, 3)))
    with pytest.raises(TypeError, match="teacher_features"):
        attention_transfer_loss([[[["x"]]]], np.zeros((1, 1, 1, 1)))
