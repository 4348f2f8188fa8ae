"""Tests of `tfkd.losses.similarity_preserving_loss` (SP, Tung & Mori).

The SP term (the "write your own term" worked example's test).
"""

import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.sp import similarity_preserving_loss
from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.sp import SimilarityPreservingDistillation


# ------------------------------------------------ NumPy reference (paper)
def np_similarity(f):
    q = np.asarray(f, np.float64).reshape(len(f), -1)
    b = len(q)
    g = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            g[i, j] = np.dot(q[i], q[j])
    for i in range(b):
        norm = np.sqrt(np.sum(g[i] ** 2))
        g[i] = g[i] / max(norm, 1e-12)
    return g


def np_sp(t, s):
    b = len(t)
    return np.sum((np_similarity(t) - np_similarity(s)) ** 2) / b**2


def features(shape, seed):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


SHAPES = [
    ((1, 3), (1, 5)),
    ((2, 4), (2, 4)),
    ((5, 3, 3, 4), (5, 2, 2, 8)),
    ((8, 16), (8, 2, 2, 3)),
]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("t_shape,s_shape,runner", cases(
    SHAPES, SHAPES[2:]))
def test_matches_reference(t_shape, s_shape, runner):
    t, s = features(t_shape, 0), features(s_shape, 1)
    got = run(similarity_preserving_loss, t, s, runner=runner)
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, np_sp(t, s), rtol=1e-5, atol=1e-7)


def test_zero_for_same_similarities_whatever_the_scale():
    t = features((6, 5), 2)
    # Scaling every example by the same factor keeps every row of G.
    np.testing.assert_allclose(similarity_preserving_loss(t, 3.0 * t),
                               0.0, atol=1e-7)
    # ReLU-like features: a copy with extra zero dimensions has the same G.
    padded = np.concatenate([t, np.zeros((6, 3), np.float32)], axis=1)
    np.testing.assert_allclose(similarity_preserving_loss(t, padded), 0.0,
                               atol=1e-7)


@pytest.mark.parametrize("runner", RUNNERS)
def test_gradient_matches_finite_differences(runner):
    t, s = features((4, 3), 3), features((4, 2, 2), 4)
    _, (g_t, g_s) = value_and_grads(similarity_preserving_loss, t, s,
                                    runner=runner)
    np.testing.assert_allclose(g_s, numeric_grad(lambda x: np_sp(t, x), s),
                               rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(g_t, numeric_grad(lambda x: np_sp(x, s), t),
                               rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(similarity_preserving_loss, jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 2, 3]),
                                      tf.TensorSpec([None, 4])])
    t, s = features((6, 2, 3), 5), features((6, 4), 6)
    for b in (1, 2, 6):
        np.testing.assert_allclose(fn(t[:b], s[:b]).numpy(),
                                   np_sp(t[:b], s[:b]), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_zero_rows_and_large_values_stay_finite(runner):
    t = features((5, 6), 7)
    s = features((5, 4), 8)
    t[1] = 0.0
    s[[0, 3]] = 0.0
    s[2] *= 1e4
    value, grads = value_and_grads(similarity_preserving_loss, t, s,
                                   runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_sp(t, s), rtol=1e-5)
    # A zero row of G gets no gradient through its norm (the authors'
    # F.normalize would give ~1e12 here).
    assert np.abs(grads[1][[0, 3]]).max() < 10.0
    zeros = np.zeros((3, 4), np.float32)
    value, grads = value_and_grads(similarity_preserving_loss, zeros, zeros,
                                   runner="eager")
    assert value == 0.0
    assert_finite(*grads)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, s = features((4, 6), 9), features((4, 3), 10)
    got = run(similarity_preserving_loss, t, s, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in (t, s)]
    np.testing.assert_allclose(got, np_sp(*rounded), rtol=1e-4)


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s = features((6, 2, 2, 3), 123), features((6, 5), 124)
    np.testing.assert_allclose(
        [similarity_preserving_loss(t, s).numpy(),
         similarity_preserving_loss(t[:2], s[:2]).numpy()],
        [0.11652044, 0.039344482], rtol=1e-5)


# ----------------------------------------------------------------- bad input
def test_bad_input():
    with pytest.raises(ValueError, match=r"same batch size \(their other "
                       r"dimensions may differ\).*\(4, 3\).*\(5, 3\)"):
        similarity_preserving_loss(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"`student_features` must have rank "
                       r">= 2 \(batch, \.\.\.\)"):
        similarity_preserving_loss(np.zeros((4, 3)), np.zeros((4,)))
    with pytest.raises(TypeError, match="teacher_features"):
        similarity_preserving_loss([["a"]], [[1.0]])


# --- The term (formerly tests/test_term_similarity.py) ---

def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: SimilarityPreservingDistillation("conv2", "conv2"),
        reference=similarity_preserving_loss)


def test_method_is_registered_with_the_papers_weight():
    spec = registry.get("sp")
    assert spec.term is SimilarityPreservingDistillation
    assert spec.arguments()["weight"] == 3000.0
    distiller = registry.build(
        "sp", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("conv1", "conv2"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [3000.0, 2.0]
    assert distiller.student_loss_weight == 0.5


def test_feature_shapes_may_differ_but_not_batches():
    term = SimilarityPreservingDistillation()
    with pytest.raises(ValueError, match="same batch size"):
        term.compute_loss(testing.random_images(4)[0],
                          testing.random_images(3)[0])
