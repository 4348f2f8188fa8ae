"""Tests for tfkd.models.surgery: split_model, cut_points, block_boundaries."""

import numpy as np
import pytest

import keras

from tfkd.models import block_boundaries
from tfkd.models import cut_points
from tfkd.models import resnet20
from tfkd.models import split_model
from tfkd.models import wrn_16_1


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _images(batch=2, size=32):
    rng = np.random.default_rng(1)
    return rng.normal(size=(batch, size, size, 3)).astype("float32")


def _assert_split_matches(model, layer_name, x):
    front, back = split_model(model, layer_name)
    np.testing.assert_allclose(
        _np(back(front(x))), _np(model(x)), atol=1e-5
    )
    return front, back


def _sequential():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", name="d1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(4, activation="tanh", name="d2"),
            keras.layers.Dense(3, name="logits"),
        ],
        name="seq",
    )


def _branched():
    inputs = keras.Input((6,), name="x")
    trunk = keras.layers.Dense(8, activation="relu", name="trunk")(inputs)
    left = keras.layers.Dense(4, activation="relu", name="left")(trunk)
    right = keras.layers.Dense(4, activation="tanh", name="right")(trunk)
    merged = keras.layers.Concatenate(name="merge")([left, right])
    outputs = keras.layers.Dense(3, name="logits")(merged)
    return keras.Model(inputs, outputs, name="branched")


def test_sequential_every_layer():
    model = _sequential()
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    assert cut_points(model) == ["d1", "bn", "d2", "logits"]
    for name in cut_points(model):
        _assert_split_matches(model, name, x)


def test_branched_model():
    model = _branched()
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    assert cut_points(model) == ["trunk", "merge", "logits"]
    front, back = _assert_split_matches(model, "trunk", x)
    assert front.output.shape == (None, 8)
    _assert_split_matches(model, "merge", x)
    with pytest.raises(ValueError, match="output of 'trunk'.*'right'"):
        split_model(model, "left")


@pytest.mark.parametrize(
    "layer_name",
    ["stem_relu", "stage1_block3_out", "stage2_block1_out",
     "stage3_block2_out", "pool", "logits"],
)
def test_resnet20_block_boundaries(layer_name):
    model = resnet20()
    front, back = _assert_split_matches(model, layer_name, _images())
    assert front.output.shape == model.get_layer(layer_name).output.shape
    assert back.output.shape == (None, 10)


def test_wrn_16_1_block_boundaries_and_training_mode():
    model = wrn_16_1(input_shape=(16, 16, 3))
    x = _images(size=16)
    for name in ["stem_conv", "stage1_block2_out", "stage2_block1_out",
                 "final_relu"]:
        front, back = split_model(model, name)
        # training=True uses batch statistics in both halves alike.
        np.testing.assert_allclose(
            _np(back(front(x, training=True), training=True)),
            _np(model(x, training=True)),
            atol=1e-5,
        )
        np.testing.assert_allclose(
            _np(back(front(x))), _np(model(x)), atol=1e-5
        )


def test_layers_and_weights_are_shared_not_copied():
    model = resnet20()
    front, back = split_model(model, "stage2_block1_out")
    assert front.get_layer("stem_conv") is model.get_layer("stem_conv")
    assert back.get_layer("logits") is model.get_layer("logits")
    assert back.get_layer("stage2_block2_add") is model.get_layer(
        "stage2_block2_add"
    )
    names_front = {layer.name for layer in front.layers}
    names_back = {layer.name for layer in back.layers}
    assert names_front & names_back == set()
    assert len(front.weights) + len(back.weights) == len(model.weights)

    x = _images()
    before = _np(model(x))
    conv = front.get_layer("stage1_block1_conv1")
    conv.kernel.assign(conv.kernel * 2.0)
    after = _np(model(x))
    assert not np.allclose(before, after)
    np.testing.assert_allclose(_np(back(front(x))), after, atol=1e-5)


