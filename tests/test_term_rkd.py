"""The RKD term: value, live weights, shapes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.losses import relational_loss
from tfkd.terms.rkd import RelationalDistillation


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: RelationalDistillation(25.0, 50.0, "conv2", "conv2"),
        reference=lambda t, s: relational_loss(t, s, distance_weight=25.0,
                                               angle_weight=50.0))


def test_pooled_embeddings_of_different_sizes():
    _pooled_value_and_gradient(
        RelationalDistillation(10.0, 20.0, "pool", "pool"),
        lambda t, s: relational_loss(t, s, distance_weight=10.0,
                                     angle_weight=20.0))


def test_method_is_registered_with_the_code_weights():
    spec = registry.get("rkd")
    assert spec.term is RelationalDistillation
    arguments = spec.arguments()
    assert (arguments["distance_weight"], arguments["angle_weight"]) == (
        25.0, 50.0)
    distiller = registry.build(
        "rkd", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("pool", "pool"))
    assert distiller.distillation_loss_weights == [1.0]
    assert distiller.student_loss_weight == 0.5
    assert distiller.term("rkd").batch_level


def test_weights_are_live():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    term = RelationalDistillation(25.0, 50.0, "pool", "pool")
    distiller = tfkd.Distiller(teacher, student, [term])
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=2)
    distiller.evaluate(x, y, batch_size=16, verbose=0)
    distiller.set_hyperparameter("rkd/angle_weight", 0.0)
    logs = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                              verbose=0)
    def pool(model):
        return keras.Model(model.inputs, model.get_layer("pool").output)(x)

    want = relational_loss(pool(teacher), pool(student),
                           distance_weight=25.0, angle_weight=0.0)
    np.testing.assert_allclose(logs["rkd_loss"], float(want), rtol=1e-5)
    with pytest.raises(ValueError, match=r"`distance_weight` must be a "
                                         r"finite number >= 0"):
        RelationalDistillation(distance_weight=-1.0)


def test_config_round_trip():
    term = RelationalDistillation(5.0, 7.0, "a", "b")
    clone = RelationalDistillation.from_config(term.get_config())
    assert clone.get_config() == term.get_config()
    assert (clone.distance_weight, clone.angle_weight) == (5.0, 7.0)


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
