"""KTAN's feature-map discriminator: two convs, pooling, one sigmoid unit."""

import numbers

import keras

#: Name of the discriminator's pre-sigmoid output layer (its logit).
DISCRIMINATOR_LOGIT_LAYER = "d_logit"


def build_discriminator(input_shape, width=64, kernel_size=3,
                        negative_slope=0.2, name="discriminator"):
    """Builds KTAN's discriminator of feature maps.

    Two 3×3 convolutions (`width` filters each, LeakyReLU), global average
    pooling and one sigmoid unit: the probability that a feature map comes
    from the teacher (through the teacher-to-student regressor) rather than
    from the student. Layer names are stable: `d_conv1`, `d_act1`,
    `d_conv2`, `d_act2`, `d_pool`, `d_logit` (the pre-sigmoid logit, used by
    the distiller for numerically stable losses) and `d_probability`. The
    last two compute in float32 even under a mixed-precision policy.

    Args:
        input_shape: `(H, W, C)` of the student's feature map.
        width: Filters of each conv layer, a positive int.
        kernel_size: Kernel size of the convolutions.
        negative_slope: Slope of the LeakyReLU activations.
        name: Model name.

    Returns:
        A functional `keras.Model` mapping `(batch, H, W, C)` to
        probabilities of shape `(batch, 1)`.

    Example:

    >>> model = build_discriminator((4, 4, 16), width=8)
    >>> [layer.name for layer in model.layers][1:4]
    ['d_conv1', 'd_act1', 'd_conv2']
    >>> [layer.name for layer in model.layers][4:]
    ['d_act2', 'd_pool', 'd_logit', 'd_probability']
    >>> model.output.shape
    (None, 1)

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", §III-C.
    """
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) \
        else None
    if shape is None or len(shape) != 3 or any(
        isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
        for d in shape
    ):
        raise ValueError(
            "`input_shape` must be (height, width, channels) of the feature "
            f"map, all positive ints. Received: input_shape={input_shape!r}."
        )
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) \
            or width < 1:
        raise ValueError(
            f"`width` must be a positive int. Received: width={width!r}."
        )
    inputs = keras.Input(shape, name="feature_map")
    x = inputs
    for i in (1, 2):
        x = keras.layers.Conv2D(int(width), kernel_size, padding="same",
                                name=f"d_conv{i}")(x)
        x = keras.layers.LeakyReLU(negative_slope, name=f"d_act{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="d_pool")(x)
    logit = keras.layers.Dense(1, dtype="float32",
                               name=DISCRIMINATOR_LOGIT_LAYER)(x)
    outputs = keras.layers.Activation("sigmoid", dtype="float32",
                                      name="d_probability")(logit)
    return keras.Model(inputs, outputs, name=name)