def test_cut_inside_residual_block_names_crossing_tensors():
    model = resnet20()
    with pytest.raises(ValueError, match="2 tensors cross the cut") as info:
        split_model(model, "stage2_block2_relu1")
    message = str(info.value)
    assert "2 tensors cross the cut" in message
    assert "'stage2_block2_relu1'" in message
    assert "output of 'stage2_block1_out' (used by 'stage2_block2_add')" in (
        message
    )
    assert "'stage2_block1_out' or 'stage2_block2_out'" in message
    # Also inside a WRN block (pre-activation: the skip reads the raw sum).
    with pytest.raises(ValueError, match="'stage1_block1_out' or"):
        split_model(wrn_16_1(), "stage1_block2_conv1")


def test_training_front_through_frozen_back_changes_only_front():
    model = wrn_16_1(input_shape=(8, 8, 3))
    front, back = split_model(model, "stage2_block1_out")
    back.trainable = False
    inputs = keras.Input((8, 8, 3))
    collab = keras.Model(inputs, back(front(inputs)))
    collab.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    front_before = [_np(w) for w in front.weights]
    back_before = [_np(w) for w in back.weights]
    x = _images(batch=4, size=8)
    y = np.array([0, 1, 2, 3])
    collab.train_on_batch(x, y)
    collab.train_on_batch(x, y)
    # All of the back's variables, BN moving statistics included.
    for w, old in zip(back.weights, back_before):
        np.testing.assert_array_equal(_np(w), old)
    changed = [
        not np.array_equal(_np(w), old)
        for w, old in zip(front.trainable_weights, front_before)
    ]
    assert all(changed)


def test_split_twice_and_original_still_serialises():
    model = _branched()
    split_model(model, "trunk")
    front, back = split_model(model, "trunk")
    assert [layer.name for layer in back.layers] == [
        "trunk_cut", "left", "right", "merge", "logits",
    ]
    clone = keras.Model.from_config(model.get_config())
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    assert len(model._operations) == 6


def test_back_saves_and_loads_in_safe_mode(tmp_path):
    model = resnet20(input_shape=(8, 8, 3))
    _, back = split_model(model, "stage2_block3_out")
    path = str(tmp_path / "back.keras")
    back.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    h = np.random.default_rng(0).normal(size=(2, 4, 4, 32)).astype("float32")
    np.testing.assert_allclose(_np(loaded(h)), _np(back(h)), atol=1e-5)


def test_unknown_layer_name_lists_names():
    with pytest.raises(ValueError, match=r"Received: layer_name='dd2'.*"
                       r"Did you mean.*'d2'.*\['input_layer.*'d1'"):
        split_model(_sequential(), "dd2")
    with pytest.raises(TypeError, match="Received: layer_name=3"):
        split_model(_sequential(), 3)


def test_input_layer_cut_is_rejected():
    model = _branched()
    with pytest.raises(ValueError, match="is an input"):
        split_model(model, "x")


def test_subclassed_model_raises_type_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.ones((1, 3), "float32"))
    with pytest.raises(TypeError, match="functional Keras model.*Net"):
        split_model(net, "dense")
    with pytest.raises(TypeError, match="model of type str"):
        split_model("resnet20", "pool")


def test_unbuilt_sequential_raises():
    model = keras.Sequential([keras.layers.Dense(2, name="d")])
    with pytest.raises(ValueError, match="not built"):
        split_model(model, "d")


def test_shared_layer_is_rejected():
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    h = shared(inputs)
    h = keras.layers.Dense(4, name="mid")(h)
    outputs = shared(h)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="'shared' is used 2 times"):
        split_model(model, "shared")


def test_block_boundaries_are_valid_cut_points():
    model = resnet20(input_shape=(8, 8, 3))
    boundaries = block_boundaries(model)
    assert set(boundaries) <= set(cut_points(model))
    assert "stage1_block1_add" in cut_points(model)
    assert "stage1_block1_add" not in boundaries
    assert block_boundaries(_branched()) == ["logits"]
