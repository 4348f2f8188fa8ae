"""The PKT term."""

import keras
import numpy as np
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.losses import probabilistic_transfer_loss
from tfkd.terms.pkt import ProbabilisticTransferDistillation


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: ProbabilisticTransferDistillation("conv2", "conv2"),
        reference=probabilistic_transfer_loss)


def test_pooled_embeddings_of_different_sizes():
    _pooled_value_and_gradient(
        ProbabilisticTransferDistillation("pool", "pool"),
        probabilistic_transfer_loss)


def test_method_is_registered_with_the_code_weight():
    spec = registry.get("pkt")
    assert spec.term is ProbabilisticTransferDistillation
    assert spec.arguments()["weight"] == 30000.0
    distiller = registry.build(
        "pkt", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("pool", "pool"))
    assert distiller.distillation_loss_weights == [30000.0]
    assert distiller.student_loss_weight == 0.5
    assert distiller.term("pkt").batch_level


def test_several_pairs_are_summed():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    x, _ = testing.random_images(8, seed=2)

    def taps(model, names):
        return keras.Model(model.inputs,
                           [model.get_layer(n).output for n in names])(x)

    term = ProbabilisticTransferDistillation(["conv1", "pool"],
                                             ["conv1", "pool"])
    t, s = taps(teacher, ["conv1", "pool"]), taps(student, ["conv1", "pool"])
    want = (probabilistic_transfer_loss(t[0], s[0])
            + probabilistic_transfer_loss(t[1], s[1]))
    assert abs(float(term.compute_loss(t, s)) - float(want)) < 1e-7


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
