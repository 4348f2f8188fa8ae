"""Defaults that do not hurt: every method's default objective reads the
teacher's logits.

The feature-only methods built by `tfkd.Distiller` (their record's
`soft_targets`) add `tfkd.losses.SoftTargetDistillation` at
`tfkd.methods.kd.SOFT_TARGETS` (the LP paper's eq. 8 setting, LP's own
defaults); `soft_target_weight=0.0` gives the paper's objective alone. The
presets carry their logit term in their class defaults, so the class and
`registry.build` agree. Each method page documents its default.
"""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.dkd import DKDDistillation
from tfkd.methods.dkd import dkd_loss
from tfkd.methods.kd import SOFT_TARGETS
from tfkd.methods.kd import KDDistillation
from tfkd.methods.kd import SoftTargetDistillation

TAPS = ("conv2", "conv2")
#: The methods whose default objective adds the soft targets.
SOFT = ("cc", "crd", "dkd", "nst", "pkt", "rkd", "sp", "vid")
#: The presets' logit terms by default: `(metric name, weight argument,
#: default)`, `weight argument` naming the class argument that weighs it.
PRESET_LOGITS = {
    "attention": ("kd", "alpha", 0.3),
    "correlation": ("kd", "alpha", 0.3),
    "fitnet": ("kd", "alpha", 0.3),
    "stc": ("kd", "kd_weight", 1.0),
    "ktan": ("kd", "kd_weight", 3.0),
    "dln": ("kd", "kd_weight", 3.0),
    "lp": ("soft", "lam", 2.0),
}
#: Methods whose own term reads the logits.
LOGIT_METHODS = ("kd", "dist")


def _pair(seed=2):
    # Terms with weights of their own (CRD's heads) draw them after this.
    keras.utils.set_random_seed(3)
    return (testing.tiny_conv_model("teacher", width=8, seed=1),
            testing.tiny_conv_model("student", width=4, seed=seed))


def _documented(name, teacher, student):
    """The construction each method page documents:
    `tfkd.Distiller(teacher, student, [term, SoftTargetDistillation(0.5)],
    distillation_loss_weights=[weight, 2.0], student_loss_weight=0.5)`."""
    spec = registry.get(name)
    layers = {"teacher_layer_name": TAPS[0],
              "student_layer_name": TAPS[1]} if spec.uses_features else {}
    return tfkd.Distiller(
        teacher, student,
        [spec.term(**layers, **spec.build_defaults),
         SoftTargetDistillation(temperature=0.5)],
        distillation_loss_weights=[spec.method.weight, 2.0],
        student_loss_weight=spec.method.student_loss_weight)


def _losses(distiller, x, y):
    distiller.compile(optimizer="adam")
    return distiller.evaluate(x, y, batch_size=16, return_dict=True,
                              verbose=0)


def test_every_method_is_covered():
    assert sorted(SOFT + tuple(PRESET_LOGITS) + LOGIT_METHODS) == \
        registry.method_names()
    assert sorted(m for m in registry.method_names()
                  if registry.get(m).method.soft_targets) == sorted(SOFT)


def test_soft_targets_are_lps_eq_8_setting():
    assert SOFT_TARGETS == {"temperature": 0.5, "weight": 2.0}
    lp = registry.get("lp").arguments()
    assert (lp["lam"], lp["temperature"]) == (SOFT_TARGETS["weight"],
                                             SOFT_TARGETS["temperature"])


@pytest.mark.parametrize("name", SOFT)
def test_registry_adds_the_soft_targets_as_documented(name):
    arguments = registry.get(name).arguments()
    assert arguments["soft_target_weight"] == 2.0
    assert arguments["soft_target_temperature"] == 0.5
    teacher, student = _pair()
    built = registry.build(name, teacher, student, feature_layers=TAPS)
    assert list(built.terms)[1:] == ["soft"]
    soft = built.term("soft")
    assert type(soft) is SoftTargetDistillation
    assert float(soft.temperature) == 0.5
    weights = built.distillation_loss_weights
    assert weights == [registry.get(name).method.weight, 2.0]
    x, y = testing.random_images(16)
    logs = _losses(built, x, y)
    w_s = built.student_loss_weight
    own = logs[f"{list(built.terms)[0]}_loss"]
    assert logs["loss"] == pytest.approx(
        w_s * logs["student_loss"]
        + (1 - w_s) * (weights[0] * own + 2.0 * logs["soft_loss"]),
        rel=1e-5)
    # The page's construction gives the same objective.
    documented = _losses(_documented(name, teacher, _pair()[1]), x, y)
    assert documented["loss"] == pytest.approx(logs["loss"], rel=1e-5)


