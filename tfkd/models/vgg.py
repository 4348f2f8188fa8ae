"""VGG teachers and students of the student-centric (correlation) paper.

Table 1 of Wang et al. gives four CIFAR networks of 3x3 conv-BN-ReLU blocks,
2x2 max pooling after blocks 1-3, global average pooling and one dense
layer (the model outputs logits; the paper's softmax is left to the loss):

| block | teacher     | student | teacher-augmented | student-augmented |
| ----- | ----------- | ------- | ----------------- | ----------------- |
| 1     | 64, 64      | 64      | 64, 64            | 64                |
| 2     | 128, 128    | 128     | 128, 128          | 128               |
| 3     | 256 x 3     | 256     | 256 x 3           | 256               |
| 4     | **512**, 512, 512 | **512** | **1024**, 512, 512 | **1024**     |

The bold layers, the first conv of the last block, give (teachers) or
receive (students) the knowledge. For self-guided learning (§3.2, §4.3) the
student-augmented network's 1024-channel guided layer is a
`SelfTaughtConv2D` of 512 guided + 512 self-taught channels, guided by the
512-channel layer of the (non-augmented) teacher.

Layer names (b = block 1..4, i = conv 1..3): `images` (input),
`block{b}_conv{i}`, `block{b}_bn{i}`, `block{b}_relu{i}`, `block{b}_pool`
(b = 1..3), `gap`, `logits`.

Which layer to tap: `block4_relu1` (`VGG_GUIDED_LAYER`) on all five
networks, i.e. the ReLU output of the guided conv `block4_conv1`. The paper
computes its Gram matrices on a layer's "activations" (§3.1) as in neural
style transfer, and FitNets hints and attention maps are also taken after
the non-linearity. Batch norm and ReLU act channel by channel, so the first
512 channels of `block4_relu1` of the self-taught student depend on the
guided kernel only: `tfkd.layers.find_guided_channels(model,
"block4_relu1")` returns 512 for it (None for the others), and slicing to
those channels keeps the knowledge loss off the self-taught neurons.

Parameter counts (Table 2). `count_params()` includes the batch-norm moving
statistics. Table 2's eight rounded figures pin down the conv-BN block:
from 10 to 100 classes every count grows by the dense layer alone (46,170
parameters; 92,250 for the student-augmented's 1024 features), so each
10-class count is confined to an interval of a few thousand parameters,
and the per-channel cost (conv bias + batch-norm parameters) must be
exactly 3 for the teachers (the teacher-augmented admits only 3) and
between 4 and 8 for the students. No
single block matches all eight: Keras' default `Conv2D` + `BatchNormalization`
(5 per channel) gives the teachers 7.70M and 11.24M on CIFAR-100 instead of
7.69M and 11.23M. So, following the paper's counts:

- every conv is bias-free (batch norm's beta is the bias: a conv bias
  before batch norm is cancelled by the mean subtraction);
- teachers use batch norm without gamma (`scale=False`, 3 per channel: the
  TF-slim `batch_norm` default, which Keras documents as redundant before
  a ReLU);
- students use full batch norm (`scale=True`, 4 per channel).

This reproduces all of Table 2 (see `STUDENT_CENTRIC_VGG_PRESETS`).

Reference:
    Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for Improved
    Knowledge Transfer", Tables 1 and 2.
"""

import keras
from keras import layers

from tfkd.layers.self_taught_conv2d import SelfTaughtConv2D
from tfkd.models._checks import check_input_shape
from tfkd.models._checks import check_int

__all__ = [
    "STUDENT_CENTRIC_VGG_PRESETS",
    "VGG_GUIDED_CONV",
    "VGG_GUIDED_LAYER",
    "vgg_guided_layer",
    "vgg_student",
    "vgg_teacher",
]

# The knowledge is tapped after the activation of the first conv of the
# last block (see the module docstring).
VGG_GUIDED_LAYER = "block4_relu1"
VGG_GUIDED_CONV = "block4_conv1"

_TEACHER_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))
_TEACHER_AUG_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (1024, 512, 512))
_STUDENT_BLOCKS = ((64,), (128,), (256,), (512,))
_STUDENT_AUG_BLOCKS = ((64,), (128,), (256,), (1024,))

