"""The DIST term: value, batch level, live hyperparameters."""

import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.losses import dist_loss
from tfkd.terms.dist import DISTDistillation


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: DISTDistillation(beta=2.0, gamma=1.0, temperature=4.0),
        reference=lambda t, s: dist_loss(t, s, beta=2.0, gamma=1.0,
                                         temperature=4.0),
        taps=("logits", "logits"))


def test_method_is_registered_with_the_papers_weights():
    spec = registry.get("dist")
    assert spec.term is DISTDistillation
    arguments = spec.arguments()
    assert (arguments["beta"], arguments["gamma"],
            arguments["temperature"]) == (1.0, 1.0, 1.0)
    distiller = registry.build("dist", testing.tiny_conv_model("t"),
                               testing.tiny_conv_model("s"))
    assert distiller.distillation_loss_weights == [1.0]
    assert distiller.student_loss_weight == 0.5
    assert distiller.term("dist").batch_level


def test_hyperparameters_are_live():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    distiller = tfkd.Distiller(teacher, student, [DISTDistillation()])
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=2)
    distiller.evaluate(x, y, batch_size=16, verbose=0)
    distiller.set_hyperparameter("dist/gamma", 0.0)
    distiller.set_hyperparameter("dist/temperature", 2.0)
    logs = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                              verbose=0)
    want = dist_loss(teacher(x), student(x), beta=1.0, gamma=0.0,
                     temperature=2.0)
    np.testing.assert_allclose(logs["dist_loss"], float(want), rtol=1e-5)
    with pytest.raises(ValueError, match=r"`gamma` must be a finite number "
                                         r">= 0\. Received: gamma=-1\.0"):
        DISTDistillation(gamma=-1.0)


def test_logits_must_match():
    teacher = testing.tiny_conv_model("teacher", num_classes=10)
    student = testing.tiny_conv_model("student", num_classes=5)
    with pytest.raises(
            ValueError,
            match=r"The teacher outputs 10 logits and the student 5, but the "
                  r"terms \['dist'\] compare them class by class\. Received: "
                  r"teacher logits of shape \(None, 10\), student logits of "
                  r"shape \(None, 5\)"):
        tfkd.Distiller(teacher, student, [DISTDistillation()])


def test_config_round_trip():
    term = DISTDistillation(beta=2.0, gamma=0.5, temperature=4.0)
    clone = DISTDistillation.from_config(term.get_config())
    assert (clone.beta, clone.gamma, clone.temperature) == (2.0, 0.5, 4.0)
