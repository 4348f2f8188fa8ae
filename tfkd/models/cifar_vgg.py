"""VGG-13 for CIFAR with batch norm, as in the CRD / RepDistiller benchmarks.

Five stages of 3x3 conv-BN-ReLU (2 convs each: 64, 128, 256, 512, 512
filters), 2x2 max pooling after stages 1-3, global average pooling and one
dense layer: 10 convs + 1 dense. It is the VGG-13 student of the STC paper
(Tables 1, 5: VGG-13 <- WRN-46-4).
"""

import keras
from keras import layers

from tfkd.models._checks import check_input_shape
from tfkd.models._checks import check_int

__all__ = ["VGG_PRESETS", "vgg13"]

# Counts for num_classes=10. "params" is `model.count_params()` (includes
# the batch-norm moving statistics); "trainable_params" excludes them.
VGG_PRESETS = {
    "vgg13": {
        "description": "VGG-13 with batch norm for CIFAR (RepDistiller).",
        "stages": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
        "params": 9_421_898,
        "trainable_params": 9_416_010,
    },
}

# PyTorch BN defaults, as in RepDistiller.
_BN = {"momentum": 0.9, "epsilon": 1e-5}


def vgg13(num_classes=10, input_shape=(32, 32, 3), name="vgg13"):
    """Builds VGG-13 with batch norm for CIFAR (RepDistiller layout).

    Stages of 3x3 `conv-BN-ReLU` with 64, 128, 256, 512 and 512 filters, two
    convs each. 2x2 max pooling follows stages 1, 2 and 3 (and stage 4 too
    for inputs 64 pixels high or more, as RepDistiller does for 64x64
    inputs), so on 32x32 inputs stages 4 and 5 run at 4x4. Then global
    average pooling and a dense layer. Convs keep their bias, as in
    RepDistiller's PyTorch code, so the parameter count matches its VGG-13.
    The model outputs logits.

    Layer names (s = stage 1..5, i = conv 1..2); block-boundary layers,
    after which the model can be cut with `tfkd.models.split_model` and
    which `tfkd.models.block_boundaries` lists, are marked with *:

    - stage: `stage{s}_conv{i}`, `stage{s}_bn{i}`, `stage{s}_relu1`,
      `stage{s}_out`* (the ReLU after the last conv, before pooling),
      `stage{s}_pool` (max pooling, stages 1-3, and 4 for large inputs)
    - head: `pool`* (global average pooling), `logits`* (dense)

    Any layer of this plain chain is a valid cut point.

    Args:
        num_classes: Integer, number of output logits.
        input_shape: Tuple `(height, width, channels)`, channels last, at
            least 8x8 (three poolings). Height and width may be None.
        name: String, model name.

    Returns:
        A functional `keras.Model` mapping images to logits of shape
        `(batch, num_classes)`.

    Example:

    >>> model = vgg13()
    >>> sum(int(w.numpy().size) for w in model.trainable_weights)
    9416010
    >>> model.get_layer("stage4_out").output.shape
    (None, 4, 4, 512)

    Reference:
        - [Very Deep Convolutional Networks for Large-Scale Image
          Recognition](https://arxiv.org/abs/1409.1556) (Simonyan &
          Zisserman, ICLR 2015), configuration B.
        - [Contrastive Representation Distillation](
          https://arxiv.org/abs/1910.10699) (Tian et al., ICLR 2020), and
          its RepDistiller code (`models/vgg.py`, `vgg13_bn`).
    """
    num_classes = check_int("num_classes", num_classes)
    input_shape = check_input_shape(input_shape, min_size=8)
    pool_stage4 = input_shape[0] is not None and input_shape[0] >= 64

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    stages = VGG_PRESETS["vgg13"]["stages"]
    for stage, filters in enumerate(stages, start=1):
        for i, f in enumerate(filters, start=1):
            last = i == len(filters)
            x = layers.Conv2D(
                f, 3, padding="same", kernel_initializer="he_normal",
                name=f"stage{stage}_conv{i}",
            )(x)
            x = layers.BatchNormalization(name=f"stage{stage}_bn{i}", **_BN)(x)
            x = layers.Activation(
                "relu",
                name=f"stage{stage}_out" if last else f"stage{stage}_relu{i}",
            )(x)
        if stage <= 3 or (stage == 4 and pool_stage4):
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