# Keras-hub style preset table: plain data. `params` is `count_params()`
# (moving statistics included) for 32x32x3 inputs, keyed by num_classes;
# `paper_params` is Table 2. The model built for a preset is named after it.
STUDENT_CENTRIC_VGG_PRESETS = {
    "vgg_teacher": {
        "description": "Teacher: 10 conv layers (64-512) + dense, 11 layers.",
        "builder": "vgg_teacher",
        "config": {"augmented": False},
        "params": {10: 7_645_770, 100: 7_691_940},
        "paper_params": {10: 7.65e6, 100: 7.69e6},
        "guided_layer": VGG_GUIDED_LAYER,
        "guided_channels": 512,
    },
    "vgg_teacher_augmented": {
        "description": (
            "Teacher-augmented: the teacher with a 1024-channel guided "
            "layer (block4_conv1), 11 layers."
        ),
        "builder": "vgg_teacher",
        "config": {"augmented": True},
        "params": {10: 11_186_250, 100: 11_232_420},
        "paper_params": {10: 11.19e6, 100: 11.23e6},
        "guided_layer": VGG_GUIDED_LAYER,
        "guided_channels": 1024,
    },
    "vgg_student": {
        "description": "Student: 4 conv layers (64-512) + dense, 5 layers.",
        "builder": "vgg_student",
        "config": {"augmented": False, "self_taught": False},
        "params": {10: 1_558_986, 100: 1_605_156},
        "paper_params": {10: 1.56e6, 100: 1.61e6},
        "guided_layer": VGG_GUIDED_LAYER,
        "guided_channels": 512,
    },
    "vgg_student_augmented": {
        "description": (
            "Student-augmented: the student with a 1024-channel guided "
            "layer (block4_conv1), 5 layers."
        ),
        "builder": "vgg_student",
        "config": {"augmented": True, "self_taught": False},
        "params": {10: 2_745_802, 100: 2_838_052},
        "paper_params": {10: 2.75e6, 100: 2.84e6},
        "guided_layer": VGG_GUIDED_LAYER,
        "guided_channels": 1024,
    },
    "vgg_student_self_taught": {
        "description": (
            "Student-augmented for self-guided learning: block4_conv1 is a "
            "SelfTaughtConv2D of 512 guided + 512 self-taught channels, "
            "guided by the 512-channel teacher."
        ),
        "builder": "vgg_student",
        "config": {"augmented": True, "self_taught": True},
        "params": {10: 2_745_802, 100: 2_838_052},
        "paper_params": {10: 2.75e6, 100: 2.84e6},
        "guided_layer": VGG_GUIDED_LAYER,
        "guided_channels": 512,
    },
}


def vgg_guided_layer(preset):
    """Name of the layer to tap on a network of this module.

    Args:
        preset: A key of `STUDENT_CENTRIC_VGG_PRESETS` or a model built by
            `vgg_teacher` / `vgg_student` (its `name` is the preset key).

    Returns:
        String, `"block4_relu1"`: the ReLU output of the first conv of the
        last block, the paper's guided / hint layer.

    Example:

    >>> vgg_guided_layer("vgg_student_self_taught")
    'block4_relu1'
    """
    name = preset.name if isinstance(preset, keras.Model) else preset
    if name not in STUDENT_CENTRIC_VGG_PRESETS:
        raise ValueError(
            "Unknown student-centric VGG preset. Received: "
            f"preset={name!r}. Expected one of "
            f"{sorted(STUDENT_CENTRIC_VGG_PRESETS)} or a model built by "
            "`vgg_teacher` / `vgg_student`."
        )
    return STUDENT_CENTRIC_VGG_PRESETS[name]["guided_layer"]


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a bool. Received: {name}={value!r} "
            f"(of type {type(value).__name__})"
        )
    return value


