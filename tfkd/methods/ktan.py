"""KTAN losses: feature-map MSE (eq. 2) and the adversarial pair.

Pure functions returning per-example values of shape `(batch,)`; the
distiller reduces them with sample weights. The adversarial losses take the
discriminator's *logits* (its output before the sigmoid) so that
`−log D(·)` is computed as a numerically stable softplus.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import numbers

import keras
import tensorflow as tf

from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import to_float32
from tfkd.layers.teacher_to_student import TeacherToStudent
from tfkd.models.discriminator import DISCRIMINATOR_LOGIT_LAYER
from tfkd.models.discriminator import build_discriminator
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


def _flat_logits(logits, name):
    logits = to_float32(logits, name)
    if logits.shape.rank is not None and logits.shape.rank > 1:
        logits = tf.reshape(logits, [tf.shape(logits)[0], -1])
        if logits.shape[-1] is not None and logits.shape[-1] != 1:
            raise ValueError(
                f"`{name}` must hold one discriminator logit per example, "
                f"shape `(batch,)` or `(batch, 1)`. Received shape "
                f"{tuple(logits.shape)}."
            )
        logits = logits[:, 0]
    return logits


def ktan_mse_loss(teacher_features, student_features):
    """Feature-map mean squared error of KTAN (eq. 2), per example.

    `L_MSE = 1 / (r²·c·w·h) · Σ (m_t − m_s)²`, the mean over all elements of
    one example's feature map. `teacher_features` is the teacher's map after
    the teacher-to-student regressor, `R(m_t)`, which already has the
    student's size (the scale ratio `r` of the paper is folded into the
    regressor), so the normaliser is the element count of `m_s`.

    Args:
        teacher_features: Regressed teacher map `R(m_t)`, shape
            `(batch, H, W, C)`: the target.
        student_features: Student map `m_s` of the same shape.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> import numpy as np
    >>> t = np.ones((2, 4, 4, 3), "float32")
    >>> s = np.zeros((2, 4, 4, 3), "float32")
    >>> ktan_mse_loss(t, s).numpy().tolist()
    [1.0, 1.0]

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", eq. 2.
    """
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_same_shape(t, s, "teacher_features", "student_features")
    squared = tf.square(t - s)
    if squared.shape.rank is not None and squared.shape.rank > 1:
        return tf.reduce_mean(squared, axis=list(range(1, squared.shape.rank)))
    return squared


def adversarial_loss(fake_logits):
    """The student's adversarial loss `−log D(m_s)`, per example.

    The non-saturating generator loss of Algorithm 2 (`L_D = Σ −log D(m_s)`
    in the paper's notation): small when the discriminator takes the
    student's map for the teacher's. Computed from the discriminator's
    logit `l` as `softplus(−l) = −log sigmoid(l)`.

    Args:
        fake_logits: Discriminator logits on the student maps, shape
            `(batch,)` or `(batch, 1)`.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> round(float(adversarial_loss([0.0])[0]), 4)  # -log(0.5)
    0.6931

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", Algorithm 2.
    """
    return tf.nn.softplus(-_flat_logits(fake_logits, "fake_logits"))


def discriminator_loss(real_logits, fake_logits):
    """Binary cross entropy of the discriminator, per example.

    Real maps (`R(m_t)`, label 1) against fake maps (`m_s`, label 0):
    `−log D(R(m_t)) − log(1 − D(m_s))`, from logits as
    `softplus(−l_real) + softplus(l_fake)`.

    Args:
        real_logits: Discriminator logits on the regressed teacher maps,
            shape `(batch,)` or `(batch, 1)`.
        fake_logits: Discriminator logits on the student maps, same shape.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> round(float(discriminator_loss([0.0], [0.0])[0]), 4)  # 2·log(2)
    1.3863
    """
    real = _flat_logits(real_logits, "real_logits")
    fake = _flat_logits(fake_logits, "fake_logits")
    check_same_shape(real, fake, "real_logits", "fake_logits")
    return tf.nn.softplus(-real) + tf.nn.softplus(fake)


def discriminator_accuracy(real_logits, fake_logits):
    """Fraction of the two maps of each example the discriminator gets right.

    A real map counts as right when `D > 0.5` (logit `> 0`), a fake map when
    `D <= 0.5`; the per-example value is 0, 0.5 or 1.

    Args:
        real_logits: Discriminator logits on the regressed teacher maps.
        fake_logits: Discriminator logits on the student maps.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> discriminator_accuracy([2.0, -1.0], [-3.0, -1.0]).numpy().tolist()
    [1.0, 0.5]
    """
    real = _flat_logits(real_logits, "real_logits")
    fake = _flat_logits(fake_logits, "fake_logits")
    check_same_shape(real, fake, "real_logits", "fake_logits")
    right_real = tf.cast(real > 0.0, tf.float32)
    right_fake = tf.cast(fake <= 0.0, tf.float32)
    return 0.5 * (right_real + right_fake)


def _single_layer_name(value, name):
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise ValueError(
            f"`{name}` must be the name of one layer (KTAN transfers a single "
            f"feature map, the network's last conv map). Received: "
            f"{name}={value!r}."
        )
    return value


def _is_non_negative_output(layer):
    """True when the layer's output is a ReLU (so the regressor's is too)."""
    relus = (keras.activations.relu, keras.activations.relu6)
    if isinstance(layer, keras.layers.ReLU):
        return (not layer.negative_slope) and not layer.threshold
    return getattr(layer, "activation", None) in relus


def _check_maps(term, teacher_shapes, student_shapes):
    for role, shape in (("teacher", teacher_shapes[0]),
                        ("student", student_shapes[0])):
        if shape is None or len(shape) != 4 or any(
            d is None for d in shape[1:]
        ):
            raise ValueError(
                f"{type(term).__name__}: the tapped {role} layer must output "
                "a feature map of static shape (batch, H, W, C). Received "
                f"shape {shape}. Tap the last conv block's output and build "
                f"the {role} with a fixed input size."
            )
    return tuple(teacher_shapes[0][1:]), tuple(student_shapes[0][1:])


class _KTANTerm(DistillationTerm):
    def __init__(self, teacher_layer_name=None, student_layer_name=None,
                 **kwargs):
        super().__init__(
            _single_layer_name(teacher_layer_name, "teacher_layer_name"),
            _single_layer_name(student_layer_name, "student_layer_name"),
            **kwargs)


@keras.saving.register_keras_serializable(package="tfkd")
class RegressedFeatureDistillation(_KTANTerm):
    """KTAN's pixel-to-pixel term: MSE to the teacher's regressed map.

    The teacher's last conv map `m_t` goes through a frozen
    `TeacherToStudent` regressor `R` (pre-trained with Algorithm 1, see
    `tfkd.layers.pretrain_regressor`) to the shape of the student's map
    `m_s`; the term is eq. 2's `L_MSE(R(m_t), m_s)` (the mean over the map's
    elements), per example. When `regressor` is `None` one is created from
    the map shapes, with a ReLU output when the student's tapped layer ends
    in a ReLU (so `R(m_t)` and `m_s` share a range). The regressor belongs
    to the term and stays frozen during distillation.

    Args:
        teacher_layer_name: The teacher's last conv (feature map) layer.
        student_layer_name: The student's last conv (feature map) layer.
        regressor: Optional `TeacherToStudent` (or any layer mapping the
            teacher map to the student map's shape), ideally pre-trained.
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"mse"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> term = RegressedFeatureDistillation("conv2", "conv2")
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=16),
    ...     testing.tiny_conv_model("student", width=4), [term])
    >>> term.regressor.trainable
    False

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", eq. 2 and Algorithm 1.
    """

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 regressor=None, guided_channels=None, **kwargs):
        kwargs.setdefault("name", "mse")
        if regressor is not None and not isinstance(regressor,
                                                    keras.layers.Layer):
            raise TypeError(
                "`regressor` must be a Keras layer such as "
                "`tfkd.layers.TeacherToStudent`, or None to create one. "
                f"Received: regressor={regressor!r} of type "
                f"{type(regressor).__name__}."
            )
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.regressor = regressor

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        teacher_map, student_map = _check_maps(self, teacher_shapes,
                                               student_shapes)
        regressor = self.regressor
        if regressor is None:
            activation = "relu" if _is_non_negative_output(
                student.get_layer(self.student_layer_name)) else None
            regressor = TeacherToStudent(
                student_map[-1], teacher_size=teacher_map[:2],
                student_size=student_map[:2], activation=activation,
                name="teacher_to_student",
            )
        regressor.trainable = False
        mapped = regressor(keras.Input(teacher_map, name="teacher_map"))
        if tuple(mapped.shape[1:]) != student_map:
            raise ValueError(
                f"The regressor maps the teacher's {teacher_map} map to "
                f"{tuple(mapped.shape[1:])}, but the student's map is "
                f"{student_map}. Build it as TeacherToStudent("
                f"{student_map[-1]}, teacher_size={teacher_map[:2]}, "
                f"student_size={student_map[:2]}) or pass regressor=None."
            )
        self.regressor = regressor
        self.teacher_map_shape = teacher_map
        self.student_map_shape = student_map

    def regress(self, teacher_map):
        """`R(m_t)`: the teacher's map through the frozen regressor."""
        return tf.stop_gradient(self.regressor(teacher_map, training=False))

    def pair_loss(self, teacher_feature, student_feature):
        return ktan_mse_loss(self.regress(teacher_feature),
                                         student_feature)

    def get_config(self):
        config = super().get_config()
        config["regressor"] = keras.saving.serialize_keras_object(
            self.regressor)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("regressor"), dict):
            config["regressor"] = keras.saving.deserialize_keras_object(
                config["regressor"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfkd")
class AdversarialDistillation(_KTANTerm):
    """KTAN's region-to-region term: fool a discriminator.

    The term owns a discriminator `D` (two conv layers, pooling, one
    sigmoid unit: `tfkd.models.build_discriminator`) that tells the
    teacher's regressed map `R(m_t)` (real) from the student's map `m_s`
    (fake). Its value for the student is `−log D(m_s)` per example;
    `discriminator_terms(real, fake)` gives the discriminator's own binary
    cross entropy and accuracy. Training the discriminator needs its own
    optimizer step, which `tfkd.AdversarialDistiller` (the KTAN preset)
    runs before each student step.

    Args:
        teacher_layer_name: The teacher's last conv (feature map) layer.
        student_layer_name: The student's last conv (feature map) layer.
        discriminator_width: Filters of the discriminator's conv layers.
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"adv"`).

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", Algorithm 2.
    """

    _search = {
        "beta": {"type": "float", "min_value": 0.25, "max_value": 1.0},
    }
    method = (
        Method(
            name="ktan",
            description="KTAN: teacher-to-student regressor + discriminator",
            paper="Liu et al., KTAN",
            preset="tfkd.distillers.adversarial:AdversarialDistiller",
            two_optimizers=True,
            # alpha = 0.6 (adversarial), beta = 0.5 (MSE).
            search_space={
                "alpha": {"type": "float", "min_value": 0.3,
                          "max_value": 0.9},
                **_search,
            },
        ),
        Method(
            name="dln",
            description="DLN: KTAN's regressed-map MSE without the adversary",
            paper="Liu et al., KTAN (DLN baseline)",
            preset="tfkd.distillers.adversarial:AdversarialDistiller",
            two_optimizers=True,
            build_defaults={"alpha": 0.0},
            search_space=dict(_search),
        ),
    )

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 discriminator_width=64, guided_channels=None, **kwargs):
        kwargs.setdefault("name", "adv")
        if isinstance(discriminator_width, bool) or not isinstance(
            discriminator_width, numbers.Integral
        ) or discriminator_width < 1:
            raise ValueError(
                "`discriminator_width` must be a positive int. Received: "
                f"discriminator_width={discriminator_width!r}."
            )
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.discriminator_width = int(discriminator_width)
        self.discriminator = None

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        _, student_map = _check_maps(self, teacher_shapes, student_shapes)
        self.discriminator = build_discriminator(
            student_map, width=self.discriminator_width,
            name="discriminator")
        object.__setattr__(self, "_discriminator_logits", keras.Model(
            self.discriminator.inputs,
            self.discriminator.get_layer(DISCRIMINATOR_LOGIT_LAYER).output,
            name="discriminator_logits",
        ))

    def _logits(self, feature_map):
        dtype = self.discriminator.compute_dtype
        return self._discriminator_logits(tf.cast(feature_map, dtype),
                                          training=True)

    def pair_loss(self, teacher_feature, student_feature):
        return adversarial_loss(self._logits(student_feature))

    def discriminator_terms(self, real, fake):
        """Per-example discriminator loss and accuracy on real and fake
        maps, in one forward pass."""
        dtype = self.discriminator.compute_dtype
        both = tf.concat([tf.cast(real, dtype), tf.cast(fake, dtype)], 0)
        logits = self._discriminator_logits(both, training=True)
        real_logits, fake_logits = tf.split(logits, 2, axis=0)
        return (discriminator_loss(real_logits, fake_logits),
                discriminator_accuracy(real_logits, fake_logits))

    def get_config(self):
        config = super().get_config()
        config["discriminator_width"] = self.discriminator_width
        return config
