"""The CC (correlation congruence) term."""

import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.losses import correlation_congruence_loss
from tfkd.terms.cc import CorrelationCongruenceDistillation


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: CorrelationCongruenceDistillation(0.4, 2, "conv2", "conv2"),
        reference=lambda t, s: correlation_congruence_loss(t, s, gamma=0.4,
                                                           order=2))


def test_pooled_embeddings_and_other_order():
    _pooled_value_and_gradient(
        CorrelationCongruenceDistillation(0.8, 3, "pool", "pool"),
        lambda t, s: correlation_congruence_loss(t, s, gamma=0.8, order=3))


def test_method_is_registered_with_its_weight():
    spec = registry.get("cc")
    assert spec.term is CorrelationCongruenceDistillation
    arguments = spec.arguments()
    assert (arguments["gamma"], arguments["order"],
            arguments["weight"]) == (0.4, 2, 100.0)
    distiller = registry.build(
        "cc", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("pool", "pool"))
    assert distiller.distillation_loss_weights == [100.0]
    assert distiller.term("cc").batch_level


def test_gamma_is_live_order_is_checked():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    distiller = tfkd.Distiller(
        teacher, student,
        [CorrelationCongruenceDistillation(0.4, 2, "conv2", "conv2")])
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=2)
    first = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                               verbose=0)["cc_loss"]
    distiller.set_hyperparameter("cc/gamma", 1.0)
    second = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                                verbose=0)["cc_loss"]
    t, s = (distiller.teacher_forward(x)[1][0],
            distiller.student_forward(x, False)[1][0])
    np.testing.assert_allclose(
        second, float(correlation_congruence_loss(t, s, gamma=1.0)),
        rtol=1e-5)
    assert first != second
    with pytest.raises(ValueError, match=r"`order` must be an integer >= 1"
                                         r"\. Received: order=0"):
        CorrelationCongruenceDistillation(order=0)
    with pytest.raises(ValueError, match=r"`gamma` must be a finite number "
                                         r"> 0"):
        CorrelationCongruenceDistillation(gamma=0.0)


def test_config_round_trip():
    term = CorrelationCongruenceDistillation(0.5, 3, "a", "b")
    clone = CorrelationCongruenceDistillation.from_config(term.get_config())
    assert clone.get_config() == term.get_config()


def _pooled_value_and_gradient(term, reference):
    """The term on the pooled embeddings (8 vs 4 features) equals the
    function, and its gradient reaches the student's convolutions."""
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    distiller = tfkd.Distiller(teacher, student, [term])
    x, y = testing.random_images(16, seed=3)
    with tf.GradientTape() as tape:
        got = distiller.compute_terms(x, y, training=True)[
            f"{term.name}_loss"]
    grads = tape.gradient(got, student.get_layer("conv2").trainable_weights)
    assert all(g is not None and np.any(np.array(g) != 0) for g in grads)
    t = distiller.teacher_forward(x)[1][0]
    s = distiller.student_forward(x, False)[1][0]
    assert t.shape == (16, 8) and s.shape == (16, 4)
    np.testing.assert_allclose(float(got), float(reference(t, s)),
                               rtol=1e-5, atol=1e-6)
