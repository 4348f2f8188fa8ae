"""`SelfTaughtConv2D`: a guided conv layer with appended self-taught neurons.

Self-guided learning (Wang et al., §3.2) appends "self-taught" neurons to the
guided student layer: they are concatenated with the guided neurons and feed
the next layer, but the knowledge loss never sees them, so they learn only
from the class loss.
"""

import keras
from keras import ops

from tfkd import _compat

# Layers whose output channel `c` depends on input channel `c` only. Slicing
# the first `g` channels after any chain of them still isolates the guided
# neurons of an upstream `SelfTaughtConv2D` (see `find_guided_channels`).
_CHANNELWISE_LAYERS = (
    "ReLU",
    "LeakyReLU",
    "ELU",
    "PReLU",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling2D",
    "ZeroPadding2D",
    "Identity",
)
# Element-wise activations (no softmax: it mixes channels).
_ELEMENTWISE_ACTIVATIONS = (
    "linear",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "tanh",
    "softplus",
    "softsign",
    "mish",
)


def _check_filters(value, name):
    # bool is an int subclass; `True` filters is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer (the number of output "
            f"channels of that part of the layer). Received: {name}={value!r}"
        )
    return value


def _to_pair(value, name):
    pair = (value, value) if isinstance(value, int) else value
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair
    ):
        raise ValueError(
            f"`{name}` must be a positive integer or a tuple of 2 positive "
            f"integers. Received: {name}={value!r}"
        )
    return pair


def _split_initializer(initializer, full_shape, start, stop, cache):
    """One draw of `initializer` over the full shape, sliced per part.

    Drawing once keeps the initial layer identical to a `Conv2D` with
    `guided + self_taught` filters (same fan-out) and prevents two identical
    parts when the initializer has a fixed seed.
    """

    def init(shape, dtype=None):
        if "value" not in cache:
            cache["value"] = initializer(full_shape, dtype=dtype)
        return cache["value"][..., start:stop]

    return init


