"""Neuron selectivity transfer (NST): MMD between channel activation maps.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_rank
from tfkd.losses._utils import safe_l2_normalize
from tfkd.losses._utils import to_float32
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


_FEATURES_LAYOUT = "(batch, H, W, C)"


def _channel_maps(f):
    """Float32 `(b, H, W, C)` -> `(b, H·W, C)`, each channel's map over the
    `H·W` positions L2-normalised (an all-zero channel stays 0)."""
    shape = tf.shape(f)
    maps = tf.reshape(f, [shape[0], shape[1] * shape[2], shape[3]])
    return safe_l2_normalize(maps, axis=1)


def _mean_poly_kernel(a, b):
    """`mean_{i,j} (a_iᵀ b_j)²` per example over the channels `i` of `a`
    and `j` of `b`, both `(batch, H·W, C)`."""
    inner = tf.matmul(a, b, transpose_a=True)  # (batch, C_a, C_b)
    return tf.reduce_mean(tf.square(inner), axis=[1, 2])


def neuron_selectivity_loss(teacher_features, student_features):
    """Neuron selectivity transfer loss, per example.

    Each channel of a feature map is one "neuron"; its activation map over
    the `H·W` positions, L2-normalised, is one sample of the network's
    distribution of selectivity patterns. The loss is the squared maximum
    mean discrepancy between the teacher's `C_T` and the student's `C_S`
    samples, with the polynomial kernel `k(x, y) = (xᵀy + c)^d`, `d = 2`,
    `c = 0` (the paper's best kernel):

    `L = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j')
    − 2 · mean_{i,j} k(s_j, t_i)`.

    The channel counts may differ; the spatial sizes must be equal. The
    authors' code drops the first (teacher-only) term, a constant with no
    gradient; tfkd keeps it, as the paper's equation does, so the loss is
    the MMD² itself: 0 when the selectivity patterns match, never negative.
    An all-zero channel (a dead ReLU) stays 0 after the normalisation, with
    a zero gradient (the authors' normalisation divides by
    `sqrt(Σ x² + 1e-10)`, the same value).

    The paper's `λ` (50 in RepDistiller's and mdistiller's CIFAR runs) is
    the weight of the knowledge term, not an argument of this function.

    Args:
        teacher_features: Tensor of shape `(batch, H, W, C_T)`.
        student_features: Tensor of shape `(batch, H, W, C_S)`.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = tf.random.stateless_normal((2, 4, 4, 8), seed=(1, 2))
    >>> [round(float(v), 6) for v in neuron_selectivity_loss(t, 3.0 * t)]
    [0.0, 0.0]
    >>> t = [[[[1.0, 0.0]], [[0.0, 1.0]]]]  # (1, 2, 1, 2): two channels
    >>> s = [[[[1.0]], [[1.0]]]]            # (1, 2, 1, 1): one channel
    >>> round(float(neuron_selectivity_loss(t, s)[0]), 4)
    0.5

    Reference:
        Huang & Wang, "Like What You Like: Knowledge Distill via Neuron
        Selectivity Transfer", arXiv:1707.01219, 2017, eqs. 4–6. Code:
        https://github.com/TuSimple/neuron-selectivity-transfer
        (`symbol/transfer.py`, `mmd_poly`).
    """
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", rank=4, layout=_FEATURES_LAYOUT)
    check_rank(s, "student_features", rank=4, layout=_FEATURES_LAYOUT)
    if not t.shape[:3].is_compatible_with(s.shape[:3]):
        raise ValueError(
            "`teacher_features` and `student_features` must have the same "
            "batch size and spatial size (their channel counts may differ). "
            f"Received: teacher_features.shape={tuple(t.shape)}, "
            f"student_features.shape={tuple(s.shape)}. Pool the larger map "
            "first (e.g. `keras.layers.AveragePooling2D`), as RepDistiller's "
            "NST does."
        )
    t = _channel_maps(t)
    s = _channel_maps(s)
    mmd = (_mean_poly_kernel(t, t) + _mean_poly_kernel(s, s)
           - 2.0 * _mean_poly_kernel(s, t))
    # MMD² >= 0 with a positive-definite kernel; clip the float round-off.
    return tf.maximum(mmd, 0.0)


@keras.saving.register_keras_serializable(package="tfkd")
class NeuronSelectivityDistillation(DistillationTerm):
    """Neuron selectivity transfer: match the distributions of the
    channels' activation patterns (MMD).

    Each channel of a tapped feature map is one "neuron"; its activation
    map over the `H·W` positions, L2-normalised, is one sample of the
    network's selectivity patterns. Per example and tapped pair
    (`tfkd.losses.neuron_selectivity_loss`), the squared maximum mean
    discrepancy between the teacher's and the student's samples with the
    polynomial kernel `k(x, y) = (xᵀy)²`:

    `L = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') − 2 ·
    mean_{i,j} k(s_j, t_i)`.

    Channel counts may differ; spatial sizes must match: `adapter=True`
    resizes a student map of another size bilinearly (a
    `tfkd.layers.FeatureAdapter` owned by the term; RepDistiller
    average-pools the larger map instead), else binding raises a
    `ValueError` naming both shapes.

    The paper's objective is `CE + λ/2 · L_MMD²`; the method `nst` weighs
    the term with 50 (`λ/2`), RepDistiller's and mdistiller's CIFAR-100
    weight: `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[50.0], student_loss_weight=0.5)`, i.e. `CE
    + 50 · L_NST` divided by 2.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        adapter: Resize a student map whose spatial size differs.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"nst"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [NeuronSelectivityDistillation("conv2", "conv2")],
    ...     distillation_loss_weights=[50.0])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'nst_loss', 'student_loss', 'total_loss']

    Reference:
        Huang & Wang, "Like What You Like: Knowledge Distill via Neuron
        Selectivity Transfer", arXiv:1707.01219, 2017, eqs. 4-6; code:
        github.com/TuSimple/neuron-selectivity-transfer
        (`symbol/transfer.py`).
    """

    method = Method(
        name="nst",
        description="neuron selectivity transfer: MMD between the "
                    "channels' activation patterns",
        paper="Huang & Wang, 2017",
        build_defaults={"adapter": True},
        weight=50.0,
        student_loss_weight=0.5,
        soft_targets=True,
        search_space={
            "weight": {"type": "float", "min_value": 5.0,
                       "max_value": 500.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    feature_requirements = (SPATIAL,)

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 adapter=False, guided_channels=None, **kwargs):
        kwargs.setdefault("name", "nst")
        super().__init__(teacher_layer_name, student_layer_name,
                         adapter=adapter, guided_channels=guided_channels,
                         **kwargs)

    def pair_loss(self, teacher_feature, student_feature):
        return neuron_selectivity_loss(teacher_feature, student_feature)
