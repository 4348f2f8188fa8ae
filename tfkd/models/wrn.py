"""Wide residual networks WRN-d-k for CIFAR (Zagoruyko & Komodakis, 2016).

Pre-activation basic blocks, widths 16k/32k/64k, `n = (depth - 4) / 6`
blocks per stage. These are the WRN students and teachers of the STC paper
(Tables 1, 5: WRN-16-1 <- WRN-16-2, ResNet-20 <- WRN-40-1, VGG-13 <-
WRN-46-4) and of the attention-transfer baseline.
"""

import numbers

import keras
from keras import layers

from tfkd.models._checks import check_input_shape
from tfkd.models._checks import check_int

__all__ = [
    "WRN_PRESETS",
    "wide_resnet",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "wrn_46_4",
]

# Counts for num_classes=10. "params" is `model.count_params()` (includes
# the batch-norm moving statistics); "trainable_params" excludes them, which
# is what papers quote (WRN-16-2: 0.69M).
WRN_PRESETS = {
    "wrn_16_1": {
        "description": "WRN-16-1 for CIFAR (n=2, widths 16/32/64).",
        "depth": 16,
        "width": 1,
        "params": 175_994,
        "trainable_params": 175_066,
    },
    "wrn_16_2": {
        "description": "WRN-16-2 for CIFAR (n=2, widths 32/64/128).",
        "depth": 16,
        "width": 2,
        "params": 693_498,
        "trainable_params": 691_674,
    },
    "wrn_40_1": {
        "description": "WRN-40-1 for CIFAR (n=6, widths 16/32/64).",
        "depth": 40,
        "width": 1,
        "params": 566_650,
        "trainable_params": 563_930,
    },
    "wrn_40_2": {
        "description": "WRN-40-2 for CIFAR (n=6, widths 32/64/128).",
        "depth": 40,
        "width": 2,
        "params": 2_248_954,
        "trainable_params": 2_243_546,
    },
    "wrn_46_4": {
        "description": "WRN-46-4 for CIFAR (n=7, widths 64/128/256).",
        "depth": 46,
        "width": 4,
        "params": 10_511_866,
        "trainable_params": 10_499_290,
    },
}