@keras.saving.register_keras_serializable(package="tfkd")
class SelfTaughtConv2D(keras.layers.Layer):
    """2D convolution with guided channels followed by self-taught channels.

    Behaves like `keras.layers.Conv2D(guided_filters + self_taught_filters)`
    (channels-last), but holds two separate kernels (and biases): the
    *guided* part, supervised by the teacher's knowledge, and the
    *self-taught* part, which learns only from the labels. The kernels are
    concatenated along the output-channel axis and applied as one
    convolution, so output channels `[:guided_filters]` come from the guided
    kernel and the rest from the self-taught kernel.

    Because self-taught output channels do not depend on the guided kernel
    and vice versa, any loss that only looks at
    `outputs[..., :layer.guided_channels]` gives the self-taught kernel and
    bias a gradient of exactly zero; a loss on all channels (the class loss)
    trains both. The same holds after channel-wise layers such as batch
    normalization, ReLU or pooling (see `find_guided_channels`).

    tfkd distillers slice features tapped at (or, through channel-wise
    layers, after) this layer to `[..., :layer.guided_channels]`
    automatically, so the knowledge loss never supervises the self-taught
    neurons. At inference, and in TFLite, the layer is one ordinary
    `CONV_2D` with the concatenated kernel.

    Args:
        guided_filters: Positive int, the number of guided output channels
            (those matched against the teacher).
        self_taught_filters: Positive int, the number of self-taught output
            channels appended after the guided ones.
        kernel_size: Int or tuple of 2 ints, the convolution window.
        strides: Int or tuple of 2 ints. Defaults to `1`.
        padding: `"same"` (default) or `"valid"`, as in `Conv2D`.
        dilation_rate: Int or tuple of 2 ints. Defaults to `1`.
        activation: Optional element-wise activation applied to all
            channels. Defaults to `None`.
        use_bias: Whether both parts have a bias. Defaults to `True`.
        kernel_initializer: Initializer drawn once for the full kernel
            `(kh, kw, in, guided + self_taught)` and split between the two
            parts, exactly as a `Conv2D` of the total width would be.
        bias_initializer: Initializer for the biases, split the same way.
        kernel_regularizer: Optional regularizer applied to each kernel (the
            sum equals the regularizer of the concatenated kernel for L1/L2).
        bias_regularizer: Optional regularizer applied to each bias.
        kernel_constraint: Optional constraint applied to each kernel.
        bias_constraint: Optional constraint applied to each bias.
        **kwargs: Base layer keyword arguments (`name`, `dtype`,
            `activity_regularizer`, ...).

    Attributes:
        guided_channels: Int, `guided_filters`: the tapped features are
            sliced to `[..., :guided_channels]` for the knowledge loss.
        filters: Int, total output channels.

    Input shape:
        4D tensor `(batch, height, width, in_channels)`.

    Output shape:
        4D tensor `(batch, new_height, new_width, guided_filters +
        self_taught_filters)`, guided channels first.

    Example:

    >>> layer = SelfTaughtConv2D(4, 2, 3)
    >>> y = layer(keras.ops.ones((1, 8, 8, 3)))
    >>> tuple(y.shape), layer.guided_channels
    ((1, 8, 8, 6), 4)

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer", §3.2 (self-guided learning).
    """

    def __init__(
        self,
        guided_filters,
        self_taught_filters,
        kernel_size,
        strides=1,
        padding="same",
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.guided_filters = _check_filters(guided_filters, "guided_filters")
        self.self_taught_filters = _check_filters(
            self_taught_filters, "self_taught_filters"
        )
        self.kernel_size = _to_pair(kernel_size, "kernel_size")
        self.strides = _to_pair(strides, "strides")
        padding_name = str(padding).lower()
        if padding_name not in ("same", "valid"):
            raise ValueError(
                "`padding` must be 'same' or 'valid'. "
                f"Received: padding={padding!r}"
            )
        self.padding = padding_name
        self.dilation_rate = _to_pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides > 1` cannot be combined with `dilation_rate > 1`; "
                "set one of them to 1. Received: "
                f"strides={strides}, dilation_rate={dilation_rate}"
            )
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def guided_channels(self):
        return self.guided_filters

    @property
    def filters(self):
        return self.guided_filters + self.self_taught_filters

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError(
                "The channel dimension of the inputs of `SelfTaughtConv2D` "
                f"must be known. Received: input_shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})
        g = self.guided_filters
        kernel_shape = self.kernel_size + (in_channels, self.filters)
        kernel_cache = {}
        self.guided_kernel = self.add_weight(
            name="guided_kernel",
            shape=self.kernel_size + (in_channels, g),
            initializer=_split_initializer(
                self.kernel_initializer, kernel_shape, 0, g, kernel_cache
            ),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.self_taught_kernel = self.add_weight(
            name="self_taught_kernel",
            shape=self.kernel_size + (in_channels, self.self_taught_filters),
            initializer=_split_initializer(
                self.kernel_initializer, kernel_shape, g, None, kernel_cache
            ),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            bias_cache = {}
            self.guided_bias = self.add_weight(
                name="guided_bias",
                shape=(g,),
                initializer=_split_initializer(
                    self.bias_initializer, (self.filters,), 0, g, bias_cache
                ),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            self.self_taught_bias = self.add_weight(
                name="self_taught_bias",
                shape=(self.self_taught_filters,),
                initializer=_split_initializer(
                    self.bias_initializer, (self.filters,), g, None, bias_cache
                ),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.guided_bias = None
            self.self_taught_bias = None

    def call(self, inputs):
        # One convolution over the concatenated kernel: the output block of
        # the self-taught channels is a function of the self-taught kernel
        # alone, so its gradient from a guided-only loss is exactly 0. The
        # concatenation of constants folds away in TFLite (a single CONV_2D).
        kernel = ops.concatenate(
            [self.guided_kernel, self.self_taught_kernel], axis=-1
        )
        outputs = ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format="channels_last",
        )
        if self.use_bias:
            bias = ops.concatenate([self.guided_bias, self.self_taught_bias])
            outputs = ops.add(outputs, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        batch, *spatial, _ = input_shape
        out = []
        for size, k, s, d in zip(
            spatial, self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                out.append(None)
                continue
            extent = (k - 1) * d + 1
            if self.padding == "valid":
                size = size - extent + 1
            if size < 1:
                raise ValueError(
                    "The input of `SelfTaughtConv2D` is smaller than its "
                    "dilated kernel with padding='valid'; use padding='same' "
                    f"or a larger input. Received: input_shape={input_shape}"
                )
            out.append((size + s - 1) // s)
        return (batch, *out, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "guided_filters": self.guided_filters,
                "self_taught_filters": self.self_taught_filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
            }
        )
        return config


def _is_channelwise(layer):
    name = type(layer).__name__
    if name in _CHANNELWISE_LAYERS:
        return True
    if name == "Activation":
        fn = getattr(layer.activation, "__name__", "")
        return fn in _ELEMENTWISE_ACTIVATIONS
    if name == "BatchNormalization":
        return layer.axis in (-1, 3)
    return False


def _inbound_layer(layer, model):
    """The single layer feeding `layer` inside `model`, else None."""
    nodes = _compat.inbound_nodes(layer)
    # A layer called again outside `model` has several nodes: keep the one
    # `model` owns.
    own = _compat.graph_node_keys(model)
    mine = [n for i, n in enumerate(nodes)
            if _compat.node_key(layer, i) in own]
    if len(mine) != 1:
        mine = nodes if len(nodes) == 1 else []
    if not mine:
        return None
    parents = [node.operation for node in mine[0].parent_nodes]
    return parents[0] if len(parents) == 1 else None


def find_guided_channels(model, layer_name):
    """Number of guided channels in the features tapped at `layer_name`.

    Starts at the layer named `layer_name` in a functional `model` and walks
    back through channel-wise layers (batch normalization, element-wise
    activations, dropout, pooling, zero padding) to the layer producing the
    channels. If that layer has a `guided_channels` attribute (e.g. a
    `SelfTaughtConv2D`), returns it: slicing the tapped features to
    `[..., :guided_channels]` then keeps the knowledge loss off the
    self-taught neurons, and their gradient from it exactly zero. Otherwise
    returns `None` (use all channels).

    Args:
        model: A functional `keras.Model`.
        layer_name: Name of the tapped layer, e.g. `"block4_relu1"`.

    Returns:
        Int or `None`.

    Example:

    >>> x = keras.Input((8, 8, 3))
    >>> y = SelfTaughtConv2D(4, 2, 3, name="conv")(x)
    >>> y = keras.layers.BatchNormalization(name="bn")(y)
    >>> y = keras.layers.ReLU(name="relu")(y)
    >>> find_guided_channels(keras.Model(x, y), "relu")
    4
    """
    layer = model.get_layer(layer_name)
    while layer is not None:
        guided = getattr(layer, "guided_channels", None)
        if guided is not None:
            return guided
        if not _is_channelwise(layer):
            return None
        layer = _inbound_layer(layer, model)
    return None
