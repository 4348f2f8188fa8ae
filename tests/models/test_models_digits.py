"""The digits pair and its augmented / self-taught variants (Table 4 at
digits scale)."""

import re

import keras
import numpy as np
import pytest

import tfkd
from tfkd.layers import SelfTaughtConv2D
from tfkd.layers import find_guided_channels
from tfkd.models import DIGITS_FEATURE_LAYER
from tfkd.models import digits_student
from tfkd.models import digits_teacher


def _convs(model):
    return {layer.name: layer.filters for layer in model.layers
            if "conv" in layer.name}


def test_defaults_unchanged():
    teacher, student = digits_teacher(), digits_student()
    assert (teacher.name, student.name) == ("digits_teacher", "digits_student")
    assert _convs(teacher) == {"block1_conv1": 32, "block1_conv2": 32,
                               "block2_conv1": 64, "block2_conv2": 64}
    assert _convs(student) == {"block1_conv1": 8, "block2_conv1": 16}
    assert teacher.count_params() == 66_218
    assert student.count_params() == 1_490
    assert not any(isinstance(layer, SelfTaughtConv2D)
                   for layer in student.layers)


def test_augmented_doubles_the_guided_layer_only():
    teacher = digits_teacher(augmented=True)
    student = digits_student(augmented=True)
    assert teacher.name == "digits_teacher_augmented"
    assert student.name == "digits_student_augmented"
    assert _convs(teacher) == {"block1_conv1": 32, "block1_conv2": 32,
                               "block2_conv1": 64, "block2_conv2": 128}
    assert _convs(student) == {"block1_conv1": 8, "block2_conv1": 32}
    # Same layer names as the originals.
    assert ([layer.name for layer in teacher.layers]
            == [layer.name for layer in digits_teacher().layers])
    assert ([layer.name for layer in student.layers]
            == [layer.name for layer in digits_student().layers])
    assert teacher.get_layer(DIGITS_FEATURE_LAYER).output.shape[-1] == 128
    assert student.get_layer(DIGITS_FEATURE_LAYER).output.shape[-1] == 32
    assert find_guided_channels(student, DIGITS_FEATURE_LAYER) is None


def test_self_taught_student():
    student = digits_student(augmented=True, self_taught=True)
    assert student.name == "digits_student_self_taught"
    conv = student.get_layer("block2_conv1")
    assert isinstance(conv, SelfTaughtConv2D)
    assert (conv.guided_filters, conv.self_taught_filters) == (16, 16)
    assert not conv.use_bias
    assert find_guided_channels(student, DIGITS_FEATURE_LAYER) == 16
    assert student.get_layer(DIGITS_FEATURE_LAYER).output.shape[-1] == 32
    assert (student.count_params()
            == digits_student(augmented=True).count_params())
    assert ([layer.name for layer in student.layers]
            == [layer.name for layer in digits_student().layers])
    # Serialises like every zoo model.
    clone = keras.models.clone_model(student)
    assert isinstance(clone.get_layer("block2_conv1"), SelfTaughtConv2D)


def test_bad_variant_arguments():
    with pytest.raises(ValueError, match="self_taught=True.*augmented=True"):
        digits_student(self_taught=True)
    with pytest.raises(TypeError, match="augmented=1"):
        digits_student(augmented=1)
    with pytest.raises(TypeError, match="self_taught='yes'"):
        digits_student(augmented=True, self_taught="yes")
    with pytest.raises(TypeError, match="augmented=None"):
        digits_teacher(augmented=None)


def test_student_widths_are_public():
    # The tuner's students of any size come from this public argument.
    student = digits_student(widths=(16, 32))
    assert student.name == "digits_student"
    assert _convs(student) == {"block1_conv1": 16, "block2_conv1": 32}
    assert ([layer.name for layer in student.layers]
            == [layer.name for layer in digits_student().layers])
    assert _convs(digits_student(widths=[4, 8], augmented=True)) == {
        "block1_conv1": 4, "block2_conv1": 16}
    from tfkd.tuning.hypermodel import scaled_digits_student

    assert _convs(scaled_digits_student(2.0)) == _convs(student)


@pytest.mark.parametrize("widths", [(), (8, 0), (8, 2.0), (True, 8), 16])
def test_bad_widths(widths):
    with pytest.raises(ValueError, match=r"`widths` must be .*Received: "
                                         rf"widths={re.escape(repr(widths))}"):
        digits_student(widths=widths)


@pytest.mark.parametrize("method", ["channel", "activation"])
def test_distiller_slices_the_guided_channels(method):
    """Self-guided learning at digits scale: the knowledge loss sees the 16
    guided channels (through a 16 -> 64 adapter / regressor) and leaves the
    self-taught half exactly unchanged in stage 1."""
    keras.utils.set_random_seed(0)
    teacher = digits_teacher()
    student = digits_student(augmented=True, self_taught=True)
    common = dict(teacher_layer_name=DIGITS_FEATURE_LAYER,
                  student_layer_name=DIGITS_FEATURE_LAYER, stage=1)
    if method == "channel":
        distiller = tfkd.CorrelationDistiller(
            teacher, student, mode="channel", adapter=True, **common)
    else:
        distiller = tfkd.FitNetDistiller(teacher, student, **common)
    adapter = distiller.knowledge.adapters[0]
    kernels = [tuple(w.shape) for w in adapter.trainable_weights]
    assert kernels[0] == (1, 1, 16, 64)
    conv = student.get_layer("block2_conv1")
    bn = student.get_layer("block2_bn1")
    guided = conv.guided_kernel.numpy().copy()
    self_taught = conv.self_taught_kernel.numpy().copy()
    gamma = bn.gamma.numpy().copy()
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x = np.random.default_rng(0).normal(size=(32, 16, 16, 1))
    y = np.arange(32) % 10
    distiller.fit(x.astype("float32"), y, batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(conv.guided_kernel.numpy(), guided)
    np.testing.assert_array_equal(conv.self_taught_kernel.numpy(),
                                  self_taught)
    # Batch norm is channel-wise: its self-taught half is untouched too.
    new_gamma = bn.gamma.numpy()
    assert not np.allclose(new_gamma[:16], gamma[:16])
    np.testing.assert_array_equal(new_gamma[16:], gamma[16:])


def test_augmented_pair_builds_with_adapter():
    distiller = tfkd.CorrelationDistiller(
        digits_teacher(augmented=True), digits_student(augmented=True),
        teacher_layer_name=DIGITS_FEATURE_LAYER,
        student_layer_name=DIGITS_FEATURE_LAYER, mode="channel", adapter=True)
    kernel = distiller.knowledge.adapters[0].trainable_weights[0]
    assert tuple(kernel.shape) == (1, 1, 32, 128)
