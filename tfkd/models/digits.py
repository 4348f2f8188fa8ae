"""Small conv nets for the embedded digits data (the demo's default pair).

The digits are 8×8 grey images that tfkd upsamples (16×16 by default);
these two nets are sized so that the demo's teacher, scratch student and
distilled student all train in about a minute on two CPU cores, with a
capacity gap large enough for distillation to matter.
"""

import keras

from tfkd.layers.self_taught_conv2d import SelfTaughtConv2D

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


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be True or False. Received: {name}={value!r} "
            f"(of type {type(value).__name__})."
        )
    return value


def _conv(filters, name, self_taught=False):
    if self_taught:
        # Half guided (first), half self-taught, as the VGG zoo's
        # `vgg_student(augmented=True, self_taught=True)`.
        half = filters // 2
        return SelfTaughtConv2D(half, filters - half, 3, padding="same",
                                use_bias=False, name=name)
    return keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                               name=name)


def _block(x, filters, convs, block, dropout=0.0, guided=None):
    # `guided`: None, or `(conv index, self_taught)`: that conv of this
    # block is the guided layer, with doubled width (augmented network).
    for i in range(1, convs + 1):
        width, self_taught = filters, False
        if guided is not None and guided[0] == i:
            width, self_taught = 2 * filters, guided[1]
        x = _conv(width, f"block{block}_conv{i}", self_taught)(x)
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


def _build(name, widths, convs, num_classes, input_shape, dropout, *,
           augmented=False, self_taught=False):
    # With `augmented`, the guided layer (the last conv of the last block,
    # whose activation `block{n}_relu` is `DIGITS_FEATURE_LAYER`) has twice
    # its width; with `self_taught` too, it is a `SelfTaughtConv2D`.
    _check(num_classes, input_shape)
    inputs = keras.Input(tuple(input_shape), name="images")
    x = inputs
    for block, filters in enumerate(widths, start=1):
        guided = None
        if augmented and block == len(widths):
            guided = (convs, self_taught)
        x = _block(x, filters, convs, block, dropout, guided)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def digits_teacher(num_classes=10, input_shape=(16, 16, 1), augmented=False):
    """The digits teacher: two blocks of two 3×3 convs (32, 64 filters).

    Layer names: `block{b}_conv{i}`, `block{b}_bn{i}`, `block{b}_relu1`,
    `block{b}_relu` (the block's output activation, tapped by feature
    methods), `block{b}_pool`, `block{b}_dropout`, `gap`, `logits`.

    With `augmented=True`, the teacher-augmented network at digits scale:
    the guided layer `block2_conv2` (whose activation `block2_relu` is
    `DIGITS_FEATURE_LAYER`) has 128 filters instead of 64, as the
    correlation paper's teacher-augmented VGG doubles its guided layer
    (`tfkd.models.vgg_teacher(augmented=True)`). Layer names are unchanged.

    Args:
        num_classes: Number of output logits.
        input_shape: `(H, W, C)`; 16×16×1 for the default digits pipeline.
        augmented: If `True`, build the teacher-augmented network (named
            `"digits_teacher_augmented"`).

    Returns:
        A functional `keras.Model` outputting logits.

    Example:

    >>> model = digits_teacher()
    >>> model.get_layer("block2_relu").output.shape
    (None, 8, 8, 64)
    >>> digits_teacher(augmented=True).get_layer("block2_relu").output.shape
    (None, 8, 8, 128)
    """
    augmented = _check_bool("augmented", augmented)
    name = "digits_teacher_augmented" if augmented else "digits_teacher"
    return _build(name, (32, 64), 2, num_classes, input_shape, dropout=0.2,
                  augmented=augmented)


def _check_widths(widths):
    values = tuple(widths) if isinstance(widths, (tuple, list)) else None
    if not values or any(isinstance(w, bool) or not isinstance(w, int)
                         or w < 1 for w in values):
        raise ValueError(
            "`widths` must be a non-empty tuple of ints >= 1 (the filters of "
            "each block's conv), e.g. (8, 16). Received: "
            f"widths={widths!r}."
        )
    return values


def digits_student(num_classes=10, input_shape=(16, 16, 1), augmented=False,
                   self_taught=False, widths=(8, 16)):
    """The digits student: two blocks of one 3×3 conv (8, 16 filters).

    Layer names: `block{b}_conv1`, `block{b}_bn1`, `block{b}_relu` (tapped
    by feature methods), `block{b}_pool`, `gap`, `logits`.

    The variants mirror the correlation paper's VGG students
    (`tfkd.models.vgg_student`) at digits scale; layer names are unchanged:

    - `augmented=True`: the student-augmented network, whose guided layer
      `block2_conv1` (activation `block2_relu`, `DIGITS_FEATURE_LAYER`) has
      32 filters instead of 16;
    - `augmented=True, self_taught=True`: that 32-filter layer is a
      `tfkd.layers.SelfTaughtConv2D` of 16 guided channels (first) and 16
      self-taught ones, for self-guided learning from the 64-channel
      `digits_teacher()`; the distillers read the 16 guided channels
      through batch norm and ReLU (`tfkd.layers.find_guided_channels`), so
      the knowledge loss never reaches the self-taught channels. Same
      parameter count as the augmented student.

    Args:
        num_classes: Number of output logits.
        input_shape: `(H, W, C)`; 16×16×1 for the default digits pipeline.
        augmented: If `True`, build the student-augmented network.
        self_taught: If `True` (requires `augmented=True`), split its guided
            layer into guided and self-taught halves.
        widths: The filters of each block's conv, one int per block (the
            tuner scales them to search student sizes). With fewer than two
            blocks there is no `block2_relu` to tap.

    Returns:
        A functional `keras.Model` outputting logits, named
        `"digits_student"`, `"digits_student_augmented"` or
        `"digits_student_self_taught"`.

    Example:

    >>> model = digits_student()
    >>> model.get_layer("block2_relu").output.shape
    (None, 8, 8, 16)
    >>> model = digits_student(augmented=True, self_taught=True)
    >>> model.get_layer("block2_conv1").guided_channels
    16
    >>> model.get_layer("block2_relu").output.shape
    (None, 8, 8, 32)
    >>> digits_student(widths=(16, 32)).get_layer("block2_relu").output.shape
    (None, 8, 8, 32)
    """
    widths = _check_widths(widths)
    augmented = _check_bool("augmented", augmented)
    self_taught = _check_bool("self_taught", self_taught)
    if self_taught and not augmented:
        raise ValueError(
            "`self_taught=True` splits the doubled guided layer of the "
            "student-augmented network into guided and self-taught halves; "
            "pass augmented=True too. Received: augmented=False, "
            "self_taught=True."
        )
    if self_taught:
        name = "digits_student_self_taught"
    elif augmented:
        name = "digits_student_augmented"
    else:
        name = "digits_student"
    return _build(name, widths, 1, num_classes, input_shape, dropout=0.0,
                  augmented=augmented, self_taught=self_taught)
