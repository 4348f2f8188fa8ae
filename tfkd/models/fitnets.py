"""Maxout teachers and thin, deep FitNet students of the LP paper.

The LP paper (Chen et al., 2018) reuses the CIFAR-10 networks of FitNets
(Romero et al., 2015): a 5-layer maxout teacher (~9M parameters) and four
thin, deep students (Students 1-4 = FitNets 1-4, its Tables I and II). For
MNIST (its Table III) it reuses FitNets' MNIST pair: Goodfellow's 3-layer
maxout teacher (~361K) and a 6-layer maxout student (~30K).

All builders return functional `keras.Model`s made of standard Keras layers
plus `tfkd.layers.Maxout`, output logits (no softmax) and use the stable
layer names listed in each docstring, so features can be tapped by name.
`LP_PRESETS` holds, for every network, its description, parameter count,
the paper's count and the layers to tap; `lp_tap_layers` reads it.

Which layer to tap. FitNets guides the student's middle layer (its hint
layer) with the teacher's 2nd layer (the guide layer). The LP paper says
(§V-B) that "the intermediate hidden layer of the teacher network and
student network used in the proposed methods is same as that of FitNet",
and its complexity example (§IV) uses `d_T = 6×6×192` (our teacher's
`pool2`) and `d_S = 8×8×80` (Student 4's `pool2`). So on these networks the
LP loss taps the FitNets hint layers, not the penultimate embedding: both
`"hint"` and `"lp"` taps are `pool2`. Only the MNIST visualisation (Fig. 2,
a LeNet++ not provided here) uses the input of the softmax; that layer is
offered as the `"embedding"` tap (`fc_maxout` / `pool3` / `flatten`).
"""

import keras

from tfkd.layers.maxout import Maxout

# Conv channels (units after maxout) of the three blocks of each student,
# LP Table II = FitNets Table 6. Blocks end with 2x2, 2x2 and global pooling.
_STUDENT_BLOCKS = {
    1: ((16, 16, 16), (32, 32, 32), (48, 48, 64)),
    2: ((16, 32, 32), (48, 64, 80), (96, 96, 128)),
    3: ((32, 48, 64, 64), (80, 80, 80, 80), (128, 128, 128)),
    4: ((32, 32, 32, 48, 48), (80,) * 6, (128,) * 6),
}

# Keras-hub style preset table: plain data. `params` is `count_params()` of
# the default build (biases included, 32x32x3 or 28x28x1 input, 10
# classes); `paper_params` is the paper's figure.
LP_PRESETS = {
    "lp_teacher": {
        "description": (
            "CIFAR maxout teacher: 3 maxout conv layers (96-192-192 units, "
            "2 pieces) and a 500-unit, 5-piece maxout FC layer."
        ),
        "params": 8_567_830,
        "paper_params": 9_000_000,
        "num_layers": 5,
        "hint": "pool2",
        "lp": "pool2",
        "embedding": "fc_maxout",
    },
    "lp_student_1": {
        "description": "Student 1 (FitNet 1): 9 maxout conv layers, 16-64 units.",
        "params": 251_194,
        "paper_params": 250_000,
        "num_layers": 11,
        "hint": "pool2",
        "lp": "pool2",
        "embedding": "fc_maxout",
    },
    "lp_student_2": {
        "description": "Student 2 (FitNet 2): 9 maxout conv layers, 16-128 units.",
        "params": 864_122,
        "paper_params": 862_000,
        "num_layers": 11,
        "hint": "pool2",
        "lp": "pool2",
        "embedding": "fc_maxout",
    },
    "lp_student_3": {
        "description": "Student 3 (FitNet 3): 11 maxout conv layers, 32-128 units.",
        "params": 1_506_138,
        "paper_params": 1_600_000,
        "num_layers": 13,
        "hint": "pool2",
        "lp": "pool2",
        "embedding": "fc_maxout",
    },
    "lp_student_4": {
        "description": "Student 4 (FitNet 4): 17 maxout conv layers, 32-128 units.",
        "params": 2_548_602,
        "paper_params": 2_500_000,
        "num_layers": 19,
        "hint": "pool2",
        "lp": "pool2",
        "embedding": "fc_maxout",
    },
    "lp_mnist_teacher": {
        "description": (
            "MNIST maxout teacher (Goodfellow et al.): 3 maxout conv layers "
            "(48-48-24 units, 2-2-4 pieces) and softmax."
        ),
        "params": 417_514,
        "paper_params": 361_000,
        "num_layers": 4,
        "hint": "pool2",
        "lp": "pool2",
        "embedding": "flatten",
    },
    "lp_mnist_student": {
        "description": (
            "MNIST FitNet student: 6 maxout conv layers (16-16-16-16-12-12 "
            "units, 2-2-2-2-4-4 pieces) and softmax."
        ),
        "params": 36_226,
        "paper_params": 30_000,
        "num_layers": 7,
        "hint": "pool2",
        "lp": "pool2",
        "embedding": "flatten",
    },
}


