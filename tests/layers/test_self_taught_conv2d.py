"""Tests for `tfkd.layers.SelfTaughtConv2D` and `find_guided_channels`."""

import re

import numpy as np
import pytest
import keras
import tensorflow as tf

from tfkd.layers.self_taught_conv2d import SelfTaughtConv2D
from tfkd.layers.self_taught_conv2d import find_guided_channels


def _inputs(shape=(2, 8, 8, 3), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _nonzero_biases(layer, seed=1):
    # Default biases are zeros; give them values so ordering tests bite.
    rng = np.random.default_rng(seed)
    for var in (layer.guided_bias, layer.self_taught_bias):
        var.assign(rng.normal(size=var.shape).astype("float32"))


def _grads(layer, x, loss_fn):
    with tf.GradientTape() as tape:
        loss = loss_fn(layer(x))
    return dict(
        zip(
            [v.name for v in layer.trainable_variables],
            tape.gradient(loss, layer.trainable_variables),
        )
    )


@pytest.mark.parametrize(
    "kwargs, in_shape, out_shape",
    [
        ({}, (2, 8, 8, 3), (2, 8, 8, 6)),
        ({"strides": 2}, (2, 9, 9, 3), (2, 5, 5, 6)),
        ({"padding": "valid"}, (2, 8, 8, 3), (2, 6, 6, 6)),
        ({"padding": "valid", "strides": (2, 1)}, (2, 9, 8, 3), (2, 4, 6, 6)),
        ({"dilation_rate": 2, "padding": "valid"}, (2, 8, 8, 3), (2, 4, 4, 6)),
    ],
)
def test_output_shape(kwargs, in_shape, out_shape):
    layer = SelfTaughtConv2D(4, 2, 3, **kwargs)
    y = layer(_inputs(in_shape))
    assert tuple(y.shape) == out_shape
    assert layer.compute_output_shape(in_shape) == out_shape
    assert layer.guided_channels == 4 and layer.filters == 6


def test_guided_channels_come_first():
    layer = SelfTaughtConv2D(4, 2, 3, strides=2)
    x = _inputs()
    y = layer(x)
    _nonzero_biases(layer)
    y = keras.ops.convert_to_numpy(layer(x))

    def conv(kernel, bias):
        return tf.nn.conv2d(x, kernel, 2, "SAME").numpy() + bias.numpy()

    guided = conv(layer.guided_kernel, layer.guided_bias)
    self_taught = conv(layer.self_taught_kernel, layer.self_taught_bias)
    np.testing.assert_allclose(y[..., :4], guided, atol=1e-5)
    np.testing.assert_allclose(y[..., 4:], self_taught, atol=1e-5)


def test_guided_only_loss_gives_exactly_zero_self_taught_gradient():
    layer = SelfTaughtConv2D(4, 2, 3)
    x = _inputs()
    layer(x)
    _nonzero_biases(layer)
    grads = _grads(layer, x, lambda y: tf.reduce_sum(tf.square(y[..., :4])))
    assert np.all(grads["self_taught_kernel"].numpy() == 0.0)
    assert np.all(grads["self_taught_bias"].numpy() == 0.0)
    assert np.any(grads["guided_kernel"].numpy() != 0.0)
    assert np.any(grads["guided_bias"].numpy() != 0.0)


def test_full_loss_trains_both_parts():
    layer = SelfTaughtConv2D(4, 2, 3)
    x = _inputs()
    layer(x)
    _nonzero_biases(layer)
    grads = _grads(layer, x, lambda y: tf.reduce_sum(tf.square(y)))
    for name in grads:
        assert np.all(np.isfinite(grads[name].numpy()))
        assert np.any(grads[name].numpy() != 0.0), name


def test_seeded_initializer_draws_one_full_kernel():
    init = keras.initializers.GlorotUniform(seed=3)
    layer = SelfTaughtConv2D(2, 2, 3, kernel_initializer=init)
    layer.build((None, 8, 8, 3))
    full = keras.ops.convert_to_numpy(init((3, 3, 3, 4)))
    kernel = np.concatenate(
        [layer.guided_kernel.numpy(), layer.self_taught_kernel.numpy()], -1
    )
    np.testing.assert_allclose(kernel, full)
    # Same seed, equal widths: the two parts must still differ.
    assert not np.allclose(kernel[..., :2], kernel[..., 2:])


def test_config_round_trip():
    layer = SelfTaughtConv2D(
        8,
        4,
        (3, 1),
        strides=(2, 1),
        padding="valid",
        activation="relu",
        use_bias=False,
        kernel_regularizer=keras.regularizers.L2(1e-4),
        name="st",
    )
    config = layer.get_config()
    clone = SelfTaughtConv2D.from_config(config)
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, SelfTaughtConv2D)
    assert restored.guided_channels == 8 and restored.self_taught_filters == 4
    assert restored.get_config() == config


