"""`tfkd.Distiller` as a drop-in for `keras.distillation.Distiller`:
Keras's trainer pieces (`compute_loss`), Keras's metric names, its
default optimizer, its error class, and the warnings a Keras user needs
(see docs/migration.md)."""

import inspect
import warnings

import keras
import numpy as np
import pytest
from keras.distillation import LogitsDistillation

import tfkd
from tfkd import testing


def _pair():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    return teacher, student


def _kl():
    return keras.losses.KLDivergence()


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_evaluate_returns_keras_values_first_then_tfkd_extras():
    teacher, student = _pair()
    x, y = testing.random_images(16)
    results = {}
    for cls in (keras.distillation.Distiller, tfkd.Distiller):
        d = cls(teacher, student,
                distillation_losses=[LogitsDistillation(3.0, loss=_kl())],
                student_loss_weight=0.3)
        d.compile(loss=_ce(), metrics=["accuracy"])
        results[cls] = (d.metrics_names, d.evaluate(x, y, verbose=0))
    names_k, values_k = results[keras.distillation.Distiller]
    values_t = results[tfkd.Distiller][1]
    assert len(values_k) == 5 and len(values_t) == 6
    # Same order and values for Keras's five (loss, accuracy,
    # student_loss, distillation_loss, total_loss); tfkd adds logits_loss.
    np.testing.assert_allclose(values_t[:5], values_k, rtol=1e-5)


def test_compute_loss_works_when_called_directly():
    teacher, student = _pair()
    d = tfkd.Distiller(teacher, student, alpha=0.4, temperature=3.0)
    d.compile()
    x, y = testing.random_images(8)
    logs = d.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    for y_pred in (student(x), None):
        loss = d.compute_loss(x, y, y_pred, training=False)
        assert float(loss) == pytest.approx(logs["loss"], rel=1e-5)


def test_a_subclass_override_of_compute_loss_is_honoured():
    calls = []

    class Doubled(tfkd.Distiller):
        def compute_loss(self, x=None, y=None, y_pred=None,
                         sample_weight=None, training=True):
            calls.append(training)
            return 2.0 * super().compute_loss(x, y, y_pred, sample_weight,
                                              training)

    teacher, student = _pair()
    d = Doubled(teacher, student)
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = testing.random_images(8)
    logs = d.fit(x, y, batch_size=8, verbose=0).history
    assert calls and calls[0] is True
    assert logs["loss"][0] == pytest.approx(2.0 * logs["total_loss"][0],
                                            rel=1e-5)
    logs = d.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    assert False in calls
    assert logs["loss"] == pytest.approx(2.0 * logs["total_loss"], rel=1e-5)


def test_default_optimizer_is_keras_distillers():
    keras_default = inspect.signature(
        keras.distillation.Distiller.compile).parameters["optimizer"].default
    ours = inspect.signature(tfkd.Distiller.compile).parameters["optimizer"]
    assert ours.default == keras_default == "adam"
    d = tfkd.Distiller(*_pair())
    d.compile()
    assert isinstance(d.optimizer, keras.optimizers.Adam)


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_non_model_raises_kerass_error_class(role):
    teacher, student = _pair()
    args = {"teacher": teacher, "student": student, role: "not_a_model"}
    with pytest.raises(ValueError, match=rf"`{role}` must be a `keras.Model"):
        tfkd.Distiller(**args)


def test_logits_distillation_default_loss_is_warned_about_with_the_fix():
    teacher, student = _pair()
    with pytest.warns(UserWarning, match=r"loss=keras\.losses\.KLDivergence"
                                         r"\(\)`.*KDDistillation"):
        tfkd.Distiller(teacher, student,
                       distillation_losses=[LogitsDistillation(3.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tfkd.Distiller(teacher, student,
                       distillation_losses=[LogitsDistillation(3.0,
                                                               loss=_kl())])


def test_keras_term_temperature_is_live():
    teacher, student = _pair()
    term = LogitsDistillation(3.0, loss=_kl())
    d = tfkd.Distiller(teacher, student, distillation_losses=[term])
    d.compile(loss=_ce())
    x, y = testing.random_images(8)
    t, s = teacher(x), student(x)

    def expected(temperature):
        return float(LogitsDistillation(temperature, loss=_kl())
                     .compute_loss(t, s))

    def logged():
        return d.evaluate(x, y, batch_size=8, return_dict=True,
                          verbose=0)["logits_loss"]

    assert logged() == pytest.approx(expected(3.0), rel=1e-5)
    term.temperature = 1.0  # after the step was traced
    assert logged() == pytest.approx(expected(1.0), rel=1e-5)
    d.set_hyperparameter("logits/temperature", 6.0)
    assert d.hyperparameters["logits/temperature"] == 6.0
    assert logged() == pytest.approx(expected(6.0), rel=1e-5)
    term.temperature = 0.0
    with pytest.raises(ValueError, match="temperature"):
        logged()


def test_a_keras_logits_term_refuses_mismatched_widths_naming_both():
    teacher = testing.tiny_conv_model("teacher", num_classes=10)
    student = testing.tiny_conv_model("student", num_classes=5)
    with pytest.raises(ValueError, match=r"teacher outputs 10 logits and "
                                         r"the student 5.*'logits'"):
        tfkd.Distiller(teacher, student, distillation_losses=[
            LogitsDistillation(3.0, loss=_kl())])


def test_a_callback_monitoring_an_unreported_loss_is_warned_about():
    d = tfkd.Distiller(*_pair(), distillation_losses=[
        LogitsDistillation(3.0, loss=_kl())])
    d.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = testing.random_images(8)
    with pytest.warns(UserWarning, match=r"monitor='val_kd_loss'.*"
                                         r"'logits_loss'"):
        d.fit(x, y, verbose=0, validation_data=(x, y), callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_kd_loss",
                                          mode="min")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d.fit(x, y, verbose=0, validation_data=(x, y), callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_total_loss",
                                          mode="min"),
            keras.callbacks.EarlyStopping(monitor="val_distillation_loss",
                                          mode="min")])
    assert not [w for w in caught if "monitors a loss" in str(w.message)]