@pytest.mark.parametrize("name", SOFT)
def test_soft_target_weight_zero_is_the_papers_objective(name):
    teacher, student = _pair()
    built = registry.build(name, teacher, student, feature_layers=TAPS,
                           soft_target_weight=0.0)
    assert "soft" not in built.terms and len(built.terms) == 1
    x, y = testing.random_images(16)
    logs = _losses(built, x, y)
    assert "soft_loss" not in logs
    own = logs[f"{list(built.terms)[0]}_loss"]
    w_s = built.student_loss_weight
    assert logs["loss"] == pytest.approx(
        w_s * logs["student_loss"]
        + (1 - w_s) * registry.get(name).method.weight * own, rel=1e-5)


def test_soft_target_arguments_are_checked():
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"`soft_target_weight` must be a "
                       r"finite number >= 0\. Received: "
                       r"soft_target_weight=-1"):
        registry.build("pkt", teacher, student, feature_layers=TAPS,
                       soft_target_weight=-1.0)
    with pytest.raises(ValueError, match=r"soft_target_temperature=2\.0"):
        registry.build("pkt", teacher, student, feature_layers=TAPS,
                       soft_target_weight=0.0, soft_target_temperature=2.0)
    with pytest.raises(ValueError, match=r"'lp' adds no soft targets.*"
                       r"soft_target_weight=1\.0"):
        registry.build("lp", teacher, student, feature_layers=TAPS,
                       soft_target_weight=1.0)
    built = registry.build("rkd", teacher, student, feature_layers=TAPS,
                           soft_target_weight=1.0,
                           soft_target_temperature=2.0)
    assert built.distillation_loss_weights[1] == 1.0
    assert float(built.term("soft").temperature) == 2.0


@pytest.mark.parametrize("name", sorted(PRESET_LOGITS))
def test_presets_carry_a_logit_term_by_default(name):
    term, argument, value = PRESET_LOGITS[name]
    spec = registry.get(name)
    assert spec.arguments()[argument] == value
    teacher, student = _pair()
    built = registry.build(name, teacher, student, feature_layers=TAPS)
    by_class = spec.load()(teacher, _pair()[1],
                           teacher_layer_name=TAPS[0],
                           student_layer_name=TAPS[1], **spec.build_defaults)
    for distiller in (built, by_class):
        assert getattr(distiller, argument) == value
        assert isinstance(distiller.term(term),
                          (KDDistillation, SoftTargetDistillation))
    x, y = testing.random_images(16)
    assert _losses(by_class, x, y)["loss"] == pytest.approx(
        _losses(built, x, y)["loss"], rel=1e-5)


def test_attention_weighs_its_maps_with_beta_50():
    assert registry.get("attention").arguments()["beta"] == 50.0
    teacher, student = _pair()
    assert tfkd.AttentionDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv2").beta == 50.0


def test_dkd_splits_unlabelled_examples_at_the_teachers_top_class():
    assert registry.get("dkd").arguments()["unlabelled_target"] == "teacher"
    teacher, student = _pair()
    x, y = testing.random_images(8, seed=4)
    t, s = teacher(x), student(x)
    top = np.argmax(np.asarray(t), axis=-1)
    unlabelled = np.full((8,), -1)
    np.testing.assert_allclose(
        DKDDistillation()(t, s, labels=unlabelled),
        dkd_loss(t, s, top), rtol=1e-6)
    assert np.all(np.asarray(DKDDistillation(unlabelled_target=None)(
        t, s, labels=unlabelled)) == 0.0)
    # In training steps too: the engine hands the terms the raw -1.
    built = registry.build("dkd", teacher, student)
    logs = _losses(built, x, unlabelled.astype("int32"))
    assert logs["dkd_loss"] == pytest.approx(
        float(np.mean(dkd_loss(t, s, top))), rel=1e-5)
    with pytest.raises(ValueError, match=r"unlabelled_target='zero'"):
        DKDDistillation(unlabelled_target="zero")
    with pytest.raises(ValueError, match=r"unlabelled_target=True"):
        dkd_loss(t, s, top, unlabelled_target=True)