_BASE_WIDTHS = (16, 32, 64)
# PyTorch BN defaults, as in the authors' and RepDistiller's code.
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def wide_resnet(
    depth,
    width,
    num_classes=10,
    input_shape=(32, 32, 3),
    dropout=0.0,
    name=None,
):
    """Builds a CIFAR wide residual network WRN-`depth`-`width`.

    A 3x3 stem conv (16 filters), three stages of `n = (depth - 4) / 6`
    pre-activation basic blocks (`BN-ReLU-conv3x3-BN-ReLU-conv3x3`) with
    `16 * width`, `32 * width` and `64 * width` filters (stages 2 and 3
    start with stride 2), then `BN-ReLU`, global average pooling and a dense
    layer. When a block changes width or stride its shortcut is a 1x1 conv
    on the pre-activated input; otherwise it is the identity on the raw
    input. Convs have no bias. The model outputs logits.

    Layer names (s = stage 1..3, b = block 1..n); block-boundary layers,
    after which the model can be cut with `tfkd.models.split_model` and
    which `tfkd.models.block_boundaries` lists, are marked with *:

    - stem: `stem_conv`*
    - block: `stage{s}_block{b}_bn1`, `_relu1`, `_conv1`, `_bn2`, `_relu2`,
      `_dropout` (only if `dropout > 0`), `_conv2`, `_shortcut_conv` (only
      when the shape changes), `_out`* (the residual `Add`, the block output)
    - head: `final_bn`, `final_relu`*, `pool`* (global average pooling),
      `logits`* (dense)

    Args:
        depth: Integer, `6n + 4` with `n >= 1` (10, 16, 22, 28, 40, 46, ...).
        width: Integer widening factor `k >= 1`.
        num_classes: Integer, number of output logits.
        input_shape: Tuple `(height, width, channels)`, channels last.
            Height and width may be None.
        dropout: Float in `[0, 1)`, dropout rate between the two convs of
            each block (0 disables it and adds no layer).
        name: String, model name. Defaults to `"wrn_{depth}_{width}"`.

    Returns:
        A functional `keras.Model` mapping images to logits of shape
        `(batch, num_classes)`.

    Example:

    >>> model = wide_resnet(16, 2)
    >>> sum(int(w.numpy().size) for w in model.trainable_weights)
    691674
    >>> model.get_layer("stage3_block2_out").output.shape
    (None, 8, 8, 128)

    Reference:
        - [Wide Residual Networks](https://arxiv.org/abs/1605.07146)
          (Zagoruyko & Komodakis, BMVC 2016).
    """
    depth = check_int("depth", depth, minimum=10)
    if (depth - 4) % 6:
        raise ValueError(
            "`depth` must be 6n + 4 for a WRN (10, 16, 22, 28, 40, 46, ...). "
            f"Received: depth={depth}"
        )
    width = check_int("width", width)
    num_classes = check_int("num_classes", num_classes)
    input_shape = check_input_shape(input_shape)
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Real)
        or not 0 <= dropout < 1
    ):
        raise ValueError(
            "`dropout` must be a float in [0, 1). "
            f"Received: dropout={dropout!r}"
        )
    if name is None:
        name = f"wrn_{depth}_{width}"
    blocks_per_stage = (depth - 4) // 6

    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(
        _BASE_WIDTHS[0], 3, padding="same", use_bias=False,
        kernel_initializer="he_normal", name="stem_conv",
    )(inputs)
    for stage, base in enumerate(_BASE_WIDTHS, start=1):
        for block in range(1, blocks_per_stage + 1):
            strides = 2 if (stage > 1 and block == 1) else 1
            x = _preact_block(
                x, base * width, strides, dropout,
                prefix=f"stage{stage}_block{block}",
            )
    x = layers.BatchNormalization(name="final_bn", **_BN)(x)
    x = layers.Activation("relu", name="final_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _preact_block(x, filters, strides, dropout, prefix):
    same_shape = strides == 1 and x.shape[-1] == filters
    h = layers.BatchNormalization(name=f"{prefix}_bn1", **_BN)(x)
    h = layers.Activation("relu", name=f"{prefix}_relu1")(h)
    # As in the authors' code: a projection shortcut reads the pre-activated
    # input, an identity shortcut the raw one.
    if same_shape:
        shortcut = x
    else:
        shortcut = layers.Conv2D(
            filters, 1, strides=strides, use_bias=False,
            kernel_initializer="he_normal", name=f"{prefix}_shortcut_conv",
        )(h)
    h = layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{prefix}_conv1",
    )(h)
    h = layers.BatchNormalization(name=f"{prefix}_bn2", **_BN)(h)
    h = layers.Activation("relu", name=f"{prefix}_relu2")(h)
    if dropout > 0:
        h = layers.Dropout(dropout, name=f"{prefix}_dropout")(h)
    h = layers.Conv2D(
        filters, 3, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{prefix}_conv2",
    )(h)
    return layers.Add(name=f"{prefix}_out")([shortcut, h])


def _preset_builder(preset):
    config = WRN_PRESETS[preset]
    depth, width = config["depth"], config["width"]
    title = f"WRN-{depth}-{width}"

    def builder(num_classes=10, input_shape=(32, 32, 3), dropout=0.0,
                name=None):
        return wide_resnet(
            depth,
            width,
            num_classes=num_classes,
            input_shape=input_shape,
            dropout=dropout,
            name=name,
        )

    builder.__name__ = preset
    builder.__qualname__ = preset
    builder.__doc__ = f"""Builds {title} for CIFAR.

    Shorthand for `wide_resnet({depth}, {width}, ...)`; see `wide_resnet`
    for the architecture and layer names. With the defaults it has
    {config["trainable_params"]:,} trainable parameters
    ({config["params"]:,} with batch-norm statistics).

    Args:
        num_classes: Integer, number of output logits.
        input_shape: Tuple `(height, width, channels)`.
        dropout: Float in `[0, 1)`, dropout rate inside each block.
        name: String, model name. Defaults to `"{preset}"`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Example:

    >>> model = {preset}()
    >>> model.name
    '{preset}'

    Reference:
        - [Wide Residual Networks](https://arxiv.org/abs/1605.07146)
          (Zagoruyko & Komodakis, BMVC 2016).
    """
    return builder


wrn_16_1 = _preset_builder("wrn_16_1")
wrn_16_2 = _preset_builder("wrn_16_2")
wrn_40_1 = _preset_builder("wrn_40_1")
wrn_40_2 = _preset_builder("wrn_40_2")
wrn_46_4 = _preset_builder("wrn_46_4")