def _build(blocks, num_classes, input_shape, bn_scale, name, self_taught):
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for b, widths in enumerate(blocks, start=1):
        for i, filters in enumerate(widths, start=1):
            prefix = f"block{b}_"
            conv_kwargs = {
                "padding": "same",
                "use_bias": False,
                "kernel_initializer": "he_normal",
                "name": f"{prefix}conv{i}",
            }
            if self_taught and (b, i) == (len(blocks), 1):
                half = filters // 2
                x = SelfTaughtConv2D(half, filters - half, 3, **conv_kwargs)(x)
            else:
                x = layers.Conv2D(filters, 3, **conv_kwargs)(x)
            x = layers.BatchNormalization(
                scale=bn_scale, name=f"{prefix}bn{i}"
            )(x)
            x = layers.ReLU(name=f"{prefix}relu{i}")(x)
        if b < len(blocks):
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def vgg_teacher(num_classes=10, input_shape=(32, 32, 3), augmented=False):
    """Builds the VGG teacher (or teacher-augmented) of Table 1.

    Ten 3x3 conv-BN-ReLU layers in four blocks (64 x2, 128 x2, 256 x3,
    512 x3; with `augmented=True` the first conv of block 4 has 1024
    channels), 2x2 max pooling after blocks 1-3, global average pooling and
    a dense layer: 11 weight layers. Convs are bias-free and batch norm has
    no gamma (`scale=False`), which reproduces Table 2's counts (see the
    module docstring). Outputs logits.

    Layer names: `block{b}_conv{i}`, `block{b}_bn{i}`, `block{b}_relu{i}`
    (b = 1..4, i = 1..3, 2 convs in blocks 1-2), `block{b}_pool` (b = 1..3),
    `gap`, `logits`. Tap `block4_relu1` (`VGG_GUIDED_LAYER`): 512 channels,
    1024 when augmented.

    Args:
        num_classes: Integer, number of output logits.
        input_shape: Tuple `(height, width, channels)`, channels last, at
            least 8x8 (three poolings).
        augmented: If `True`, builds the teacher-augmented network.

    Returns:
        A functional `keras.Model` named `"vgg_teacher"` or
        `"vgg_teacher_augmented"`.

    Example:

    >>> model = vgg_teacher(num_classes=10)
    >>> round(model.count_params() / 1e6, 2)
    7.65
    >>> model.get_layer("block4_relu1").output.shape
    (None, 4, 4, 512)

    Reference:
        Wang et al. "Student-Centric Network Learning for Improved
        Knowledge Transfer", Tables 1-2.
    """
    num_classes = check_int("num_classes", num_classes)
    input_shape = check_input_shape(input_shape, min_size=8)
    augmented = _check_bool("augmented", augmented)
    blocks = _TEACHER_AUG_BLOCKS if augmented else _TEACHER_BLOCKS
    name = "vgg_teacher_augmented" if augmented else "vgg_teacher"
    return _build(
        blocks, num_classes, input_shape, False, name, self_taught=False
    )


def vgg_student(
    num_classes=10, input_shape=(32, 32, 3), augmented=False, self_taught=False
):
    """Builds the VGG student (or student-augmented) of Table 1.

    Four 3x3 conv-BN-ReLU layers (64, 128, 256, 512; with `augmented=True`
    the last has 1024 channels), 2x2 max pooling after the first three,
    global average pooling and a dense layer: 5 weight layers. Convs are
    bias-free, batch norm is full (gamma and beta), which reproduces Table
    2's counts (see the module docstring). Outputs logits.

    With `self_taught=True` (requires `augmented=True`) the 1024-channel
    guided conv `block4_conv1` is a `tfkd.layers.SelfTaughtConv2D` with 512
    guided channels (first) and 512 self-taught channels: the network of the
    paper's "Augmented+Self-Guided" setting, taught by the 512-channel
    `vgg_teacher()`. It has the same parameter count as the augmented
    student.

    Layer names: `block{b}_conv1`, `block{b}_bn1`, `block{b}_relu1`
    (b = 1..4), `block{b}_pool` (b = 1..3), `gap`, `logits`. Tap
    `block4_relu1` (`VGG_GUIDED_LAYER`): 512 channels, 1024 when augmented,
    of which the first 512 are guided when self-taught
    (`tfkd.layers.find_guided_channels` returns 512).

    Args:
        num_classes: Integer, number of output logits.
        input_shape: Tuple `(height, width, channels)`, channels last, at
            least 8x8 (three poolings).
        augmented: If `True`, builds the student-augmented network.
        self_taught: If `True`, splits the guided layer of the
            student-augmented network into 512 guided + 512 self-taught
            channels.

    Returns:
        A functional `keras.Model` named `"vgg_student"`,
        `"vgg_student_augmented"` or `"vgg_student_self_taught"`.

    Example:

    >>> model = vgg_student(augmented=True, self_taught=True)
    >>> model.get_layer("block4_conv1").guided_channels
    512
    >>> round(model.count_params() / 1e6, 2)
    2.75

    Reference:
        Wang et al. "Student-Centric Network Learning for Improved
        Knowledge Transfer", Tables 1-2, §3.2.
    """
    num_classes = check_int("num_classes", num_classes)
    input_shape = check_input_shape(input_shape, min_size=8)
    augmented = _check_bool("augmented", augmented)
    self_taught = _check_bool("self_taught", self_taught)
    if self_taught and not augmented:
        raise ValueError(
            "`self_taught=True` builds the student-augmented network with "
            "512 guided + 512 self-taught channels; pass augmented=True "
            "too. Received: augmented=False, self_taught=True"
        )
    if self_taught:
        name = "vgg_student_self_taught"
    elif augmented:
        name = "vgg_student_augmented"
    else:
        name = "vgg_student"
    blocks = _STUDENT_AUG_BLOCKS if augmented else _STUDENT_BLOCKS
    return _build(
        blocks, num_classes, input_shape, True, name, self_taught=self_taught
    )
