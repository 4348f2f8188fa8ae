"""Tests for the LP / FitNets model zoo (`tfkd.models.fitnets`)."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfkd.layers.maxout import Maxout
from tfkd.models.fitnets import LP_PRESETS
from tfkd.models.fitnets import lp_mnist_student
from tfkd.models.fitnets import lp_mnist_teacher
from tfkd.models.fitnets import lp_student
from tfkd.models.fitnets import lp_tap_layers
from tfkd.models.fitnets import lp_teacher

BUILDERS = {
    "lp_teacher": lp_teacher,
    "lp_student_1": lambda: lp_student(1),
    "lp_student_2": lambda: lp_student(2),
    "lp_student_3": lambda: lp_student(3),
    "lp_student_4": lambda: lp_student(4),
    "lp_mnist_teacher": lp_mnist_teacher,
    "lp_mnist_student": lp_mnist_student,
}
CIFAR = ["lp_teacher"] + [f"lp_student_{i}" for i in range(1, 5)]


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in BUILDERS.items()}


def test_preset_table_is_plain_data_and_complete():
    assert set(LP_PRESETS) == set(BUILDERS)
    for entry in LP_PRESETS.values():
        assert isinstance(entry["description"], str)
        assert all(isinstance(entry[k], int) for k in ("params", "paper_params"))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_parameter_count_matches_preset(models, name):
    assert models[name].name == name
    assert models[name].count_params() == LP_PRESETS[name]["params"]


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_counts_within_10_percent_of_table_1(models, name):
    paper = LP_PRESETS[name]["paper_params"]
    assert abs(models[name].count_params() - paper) <= 0.10 * paper


def test_fitnet4_with_released_5_piece_fc_is_still_within_10_percent():
    assert abs(lp_student(4, fc_pieces=5).count_params() - 2.5e6) <= 0.25e6


@pytest.mark.parametrize("name", list(BUILDERS))
def test_layer_names_and_depth(models, name):
    model = models[name]
    weighted = [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    ]
    # "#layers" in the papers counts weight layers (convs, FC, softmax).
    assert len(weighted) == LP_PRESETS[name]["num_layers"]
    convs = [l for l in weighted if isinstance(l, keras.layers.Conv2D)]
    for i, conv in enumerate(convs, start=1):
        assert conv.name == f"conv{i}"
        assert isinstance(model.get_layer(f"conv{i}_maxout"), Maxout)
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].activation is keras.activations.linear
    assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)
    for tap in lp_tap_layers(name).values():
        model.get_layer(tap)


@pytest.mark.parametrize(
    "name, hint_shape",
    [
        ("lp_teacher", (6, 6, 192)),  # the paper's d_T = 6912
        ("lp_student_1", (8, 8, 32)),
        ("lp_student_2", (8, 8, 80)),
        ("lp_student_3", (8, 8, 80)),
        ("lp_student_4", (8, 8, 80)),  # the paper's d_S = 5120
        ("lp_mnist_teacher", (3, 3, 48)),
        ("lp_mnist_student", (4, 4, 16)),
    ],
)
def test_tap_shapes(models, name, hint_shape):
    taps = lp_tap_layers(models[name])
    assert taps["lp"] == taps["hint"]
    hint = models[name].get_layer(taps["hint"])
    assert tuple(hint.output.shape) == (None,) + hint_shape


@pytest.mark.parametrize("name", list(BUILDERS))
def test_forward_pass(models, name):
    model = models[name]
    x = np.random.default_rng(0).normal(size=(2,) + model.input_shape[1:])
    logits = model(x.astype("float32"), training=False)
    assert logits.shape == (2, 10)
    assert np.all(np.isfinite(logits))


def test_num_classes_and_mnist_inputs():
    student = lp_student(2, num_classes=100, input_shape=(28, 28, 1))
    assert student.output_shape == (None, 100)
    x = np.zeros((3, 28, 28, 1), "float32")
    assert student(x).shape == (3, 100)
    assert lp_teacher(input_shape=(28, 28, 1))(x).shape == (3, 10)


def test_jit_compiled_forward_matches_eager(models):
    model = models["lp_student_1"]
    x = tf.random.stateless_normal((4, 32, 32, 3), seed=(1, 2))
    eager = model(x, training=False)
    jitted = tf.function(lambda t: model(t, training=False), jit_compile=True)(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=1e-4)


def test_keras_round_trip_safe_mode(models, tmp_path):
    model = models["lp_mnist_student"]
    path = tmp_path / "student.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = np.random.default_rng(3).normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)


def test_teacher_dropout_is_optional():
    model = lp_teacher(dropout=False)
    assert not any(isinstance(l, keras.layers.Dropout) for l in model.layers)
    assert model.count_params() == LP_PRESETS["lp_teacher"]["params"]


@pytest.mark.parametrize(
    "call, text",
    [
        (lambda: lp_student(5), "index=5"),
        (lambda: lp_student(True), "index=True"),
        (lambda: lp_student(1, num_classes=0), "num_classes=0"),
        (lambda: lp_student(1, input_shape=(32, 32)), r"input_shape=\(32, 32\)"),
        (lambda: lp_teacher(input_shape=(32, 32, None)), "input_shape="),
        (lambda: lp_student(1, fc_pieces=0), "fc_pieces=0"),
        (lambda: lp_teacher(fc_pieces=2.5), "fc_pieces=2.5"),
        (lambda: lp_tap_layers("fitnet_9"), "preset='fitnet_9'"),
    ],
)
def test_bad_arguments(call, text):
    with pytest.raises(ValueError, match=text):
        call()
