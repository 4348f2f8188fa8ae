"""Every method trains the same whichever way it is built.

One fit path: the class (the preset, or `tfkd.Distiller` with the term, as
each method's page documents it), `tfkd.distillers.registry.build` and the
tuner's `DistillerHyperModel.build` give the same objective (equal losses
on a fixed batch) and the same schedule (equal histories over a short
`fit`: FitNets' and correlation's two stages, KTAN's regressor
pre-training, DKD's warm-up), because the schedule is the distiller's own
`fit`.
"""

import keras
import keras_tuner as kt
import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.tuning import DistillerHyperModel

TAPS = ("conv2", "conv2")
SEED = 3
#: Methods with a schedule of their own, checked in detail in the default
#: run (FitNets' stages are correlation's); the others run under `-m slow`.
SCHEDULED = ("correlation", "ktan", "dkd")


def _student(template):
    # As `DistillerHyperModel.build_student` does for a model template: the
    # seed, then a clone with the template's weights (the distiller's own
    # parts are created after it, from the same random state).
    keras.utils.set_random_seed(SEED)
    student = keras.models.clone_model(template)
    student.set_weights(template.get_weights())
    return student


def _by_class(method, teacher, template):
    """The documented construction: the preset class, or `tfkd.Distiller`
    with the method's term (with its own defaults), its paper's weight and
    the soft targets each method page documents:
    `tfkd.Distiller(teacher, student, [term, SoftTargetDistillation(
    temperature=0.5)], distillation_loss_weights=[weight, 2.0],
    student_loss_weight=0.5)`."""
    spec = registry.get(method)
    student = _student(template)
    extra = spec.build_defaults
    layers = {"teacher_layer_name": TAPS[0],
              "student_layer_name": TAPS[1]} if spec.uses_features else {}
    if spec.preset:
        return spec.load()(teacher, student, **layers, **extra)
    terms = [spec.term(**layers, **extra)]
    weights = [spec.method.weight]
    if spec.method.soft_targets:
        terms.append(tfkd.losses.SoftTargetDistillation(temperature=0.5))
        weights.append(2.0)
    return tfkd.Distiller(teacher, student, terms,
                          distillation_loss_weights=weights,
                          student_loss_weight=spec.method.student_loss_weight)


def _by_registry(method, teacher, template):
    return registry.build(method, teacher, _student(template),
                          feature_layers=TAPS)


def _compile(distiller, learning_rate):
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      metrics=["accuracy"])
    return distiller


def _run(distiller, x, y):
    """`(losses on the batch, history of a 2-epoch fit)`."""
    before = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                                verbose=0)
    keras.utils.set_random_seed(SEED)
    history = distiller.fit(x, y, batch_size=8, epochs=2, shuffle=False,
                            verbose=0)
    return before, history.history


def _paths(method):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    template = testing.tiny_conv_model("student", width=4, seed=2)
    x, y = testing.random_images(16)
    tuner = DistillerHyperModel(teacher, template, method=method,
                                feature_layers=TAPS, seed=SEED)
    built = tuner.build(kt.HyperParameters())
    # The tuner's default learning rate, for every path.
    rate = float(built.optimizer.learning_rate)
    runs = {
        "class": _run(_compile(_by_class(method, teacher, template), rate),
                      x, y),
        "registry": _run(_compile(_by_registry(method, teacher, template),
                                  rate), x, y),
    }
    before = built.evaluate(x, y, batch_size=16, return_dict=True,
                            verbose=0)
    keras.utils.set_random_seed(SEED)
    history = tuner.fit(kt.HyperParameters(), built, x, y, batch_size=8,
                        epochs=2, shuffle=False, verbose=0)
    runs["tuner"] = (before, history.history)
    return runs


def _check_same(method, runs):
    reference_losses, reference_history = runs["registry"]
    for path, (losses, history) in runs.items():
        assert sorted(losses) == sorted(reference_losses), (method, path)
        for key, value in reference_losses.items():
            assert losses[key] == pytest.approx(value, rel=1e-5), (
                method, path, key)
        assert sorted(history) == sorted(reference_history), (method, path)
        for key, values in reference_history.items():
            np.testing.assert_allclose(
                history[key], values, rtol=1e-4,
                err_msg=f"{method}: {path} vs registry, {key}")
    return reference_history


@pytest.mark.parametrize("method", [
    m if m in SCHEDULED else pytest.param(m, marks=pytest.mark.slow)
    for m in registry.method_names()
])
def test_every_path_trains_the_same(method):
    history = _check_same(method, _paths(method))
    if method in ("fitnet", "correlation"):
        # Two stages in the 2 epochs: the knowledge loss alone, then
        # L_Class = 0.3 CE + 0.7 KD.
        knowledge = {"fitnet": "hint", "correlation": "correlation"}[method]
        assert history["loss"][0] == pytest.approx(
            history[f"{knowledge}_loss"][0], rel=1e-5)
        assert history["loss"][1] == pytest.approx(
            0.3 * history["student_loss"][1] + 0.7 * history["kd_loss"][1],
            rel=1e-5)
    if method == "dkd":
        # The authors' warm-up: weight epoch / 20.
        assert history["dkd/weight"] == pytest.approx([0.0, 0.05])


def test_ktan_fit_pretrains_its_regressor_once(monkeypatch):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    template = testing.tiny_conv_model("student", width=4, seed=2)
    x, y = testing.random_images(16)
    distiller = _compile(_by_class("ktan", teacher, template), 1e-3)
    assert not distiller.regressor_pretrained
    calls = []
    pretrain = distiller.pretrain_regressor

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return pretrain(*args, **kwargs)

    monkeypatch.setattr(distiller, "pretrain_regressor", counted)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert distiller.regressor_pretrained and len(calls) == 1
    assert calls[0]["epochs"] == distiller.pretrain_epochs == 1
    frozen = [np.array(w) for w in distiller.term("mse").regressor.weights]
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert len(calls) == 1
    for before, after in zip(frozen, distiller.term("mse").regressor.weights):
        np.testing.assert_array_equal(before, np.array(after))
    # The flag is saved: a reloaded distiller does not pre-train again.
    config = distiller.get_config()
    assert config["regressor_pretrained"] is True
