"""Hyperparameter checks accept NumPy scalars and 0-d arrays (what NumPy
arithmetic and config files hand back) and still refuse bools, NaN/Inf,
strings and arrays with elements."""

import numpy as np
import pytest

from tfkd import losses
from tfkd.losses import _utils

FLOAT_CHECKS = [
    (_utils.check_positive, 0.5),
    (_utils.check_unit_interval, 0.5),
    (_utils.check_non_negative, 0.5),
]
NUMPY_FLOATS = [np.float16, np.float32, np.float64, np.longdouble,
                lambda v: np.array(v, "float32")]
NUMPY_INTS = [np.int8, np.int32, np.int64, np.uint8,
              lambda v: np.array(v, "int64")]


@pytest.mark.parametrize("check, value", FLOAT_CHECKS)
@pytest.mark.parametrize("make", NUMPY_FLOATS + NUMPY_INTS[:1])
def test_numpy_scalars_accepted(check, value, make):
    numpy_value = make(1 if make in NUMPY_INTS else value)
    result = check(numpy_value, "alpha")
    assert type(result) is float
    assert result == float(numpy_value)


@pytest.mark.parametrize("make", NUMPY_INTS)
def test_numpy_integers_accepted_as_positive_int(make):
    result = _utils.check_positive_int(make(3), "k")
    assert type(result) is int and result == 3


BAD_TYPES = [True, np.bool_(True), np.array(True), "0.5", np.str_("0.5"),
             np.array([0.5]), np.array([[1.0]]), None, 1 + 0j,
             np.complex64(1)]


@pytest.mark.parametrize("check", [c for c, _ in FLOAT_CHECKS]
                         + [_utils.check_positive_int])
@pytest.mark.parametrize("value", BAD_TYPES, ids=repr)
def test_non_numbers_refused(check, value):
    with pytest.raises(TypeError, match=r"`temperature` must be .*"
                       r"Received: temperature="):
        check(value, "temperature")


@pytest.mark.parametrize("value", [np.float32(3.0), np.array(3.0), 3.0])
def test_floats_refused_as_int(value):
    with pytest.raises(TypeError, match=r"`k` must be an integer >= 1"):
        _utils.check_positive_int(value, "k")


@pytest.mark.parametrize("check", [c for c, _ in FLOAT_CHECKS])
@pytest.mark.parametrize("value", [np.float32("nan"), np.float64("inf"),
                                   np.array(float("nan")), np.float32(-1)])
def test_nan_inf_and_out_of_range_refused(check, value):
    with pytest.raises(ValueError, match=r"`beta`.*Received: beta="):
        check(value, "beta")


def test_out_of_range_numpy_values_refused():
    with pytest.raises(ValueError, match=r"`alpha` must be in \[0, 1\]\. "
                       r"Received: alpha=1\.5"):
        _utils.check_unit_interval(np.float32(1.5), "alpha")
    with pytest.raises(ValueError, match=r"`k`.*Received: k=0"):
        _utils.check_positive_int(np.int64(0), "k")
    with pytest.raises(ValueError, match=r"`temperature`.*temperature=0"):
        _utils.check_positive(np.int32(0), "temperature")


def test_losses_take_numpy_hyperparameters():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(2, 4, 10)).astype("float32")
    labels = np.array([0, 3, 5, 9])
    np.testing.assert_allclose(
        losses.kd_loss(teacher, student, temperature=np.float32(4.0)),
        losses.kd_loss(teacher, student, temperature=4.0))
    np.testing.assert_allclose(
        losses.class_loss(labels, teacher, student, alpha=np.float32(0.3),
                          temperature=np.array(2.0)),
        losses.class_loss(labels, teacher, student, alpha=0.3,
                          temperature=2.0))
    features = rng.normal(size=(6, 2, 2, 3)).astype("float32")
    np.testing.assert_allclose(
        losses.locality_preserving_loss(features, features[..., :2],
                                        k=np.int64(3)),
        losses.locality_preserving_loss(features, features[..., :2], k=3))


OPTIONS = ("l2", None)
MEANINGS = {"l2": "unit length", None: "raw"}


@pytest.mark.parametrize("value", ["l2", None])
def test_option_accepted(value):
    assert _utils.check_option(value, "normalize", OPTIONS, MEANINGS) is value


@pytest.mark.parametrize("value", ["l1", "L2", "none", "None", False, 0, b"l2",
                                   ["l2"]])
def test_option_refused_naming_each_choice_and_its_meaning(value):
    with pytest.raises(ValueError) as info:
        _utils.check_option(value, "normalize", OPTIONS, MEANINGS)
    message = str(info.value)
    assert "`normalize` must be one of 'l2' (unit length), None (raw)" in (
        message)
    assert f"Received: normalize={value!r}." in message


@pytest.mark.parametrize("make, name, value", [
    (lambda: losses.DKDDistillation(unlabelled_target="zero"),
     "unlabelled_target", "'zero'"),
    (lambda: losses.DKDDistillation(unlabelled_target=True),
     "unlabelled_target", "True"),
    (lambda: losses.LocalityPreservingDistillation(
        teacher_layer_name="t", student_layer_name="s", normalize="l1"),
     "normalize", "'l1'"),
    (lambda: losses.CollaborationDistillation(
        teacher_layer_name="t", student_layer_name="s", target="logits"),
     "target", "'logits'"),
])
def test_method_options_explain_every_choice(make, name, value):
    with pytest.raises(ValueError, match=rf"`{name}` must be one of .*\(.*\)"
                                         rf".*Received: {name}={value}\."):
        make()
