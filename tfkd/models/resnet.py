"""CIFAR ResNets (ResNet-20/32/44/56/110) of He et al. (2016), §4.2.

The CIFAR family: a 3x3 stem conv with 16 filters, three stages of `n`
basic blocks (two 3x3 convs each) with 16, 32 and 64 filters on 32x32,
16x16 and 8x8 maps, global average pooling and a dense layer; depth is
`6n + 2`. These are the ResNet students and teachers of the STC paper
(Tables 1, 2, 5).
"""

import keras
from keras import layers

from tfkd.models._checks import check_input_shape
from tfkd.models._checks import check_int

__all__ = [
    "RESNET_PRESETS",
    "cifar_resnet",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]

# Parameter counts are for num_classes=10 and shortcut="A". "params" is
# `model.count_params()`, which includes the batch-norm moving mean and
# variance (non-trainable); "trainable_params" excludes them and is what the
# paper's Table 6 counts ("published_params").
RESNET_PRESETS = {
    "resnet20": {
        "description": "ResNet-20 for CIFAR (n=3), option-A shortcuts.",
        "depth": 20,
        "params": 271_098,
        "trainable_params": 269_722,
        "published_params": 270_000,
    },
    "resnet32": {
        "description": "ResNet-32 for CIFAR (n=5), option-A shortcuts.",
        "depth": 32,
        "params": 466_426,
        "trainable_params": 464_154,
        "published_params": 460_000,
    },
    "resnet44": {
        "description": "ResNet-44 for CIFAR (n=7), option-A shortcuts.",
        "depth": 44,
        "params": 661_754,
        "trainable_params": 658_586,
        "published_params": 660_000,
    },
    "resnet56": {
        "description": "ResNet-56 for CIFAR (n=9), option-A shortcuts.",
        "depth": 56,
        "params": 857_082,
        "trainable_params": 853_018,
        "published_params": 850_000,
    },
    "resnet110": {
        "description": "ResNet-110 for CIFAR (n=18), option-A shortcuts.",
        "depth": 110,
        "params": 1_736_058,
        "trainable_params": 1_727_962,
        "published_params": 1_700_000,
    },
}