def test_regularizer_covers_both_kernels():
    layer = SelfTaughtConv2D(
        2, 2, 3, kernel_regularizer=keras.regularizers.L2(0.5), use_bias=False
    )
    layer(_inputs())
    expected = 0.5 * sum(
        float(np.sum(np.square(v.numpy()))) for v in layer.trainable_variables
    )
    np.testing.assert_allclose(float(sum(layer.losses)), expected, rtol=1e-5)


def _tiny_model():
    inputs = keras.Input((8, 8, 3))
    x = SelfTaughtConv2D(4, 2, 3, name="st_conv")(inputs)
    x = keras.layers.BatchNormalization(name="st_bn")(x)
    x = keras.layers.ReLU(name="st_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = SelfTaughtConv2D(3, 3, 3, strides=2, padding="valid", name="st2")(x)
    return keras.Model(inputs, x)


def _randomise_bn(model):
    bn = model.get_layer("st_bn")
    rng = np.random.default_rng(2)
    for var in bn.weights:
        var.assign(rng.uniform(0.5, 1.5, size=var.shape).astype("float32"))
    for name in ("st_conv", "st2"):
        _nonzero_biases(model.get_layer(name))


def test_keras_save_load_round_trip(tmp_path):
    model = _tiny_model()
    _randomise_bn(model)
    x = _inputs()
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("st_conv"), SelfTaughtConv2D)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    layer = SelfTaughtConv2D(4, 2, 3, dtype=policy)
    reference = SelfTaughtConv2D(4, 2, 3)
    x = _inputs()
    y = layer(x)
    reference(x)
    for var, ref in zip(layer.weights, reference.weights):
        assert var.dtype == "float32"
        ref.assign(var)
    assert layer.compute_dtype == policy.split("_")[1]
    assert keras.backend.standardize_dtype(y.dtype) == layer.compute_dtype
    atol = 0.05 if policy == "mixed_bfloat16" else 5e-3
    np.testing.assert_allclose(
        np.asarray(y, "float32"), reference(x).numpy(), atol=atol
    )
    grads = _grads(layer, x, lambda y: tf.reduce_sum(y[..., :4]))
    assert grads["self_taught_kernel"].dtype == tf.float32
    assert np.all(grads["self_taught_kernel"].numpy() == 0.0)
    assert np.any(grads["guided_kernel"].numpy() != 0.0)


def test_tflite_export_is_plain_conv_and_matches(tmp_path):
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    model = _tiny_model()
    _randomise_bn(model)
    x = _inputs()
    expected = model.predict(x, verbose=0)
    export_dir = str(tmp_path / "saved_model")
    model.export(export_dir, format="tf_saved_model", verbose=False)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(export_dir).convert()

    # No default delegate, so the op list is the model's own.
    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=(
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "CONV_2D" in ops
    allowed = {"CONV_2D", "CONCATENATION", "ADD", "MUL", "RELU", "MAX_POOL_2D"}
    assert ops <= allowed, ops

    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, x)
    interpreter.invoke()
    output_index = interpreter.get_output_details()[0]["index"]
    actual = interpreter.get_tensor(output_index)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"guided_filters": 0}, "Received: guided_filters=0"),
        ({"guided_filters": -1}, "Received: guided_filters=-1"),
        ({"guided_filters": 2.5}, "Received: guided_filters=2.5"),
        ({"guided_filters": True}, "Received: guided_filters=True"),
        ({"self_taught_filters": 0}, "Received: self_taught_filters=0"),
        ({"self_taught_filters": -3}, "Received: self_taught_filters=-3"),
        ({"self_taught_filters": "2"}, "Received: self_taught_filters='2'"),
        ({"kernel_size": 0}, "Received: kernel_size=0"),
        ({"strides": (1, 2, 3)}, "Received: strides=(1, 2, 3)"),
        ({"padding": "causal"}, "Received: padding='causal'"),
        ({"strides": 2, "dilation_rate": 2}, "dilation_rate=2"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"guided_filters": 4, "self_taught_filters": 2, "kernel_size": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        SelfTaughtConv2D(**args)


def test_find_guided_channels():
    model = _tiny_model()
    assert find_guided_channels(model, "st_conv") == 4
    assert find_guided_channels(model, "st_relu") == 4
    assert find_guided_channels(model, "pool") == 4
    assert find_guided_channels(model, "st2") == 3
    # A second call of a layer outside the model does not confuse the walk.
    model.get_layer("st_bn")(keras.Input((8, 8, 6)))
    assert find_guided_channels(model, "st_relu") == 4

    inputs = keras.Input((8, 8, 3))
    x = SelfTaughtConv2D(4, 2, 3, name="st")(inputs)
    x = keras.layers.Conv2D(5, 1, name="mix")(x)
    x = keras.layers.Activation("softmax", name="softmax")(x)
    plain = keras.Model(inputs, x)
    assert find_guided_channels(plain, "mix") is None
    assert find_guided_channels(plain, "softmax") is None
