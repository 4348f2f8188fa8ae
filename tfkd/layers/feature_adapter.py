"""`FeatureAdapter`: a trainable student-side map to the teacher's shape."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfkd")
class FeatureAdapter(keras.layers.Layer):
    """Trainable student-side adapter: a convolution, then a resize.

    Maps a student feature map to the shape a knowledge loss needs. With
    `filters`, a convolution (`'valid'` padding, so a 1×1 kernel keeps the
    size and a `k × k` kernel shrinks it by `k − 1`) maps the channels; with
    `target_size`, a bilinear resize then brings the map to `(H, W)` if it
    is not that size already. Used by tfkd distillers as adapters and as
    the FitNets regressor; it belongs to the distiller, never to the
    exported student.

    Args:
        filters: Output channels of the convolution, or `None` for no
            convolution.
        kernel_size: Int or pair, the convolution kernel (default 1).
        target_size: `(H, W)` to resize to, or `None` for no resize.
        activation: Optional activation of the convolution.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Input shape:
        `(batch, H_S, W_S, C_S)`.

    Output shape:
        `(batch, H, W, filters)` (`C_S` without `filters`; the
        convolution's output size without `target_size`).

    Example:

    >>> import keras
    >>> adapter = FeatureAdapter(filters=8, target_size=(2, 2))
    >>> tuple(adapter(keras.ops.ones((1, 4, 4, 3))).shape)
    (1, 2, 2, 8)
    """

    def __init__(self, filters=None, kernel_size=1, target_size=None,
                 activation=None, **kwargs):
        super().__init__(**kwargs)
        if filters is not None and (
            isinstance(filters, bool) or not isinstance(filters, int)
            or filters < 1
        ):
            raise ValueError(
                "`filters` must be None or a positive int. Received: "
                f"filters={filters!r}."
            )
        if target_size is not None:
            target_size = tuple(target_size)
            if len(target_size) != 2 or not all(
                isinstance(v, int) and v >= 1 for v in target_size
            ):
                raise ValueError(
                    "`target_size` must be None or a pair of positive ints "
                    f"(H, W). Received: target_size={target_size!r}."
                )
        if filters is None and target_size is None:
            raise ValueError(
                "A `FeatureAdapter` needs `filters` (a convolution), "
                "`target_size` (a resize) or both. Received neither."
            )
        self.filters = filters
        self.kernel_size = kernel_size
        self.target_size = target_size
        self.activation = keras.activations.get(activation)
        self.conv = None
        if filters is not None:
            self.conv = keras.layers.Conv2D(
                filters, kernel_size, padding="valid", activation=activation,
                dtype=self.dtype_policy, name="conv",
            )

    def build(self, input_shape):
        if self.conv is not None:
            self.conv.build(input_shape)

    def call(self, inputs):
        x = inputs if self.conv is None else self.conv(inputs)
        if self.target_size is not None and (
            tuple(x.shape[1:3]) != self.target_size
        ):
            x = ops.image.resize(x, self.target_size,
                                 interpolation="bilinear")
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.conv is not None:
            shape = tuple(self.conv.compute_output_shape(shape))
        if self.target_size is not None:
            shape = (shape[0], *self.target_size, shape[3])
        return shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "target_size": self.target_size,
            "activation": keras.activations.serialize(self.activation),
        })
        return config