def lp_tap_layers(preset):
    """Names of the layers to tap on one of the LP / FitNets networks.

    Args:
        preset: A key of `LP_PRESETS`, e.g. `"lp_student_4"`, or a model
            built by this module (its `name` is the preset key).

    Returns:
        Dict with keys `"hint"` (the FitNets hint / guide layer: the middle
        of the network), `"lp"` (the layer the LP loss uses: the same one,
        as in the paper) and `"embedding"` (the input of the softmax, for
        users who want the penultimate feature instead).

    Example:

    >>> lp_tap_layers("lp_student_4")["lp"]
    'pool2'
    >>> lp_tap_layers("lp_teacher")["embedding"]
    'fc_maxout'
    """
    name = preset.name if isinstance(preset, keras.Model) else preset
    if name not in LP_PRESETS:
        raise ValueError(
            f"Unknown LP preset. Received: preset={name!r}. Expected one of "
            f"{sorted(LP_PRESETS)}."
        )
    entry = LP_PRESETS[name]
    return {key: entry[key] for key in ("hint", "lp", "embedding")}


def _check_common(num_classes, input_shape):
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes < 1
    ):
        raise ValueError(
            "`num_classes` must be a positive integer. Received: "
            f"num_classes={num_classes!r}."
        )
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or not all(d is None or (isinstance(d, int) and d > 0) for d in shape)
        or shape[-1] is None
    ):
        raise ValueError(
            "`input_shape` must be a channels-last `(height, width, "
            "channels)` tuple with a known number of channels. Received: "
            f"input_shape={input_shape!r}."
        )
    return shape


def _check_pieces(fc_pieces):
    if (
        isinstance(fc_pieces, bool)
        or not isinstance(fc_pieces, int)
        or fc_pieces < 1
    ):
        raise ValueError(
            "`fc_pieces` must be a positive integer. Received: "
            f"fc_pieces={fc_pieces!r}."
        )


def _maxout_conv(x, name, units, pieces, kernel_size, padding=0):
    """Maxout conv unit: [zero padding], conv with `units * pieces`
    filters, then maxout over the pieces (pylearn2's `MaxoutConvC01B`)."""
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    x = keras.layers.Conv2D(units * pieces, kernel_size, name=name)(x)
    return Maxout(pieces, name=f"{name}_maxout")(x)


