"""Every distiller under XLA and mixed precision; losses stay float32.

For each distiller (`_distiller_cases`): fit steps with
`compile(jit_compile=True)`, under `mixed_float16` (the optimizer, and
KTAN's discriminator optimizer, wrapped in a `LossScaleOptimizer`) and under
`mixed_bfloat16`. Each must give finite losses, change the student and
leave the teacher unchanged. Loss terms are float32 even when the features
are float16, and a Gram matrix of float16 features that would overflow in
float16 equals the float32 computation.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing

from _distiller_cases import distiller_params
from _distiller_cases import tiny_pair

BATCH = 8
# The base distiller with taps is covered by tests/test_distiller.py.
CASES = distiller_params(exclude=("kd_taps",))


def _fit_and_check(case, steps=2, **compile_kwargs):
    teacher, student = tiny_pair()
    distiller = case.build(teacher, student)
    case.compile(distiller, optimizer=keras.optimizers.Adam(1e-2),
                 **compile_kwargs)
    x, y = testing.random_images(steps * BATCH, seed=5)
    teacher_before = [np.array(w) for w in teacher.weights]
    student_before = [np.array(w) for w in student.weights]
    history = distiller.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                            shuffle=False)
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), f"{name} not finite: {values}"
    for before, w in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(np.array(w), before)
    assert any(not np.array_equal(before, np.array(w))
               for before, w in zip(student_before, student.weights)), (
        "no student weight changed")
    return distiller, x, y


@pytest.mark.parametrize("case", CASES)
def test_jit_compile_step(case):
    distiller, _, _ = _fit_and_check(case, jit_compile=True)
    assert distiller.jit_compile is True


def _optimizers(distiller):
    found = [distiller.optimizer]
    if getattr(distiller, "discriminator_optimizer", None) is not None:
        found.append(distiller.discriminator_optimizer)
    return found


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("case", CASES)
def test_mixed_precision_steps(case, policy):
    keras.mixed_precision.set_dtype_policy(policy)
    # Dynamic loss scaling starts at 2**15 and skips the steps whose scaled
    # float16 gradients overflow, halving the scale each time; with feature
    # losses of 10-40 the first 3-4 steps are skipped. Run 8.
    distiller, x, y = _fit_and_check(
        case, steps=8 if policy == "mixed_float16" else 2)
    assert distiller.dtype_policy.name == policy
    for optimizer in _optimizers(distiller):
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert scaled == (policy == "mixed_float16"), (
            f"{optimizer.name}: LossScaleOptimizer={scaled} under {policy}")
    # Weights stay float32; every loss term is computed in float32.
    assert all(w.dtype == "float32" for w in distiller.student.weights)
    images, labels = tf.constant(x[:BATCH]), tf.constant(y[:BATCH])
    teacher_logits, teacher_features = distiller.teacher_forward(images)
    student_logits, student_features = distiller.student_forward(
        images, training=False)
    assert student_logits.dtype == policy.split("_")[1]
    terms = distiller.compute_terms(images, labels)
    for name, value in terms.items():
        assert value.dtype == tf.float32, f"{name} is {value.dtype}"
        assert np.all(np.isfinite(value.numpy())), name


def _large_features(seed, shape=(2, 8, 8, 16), scale=60.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.random(shape)).astype("float16")


def test_gram_of_float16_features_is_computed_in_float32():
    # Entries of F^T F reach 64 · 60² ≈ 2.3e5 > 65504, the float16 maximum.
    t16, s16 = _large_features(0), _large_features(1)
    t32, s32 = t16.astype("float32"), s16.astype("float32")
    gram16 = tfkd.losses.channel_gram(tf.constant(s16))
    assert gram16.dtype == tf.float32
    assert np.all(np.isfinite(gram16.numpy()))
    assert float(tf.reduce_max(gram16)) > float(np.finfo(np.float16).max)
    for mode in ("channel", "spatial", "both"):
        loss16 = tfkd.losses.correlation_loss(tf.constant(t16),
                                              tf.constant(s16), mode=mode)
        loss32 = tfkd.losses.correlation_loss(tf.constant(t32),
                                              tf.constant(s32), mode=mode)
        assert loss16.dtype == tf.float32
        np.testing.assert_allclose(loss16.numpy(), loss32.numpy(),
                                   rtol=1e-6, err_msg=mode)
    # The same inputs in float16 arithmetic overflow: float32 is needed.
    naive = tf.linalg.matmul(tf.reshape(tf.constant(s16), (2, 64, 16)),
                             tf.reshape(tf.constant(s16), (2, 64, 16)),
                             transpose_a=True)
    assert not np.all(np.isfinite(naive.numpy()))


@pytest.mark.parametrize("loss_name", [
    "kd_loss", "soft_cross_entropy", "attention_transfer_loss", "hint_loss",
    "locality_preserving_loss",
])
def test_float16_inputs_match_float32(loss_name):
    loss = getattr(tfkd.losses, loss_name)
    rng = np.random.default_rng(3)
    if loss_name in ("kd_loss", "soft_cross_entropy"):
        # Logits far apart: softmax at T = 0.5 saturates in float16.
        t = (20 * rng.standard_normal((8, 10))).astype("float16")
        s = (20 * rng.standard_normal((8, 10))).astype("float16")
        args = (0.5,)
    else:
        t = _large_features(4, (8, 4, 4, 8), scale=10.0)
        s = _large_features(5, (8, 4, 4, 8), scale=10.0)
        args = ()
    got = loss(tf.constant(t), tf.constant(s), *args)
    want = loss(tf.constant(t.astype("float32")),
                tf.constant(s.astype("float32")), *args)
    assert got.dtype == tf.float32
    assert np.all(np.isfinite(got.numpy()))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
