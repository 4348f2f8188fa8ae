"""Probabilistic knowledge transfer (PKT): match in-batch similarity
distributions.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_batch
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import safe_l2_norm
from tfkd.losses._utils import to_float32
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


def _conditional_probabilities(f, eps):
    """Float32 `(b, ...)` -> `P`, `(b, b)`: row `i` is the distribution of
    the cosine kernel `K(i, j) = (cos(f_i, f_j) + 1) / 2` over `j`.

    As the authors' code: each example is divided by `‖f‖ + eps` (an
    all-zero example stays 0, here with a zero gradient), and the row sums
    include `j = i`. Every row sum is >= b / 2 > 0.
    """
    f = flatten_per_example(f)
    norm = safe_l2_norm(f, axis=1)[:, None]
    unit = tf.where(norm > 0.0, f / (norm + eps), tf.zeros_like(f))
    kernel = (tf.matmul(unit, unit, transpose_b=True) + 1.0) / 2.0
    return kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)


def probabilistic_transfer_loss(teacher_features, student_features, *,
                                eps=1e-7):
    """Probabilistic knowledge-transfer loss (PKT, batch-level).

    Models each network's feature space by the conditional probabilities
    of the examples of the batch under a cosine-similarity kernel,

    `K(a, b) = (cos(a, b) + 1) / 2`, `P[i, j] = K(f_i, f_j) / Σ_k K(f_i, f_k)`,

    and makes the student's distribution match the teacher's:

    `L = mean_{i,j} P_T[i, j] · log((P_T[i, j] + eps) / (P_S[i, j] + eps))`.

    Follows the authors' code (which RepDistiller and mdistiller reuse)
    where it differs from the paper: the paper excludes `j = i` from the
    distributions and sums the divergence over the pairs, the code keeps
    `j = i` in every row and averages over all `b²` entries (the code's
    weight, 30000 on CIFAR-100, is tuned for this mean). Features are
    flattened per example; teacher and student sizes may differ.

    Args:
        teacher_features: Tensor of shape `(b, ...)`.
        student_features: Tensor of shape `(b, ...)`, same batch size.
        eps: Small constant `> 0` added to the norms and inside the log, as
            in the authors' code (1e-7).

    Returns:
        Scalar float32 tensor.

    Example:

    >>> t = [[1.0, 0.0], [0.0, 1.0]]
    >>> float(probabilistic_transfer_loss(t, t))
    0.0
    >>> s = [[1.0, 0.0], [1.0, 0.0]]
    >>> round(float(probabilistic_transfer_loss(t, s)), 4)
    0.0283

    Reference:
        Passalis & Tefas, "Learning Deep Representations with Probabilistic
        Knowledge Transfer", ECCV 2018, eqs. 6–10. Code:
        https://github.com/passalis/probabilistic_kt (`nn/pkt.py`) and
        https://github.com/HobbitLong/RepDistiller (`distiller_zoo/PKT.py`).
    """
    eps = check_positive(eps, "eps")
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", min_rank=2, layout="(batch, ...)")
    check_rank(s, "student_features", min_rank=2, layout="(batch, ...)")
    check_same_batch(t, s, "teacher_features", "student_features")
    p_t = _conditional_probabilities(t, eps)
    p_s = _conditional_probabilities(s, eps)
    return tf.reduce_mean(p_t * tf.math.log((p_t + eps) / (p_s + eps)))


@keras.saving.register_keras_serializable(package="tfkd")
class ProbabilisticTransferDistillation(DistillationTerm):
    """Probabilistic knowledge transfer: match the batch's conditional
    similarity distributions.

    For each tapped pair (`tfkd.losses.probabilistic_transfer_loss`), each
    network's embeddings define, under the cosine kernel `K(a, b) =
    (cos(a, b) + 1) / 2`, the conditional probabilities `P[i, j] = K(f_i,
    f_j) / Σ_k K(f_i, f_k)` over the examples of the batch, and

    `L = mean_{i,j} P_T[i, j] · log((P_T[i, j] + eps) / (P_S[i, j] +
    eps))`, `eps = 1e-7`,

    as the authors' code (which keeps `j = i` and averages over all `b²`
    entries; the paper excludes `j = i` and sums). Features are flattened
    per example (tap the pooled embedding, as the authors do); teacher and
    student sizes may differ, no adapter. A batch-level term: sample
    weights do not apply, and under `tf.distribute` each replica compares
    its own examples.

    The method `pkt` weighs the term with 30000, RepDistiller's and
    mdistiller's CIFAR-100 weight for this mean: `tfkd.Distiller(teacher,
    student, [term], distillation_loss_weights=[30000.0],
    student_loss_weight=0.5)`, i.e. `CE + 30000 · L_PKT` divided by 2.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"pkt"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [ProbabilisticTransferDistillation("pool", "pool")],
    ...     distillation_loss_weights=[30000.0])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'pkt_loss', 'student_loss', 'total_loss']

    Reference:
        Passalis & Tefas, "Learning Deep Representations with
        Probabilistic Knowledge Transfer", ECCV 2018, eqs. 6-10; code:
        github.com/passalis/probabilistic_kt (`nn/pkt.py`).
    """

    method = Method(
        name="pkt",
        embedding=True,
        description="probabilistic knowledge transfer: match the batch's "
                    "cosine-similarity distributions",
        paper="Passalis & Tefas, ECCV 2018",
        weight=30000.0,
        student_loss_weight=0.5,
        soft_targets=True,
        search_space={
            "weight": {"type": "float", "min_value": 3000.0,
                       "max_value": 300000.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    batch_level = True

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "pkt")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)

    def pair_loss(self, teacher_feature, student_feature):
        return probabilistic_transfer_loss(teacher_feature, student_feature)
