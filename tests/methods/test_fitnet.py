"""Tests of `tfkd.methods.fitnet` (FitNets) against a NumPy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.fitnet import HintLoss
from tfkd.methods.fitnet import hint_loss



def run(fn, *args, runner="eager", **kwargs):
    args = [tf.constant(a) for a in args]
    if runner == "jit":
        return tf.function(lambda *a: fn(*a, **kwargs),
                           jit_compile=True)(*args).numpy()
    return fn(*args, **kwargs).numpy()


def np_hint(t, s):
    """½ Σ_elements (s − t)², one value per example."""
    out = []
    for tb, sb in zip(np.asarray(t, np.float64), np.asarray(s, np.float64)):
        total = 0.0
        for idx in np.ndindex(tb.shape):
            total += (sb[idx] - tb[idx]) ** 2
        out.append(0.5 * total)
    return np.array(out)


def pair(shape, seed):
    rng = np.random.RandomState(seed)
    return (rng.randn(*shape).astype(np.float32),
            rng.randn(*shape).astype(np.float32))


@pytest.mark.parametrize("runner", ["eager", "jit"])
@pytest.mark.parametrize("shape", [(1, 3), (1, 2, 2, 3), (4, 4, 4, 8),
                                   (2, 3, 5, 2)])
def test_matches_reference(shape, runner):
    t, s = pair(shape, seed=len(shape))
    got = run(hint_loss, t, s, runner=runner)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, np_hint(t, s), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("runner", ["eager", "jit"])
def test_gradient_is_difference_and_teacher_order(runner):
    # d/ds ½‖s − t‖² = s − t: the sign pins down the (teacher, student)
    # argument order.
    t, s = pair((2, 3, 3, 4), seed=1)
    t, s = tf.constant(t), tf.constant(s)

    def grad(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = tf.reduce_sum(hint_loss(t, s))
        return tape.gradient(loss, s)

    if runner == "jit":
        grad = tf.function(grad, jit_compile=True)
    np.testing.assert_allclose(grad(t, s).numpy(), (s - t).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_zero_at_match_and_integer_input():
    t, _ = pair((3, 2, 2, 2), seed=2)
    np.testing.assert_array_equal(hint_loss(t, t).numpy(), 0.0)
    # Integer inputs are cast to float32.
    out = hint_loss(np.zeros((2, 3), np.int32), np.ones((2, 3), np.int64))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), [1.5, 1.5])


def test_golden_values():
    t, s = pair((3, 2, 2, 3), seed=123)
    np.testing.assert_allclose(hint_loss(t, s).numpy(),
                               [16.868164, 13.091981, 8.154885], rtol=1e-6)


def test_keras_wrapper():
    t, s = pair((4, 3), seed=3)
    loss = HintLoss()
    np.testing.assert_allclose(float(loss(t, s)), np_hint(t, s).mean(),
                               rtol=1e-5)
    weights = np.array([1.0, 0.0, 2.0, 0.0], np.float32)
    np.testing.assert_allclose(
        float(loss(t, s, sample_weight=weights)),
        np.sum(np_hint(t, s) * weights) / 4, rtol=1e-5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, HintLoss)
    assert restored.get_config() == loss.get_config()


def test_mismatched_shapes():
    with pytest.raises(ValueError, match="regressor") as e:
        hint_loss(np.zeros((2, 4, 4, 8)), np.zeros((2, 4, 4, 3)))
    msg = str(e.value)
    assert "teacher_features" in msg and "student_features" in msg
    assert "(2, 4, 4, 8)" in msg and "(2, 4, 4, 3)" in msg
    assert "regressor" in msg


def test_non_numeric_input():
    with pytest.raises(TypeError, match="teacher_features"):
        hint_loss([["a"]], [[1.0]])
    with pytest.raises(TypeError, match="student_features"):
        hint_loss([[1.0]], [[True]])