_WIDTHS = (16, 32, 64)
# PyTorch BN defaults, as in the reference CIFAR implementations.
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def cifar_resnet(
    depth,
    num_classes=10,
    input_shape=(32, 32, 3),
    shortcut="A",
    name=None,
):
    """Builds a CIFAR ResNet-`depth` (He et al., 2016) as a functional model.

    Post-activation basic blocks (`conv-BN-ReLU-conv-BN`, add, ReLU), widths
    16/32/64, `n = (depth - 2) / 6` blocks per stage; the first block of
    stages 2 and 3 halves the map with stride 2. The model outputs logits.

    Shortcuts where the width doubles:

    - `"A"` (default, the paper's CIFAR choice): parameter-free. The input
      is subsampled (`MaxPooling2D(pool_size=1, strides=2)`, i.e.
      `x[:, ::2, ::2]`) and zero channels are added, half before and half
      after (`Permute` to put channels on a spatial axis, `ZeroPadding2D`,
      `Permute` back). Only standard layers, so the model saves and loads
      with `safe_mode=True` without tfkd installed, and exports to TFLite as
      transpose and pad ops. This gives the published parameter counts.
    - `"B"`: a strided 1x1 conv projection followed by batch norm.

    Layer names (s = stage 1..3, b = block 1..n); the block-boundary
    layers, after which the model can be cut with `tfkd.models.split_model`
    and which `tfkd.models.block_boundaries` lists, are marked with *:

    - stem: `stem_conv`, `stem_bn`, `stem_relu`*
    - block: `stage{s}_block{b}_conv1`, `_bn1`, `_relu1`, `_conv2`, `_bn2`,
      `_add` (the residual sum), `_out`* (ReLU of the sum, the block output)
    - option-A shortcut: `stage{s}_block1_shortcut_pool`,
      `_shortcut_transpose`, `_shortcut_pad`, `_shortcut_restore`;
      option-B shortcut: `stage{s}_block1_shortcut_conv`, `_shortcut_bn`
    - head: `pool`* (global average pooling), `logits`* (dense)

    Args:
        depth: Integer, `6n + 2` with `n >= 1` (20, 32, 44, 56, 110, ...).
        num_classes: Integer, number of output logits.
        input_shape: Tuple `(height, width, channels)`, channels last.
            Height and width may be None.
        shortcut: `"A"` (zero-padding identity, default) or `"B"` (1x1 conv
            projection), for the blocks that change width.
        name: String, model name. Defaults to `"resnet{depth}"` (with
            `"_b"` appended for option B).

    Returns:
        A functional `keras.Model` mapping images to logits of shape
        `(batch, num_classes)`.

    Example:

    >>> model = cifar_resnet(20)
    >>> model.output.shape
    (None, 10)
    >>> sum(int(w.numpy().size) for w in model.trainable_weights)
    269722
    >>> model.get_layer("stage2_block1_out").output.shape
    (None, 16, 16, 32)

    Reference:
        - [Deep Residual Learning for Image Recognition](
          https://arxiv.org/abs/1512.03385) (He et al., CVPR 2016), §4.2
          and Table 6.
    """
    depth = check_int("depth", depth, minimum=8)
    if (depth - 2) % 6:
        raise ValueError(
            "`depth` must be 6n + 2 for a CIFAR ResNet (20, 32, 44, 56, 110, "
            f"...). Received: depth={depth}"
        )
    num_classes = check_int("num_classes", num_classes)
    input_shape = check_input_shape(input_shape)
    if not isinstance(shortcut, str) or shortcut.upper() not in ("A", "B"):
        raise ValueError(
            '`shortcut` must be "A" (zero-padding identity) or "B" (1x1 '
            f"conv projection). Received: shortcut={shortcut!r}"
        )
    shortcut = shortcut.upper()
    if name is None:
        name = f"resnet{depth}" + ("_b" if shortcut == "B" else "")
    blocks_per_stage = (depth - 2) // 6

    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(
        _WIDTHS[0], 3, padding="same", use_bias=False,
        kernel_initializer="he_normal", name="stem_conv",
    )(inputs)
    x = layers.BatchNormalization(name="stem_bn", **_BN)(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage, width in enumerate(_WIDTHS, start=1):
        for block in range(1, blocks_per_stage + 1):
            strides = 2 if (stage > 1 and block == 1) else 1
            x = _basic_block(
                x, width, strides, shortcut,
                prefix=f"stage{stage}_block{block}",
            )
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _basic_block(x, width, strides, shortcut, prefix):
    in_width = x.shape[-1]
    residual = layers.Conv2D(
        width, 3, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{prefix}_conv1",
    )(x)
    residual = layers.BatchNormalization(name=f"{prefix}_bn1", **_BN)(residual)
    residual = layers.Activation("relu", name=f"{prefix}_relu1")(residual)
    residual = layers.Conv2D(
        width, 3, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=f"{prefix}_conv2",
    )(residual)
    residual = layers.BatchNormalization(name=f"{prefix}_bn2", **_BN)(residual)

    if strides == 1 and in_width == width:
        identity = x
    elif shortcut == "A":
        identity = _zero_pad_shortcut(x, width, strides, prefix)
    else:
        identity = layers.Conv2D(
            width, 1, strides=strides, use_bias=False,
            kernel_initializer="he_normal", name=f"{prefix}_shortcut_conv",
        )(x)
        identity = layers.BatchNormalization(
            name=f"{prefix}_shortcut_bn", **_BN
        )(identity)

    x = layers.Add(name=f"{prefix}_add")([identity, residual])
    return layers.Activation("relu", name=f"{prefix}_out")(x)


def _zero_pad_shortcut(x, width, strides, prefix):
    """Option A: subsample, then zero-pad channels (no weights)."""
    extra = width - x.shape[-1]
    if extra < 0 or extra % 2:
        # Unreachable with the fixed 16/32/64 widths; guards future edits.
        raise ValueError(
            f"Option-A shortcut cannot go from {x.shape[-1]} to {width} "
            "channels; it needs an even increase. Use shortcut='B'. "
            f"Received: width={width}"
        )
    if strides > 1:
        # pool_size=1 picks every `strides`-th pixel: x[:, ::2, ::2], the
        # same map size as the strided "same" conv of the residual branch.
        x = layers.MaxPooling2D(
            pool_size=1, strides=strides, name=f"{prefix}_shortcut_pool"
        )(x)
    # ZeroPadding2D pads axes 1 and 2; moving channels to axis 1 lets it pad
    # channels with standard layers only (no Lambda, no custom layer).
    x = layers.Permute((3, 1, 2), name=f"{prefix}_shortcut_transpose")(x)
    x = layers.ZeroPadding2D(
        padding=((extra // 2, extra - extra // 2), (0, 0)),
        name=f"{prefix}_shortcut_pad",
    )(x)
    return layers.Permute((2, 3, 1), name=f"{prefix}_shortcut_restore")(x)


def _preset_builder(preset):
    depth = RESNET_PRESETS[preset]["depth"]

    def builder(num_classes=10, input_shape=(32, 32, 3), shortcut="A",
                name=None):
        return cifar_resnet(
            depth,
            num_classes=num_classes,
            input_shape=input_shape,
            shortcut=shortcut,
            name=name,
        )

    builder.__name__ = preset
    builder.__qualname__ = preset
    title = preset.replace("resnet", "ResNet-")
    builder.__doc__ = f"""Builds {title} for CIFAR.

    Shorthand for `cifar_resnet({depth}, ...)`; see `cifar_resnet` for the
    architecture, layer names and shortcut options. With the defaults it has
    {RESNET_PRESETS[preset]["trainable_params"]:,} trainable parameters
    ({RESNET_PRESETS[preset]["params"]:,} with batch-norm statistics;
    paper: {RESNET_PRESETS[preset]["published_params"] / 1e6:.2f}M).

    Args:
        num_classes: Integer, number of output logits.
        input_shape: Tuple `(height, width, channels)`.
        shortcut: `"A"` (default) or `"B"`.
        name: String, model name. Defaults to `"{preset}"`.

    Returns:
        A functional `keras.Model` that outputs logits.

    Example:

    >>> model = {preset}()
    >>> model.name
    '{preset}'

    Reference:
        - [Deep Residual Learning for Image Recognition](
          https://arxiv.org/abs/1512.03385) (He et al., CVPR 2016).
    """
    return builder


resnet20 = _preset_builder("resnet20")
resnet32 = _preset_builder("resnet32")
resnet44 = _preset_builder("resnet44")
resnet56 = _preset_builder("resnet56")
resnet110 = _preset_builder("resnet110")
