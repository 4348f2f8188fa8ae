"""Tests for the VGG teachers / students of the student-centric paper."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from tfkd.layers.self_taught_conv2d import SelfTaughtConv2D
from tfkd.layers.self_taught_conv2d import find_guided_channels
from tfkd.models import vgg
from tfkd.models.vgg import STUDENT_CENTRIC_VGG_PRESETS
from tfkd.models.vgg import VGG_GUIDED_CONV
from tfkd.models.vgg import VGG_GUIDED_LAYER
from tfkd.models.vgg import vgg_guided_layer
from tfkd.models.vgg import vgg_student
from tfkd.models.vgg import vgg_teacher

# Table 2 of the paper, in millions, keyed by num_classes.
TABLE_2 = {
    "vgg_teacher": {10: 7.65, 100: 7.69},
    "vgg_student": {10: 1.56, 100: 1.61},
    "vgg_teacher_augmented": {10: 11.19, 100: 11.23},
    "vgg_student_augmented": {10: 2.75, 100: 2.84},
}


def _build(preset, num_classes=10, **kwargs):
    entry = STUDENT_CENTRIC_VGG_PRESETS[preset]
    builder = getattr(vgg, entry["builder"])
    return builder(num_classes=num_classes, **entry["config"], **kwargs)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("preset", sorted(TABLE_2))
def test_parameter_counts_match_table_2(preset, num_classes):
    model = _build(preset, num_classes)
    count = model.count_params()
    assert round(count / 1e6, 2) == TABLE_2[preset][num_classes]
    assert count == STUDENT_CENTRIC_VGG_PRESETS[preset]["params"][num_classes]
    assert model.name == preset


def test_layer_names_and_guided_layer():
    expected_convs = {
        "vgg_teacher": [2, 2, 3, 3],
        "vgg_student": [1, 1, 1, 1],
    }
    for preset, convs in expected_convs.items():
        model = _build(preset)
        names = {layer.name for layer in model.layers}
        for b, n in enumerate(convs, start=1):
            for i in range(1, n + 1):
                for kind in ("conv", "bn", "relu"):
                    assert f"block{b}_{kind}{i}" in names
        assert {"block1_pool", "block2_pool", "block3_pool"} <= names
        assert "block4_pool" not in names
        assert {"images", "gap", "logits"} <= names
        assert vgg_guided_layer(model) == VGG_GUIDED_LAYER == "block4_relu1"
        assert model.get_layer(VGG_GUIDED_LAYER).output.shape == (
            None,
            4,
            4,
            512,
        )
        assert find_guided_channels(model, VGG_GUIDED_LAYER) is None
    for preset in STUDENT_CENTRIC_VGG_PRESETS:
        assert vgg_guided_layer(preset) == VGG_GUIDED_LAYER


def test_augmented_guided_layers_have_1024_channels():
    for preset in ("vgg_teacher_augmented", "vgg_student_augmented"):
        model = _build(preset)
        assert model.get_layer(VGG_GUIDED_CONV).filters == 1024


def test_self_taught_student():
    model = vgg_student(num_classes=100, augmented=True, self_taught=True)
    assert model.name == "vgg_student_self_taught"
    conv = model.get_layer(VGG_GUIDED_CONV)
    assert isinstance(conv, SelfTaughtConv2D)
    assert conv.guided_filters == 512 and conv.self_taught_filters == 512
    assert conv.guided_channels == 512
    assert find_guided_channels(model, VGG_GUIDED_LAYER) == 512
    # Same size as the plain student-augmented network (Table 2).
    assert model.count_params() == 2_838_052
    other = [l for l in model.layers if isinstance(l, SelfTaughtConv2D)]
    assert other == [conv]


def test_self_taught_gradient_through_bn_and_relu_is_zero():
    model = vgg_student(augmented=True, self_taught=True)
    taps = keras.Model(model.input, model.get_layer(VGG_GUIDED_LAYER).output)
    conv = model.get_layer(VGG_GUIDED_CONV)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    variables = [conv.guided_kernel, conv.self_taught_kernel]
    with tf.GradientTape() as tape:
        features = taps(x, training=True)
        loss = tf.reduce_sum(tf.square(features[..., :512]))
    guided, self_taught = tape.gradient(loss, variables)
    assert np.all(self_taught.numpy() == 0.0)
    assert np.any(guided.numpy() != 0.0)


def test_forward_pass_outputs_logits():
    model = vgg_student(num_classes=7, augmented=True, self_taught=True)
    x = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype("float32")
    logits = model(x, training=False)
    assert tuple(logits.shape) == (2, 7)
    assert np.all(np.isfinite(logits.numpy()))
    # Logits, not probabilities.
    assert not np.allclose(np.sum(logits.numpy(), axis=-1), 1.0)
    teacher = vgg_teacher(num_classes=7, input_shape=(16, 16, 3))
    assert tuple(teacher(x[:, :16, :16], training=False).shape) == (2, 7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="augmented=True"):
        vgg_student(self_taught=True)
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        vgg_teacher(num_classes=0)
    with pytest.raises(ValueError, match="input_shape"):
        vgg_student(input_shape=(4, 4, 3))
    with pytest.raises(TypeError, match="Received: augmented='yes'"):
        vgg_teacher(augmented="yes")
    with pytest.raises(ValueError, match="preset"):
        vgg_guided_layer("vgg16")
