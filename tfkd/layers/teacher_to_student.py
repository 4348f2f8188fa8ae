"""KTAN's teacher-to-student regressor and its pre-training (Algorithm 1).

The regressor maps the teacher's last conv feature map `m_t` (size `M_t`,
`C_t` channels) to the student's map size (`M_s`, `C_s` channels) with one
convolution whose kernel size solves `(M_t + 2P − K) / S + 1 = M_s`. It is
pre-trained through a temporary linear head on the frozen teacher trunk
(`pretrain_regressor`), then frozen while the student learns from it.
"""

import math
import numbers

import keras
from keras import ops


def _pair(value, name, minimum):
    """Normalises an int or a pair of ints to a `(h, w)` tuple."""
    values = value if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral)
        or v < minimum for v in values
    ):
        raise ValueError(
            f"`{name}` must be an int >= {minimum} or a pair of such ints "
            f"(height, width). Received: {name}={value!r}."
        )
    return tuple(int(v) for v in values)


def upsampling_factor(teacher_size, student_size):
    """Integer upsampling applied to the teacher map before the regressor.

    `r = ceil(M_s / M_t)` along each axis where the teacher map is smaller
    than the student's (`M_t < M_s`), else 1: the smallest integer factor
    after which a valid convolution can reach `M_s`.

    Args:
        teacher_size: Teacher map size `M_t`, an int or `(height, width)`.
        student_size: Student map size `M_s`, an int or `(height, width)`.

    Returns:
        An int if both sizes are ints, else a `(r_h, r_w)` tuple.

    Example:

    >>> upsampling_factor(4, 8), upsampling_factor(3, 8)
    (2, 3)
    >>> upsampling_factor(8, 4)
    1
    """
    t = _pair(teacher_size, "teacher_size", 1)
    s = _pair(student_size, "student_size", 1)
    r = tuple(max(1, math.ceil(b / a)) for a, b in zip(t, s))
    scalar = not isinstance(teacher_size, (tuple, list)) and not isinstance(
        student_size, (tuple, list))
    return r[0] if scalar else r


def regressor_kernel_size(teacher_size, student_size, padding=0, strides=1):
    """Kernel size of KTAN's teacher-to-student convolution.

    Solves the paper's `(M_t + 2P − K) / S + 1 = M_s` for the kernel:
    `K = M_t + 2P − S·(M_s − 1)`. When the teacher map is smaller than the
    student's (`M_t < M_s`), it is first upsampled by the integer factor
    `r = ceil(M_s / M_t)` (see `upsampling_factor`) and the formula is
    applied to `r·M_t`. Each axis is solved separately.

    Args:
        teacher_size: Teacher map size `M_t`, an int or `(height, width)`.
        student_size: Student map size `M_s`, an int or `(height, width)`.
        padding: Zero padding `P >= 0` on each side, int or pair.
        strides: Stride `S >= 1`, int or pair.

    Returns:
        `K`: an int if `teacher_size` and `student_size` are ints, else a
        `(K_h, K_w)` tuple.

    Raises:
        ValueError: if a size, padding or stride is invalid, or the
            combination gives no kernel `K >= 1` (the stride is too large
            for the sizes; reduce `strides` or add `padding`).

    Example:

    >>> regressor_kernel_size(8, 4)  # 8 - 3 = 5
    5
    >>> regressor_kernel_size(8, 4, strides=2)  # 8 - 2·3 = 2
    2
    >>> regressor_kernel_size(4, 8)  # upsampled to 8, then 1×1
    1
    >>> regressor_kernel_size((8, 6), (4, 4), padding=1)
    (7, 5)

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", §III-A.
    """
    t = _pair(teacher_size, "teacher_size", 1)
    s = _pair(student_size, "student_size", 1)
    p = _pair(padding, "padding", 0)
    st = _pair(strides, "strides", 1)
    r = upsampling_factor(t, s)
    kernel = tuple(
        r_i * t_i + 2 * p_i - st_i * (s_i - 1)
        for t_i, s_i, p_i, st_i, r_i in zip(t, s, p, st, r)
    )
    if min(kernel) < 1:
        raise ValueError(
            "No teacher-to-student kernel fits: K = r·M_t + 2P − S·(M_s − 1) "
            f"gives K={kernel} < 1 for teacher_size={teacher_size!r}, "
            f"student_size={student_size!r}, padding={padding!r}, "
            f"strides={strides!r} (upsampling r={r}). Reduce `strides` or "
            f"increase `padding`."
        )
    scalar = not isinstance(teacher_size, (tuple, list)) and not isinstance(
        student_size, (tuple, list))
    return kernel[0] if scalar else kernel


