"""Every distiller under XLA and mixed precision; losses stay float32.

For each distiller (`_distiller_cases`): one SGD step compiled with
`jit_compile=True`, under `mixed_float16` and under `mixed_bfloat16` moves
the student's weights as the eager float32 step does (within a stated
tolerance), leaving the teacher unchanged; under `mixed_float16` the
optimizers (KTAN's discriminator optimizer too) are wrapped in a
`LossScaleOptimizer`. Loss terms are float32 even when the features are
float16, and a Gram matrix of float16 features that would overflow in
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
CASES = distiller_params()


def _optimizers(distiller):
    found = [distiller.optimizer]
    if getattr(distiller, "discriminator_optimizer", None) is not None:
        found.append(distiller.discriminator_optimizer)
    return found


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("case", CASES)
def test_mixed_precision_compile_and_float32_terms(case, policy):
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        teacher, student = tiny_pair()
        distiller = case.build(teacher, student)
        case.compile(distiller, optimizer=keras.optimizers.Adam(1e-2))
        assert distiller.dtype_policy.name == policy
        for optimizer in _optimizers(distiller):
            scaled = isinstance(optimizer,
                                keras.optimizers.LossScaleOptimizer)
            assert scaled == (policy == "mixed_float16"), (
                f"{optimizer.name}: LossScaleOptimizer={scaled} under "
                f"{policy}")
        # Weights stay float32; every loss term is computed in float32.
        assert all(w.dtype == "float32" for w in distiller.student.weights)
        x, y = testing.random_images(BATCH, seed=5)
        student_logits, _ = distiller.student_forward(x, training=False)
        assert student_logits.dtype == policy.split("_")[1]
        for name, value in distiller.compute_terms(x, y).items():
            assert value.dtype == tf.float32, f"{name} is {value.dtype}"
            assert np.all(np.isfinite(value.numpy())), name
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


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


# ----------------------------------------------------------------------
# One compiled or mixed-precision step moves the weights as the eager
# float32 step does, for every distiller.


def _term_gradients(distiller, x, y, jit_compile):
    """`{metric name: flat gradient}` of each loss term separately w.r.t.
    the step's variables, on one batch (compiled with XLA if asked)."""
    # Builds lazily created parts (adapters) before any tracing.
    distiller.compute_losses(x, y, training=False)
    variables = distiller.step_variables()

    def gradients():
        with tf.GradientTape(persistent=True) as tape:
            _, values, *_ = distiller.compute_losses(x, y, training=True)
        flat = {}
        for name, value in values.items():
            grads = tape.gradient(value, variables)
            flat[name] = tf.concat([
                tf.zeros([tf.size(v)]) if g is None else tf.reshape(
                    tf.cast(tf.convert_to_tensor(g), tf.float32), [-1])
                for g, v in zip(grads, variables)], axis=0)
        return flat

    if jit_compile:
        gradients = tf.function(gradients, jit_compile=True)
    return {k: np.array(v) for k, v in gradients().items()}


def _one_step_update(case, policy=None, **compile_kwargs):
    """The student's weight change after one SGD step (fixed init/data),
    and each loss term's gradient before it."""
    if policy:
        keras.mixed_precision.set_dtype_policy(policy)
    try:
        teacher, student = tiny_pair()
        keras.utils.set_random_seed(7)  # the terms' parts start alike
        distiller = case.build(teacher, student)
        optimizer = keras.optimizers.SGD(0.1)
        if policy == "mixed_float16":
            # A modest fixed-start scale: the first step is not skipped.
            optimizer = keras.optimizers.LossScaleOptimizer(
                optimizer, initial_scale=2.0 ** 7)
        case.compile(distiller, optimizer=optimizer, **compile_kwargs)
        x, y = testing.random_images(BATCH, seed=11)
        keras.utils.set_random_seed(8)  # terms drawing samples draw alike
        terms = _term_gradients(distiller, x, y,
                                compile_kwargs.get("jit_compile", False))
        before = [np.array(w, "float32") for w in student.weights]
        teacher_before = [np.array(w) for w in teacher.weights]
        history = distiller.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                                shuffle=False)
        after = [np.array(w, "float32") for w in student.weights]
        for name, values in history.history.items():
            assert np.all(np.isfinite(values)), f"{name}: {values}"
        for b, w in zip(teacher_before, teacher.weights):
            np.testing.assert_array_equal(np.array(w), b)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return np.concatenate([(a - b).ravel() for a, b in zip(after, before)
                           ]), terms


def _assert_terms_close(terms, reference, tolerance, what):
    """Each term's gradient within `tolerance` of the reference's, relative
    to that term's own gradient (a term with a small share of the whole
    update is checked as strictly as the largest)."""
    assert sorted(terms) == sorted(reference), what
    for name, want in reference.items():
        size = np.linalg.norm(want)
        error = np.linalg.norm(terms[name] - want)
        assert error <= tolerance * size + 1e-12, (
            what, name, error / max(size, 1e-30))


@pytest.mark.parametrize("case", CASES)
def test_compiled_and_mixed_steps_match_the_eager_float32_step(case):
    reference, reference_terms = _one_step_update(case, run_eagerly=True)
    scale = np.linalg.norm(reference)
    assert scale > 0, "the eager step did not move the student"
    assert any(np.linalg.norm(g) > 0 for g in reference_terms.values())
    # XLA: the same arithmetic, reordered (float32 round-off).
    xla, xla_terms = _one_step_update(case, jit_compile=True)
    assert np.linalg.norm(xla - reference) <= 1e-4 * scale
    _assert_terms_close(xla_terms, reference_terms, 1e-4, "xla")
    # Mixed precision: activations in 16 bits, weights and losses float32;
    # the update keeps its direction and size to a few parts in a hundred.
    # Each term's own gradient: float16's 2e-2 (measured: at most 4.3e-3);
    # bfloat16 keeps 8 bits (2^-8 vs float16's 2^-11), and a gradient
    # that flows back through a few bfloat16 layers (the class loss
    # through the front of a two-stage student, STC's back of the
    # teacher) keeps fewer: measured at most 0.162 on an AVX2 CPU (no
    # native bfloat16), 0.16 or less on AVX-512 ones. 0.3 still fails a
    # term dropped, doubled or computed on the wrong tensors (errors of
    # 1 or more).
    for policy, tolerance, term_tolerance in (
            ("mixed_float16", 2e-2, 2e-2),
            ("mixed_bfloat16", 8e-2, 0.3)):
        # bfloat16's step runs eagerly: the same arithmetic, one trace
        # fewer; float16's runs traced, the graph path of a 16-bit policy.
        update, terms = _one_step_update(
            case, policy, run_eagerly=policy == "mixed_bfloat16")
        assert np.linalg.norm(update - reference) <= tolerance * scale, (
            policy, np.linalg.norm(update - reference) / scale)
        _assert_terms_close(terms, reference_terms, term_tolerance, policy)
