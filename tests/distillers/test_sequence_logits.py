"""Sequence models' logits `(batch, time, classes)`: a causal language
model pair distils per token, as Keras's losses reduce sequences."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.methods.kd import cross_entropy
from tfkd.methods.kd import kd_loss

VOCAB, STEPS = 12, 6


def causal_lm(name, width, seed):
    """Embedding + causal GRU + per-token logits, built from layers."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, width, name="embedding")(tokens)
    h = keras.layers.GRU(width, return_sequences=True, name="gru")(h)
    logits = keras.layers.Dense(VOCAB, name="logits")(h)
    return keras.Model(tokens, logits, name=name)


def data(n=16, seed=0):
    """Token sequences, next-token labels and a padding mask."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (n, STEPS)).astype("int32")
    y = np.roll(x, -1, axis=1)
    mask = np.ones((n, STEPS), "float32")
    mask[:, -2:] = 0.0  # the last two tokens are padding
    return x, y, mask


def terms():
    return {
        "kd": lambda: tfkd.losses.KDDistillation(temperature=2.0),
        "dist": lambda: tfkd.losses.DISTDistillation(),
    }


@pytest.mark.parametrize("name", ["kd", "dist"])
def test_causal_lm_pair_distils(name):
    teacher = causal_lm("teacher", 16, seed=1)
    student = causal_lm("student", 8, seed=2)
    distiller = tfkd.Distiller(teacher, student,
                               distillation_losses=[terms()[name]()])
    distiller.compile(optimizer=keras.optimizers.Adam(0.01),
                      metrics=["accuracy"])
    x, y, mask = data()
    before = [w.numpy().copy() for w in student.trainable_weights]
    history = distiller.fit(x, y, sample_weight=mask, batch_size=8,
                            epochs=3, verbose=0)
    losses = history.history[f"{name}_loss"]
    assert np.all(np.isfinite(losses)), history.history
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert any(not np.array_equal(b, w.numpy())
               for b, w in zip(before, student.trainable_weights))
    assert distiller.predict(x[:2], verbose=0).shape == (2, STEPS, VOCAB)


def test_per_token_reduction_matches_keras():
    """The student loss and KD with a `(batch, time)` padding mask are
    `sum(loss · mask) / (batch · time)`, Keras's `sum_over_batch_size`."""
    teacher = causal_lm("teacher", 16, seed=1)
    student = causal_lm("student", 8, seed=2)
    distiller = tfkd.Distiller(teacher, student, alpha=0.5, temperature=2.0)
    x, y, mask = data(4)
    total, values, *_ = distiller.compute_losses(x, y, mask)
    t, s = teacher(x), student(x)
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y, s, sample_weight=mask)
    np.testing.assert_allclose(float(values["student_loss"]),
                               float(keras_ce), rtol=1e-5)
    kd = np.asarray(kd_loss(tf.reshape(t, [-1, VOCAB]),
                            tf.reshape(s, [-1, VOCAB]), 2.0))
    np.testing.assert_allclose(float(values["kd_loss"]),
                               (kd * mask.reshape(-1)).sum() / mask.size,
                               rtol=1e-5)
    ce = np.asarray(cross_entropy(y.reshape(-1), tf.reshape(s, [-1, VOCAB])))
    assert not np.isclose(float(values["student_loss"]), ce.mean()), (
        "the mask must count")


def test_logit_width_mismatch_is_refused_naming_both():
    teacher = causal_lm("teacher", 16, seed=1)
    tokens = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8)(tokens)
    student = keras.Model(tokens, keras.layers.Dense(VOCAB - 2)(h))
    with pytest.raises(ValueError, match=r"teacher outputs 12 logits and "
                                         r"the student 10"):
        tfkd.Distiller(teacher, student)
