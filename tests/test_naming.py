"""One name per thing: layer arguments, term spellings, shared defaults."""

import inspect
import warnings

import pytest

import tfkd
import tfkd.losses
import tfkd.terms
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.kd import KDDistillation

PRESETS = sorted({spec.load() for spec in registry.methods().values()
                  if spec.preset and spec.uses_features},
                 key=lambda cls: cls.__name__)


def _pair():
    return (testing.tiny_conv_model("teacher", width=8, seed=1),
            testing.tiny_conv_model("student", width=8, seed=2))


@pytest.mark.parametrize("cls", PRESETS, ids=lambda c: c.__name__)
def test_presets_take_keras_layer_argument_names(cls):
    parameters = inspect.signature(cls.__init__).parameters
    assert "teacher_layer_name" in parameters
    assert "student_layer_name" in parameters
    assert "teacher_layer" not in parameters
    assert "student_layer" not in parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling never warns
        distiller = cls(*_pair(), teacher_layer_name="conv2",
                        student_layer_name="conv2")
    config = distiller.get_config()
    assert config["teacher_layer_name"] == "conv2"
    assert "teacher_layer" not in config


@pytest.mark.parametrize("cls", PRESETS, ids=lambda c: c.__name__)
def test_old_layer_spelling_still_works_with_a_deprecation_warning(cls):
    with pytest.warns(DeprecationWarning,
                      match="`teacher_layer=` is deprecated; use "
                            "`teacher_layer_name=`"):
        old = cls(*_pair(), teacher_layer="conv2", student_layer="conv2")
    assert old.get_config()["student_layer_name"] == "conv2"
    with pytest.raises(TypeError, match="teacher layer twice"):
        cls(*_pair(), teacher_layer_name="conv2", teacher_layer="conv1",
            student_layer_name="conv2")


def test_every_term_has_one_public_spelling_listed_by_dir():
    listed = dir(tfkd.losses)
    for spec in registry.methods().values():
        name = spec.term.__name__
        if name.startswith("_"):
            continue
        assert name in listed, name
        assert getattr(tfkd.losses, name) is spec.term
        assert getattr(tfkd.terms, name) is spec.term
    assert "KDDistillation" in listed and "kd_loss" in listed


def _default(function, name):
    return inspect.signature(function).parameters[name].default


def test_presets_read_the_kd_temperature_from_one_constant():
    # Written once: Hinton KD's in the term, the feature presets' added KD
    # term in `PRESET_KD_TEMPERATURE` (docs/methods/kd.md says why they
    # differ); FitNets' class stage is that constant too.
    from tfkd.distillers.feature import PRESET_KD_TEMPERATURE
    from tfkd.distillers.fitnet import KD_STAGE_TEMPERATURE

    term_default = _default(KDDistillation.__init__, "temperature")
    assert term_default == 4.0 and PRESET_KD_TEMPERATURE == 1.0
    assert KD_STAGE_TEMPERATURE == PRESET_KD_TEMPERATURE
    assert _default(tfkd.Distiller.__init__, "temperature") is None
    assert tfkd.Distiller(*_pair()).temperature == term_default
    presets = {tfkd.CorrelationDistiller: "temperature",
               tfkd.FitNetDistiller: "temperature",
               tfkd.AttentionDistiller: "temperature",
               tfkd.distillers.FeatureDistiller: "temperature",
               tfkd.distillers.AdversarialDistiller: "temperature",
               tfkd.CollaborationDistiller: "kd_temperature"}
    for cls, name in presets.items():
        kd = PRESET_KD_TEMPERATURE
        assert _default(cls.__init__, name) == kd, (cls, name)
        if cls is tfkd.distillers.FeatureDistiller:
            taps = {"knowledge": tfkd.losses.HintDistillation("conv2",
                                                              "conv2")}
        else:
            taps = {"teacher_layer_name": "conv2",
                    "student_layer_name": "conv2"}
        distiller = cls(*_pair(), **taps)
        terms = [t for t in distiller.terms.values()
                 if isinstance(t, KDDistillation)]
        assert float(terms[0].temperature) == kd, cls