def lp_student(index, num_classes=10, input_shape=(32, 32, 3), *, fc_pieces=2):
    """One of the LP paper's CIFAR students 1-4 (FitNets 1-4).

    Three blocks of 3x3 maxout convolutions ("same" padding, 2 pieces each),
    separated by 2x2 / stride-2 max pooling and closed by a global max pool
    (the papers' 8x8 pool over the 8x8 map), then a 500-unit maxout FC layer
    and a linear classifier. Channels per block (LP Table II = FitNets
    Table 6):

    | student | block 1 (32x32)    | block 2 (16x16) | block 3 (8x8)    |
    | ------- | ------------------ | --------------- | ---------------- |
    | 1       | 16 16 16           | 32 32 32        | 48 48 64         |
    | 2       | 16 32 32           | 48 64 80        | 96 96 128        |
    | 3       | 32 48 64 64        | 80 80 80 80     | 128 128 128      |
    | 4       | 32 32 32 48 48     | 80 x 6          | 128 x 6          |

    Layer counts (convs + FC + softmax) are 11, 11, 13 and 19, as in Table I.
    Maxout with 2 pieces, 3x3 kernels with padding 1 and the 2x2 / 8x8 pools
    follow the FitNets authors' released pylearn2 configuration.

    Layer names, with convolutions numbered through the whole network:
    `conv{i}` (the `Conv2D`, `2 * units` filters) and `conv{i}_maxout`;
    `pool1`, `pool2` (`MaxPooling2D`), `pool3` (`GlobalMaxPooling2D`); `fc`
    (`Dense`, `500 * fc_pieces` units), `fc_maxout` and `logits`.

    Taps (`lp_tap_layers`): the FitNets hint layer and the LP layer are both
    `pool2`, the pooled output of the second block (for Student 4, an
    8x8x80 map: the paper's `d_S = 5120`); `fc_maxout` is the 500-d
    embedding feeding the classifier.

    Parameter counts (`count_params()`, biases included; Table I in
    brackets): Student 1 251,194 (~250K, +0.5%); Student 2 864,122 (~862K,
    +0.2%); Student 3 1,506,138 (~1.6M, -5.9%); Student 4 2,548,602
    (~2.5M, +1.9%). The paper's counts of Students 1, 2 and 4 (and, with
    pylearn2's pooling, of the teacher: see `lp_teacher`) are reproduced
    only with a 2-piece FC maxout layer, hence
    `fc_pieces=2`; the authors' released FitNet-4 training file uses 5
    pieces (`fc_pieces=5`, 2,742,102 parameters, +9.7%). The Student 3 gap
    is in the convolutions: its multiply count (ours ~324M against the
    paper's ~392M) is off too, so the paper's Student 3 differs from the
    channel list that Table II gives; we follow Table II. Multiplies for
    Students 1, 2 and 4 (~30M, ~108M, ~382M) match Table I.

    Thanks to the global pool, any input of at least 4x4 pixels works and
    only the input's channel count changes the parameter count (e.g.
    MNIST's `(28, 28, 1)`: 576 fewer for Student 1); the paper's
    MNIST experiment used a different pair, see `lp_mnist_student`.

    Args:
        index: Integer in 1-4, the student's number in Tables I and II.
        num_classes: Number of output logits.
        input_shape: Channels-last input shape.
        fc_pieces: Pieces of the 500-unit FC maxout layer (see above).

    Returns:
        A functional `keras.Model` named `lp_student_{index}` that maps
        images to logits of shape `(batch, num_classes)`.

    Example:

    >>> model = lp_student(4)
    >>> model.count_params()
    2548602
    >>> tuple(model.get_layer("pool2").output.shape)
    (None, 8, 8, 80)

    Reference:
        Chen, Wang, Xu, Xu, Tao. "Learning Student Networks via Feature
        Embedding", IEEE TNNLS 2020 (arXiv:1812.06597), Tables I and II.
        Romero et al. "FitNets: Hints for Thin Deep Nets", ICLR 2015.
    """
    if isinstance(index, bool) or index not in _STUDENT_BLOCKS:
        raise ValueError(
            "`index` must be the student's number in the LP paper's Table I: "
            f"1, 2, 3 or 4. Received: index={index!r}."
        )
    shape = _check_common(num_classes, input_shape)
    _check_pieces(fc_pieces)
    inputs = keras.Input(shape, name="images")
    x = inputs
    conv = 0
    for block, channels in enumerate(_STUDENT_BLOCKS[index], start=1):
        for units in channels:
            conv += 1
            x = _maxout_conv(x, f"conv{conv}", units, 2, 3, padding=1)
        if block < 3:
            x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)
        else:
            # The papers' 8x8 pool covers the whole 8x8 map; a global pool
            # is the same there and keeps other input sizes working.
            x = keras.layers.GlobalMaxPooling2D(name="pool3")(x)
    x = keras.layers.Dense(500 * fc_pieces, name="fc")(x)
    x = Maxout(fc_pieces, name="fc_maxout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"lp_student_{index}")


def lp_teacher(
    num_classes=10, input_shape=(32, 32, 3), *, fc_pieces=5, dropout=True
):
    """The LP paper's CIFAR maxout teacher (Goodfellow et al.'s network).

    Layers (units after maxout; all maxout units have 2 pieces):

    | layer | operation                                 | 32x32 input map |
    | ----- | ----------------------------------------- | --------------- |
    | 1     | pad 4, conv 8x8, 96 units, pool 4x4 / 2   | 33 -> 15        |
    | 2     | pad 3, conv 8x8, 192 units, pool 4x4 / 2  | 14 -> 6         |
    | 3     | pad 3, conv 5x5, 192 units, pool 4x4 / 2  | 8 -> 3          |
    | 4     | FC maxout, 500 units, 5 pieces            |                 |
    | 5     | linear classifier (softmax in the paper)  |                 |

    Kernels, padding and units follow Goodfellow et al.'s CIFAR-10 network,
    which FitNets and the LP paper use; the 4x4 / stride-2 pool on every
    layer and the 5-piece FC layer follow the LP paper (Table II, §V-B). The
    second layer's output is 6x6x192, the paper's `d_T = 6912`.

    Parameter count: 8,567,830 (`count_params()`, biases included) against
    the paper's ~9M (-4.8%). Multiplies: ~625M against ~725M. The original
    pylearn2 network pooled with cuda-convnet's ceil rounding (maps of
    16, 15, 7, 9 and 5 pixels, not 15, 14, 6, 8 and 3) and had a 2x2 last
    pool; its 4,800-d flattened map with a 2-piece FC layer gives exactly
    9.04M parameters and 725M multiplies, but contradicts the LP paper's
    `d_T = 6x6x192` and 5 pieces, and ceil pooling is not a standard Keras
    layer. We follow the LP paper.

    With `dropout=True` (default) dropout sits before every weight layer as
    in Goodfellow et al. (rate 0.2 on the input, 0.5 elsewhere); it adds no
    parameters and is inactive at inference. Their max-norm constraints
    and U(-0.005, 0.005) initialisation are not reproduced (Keras defaults).

    Layer names: `conv{i}_pad`, `conv{i}`, `conv{i}_maxout`, `pool{i}` for
    i = 1, 2, 3; `flatten`, `fc`, `fc_maxout`, `logits`; dropout layers are
    `input_dropout`, `conv{i}_dropout` (before `conv{i}_pad`, i = 2, 3),
    `fc_dropout` and `logits_dropout`.

    Taps (`lp_tap_layers`): the FitNets guide layer and the LP layer are
    both `pool2` (6x6x192); `fc_maxout` is the 500-d embedding.

    Other input sizes build too (MNIST's `(28, 28, 1)` gives a 2x2 last
    map), but the FC layer's size then changes with the flattened map; the
    paper's MNIST teacher is `lp_mnist_teacher`.

    Args:
        num_classes: Number of output logits.
        input_shape: Channels-last input shape.
        fc_pieces: Pieces of the 500-unit FC maxout layer.
        dropout: Whether to include Goodfellow et al.'s dropout layers.

    Returns:
        A functional `keras.Model` named `lp_teacher` that maps images to
        logits of shape `(batch, num_classes)`.

    Example:

    >>> model = lp_teacher()
    >>> model.count_params()
    8567830
    >>> tuple(model.get_layer("pool2").output.shape)
    (None, 6, 6, 192)

    Reference:
        Chen et al. "Learning Student Networks via Feature Embedding",
        arXiv:1812.06597, §V-B. Goodfellow et al. "Maxout Networks", ICML
        2013.
    """
    shape = _check_common(num_classes, input_shape)
    _check_pieces(fc_pieces)
    inputs = keras.Input(shape, name="images")
    x = inputs
    if dropout:
        x = keras.layers.Dropout(0.2, name="input_dropout")(x)
    layers = ((96, 8, 4), (192, 8, 3), (192, 5, 3))  # units, kernel, pad
    for i, (units, kernel, pad) in enumerate(layers, start=1):
        if dropout and i > 1:
            x = keras.layers.Dropout(0.5, name=f"conv{i}_dropout")(x)
        x = _maxout_conv(x, f"conv{i}", units, 2, kernel, padding=pad)
        x = keras.layers.MaxPooling2D(4, strides=2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dropout:
        x = keras.layers.Dropout(0.5, name="fc_dropout")(x)
    x = keras.layers.Dense(500 * fc_pieces, name="fc")(x)
    x = Maxout(fc_pieces, name="fc_maxout")(x)
    if dropout:
        x = keras.layers.Dropout(0.5, name="logits_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lp_teacher")


def lp_mnist_teacher(num_classes=10, input_shape=(28, 28, 1), *, dropout=True):
    """The maxout teacher of the LP paper's MNIST experiment (Table III).

    Goodfellow et al.'s MNIST network, which FitNets and the LP paper use
    ("3 maxout layers and a fully-connected layer"):

    | layer | operation                                    | 28x28 input |
    | ----- | -------------------------------------------- | ----------- |
    | 1     | conv 8x8, 48 units, 2 pieces, pool 4x4 / 2   | 21 -> 9     |
    | 2     | pad 3, conv 8x8, 48 units, 2 pieces, pool 4x4 / 2 | 8 -> 3 |
    | 3     | pad 3, conv 5x5, 24 units, 4 pieces, pool 2x2 / 2 | 5 -> 2 |
    | 4     | linear classifier (softmax in the paper)     |             |

    Goodfellow et al.'s released configuration (units, pieces, kernels,
    padding, pools) is reproduced exactly, except that pylearn2 rounded
    pooled sizes up (10, 4, 3 pixels) where Keras rounds down (9, 3, 2).

    Parameter count: 417,514 against the paper's ~361K (+15.7%; the
    pylearn2 original has 418,416). The paper's figure is matched only if
    the third layer had 2 pieces instead of 4, which neither Goodfellow et
    al. nor FitNets describe; the student/teacher ratio of our pair (8.7%)
    does match the paper's "about 8%". So the gap lies in the paper's
    count, and we keep the published network.

    Layer names: `conv{i}_pad` (i = 2, 3), `conv{i}`, `conv{i}_maxout`,
    `pool{i}`, `flatten`, `logits`; with `dropout=True` also
    `input_dropout`, `conv{i}_dropout` (i = 2, 3) and `logits_dropout`
    (rates 0.2 on the input, 0.5 elsewhere, as Goodfellow et al.).

    Taps: the guide layer is the 2nd layer, `pool2` (3x3x48; the paper:
    "the guide layer of the teacher network is the 2nd layer"), also used
    for LP; `flatten` is the input of the classifier.

    Args:
        num_classes: Number of output logits.
        input_shape: Channels-last input shape, at least 28x28.
        dropout: Whether to include Goodfellow et al.'s dropout layers.

    Returns:
        A functional `keras.Model` named `lp_mnist_teacher`.

    Example:

    >>> lp_mnist_teacher().count_params()
    417514

    Reference:
        Chen et al. "Learning Student Networks via Feature Embedding",
        arXiv:1812.06597, §V-A and Table III. Goodfellow et al. "Maxout
        Networks", ICML 2013.
    """
    shape = _check_common(num_classes, input_shape)
    inputs = keras.Input(shape, name="images")
    x = inputs
    if dropout:
        x = keras.layers.Dropout(0.2, name="input_dropout")(x)
    # units, pieces, kernel, pad, pool size
    layers = ((48, 2, 8, 0, 4), (48, 2, 8, 3, 4), (24, 4, 5, 3, 2))
    for i, (units, pieces, kernel, pad, pool) in enumerate(layers, start=1):
        if dropout and i > 1:
            x = keras.layers.Dropout(0.5, name=f"conv{i}_dropout")(x)
        x = _maxout_conv(x, f"conv{i}", units, pieces, kernel, padding=pad)
        x = keras.layers.MaxPooling2D(pool, strides=2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dropout:
        x = keras.layers.Dropout(0.5, name="logits_dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lp_mnist_teacher")


def lp_mnist_student(num_classes=10, input_shape=(28, 28, 1)):
    """The 6-layer maxout student of the LP paper's MNIST experiment.

    "Twice as deep as the teacher", as in FitNets; reconstructed from the
    FitNets authors' released MNIST configuration:

    | layer | operation                                | 28x28 input |
    | ----- | ---------------------------------------- | ----------- |
    | 1     | conv 5x5, 16 units, 2 pieces             | 24          |
    | 2     | conv 3x3, 16 units, 2 pieces, pool 4x4 / 2 | 22 -> 10  |
    | 3     | pad 3, conv 5x5, 16 units, 2 pieces      | 12          |
    | 4     | conv 3x3, 16 units, 2 pieces, pool 4x4 / 2 | 10 -> 4   |
    | 5     | pad 3, conv 3x3, 12 units, 4 pieces      | 8           |
    | 6     | conv 3x3, 12 units, 4 pieces, pool 2x2 / 2 | 6 -> 3    |
    | 7     | linear classifier (softmax in the paper) |             |

    Parameter count: 36,226 against the paper's ~30K (+21%; the paper also
    says "about 8%" of the teacher, ~29K). The released configuration has
    this size, and no other choice consistent with the paper's description
    (6 maxout layers, hint on the 4th) is documented, so we keep it; the
    gap is outside the 10% we hold the CIFAR networks to.

    Layer names: `conv{i}` and `conv{i}_maxout` (i = 1..6), `conv3_pad`,
    `conv5_pad`, `pool1` (after conv2), `pool2` (after conv4), `pool3`
    (after conv6), `flatten`, `logits`.

    Taps: the hint layer is the 4th layer, `pool2` (4x4x16; the paper: "the
    hint layer of the student network is the 4th layer"), also used for LP;
    `flatten` is the input of the classifier.

    Args:
        num_classes: Number of output logits.
        input_shape: Channels-last input shape, at least 28x28.

    Returns:
        A functional `keras.Model` named `lp_mnist_student`.

    Example:

    >>> lp_mnist_student().count_params()
    36226

    Reference:
        Chen et al. "Learning Student Networks via Feature Embedding",
        arXiv:1812.06597, §V-A and Table III. Romero et al. "FitNets: Hints
        for Thin Deep Nets", ICLR 2015.
    """
    shape = _check_common(num_classes, input_shape)
    inputs = keras.Input(shape, name="images")
    x = inputs
    # units, pieces, kernel, pad, pool size (0: no pooling)
    layers = (
        (16, 2, 5, 0, 0),
        (16, 2, 3, 0, 4),
        (16, 2, 5, 3, 0),
        (16, 2, 3, 0, 4),
        (12, 4, 3, 3, 0),
        (12, 4, 3, 0, 2),
    )
    pools = 0
    for i, (units, pieces, kernel, pad, pool) in enumerate(layers, start=1):
        x = _maxout_conv(x, f"conv{i}", units, pieces, kernel, padding=pad)
        if pool:
            pools += 1
            x = keras.layers.MaxPooling2D(
                pool, strides=2, name=f"pool{pools}"
            )(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lp_mnist_student")
