"""Numerical safety: no NaN or Inf from degenerate but legal inputs.

Every loss stays finite, in value and in gradient, for all-zero feature
maps, constant Gram matrices (zero standard deviation), identical samples
in a batch (LP's distances are all 0), extreme temperatures and extreme
logits; one training step of every distiller on all-zero images stays
finite. When a loss does go bad in training, `StopOnNonFiniteLoss` stops
it and names the term responsible.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import losses
from tfkd import testing
from tfkd.callbacks import NonFiniteDataError
from tfkd.callbacks import NonFiniteLossError
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.distillers import registry

from _distiller_cases import distiller_params
from _distiller_cases import tiny_pair

SHAPE = (4, 4, 4, 8)  # (batch, H, W, C)


def _assert_finite(value, what):
    value = np.asarray(value)
    assert np.all(np.isfinite(value)), f"{what} is not finite: {value}"


def _check(loss_fn, teacher, student):
    """Value and gradients (w.r.t. both inputs) are finite."""
    teacher = tf.constant(teacher, tf.float32)
    student = tf.constant(student, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([teacher, student])
        value = loss_fn(teacher, student)
        total = tf.reduce_sum(value)
    _assert_finite(value, "loss")
    for name, x in (("teacher", teacher), ("student", student)):
        grad = tape.gradient(total, x)
        if grad is not None:
            _assert_finite(grad, f"gradient w.r.t. the {name} input")
    return np.asarray(value)


FEATURE_LOSSES = {
    "correlation_channel": lambda t, s: losses.correlation_loss(
        t, s, mode="channel"),
    "correlation_spatial": lambda t, s: losses.correlation_loss(
        t, s, mode="spatial"),
    "correlation_both": lambda t, s: losses.correlation_loss(t, s),
    "attention_code": lambda t, s: losses.attention_transfer_loss(t, s),
    "attention_paper": lambda t, s: losses.attention_transfer_loss(
        t, s, mode="paper"),
    "attention_p1": lambda t, s: losses.attention_transfer_loss(t, s, p=1),
    "hint": losses.hint_loss,
    "lp": lambda t, s: losses.locality_preserving_loss(t, s, k=2),
    "lp_sigma": lambda t, s: losses.locality_preserving_loss(
        t, s, k=2, sigma=1.0),
    "ktan_mse": losses.ktan_mse_loss,
    "standardize_gram": lambda t, s: tf.reduce_sum(
        losses.standardize(losses.channel_gram(s)), axis=[1, 2]),
}

_rng = np.random.default_rng(0)
RANDOM = _rng.random(SHAPE, dtype=np.float32)
ZEROS = np.zeros(SHAPE, np.float32)
ONES = np.ones(SHAPE, np.float32)  # every Gram entry equal: zero std
SAME = np.repeat(RANDOM[:1], SHAPE[0], axis=0)  # identical samples


@pytest.mark.parametrize("name", list(FEATURE_LOSSES))
@pytest.mark.parametrize("inputs", [
    pytest.param((ZEROS, ZEROS), id="zero_maps"),
    pytest.param((RANDOM, ZEROS), id="zero_student"),
    pytest.param((ZEROS, RANDOM), id="zero_teacher"),
    pytest.param((ONES, ONES), id="constant_grams"),
    pytest.param((ONES, RANDOM), id="constant_teacher_gram"),
    pytest.param((SAME, SAME), id="identical_samples"),
    pytest.param((SAME, RANDOM), id="identical_teacher_samples"),
])
def test_feature_losses_stay_finite(name, inputs):
    _check(FEATURE_LOSSES[name], *inputs)


def test_identical_samples_give_zero_lp_loss():
    # All distances are 0: sigma^2 = 0 must not turn a_ij into 0/0.
    value = _check(lambda t, s: losses.locality_preserving_loss(t, s, k=3),
                   SAME, SAME)
    assert float(value) == 0.0


def test_constant_grams_give_zero_correlation_loss():
    value = _check(losses.correlation_loss, ONES, 2.0 * ONES)
    np.testing.assert_array_equal(value, np.zeros(SHAPE[0]))


LOGITS = (_rng.standard_normal((8, 10)) * 10.0).astype(np.float32)
HUGE = np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 1.0]], np.float32)
HUGE_D = HUGE.reshape(-1, 1)  # one discriminator logit per example
LABELS = np.arange(8, dtype=np.int32) % 10


@pytest.mark.parametrize("temperature", [1e-2, 1e2])
@pytest.mark.parametrize("name, fn", [
    ("kd", lambda t, s, T: losses.kd_loss(t, s, temperature=T)),
    ("soft_ce", lambda t, s, T: losses.soft_cross_entropy(
        t, s, temperature=T)),
    ("class_loss", lambda t, s, T: losses.class_loss(
        LABELS, t, s, alpha=0.3, temperature=T)),
    ("KDLoss", lambda t, s, T: losses.KDLoss(temperature=T)(t, s)),
])
def test_extreme_temperatures(name, fn, temperature):
    _check(lambda t, s: fn(t, s, temperature), LOGITS, -LOGITS)
    _check(lambda t, s: fn(t, s, temperature), LOGITS, LOGITS)
    _check(lambda t, s: fn(t, s, temperature), np.zeros_like(LOGITS),
           np.zeros_like(LOGITS))


@pytest.mark.parametrize("name, fn", [
    ("kd", lambda t, s: losses.kd_loss(t, s, temperature=1e-2)),
    ("cross_entropy", lambda t, s: losses.cross_entropy(
        np.array([0, 1], np.int32), s)),
])
def test_extreme_logits(name, fn):
    _check(fn, HUGE, -HUGE)


@pytest.mark.parametrize("name, fn", [
    ("adversarial", lambda t, s: losses.adversarial_loss(s)),
    ("discriminator", losses.discriminator_loss),
    ("discriminator_accuracy", losses.discriminator_accuracy),
])
def test_extreme_discriminator_logits(name, fn):
    _check(fn, HUGE_D, -HUGE_D)
    _check(fn, -HUGE_D, HUGE_D)


# ----------------------------------------------------------------------
# One training step of every distiller on all-zero images.


@pytest.mark.parametrize("case", distiller_params())
def test_one_step_on_zero_images_stays_finite(case):
    teacher, student = tiny_pair()
    distiller = case.build(teacher, student)
    case.compile(distiller)
    x = np.zeros((8, 8, 8, 1), np.float32)
    y = np.arange(8, dtype=np.int32) % 10
    # Two steps: KTAN (pretrain_steps=1) also takes an adversarial step.
    history = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0,
                            callbacks=[StopOnNonFiniteLoss()])
    for name, values in history.history.items():
        _assert_finite(values, name)
    for variable in distiller.weights:
        _assert_finite(keras.ops.convert_to_numpy(variable), variable.path)


# ----------------------------------------------------------------------
# A loss that goes bad stops training, naming the term.


def _exploding_teacher():
    """A teacher whose tapped `conv1` map is ~1e19 (its square overflows
    float32) while its logits stay finite (`conv2` is zeroed)."""
    teacher, _ = tiny_pair()
    conv1, conv2 = teacher.get_layer("conv1"), teacher.get_layer("conv2")
    conv1.kernel.assign(np.full(conv1.kernel.shape, 1e19, np.float32))
    conv2.kernel.assign(np.zeros(conv2.kernel.shape, np.float32))
    return teacher


@pytest.mark.parametrize("jit_compile", [False, True])
def test_exploding_knowledge_term_stops_training_naming_it(jit_compile):
    # The knowledge loss overflows (inf) while its gradients stay finite:
    # the guard stops on the loss itself, before the step changes any
    # weight (without it the student's weights jump to ~1e19).
    teacher = _exploding_teacher()
    _, student = tiny_pair()
    distiller = tfkd.FitNetDistiller(teacher, student,
                                     teacher_layer_name="conv1",
                                     student_layer_name="conv1", alpha=0.5,
                                     stage=None)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01),
                      jit_compile=jit_compile)
    x, y = testing.random_images(16)
    # Only the knowledge term blows up: the teacher's logits are finite.
    logits = teacher.predict(x, verbose=0)
    _assert_finite(logits, "teacher logits")
    before = [np.array(w) for w in distiller.weights]
    with pytest.raises(NonFiniteLossError,
                       match=r"Non-finite loss at training batch 0 of epoch "
                             r"0.*`hint_loss`.*check_finite = False"):
        distiller.fit(x, y, batch_size=8, epochs=3, verbose=0,
                      callbacks=[StopOnNonFiniteLoss()])
    assert distiller.optimizer.iterations.numpy() == 0
    assert len(before) == len(distiller.weights)
    for value, variable in zip(before, distiller.weights):
        np.testing.assert_array_equal(np.array(variable), value,
                                      err_msg=variable.path)


class _NaNGradient(keras.layers.Layer):
    """The identity whose gradient is NaN: the loss stays finite, every
    gradient before it does not."""

    def call(self, x):
        @tf.custom_gradient
        def identity(x):
            return tf.identity(x), lambda dy: dy * np.nan

        return identity(x)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_non_finite_gradients_with_finite_loss_skip_the_step(jit_compile):
    teacher, _ = tiny_pair()
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(2, 3, name="conv1")(inputs)
    h = _NaNGradient()(h)
    outputs = keras.layers.Dense(10, name="logits")(
        keras.layers.Flatten()(h))
    student = keras.Model(inputs, outputs, name="nan_gradient_student")
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01),
                      jit_compile=jit_compile)
    x, y = testing.random_images(16)
    before = [np.array(w) for w in distiller.weights]
    with pytest.raises(NonFiniteDataError,
                       match=r"Non-finite gradients at training batch 0 of "
                             r"epoch 0"):
        distiller.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert distiller.optimizer.iterations.numpy() == 0
    for value, variable in zip(before, distiller.weights):
        np.testing.assert_array_equal(np.array(variable), value,
                                      err_msg=variable.path)


def test_stop_without_raising_records_the_term():
    # With the engine's guard off, the callback is what stops training.
    teacher = _exploding_teacher()
    _, student = tiny_pair()
    distiller = tfkd.FitNetDistiller(teacher, student,
                                     teacher_layer_name="conv1",
                                     student_layer_name="conv1", stage=None)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    distiller.check_finite = False
    x, y = testing.random_images(32)
    callback = StopOnNonFiniteLoss(raise_error=False)
    history = distiller.fit(x, y, batch_size=8, epochs=3, verbose=0,
                            callbacks=[callback])
    assert "`hint_loss` became inf" in callback.message
    assert distiller.stop_training
    assert len(history.epoch) == 1  # Stopped in the first epoch.
    assert distiller.optimizer.iterations.numpy() == 1


@pytest.mark.parametrize("logs, term", [
    ({"student_loss": 1.0, "loss": float("nan"), "lp_loss": float("nan")},
     "lp_loss"),
    ({"loss": float("inf"), "mse_loss": float("inf"), "adv_loss": 0.1},
     "mse_loss"),
    ({"loss": float("nan"), "kd_loss": 0.2}, "loss"),
])
def test_callback_names_a_term_before_the_total(logs, term):
    callback = StopOnNonFiniteLoss()
    with pytest.raises(NonFiniteLossError, match=f"`{term}` became"):
        callback.on_train_batch_end(3, logs)


def _term_state(distiller):
    return [np.array(v) for term in distiller.terms.values()
            if isinstance(term, tfkd.terms.DistillationTerm)
            for v in term.weights]


@pytest.mark.parametrize("case", [
    # One case per registered method (every term kind), and CRD's bank.
    p for p in distiller_params() if p.id in registry.method_names()] + [
    pytest.param("crd_bank", id="crd_bank")])
def test_a_training_forward_pass_writes_no_term_state(case):
    """Every term's state (memory banks, normalizers, counters) is written
    by the step after its checked optimizer update, never by the forward
    pass: a step the finite guard refuses leaves it as it was."""
    teacher, student = tiny_pair()
    x, y = testing.random_images(8, seed=5)
    if case == "crd_bank":
        from tfkd.methods.crd import ContrastiveRepresentationDistillation

        term = ContrastiveRepresentationDistillation(
            "pool", "pool", dataset_size=8, num_negatives=4,
            embedding_dim=4)
        distiller = tfkd.Distiller(teacher, student, [term])
        distiller.compile(optimizer="sgd")
        x = {"images": x, "index": np.arange(8)}
    else:
        distiller = case.compile(case.build(teacher, student))
    before = _term_state(distiller)
    distiller.compute_terms(x, y, training=True)
    for a, b in zip(before, _term_state(distiller)):
        np.testing.assert_array_equal(a, b)
    # The writes wait for the step, which performs them.
    distiller.apply_term_state_updates()
    if case == "crd_bank":
        assert int(term.steps.numpy()) == 1