@keras.saving.register_keras_serializable(package="tfkd")
class TeacherToStudent(keras.layers.Layer):
    """KTAN's teacher-to-student regressor `R`.

    Maps the teacher's feature map of spatial size `M_t` to the student's
    size `M_s` and `student_channels` channels with one convolution whose
    kernel follows the paper's `(M_t + 2P − K) / S + 1 = M_s` (see
    `regressor_kernel_size`). If `M_t < M_s` along an axis, the teacher map
    is first upsampled by `r = ceil(M_s / M_t)` (nearest neighbour by
    default), which is the scale ratio `r` of eq. 2.

    Pre-train it with `pretrain_regressor` (Algorithm 1) before distilling;
    `tfkd.distillers.AdversarialDistiller` then keeps it frozen. It belongs
    to the distiller, never to the exported student.

    Args:
        student_channels: Output channels `C_s`, a positive int.
        teacher_size: Teacher map size `M_t`: int or `(height, width)`.
        student_size: Student map size `M_s`: int or `(height, width)`.
        padding: Zero padding `P` on each side, int or pair, `>= 0`.
        strides: Convolution stride `S`, int or pair, `>= 1`.
        activation: Activation of the output, e.g. `"relu"` when the
            student's tapped map is a ReLU output. `None` (linear) by
            default, as in the paper.
        interpolation: `"nearest"` or `"bilinear"`, for the upsampling path.
        use_bias: Whether the convolution has a bias.
        kernel_initializer: Initialiser of the kernel.
        bias_initializer: Initialiser of the bias.
        kernel_regularizer: Optional regulariser of the kernel.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`).

    Input shape:
        `(batch, M_t_h, M_t_w, C_t)`.

    Output shape:
        `(batch, M_s_h, M_s_w, student_channels)`.

    Example:

    >>> import numpy as np
    >>> layer = TeacherToStudent(16, teacher_size=8, student_size=4)
    >>> layer.kernel_size, layer.upsampling
    ((5, 5), (1, 1))
    >>> tuple(layer(np.zeros((2, 8, 8, 64), "float32")).shape)
    (2, 4, 4, 16)
    >>> up = TeacherToStudent(16, teacher_size=2, student_size=4)
    >>> tuple(up(np.zeros((2, 2, 2, 64), "float32")).shape)
    (2, 4, 4, 16)

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", §III-A and Algorithm 1.
    """

    def __init__(self, student_channels, teacher_size, student_size,
                 padding=0, strides=1, activation=None,
                 interpolation="nearest", use_bias=True,
                 kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(student_channels, bool) or not isinstance(
            student_channels, numbers.Integral
        ) or student_channels < 1:
            raise ValueError(
                "`student_channels` must be a positive int (the channels of "
                "the student's feature map). Received: "
                f"student_channels={student_channels!r}."
            )
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(
                "`interpolation` must be 'nearest' or 'bilinear'. Received: "
                f"interpolation={interpolation!r}."
            )
        self.student_channels = int(student_channels)
        self.teacher_size = _pair(teacher_size, "teacher_size", 1)
        self.student_size = _pair(student_size, "student_size", 1)
        self.padding = _pair(padding, "padding", 0)
        self.strides = _pair(strides, "strides", 1)
        self.kernel_size = regressor_kernel_size(
            self.teacher_size, self.student_size, self.padding, self.strides
        )
        self.upsampling = upsampling_factor(self.teacher_size,
                                            self.student_size)
        self.activation = keras.activations.get(activation)
        self.interpolation = interpolation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "`TeacherToStudent` expects teacher feature maps of shape "
                "(batch, height, width, channels) with known channels. "
                f"Received input shape {tuple(input_shape)}."
            )
        spatial = tuple(input_shape[1:3])
        if any(a is not None and a != b
               for a, b in zip(spatial, self.teacher_size)):
            raise ValueError(
                f"The teacher feature map is {spatial[0]}x{spatial[1]} but "
                f"the layer was configured with teacher_size="
                f"{self.teacher_size}. Pass the tapped teacher layer's "
                f"spatial size as `teacher_size`."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (int(input_shape[-1]),
                                      self.student_channels),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.student_channels,),
                initializer=self.bias_initializer,
            )
        else:
            self.bias = None

    def call(self, inputs):
        x = inputs
        r_h, r_w = self.upsampling
        if (r_h, r_w) != (1, 1):
            if self.interpolation == "nearest":
                x = ops.repeat(ops.repeat(x, r_h, axis=1), r_w, axis=2)
            else:
                size = (self.teacher_size[0] * r_h,
                        self.teacher_size[1] * r_w)
                x = ops.cast(
                    ops.image.resize(x, size, interpolation="bilinear"),
                    self.compute_dtype,
                )
        p_h, p_w = self.padding
        if p_h or p_w:
            x = ops.pad(x, [[0, 0], [p_h, p_h], [p_w, p_w], [0, 0]])
        x = ops.conv(x, self.kernel, strides=self.strides, padding="valid")
        if self.bias is not None:
            x = ops.add(x, self.bias)
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self.student_size + (
            self.student_channels,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "student_channels": self.student_channels,
            "teacher_size": self.teacher_size,
            "student_size": self.student_size,
            "padding": self.padding,
            "strides": self.strides,
            "activation": keras.activations.serialize(self.activation),
            "interpolation": self.interpolation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer),
        })
        return config


