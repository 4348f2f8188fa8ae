"""Maxout activation layer (Goodfellow et al., 2013)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfkd")
class Maxout(keras.layers.Layer):
    """Maxout: the maximum over groups of `num_pieces` channels.

    Splits the `C` channels along `axis` into `C / num_pieces` groups of
    `num_pieces` consecutive channels and keeps the maximum of each group:
    output channel `j` is `max(x[..., j*k], ..., x[..., j*k + k - 1])` with
    `k = num_pieces`. This is the grouping of pylearn2's maxout layers
    (which the FitNets and maxout-network papers used) and of
    `tf.contrib.layers.maxout`, so a convolution with `k * units` filters
    followed by `Maxout(k)` is a maxout convolution with `units` units.

    It is computed as a reshape plus `reduce_max`, which XLA compiles and
    TFLite converts into builtin ops. The layer has no weights.

    Args:
        num_pieces: Integer >= 1, the number of linear pieces per unit. It
            must divide the size of `axis`; this is checked when the layer
            is built.
        axis: Integer, the channel axis to reduce. Defaults to `-1`
            (channels-last).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        Any tensor whose `axis` dimension `C` is known and divisible by
        `num_pieces`.

    Output shape:
        The input shape with `C` replaced by `C // num_pieces`.

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 5.0, -2.0, -3.0]], dtype="float32")
    >>> Maxout(num_pieces=2)(x).numpy().tolist()
    [[5.0, -2.0]]
    >>> tuple(Maxout(num_pieces=2)(np.zeros((8, 16, 16, 64))).shape)
    (8, 16, 16, 32)

    Reference:
        Goodfellow, Warde-Farley, Mirza, Courville, Bengio. "Maxout
        Networks", ICML 2013.
    """

    def __init__(self, num_pieces, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_pieces, bool) or not isinstance(num_pieces, int):
            raise TypeError(
                "`num_pieces` must be an integer >= 1. Received: "
                f"num_pieces={num_pieces!r} of type {type(num_pieces).__name__}."
            )
        if num_pieces < 1:
            raise ValueError(
                "`num_pieces` must be an integer >= 1. Received: "
                f"num_pieces={num_pieces}."
            )
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(
                "`axis` must be an integer. Received: "
                f"axis={axis!r} of type {type(axis).__name__}."
            )
        self.num_pieces = num_pieces
        self.axis = axis
        self.supports_masking = True

    def _checked_axis(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(
                f"`axis` must name a non-batch axis of the {rank}-D input "
                f"(shape {tuple(input_shape)}). Received: axis={self.axis}."
            )
        axis = self.axis % rank
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(
                f"Maxout needs a known size on axis {self.axis}. Received "
                f"input shape {tuple(input_shape)}; give the preceding layer "
                "a fixed number of channels."
            )
        if channels % self.num_pieces:
            raise ValueError(
                f"`num_pieces` must divide the {channels} channels on axis "
                f"{self.axis}. Received: num_pieces={self.num_pieces}. Use a "
                f"number of pieces that divides {channels}, or give the "
                f"preceding layer a multiple of {self.num_pieces} channels."
            )
        return axis, channels

    def build(self, input_shape):
        self._checked_axis(input_shape)
        self.built = True

    def call(self, inputs):
        if self.num_pieces == 1:
            return inputs
        axis, channels = self._checked_axis(inputs.shape)
        # Static sizes where known, dynamic ones otherwise (batch, free
        # spatial sizes), so the graph stays shape-polymorphic under XLA.
        dynamic = ops.shape(inputs)
        shape = [
            s if s is not None else dynamic[i]
            for i, s in enumerate(inputs.shape)
        ]
        grouped = shape[:axis] + [channels // self.num_pieces, self.num_pieces]
        grouped += shape[axis + 1 :]
        return ops.max(ops.reshape(inputs, grouped), axis=axis + 1)

    def compute_output_shape(self, input_shape):
        axis, channels = self._checked_axis(input_shape)
        output_shape = list(input_shape)
        output_shape[axis] = channels // self.num_pieces
        return tuple(output_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"num_pieces": self.num_pieces, "axis": self.axis})
        return config
