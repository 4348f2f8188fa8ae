"""Tests for `tfkd.layers.maxout.Maxout`."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfkd.layers.maxout import Maxout


def _numpy_maxout(x, pieces, axis=-1):
    axis = axis % x.ndim
    grouped = (x.shape[axis] // pieces, pieces)
    shape = x.shape[:axis] + grouped + x.shape[axis + 1 :]
    return x.reshape(shape).max(axis=axis + 1)


@pytest.mark.parametrize(
    "shape, pieces, axis",
    [
        ((3, 12), 3, -1),
        ((2, 5, 4, 6), 2, -1),
        ((2, 6, 4, 3), 3, 1),
        ((4, 7), 1, -1),
    ],
)
def test_matches_numpy_eager_and_jit(shape, pieces, axis):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer = Maxout(pieces, axis=axis)
    expected = _numpy_maxout(x, pieces, axis)
    np.testing.assert_array_equal(np.asarray(layer(x)), expected)
    jitted = tf.function(layer, jit_compile=True)
    np.testing.assert_array_equal(jitted(tf.constant(x)).numpy(), expected)
    assert layer.compute_output_shape(shape) == expected.shape


def test_groups_consecutive_channels():
    # Output j is the max of channels j*k .. j*k+k-1 (pylearn2 grouping).
    x = np.array([[1.0, 5.0, -2.0, -3.0, 0.5, 0.25]], dtype="float32")
    np.testing.assert_array_equal(np.asarray(Maxout(2)(x)), [[5.0, -2.0, 0.5]])
    np.testing.assert_array_equal(np.asarray(Maxout(3)(x)), [[5.0, 0.5]])


def test_gradient_goes_to_the_winning_piece():
    x = tf.constant([[1.0, 5.0, -3.0, -2.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(Maxout(2)(x))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [[0, 1, 0, 1]])


def test_pieces_not_dividing_channels_raises_at_build():
    inputs = keras.Input((8, 8, 6))
    with pytest.raises(ValueError, match=r"num_pieces=4.*divides 6"):
        Maxout(4)(inputs)


def test_unknown_channels_raise():
    with pytest.raises(ValueError, match="known size"):
        Maxout(2).build((None, 4, 4, None))


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"num_pieces": 0}, ValueError, "num_pieces=0"),
        ({"num_pieces": 2.0}, TypeError, "num_pieces=2.0"),
        ({"num_pieces": True}, TypeError, "num_pieces=True"),
        ({"num_pieces": 2, "axis": "last"}, TypeError, "axis='last'"),
    ],
)
def test_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match=text):
        Maxout(**kwargs)


def test_batch_axis_rejected():
    with pytest.raises(ValueError, match="axis=0"):
        Maxout(2, axis=0).build((4, 6))


def test_config_round_trip():
    layer = Maxout(3, axis=1, name="mx")
    config = layer.get_config()
    assert config["num_pieces"] == 3 and config["axis"] == 1
    clone = Maxout.from_config(config)
    assert (clone.num_pieces, clone.axis, clone.name) == (3, 1, "mx")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, Maxout) and restored.num_pieces == 3


def test_keras_file_round_trip_safe_mode(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = Maxout(2, name="conv_maxout")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    x = keras.layers.Dense(6)(x)
    outputs = Maxout(3)(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "maxout.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("conv_maxout"), Maxout)
    x = np.random.default_rng(1).normal(size=(2, 9, 7, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6, atol=1e-6)
    # Dynamic spatial sizes also compile under XLA.
    jitted = tf.function(loaded, jit_compile=True)
    np.testing.assert_allclose(jitted(x), model(x), rtol=1e-5, atol=1e-5)
