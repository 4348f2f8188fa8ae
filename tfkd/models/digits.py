"""Small conv nets for the embedded digits data (the demo's default pair).

The digits are 8×8 grey images that tfkd upsamples (16×16 by default);
these two nets are sized so that the demo's teacher, scratch student and
distilled student all train in about a minute on two CPU cores, with a
capacity gap large enough for distillation to matter.
"""

import keras

#: Layers the demo and quick recipes tap on the digits pair: the last conv
#: block's activation in both nets (same 4×4 spatial size, channels differ).
DIGITS_FEATURE_LAYER = "block2_relu"

DIGITS_PRESETS = {
    "digits_teacher": {
        "description": "4 conv layers (32-32-64-64), batch norm, dropout.",
        "builder": "digits_teacher",
    },
    "digits_student": {
        "description": "2 conv layers (8-16), batch norm; ~20× smaller.",
        "builder": "digits_student",
    },
}


def _check(num_classes, input_shape):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) \
            or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an int >= 2. Received: "
            f"num_classes={num_classes!r}."
        )
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). Received: "
            f"input_shape={input_shape!r}."
        )


def _block(x, filters, convs, block, dropout=0.0):
    for i in range(1, convs + 1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                name=f"block{block}_conv{i}")(x)
        # Momentum 0.9: with ~20 steps an epoch the default 0.99 leaves the
        # moving statistics far from the data for the first epochs.
        x = keras.layers.BatchNormalization(
            momentum=0.9, name=f"block{block}_bn{i}")(x)
        suffix = "" if i == convs else str(i)
        x = keras.layers.ReLU(name=f"block{block}_relu{suffix}")(x)
    x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"block{block}_dropout")(x)
    return x


def _build(name, widths, convs, num_classes, input_shape, dropout):
    _check(num_classes, input_shape)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = inputs
    for block, filters in enumerate(widths, start=1):
        x = _block(x, filters, convs, block, dropout)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def digits_teacher(num_classes=10, input_shape=(16, 16, 1)):
    """The digits teacher: two blocks of two 3×3 convs (32, 64 filters).

    Layer names: `block{b}_conv{i}`, `block{b}_bn{i}`, `block{b}_relu1`,
    `block{b}_relu` (the block's output activation, tapped by feature
    methods), `block{b}_pool`, `block{b}_dropout`, `gap`, `logits`.

    Args:
        num_classes: Number of output logits.
        input_shape: `(H, W, C)`; 16×16×1 for the default digits pipeline.

    Returns:
        A functional `keras.Model` outputting logits.

    Example:

    >>> model = digits_teacher()
    >>> model.get_layer("block2_relu").output.shape
    (None, 8, 8, 64)
    """
    return _build("digits_teacher", (32, 64), 2, num_classes, input_shape,
                  dropout=0.2)


def digits_student(num_classes=10, input_shape=(16, 16, 1)):
    """The digits student: two blocks of one 3×3 conv (8, 16 filters).

    Layer names: `block{b}_conv1`, `block{b}_bn1`, `block{b}_relu` (tapped
    by feature methods), `block{b}_pool`, `gap`, `logits`.

    Args:
        num_classes: Number of output logits.
        input_shape: `(H, W, C)`; 16×16×1 for the default digits pipeline.

    Returns:
        A functional `keras.Model` outputting logits.

    Example:

    >>> model = digits_student()
    >>> model.get_layer("block2_relu").output.shape
    (None, 8, 8, 16)
    """
    return _build("digits_student", (8, 16), 1, num_classes, input_shape,
                  dropout=0.0)
