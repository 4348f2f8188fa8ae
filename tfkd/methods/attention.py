"""Attention transfer (Zagoruyko & Komodakis): match spatial attention maps.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import safe_l2_norm
from tfkd.losses._utils import to_float32
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


ATTENTION_MODES = ("code", "paper")

_FEATURES_LAYOUT = "(batch, H, W, C)"


def _attention_map(f, p):
    """Float32 `(batch, H, W, C)` -> L2-normalised `(batch, H · W)`."""
    if p == 2.0:
        powered = tf.square(f)
    else:
        # `|f|^p` with a zero (not NaN) gradient at `f = 0` for every `p`.
        af = tf.abs(f)
        nonzero = af > 0.0
        safe = tf.where(nonzero, af, tf.ones_like(af))
        powered = tf.where(nonzero, tf.pow(safe, p), tf.zeros_like(af))
    q = tf.reduce_sum(powered, axis=-1)
    q = tf.reshape(q, [tf.shape(q)[0], -1])
    # Floor the norm at 1e-12 as the authors' `F.normalize` does, so an
    # all-zero map gives q = 0 rather than NaN.
    return tf.math.l2_normalize(q, axis=1, epsilon=1e-24)


def attention_map(features, p=2):
    """Spatial attention map `q`: `Σ_c |F_c|^p`, flattened, L2-normalised.

    Args:
        features: Tensor of shape `(batch, H, W, C)`.
        p: Exponent `p > 0` (the paper uses 2).

    Returns:
        Tensor of shape `(batch, H · W)`, float32, each row of unit L2 norm
        (or all zero for an all-zero feature map). Positions are in
        row-major `(H, W)` order.

    Example:

    >>> f = tf.ones((1, 2, 2, 3))
    >>> [float(v) for v in attention_map(f)[0]]
    [0.5, 0.5, 0.5, 0.5]

    Reference:
        Zagoruyko & Komodakis, "Paying More Attention to Attention",
        ICLR 2017, sec. 3.1.
    """
    p = check_positive(p, "p")
    f = to_float32(features, "features")
    check_rank(f, "features", rank=4, layout=_FEATURES_LAYOUT)
    return _attention_map(f, p)


def _check_attention_shapes(teacher_shape, student_shape):
    """Batch and spatial sizes must match; channel counts may differ."""
    t, s = tf.TensorShape(teacher_shape), tf.TensorShape(student_shape)
    if not t[:3].is_compatible_with(s[:3]):
        raise ValueError(
            "`teacher_features` and `student_features` must have the same "
            "batch size and spatial size (H, W); channel counts may differ. "
            f"Received: teacher_features.shape={tuple(t)}, "
            f"student_features.shape={tuple(s)}. Resize or pool one side, "
            "or pass adapter=True to the distiller."
        )


def attention_transfer_loss(teacher_features, student_features, p=2,
                            mode="code"):
    """Attention-transfer loss between two feature maps, per example.

    Both maps are reduced to attention maps `q` (see `attention_map`), so
    the channel counts may differ but the spatial sizes `H, W` must match.
    The paper writes the loss as `‖q_S − q_T‖₂` (`mode="paper"`), but its
    authors' code, whose numbers the paper's tables quote, uses the mean
    over positions of `(q_S − q_T)²` (`mode="code"`, the default). The two
    differ in scale and curvature: with the code form use the authors'
    weight `beta = 1000 / 2` per tapped pair.

    Args:
        teacher_features: Tensor of shape `(batch, H, W, C_T)`.
        student_features: Tensor of shape `(batch, H, W, C_S)`.
        p: Exponent `p > 0` of the attention map (default 2).
        mode: `"code"` (mean squared difference) or `"paper"` (L2 norm of
            the difference, with a zero gradient at a perfect match).

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = tf.ones((1, 2, 2, 8))
    >>> s = tf.constant([[[[1.0], [1.0]], [[1.0], [0.0]]]])
    >>> round(float(attention_transfer_loss(t, s)[0]), 4)
    0.067
    >>> round(float(attention_transfer_loss(t, s, mode="paper")[0]), 4)
    0.5176

    Reference:
        Zagoruyko & Komodakis, "Paying More Attention to Attention",
        ICLR 2017, eq. 2; code: github.com/szagoruyko/attention-transfer.
    """
    p = check_positive(p, "p")
    mode = check_option(mode, "mode", ATTENTION_MODES)
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", rank=4, layout=_FEATURES_LAYOUT)
    check_rank(s, "student_features", rank=4, layout=_FEATURES_LAYOUT)
    _check_attention_shapes(t.shape, s.shape)
    return _attention_transfer_loss(t, s, p, mode)


def _attention_transfer_loss(t, s, p, mode):
    """`attention_transfer_loss` of float32 maps whose arguments are
    checked."""
    diff = _attention_map(s, p) - _attention_map(t, p)
    if mode == "code":
        return tf.reduce_mean(tf.square(diff), axis=1)
    return safe_l2_norm(diff, axis=1)


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionTransferLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `attention_transfer_loss`.

    `y_true` are the teacher's feature maps and `y_pred` the student's.

    Args:
        p: Exponent `p > 0` of the attention map.
        mode: `"code"` (default) or `"paper"`; see
            `attention_transfer_loss`.
        reduction: Keras reduction, `"sum_over_batch_size"` by default.
        name: Name of the loss.

    Example:

    >>> loss = AttentionTransferLoss()
    >>> f = tf.ones((2, 3, 3, 4))
    >>> float(loss(f, f))
    0.0
    """

    def __init__(self, p=2, mode="code", reduction="sum_over_batch_size",
                 name="attention_transfer_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.p = check_positive(p, "p")
        self.mode = check_option(mode, "mode", ATTENTION_MODES)

    def call(self, y_true, y_pred):
        return attention_transfer_loss(y_true, y_pred, p=self.p,
                                       mode=self.mode)

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "mode": self.mode})
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionDistillation(DistillationTerm):
    """Attention transfer: match the spatial attention maps of tapped layers.

    Each tapped pair contributes `attention_transfer_loss(t, s, p, mode)`:
    the attention map `Σ_c |F_c|^p`, flattened and L2-normalised, of the
    student against the teacher's; pairs are summed. Channel counts may
    differ; spatial sizes must match (`adapter=True` resizes the student's
    map bilinearly). With the default `mode="code"` (the authors' code: the
    mean over positions of `(q_S − q_T)²`) the authors weight each pair by
    `1000 / 2`: give the term that weight (`distillation_loss_weights`), as
    `tfkd.AttentionDistiller` does with its `beta`.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        p: Exponent `p > 0` of the attention map.
        mode: `"code"` (default) or `"paper"` (`‖q_S − q_T‖₂`).
        adapter: Resize a student map whose spatial size differs.
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"attention"`).

    Example:

    >>> import tensorflow as tf
    >>> loss = AttentionDistillation()
    >>> f = tf.ones((2, 3, 3, 4))
    >>> float(loss.compute_loss(f, f[..., :2]))
    0.0

    Reference:
        Zagoruyko & Komodakis, "Paying More Attention to Attention:
        Improving the Performance of Convolutional Neural Networks via
        Attention Transfer", ICLR 2017, eq. 2; code:
        github.com/szagoruyko/attention-transfer.
    """

    method = Method(
        name="attention",
        description="attention transfer (AT): match spatial attention maps",
        paper="Zagoruyko & Komodakis, ICLR 2017",
        preset="tfkd.distillers.attention:AttentionDistiller",
        build_defaults={"adapter": True},
        search_space={
            # The default beta = 50 per pair, a tenth of the authors'
            # 1000 / 2 with the code form (see AttentionDistiller).
            "beta": {"type": "float", "min_value": 5.0,
                     "max_value": 5000.0, "sampling": "log"},
            "alpha": {"type": "float", "min_value": 0.3, "max_value": 1.0},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 10.0},
        },
    )
    feature_requirements = (SPATIAL,)

    def __init__(self, p=2, mode="code", teacher_layer_name=None,
                 student_layer_name=None, *, adapter=False,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "attention")
        super().__init__(teacher_layer_name, student_layer_name,
                         adapter=adapter, guided_channels=guided_channels,
                         **kwargs)
        self.p = check_positive(p, "p")
        self.mode = check_option(mode, "mode", ATTENTION_MODES)

    def pair_loss(self, teacher_feature, student_feature):
        if self.shapes_checked:  # Checked once, by `bind`.
            return _attention_transfer_loss(
                tf.cast(teacher_feature, tf.float32),
                tf.cast(student_feature, tf.float32), self.p, self.mode)
        return attention_transfer_loss(teacher_feature, student_feature,
                                       p=self.p, mode=self.mode)

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "mode": self.mode})
        return config
