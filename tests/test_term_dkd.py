"""The DKD term: value, labels, live hyperparameters and the warm-up."""

import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.callbacks import HyperparameterScheduler
from tfkd.callbacks import linear_warmup
from tfkd.distillers import registry
from tfkd.losses import dkd_loss
from tfkd.terms.dkd import DKDDistillation

# check_term's batch: random_images(32, seed=3), first 16 examples.
_, _LABELS = testing.random_images(32, seed=3)


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: DKDDistillation(alpha=1.0, beta=8.0, temperature=4.0),
        reference=lambda t, s: dkd_loss(t, s, _LABELS[:16], alpha=1.0,
                                        beta=8.0, temperature=4.0),
        taps=("logits", "logits"))


def test_method_is_registered_with_the_papers_weights():
    spec = registry.get("dkd")
    assert spec.term is DKDDistillation
    assert not spec.uses_features
    arguments = spec.arguments()
    assert (arguments["alpha"], arguments["beta"],
            arguments["temperature"]) == (1.0, 8.0, 4.0)
    distiller = registry.build("dkd", testing.tiny_conv_model("t"),
                               testing.tiny_conv_model("s"))
    assert distiller.distillation_loss_weights == [1.0]
    assert distiller.student_loss_weight == 0.5


def _pair():
    return (testing.tiny_conv_model("teacher", width=8, seed=1),
            testing.tiny_conv_model("student", width=4, seed=11))


def test_unlabelled_examples_give_zero():
    teacher, student = _pair()
    x, y = testing.random_images(8, seed=4)
    term = DKDDistillation()
    t, s = teacher(x), student(x)
    labels = np.where(np.arange(8) % 2 == 0, -1, y)
    values = term(t, s, labels=labels).numpy()
    assert np.all(values[::2] == 0.0)
    assert np.all(values[1::2] > 0.0)
    distiller = tfkd.Distiller(teacher, student, [DKDDistillation()])
    values = distiller.compute_terms(x, labels)["dkd_loss"].numpy()
    assert np.all(values[::2] == 0.0)


def test_unlabelled_examples_give_zero_in_training_steps():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student, [DKDDistillation()])
    distiller.compile(optimizer="sgd")
    x, _ = testing.random_images(8, seed=4)
    y = np.full((8,), -1, dtype="int32")
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["dkd_loss"] == 0.0


def test_labels_are_required():
    term = DKDDistillation()
    logits = np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match=r"needs the batch's labels\. "
                                         r"Received: labels=None"):
        term.compute_loss(logits, logits)


def test_hyperparameters_are_live_and_checked():
    teacher, student = _pair()
    term = DKDDistillation(alpha=1.0, beta=8.0, temperature=4.0)
    distiller = tfkd.Distiller(teacher, student, [term])
    assert {"dkd/alpha": 1.0, "dkd/beta": 8.0,
            "dkd/temperature": 4.0}.items() <= distiller.hyperparameters.items()
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=6)
    before = distiller.evaluate(x, y, return_dict=True, verbose=0)
    distiller.set_hyperparameter("dkd/beta", 0.0)
    distiller.set_hyperparameter("dkd/temperature", 1.0)
    after = distiller.evaluate(x, y, return_dict=True, verbose=0)
    # Same traced step, new values: only TCKD at T = 1 is left.
    want = dkd_loss(teacher(x), student(x), y, alpha=1.0, beta=0.0,
                    temperature=1.0)
    np.testing.assert_allclose(after["dkd_loss"], float(np.mean(want)),
                               rtol=1e-5)
    assert after["dkd_loss"] != before["dkd_loss"]
    with pytest.raises(ValueError, match=r"`beta` must be a finite number "
                                         r">= 0\. Received: beta=-1\.0"):
        term.beta = -1.0
    with pytest.raises(ValueError, match=r"`temperature` must be a finite "
                                         r"number > 0"):
        DKDDistillation(temperature=0.0)


def test_warmup_of_the_weight_as_the_authors():
    teacher, student = _pair()
    distiller = registry.build("dkd", teacher, student)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=7)
    warmup = HyperparameterScheduler({"dkd/weight": linear_warmup(1.0, 20)})
    history = distiller.fit(x, y, epochs=3, batch_size=16, verbose=0,
                            callbacks=[warmup]).history
    assert history["dkd/weight"] == [0.0, 0.05, 0.1]
    # Epoch 1: the DKD term has weight 0, the total is 0.5 · CE.
    np.testing.assert_allclose(history["loss"][0],
                               0.5 * history["student_loss"][0], rtol=1e-6)
    # Later epochs: 0.5 · (CE + w · DKD).
    np.testing.assert_allclose(
        history["loss"][2],
        0.5 * (history["student_loss"][2] + 0.1 * history["dkd_loss"][2]),
        rtol=1e-5)


def test_one_hot_labels_and_config_round_trip():
    teacher, student = _pair()
    x, y = testing.random_images(8, seed=8)
    term = DKDDistillation(alpha=0.5, beta=2.0, temperature=2.0)
    one_hot = np.eye(10, dtype="float32")[y]
    np.testing.assert_allclose(
        term(teacher(x), student(x), labels=one_hot).numpy(),
        term(teacher(x), student(x), labels=y).numpy(), rtol=1e-6)
    clone = DKDDistillation.from_config(term.get_config())
    assert (clone.alpha, clone.beta, clone.temperature) == (0.5, 2.0, 2.0)