class _RegressorProbe(keras.Model):
    """Frozen teacher trunk -> regressor -> temporary linear head.

    The trunk is kept out of Keras's tracking, so `fit` trains exactly the
    regressor and the head, whatever the teacher's `trainable` flag.
    """

    def __init__(self, trunk, regressor, head, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_trunk", trunk)
        self.regressor = regressor
        self.head = head

    def call(self, inputs, training=False):
        features = ops.stop_gradient(self._trunk(inputs, training=False))
        return self.head(self.regressor(features, training=training),
                         training=training)


def _probe_cross_entropy(y_true, y_pred):
    # Imported here: `tfkd.methods.kd` builds on `tfkd.terms.base`, which
    # imports this package's layers.
    from tfkd.methods.kd import cross_entropy

    return cross_entropy(y_true, y_pred)


def _weigh_unlabelled(dataset):
    """`(x, y)` elements with integer class ids -> `(x, max(y, 0), weight)`,
    weight 0 for an unlabelled example (`y = -1`), else 1."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2) or not (
        spec[1].dtype.is_integer and spec[1].shape.rank in (0, 1)
    ):
        return dataset
    return dataset.map(lambda x, y: (x, tf.maximum(y, 0),
                                     tf.cast(y >= 0, tf.float32)))


def pretrain_regressor(teacher, teacher_layer, regressor, data, num_classes,
                       *, epochs=1, optimizer="adam", batch_size=32,
                       steps_per_epoch=None, verbose=0):
    """Pre-trains a teacher-to-student regressor (KTAN Algorithm 1).

    Builds `head(R(G(x)))`, where `G` is the teacher up to and including
    `teacher_layer` (frozen, run with `training=False`), `R` the regressor
    and `head` a temporary linear classifier (global average pooling + a
    `Dense(num_classes)` producing logits), and trains `R` and the head with
    the cross entropy against the labels using plain `fit`. The head is
    discarded afterwards: only the regressor's weights change (the
    teacher's are untouched). The regressor's `trainable` flag is restored
    on return, so a regressor frozen inside a distiller stays frozen.

    Unlabelled examples (label `-1`, as in `tfkd.data.unlabel`'s few-label
    splits) get sample weight 0: the cross entropy and the accuracy see the
    labelled examples only.

    Args:
        teacher: The trained functional teacher (`keras.Model`).
        teacher_layer: Name of the tapped teacher layer (its last conv map).
        regressor: The `TeacherToStudent` layer (or any layer mapping the
            teacher map to the student's map shape).
        data: A `tf.data.Dataset` of `(images, labels)` batches or an
            `(images, labels)` tuple of arrays.
        num_classes: Number of classes of the temporary head.
        epochs: Training epochs, the paper's `k` steps in epochs.
        optimizer: Optimizer (name or instance) for the regressor and head.
        batch_size: Batch size when `data` is a tuple of arrays.
        steps_per_epoch: Optional cap on the steps per epoch.
        verbose: Verbosity of `fit`.

    Returns:
        The `keras.callbacks.History` of the fit (`loss`, `accuracy`).

    Example:

    >>> import numpy as np
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> regressor = TeacherToStudent(4, teacher_size=8, student_size=8)
    >>> x, y = testing.random_images(32)
    >>> history = pretrain_regressor(teacher, "conv2", regressor, (x, y),
    ...                              num_classes=10, epochs=1)
    >>> sorted(history.history)
    ['accuracy', 'loss']

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", Algorithm 1.
    """
    if not isinstance(teacher, keras.Model):
        raise TypeError(
            f"`teacher` must be a `keras.Model`. Received: teacher="
            f"{teacher!r} of type {type(teacher).__name__}."
        )
    if not isinstance(regressor, keras.layers.Layer):
        raise TypeError(
            "`regressor` must be a Keras layer (e.g. `TeacherToStudent`). "
            f"Received: regressor={regressor!r} of type "
            f"{type(regressor).__name__}."
        )
    if isinstance(num_classes, bool) or not isinstance(
        num_classes, numbers.Integral
    ) or num_classes < 2:
        raise ValueError(
            "`num_classes` must be an int >= 2. Received: "
            f"num_classes={num_classes!r}."
        )
    names = [layer.name for layer in teacher.layers]
    if teacher_layer not in names:
        raise ValueError(
            f"`teacher_layer`={teacher_layer!r} is not a layer of the "
            f"teacher {teacher.name!r}. Existing layers: {names}."
        )
    trunk = keras.Model(teacher.inputs,
                        teacher.get_layer(teacher_layer).output,
                        name=f"{teacher.name}_trunk")
    head = keras.Sequential([
        keras.layers.GlobalAveragePooling2D(name="probe_pool"),
        keras.layers.Dense(num_classes, name="probe_logits"),
    ], name="probe_head")
    probe = _RegressorProbe(trunk, regressor, head, name="regressor_probe")
    was_trainable = regressor.trainable
    regressor.trainable = True
    try:
        probe.compile(optimizer=optimizer, loss=_probe_cross_entropy,
                      metrics=["accuracy"])
        if isinstance(data, (tuple, list)):
            if len(data) != 2:
                raise ValueError(
                    "`data` must be a `tf.data.Dataset` of (images, labels) "
                    "or an (images, labels) tuple. Received a sequence of "
                    f"length {len(data)}."
                )
            x, y = data
            labels = ops.convert_to_numpy(y)
            weights = None
            if labels.ndim == 1 and (labels < 0).any():
                weights = (labels >= 0).astype("float32")
                labels = labels.clip(0, None)
            return probe.fit(x, labels, sample_weight=weights,
                             batch_size=batch_size, epochs=epochs,
                             steps_per_epoch=steps_per_epoch,
                             verbose=verbose)
        # A dataset shuffles itself; `shuffle=False` only silences Keras.
        return probe.fit(_weigh_unlabelled(data), epochs=epochs,
                         shuffle=False, steps_per_epoch=steps_per_epoch,
                         verbose=verbose)
    finally:
        regressor.trainable = was_trainable
