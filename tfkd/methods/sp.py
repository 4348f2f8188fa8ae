"""Similarity-preserving (SP) loss: match the batch's pairwise similarities.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_batch
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import safe_l2_normalize
from tfkd.losses._utils import to_float32
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


def _similarity_matrix(f):
    """Float32 `(b, ...)` -> row-normalised `G = Q·Qᵀ`, `(b, b)`.

    Each row of `Q·Qᵀ` is divided by its L2 norm; an all-zero example gives
    a zero row (and zero column entries), as in the authors' code, but with
    a zero gradient through its row norm (see `safe_l2_normalize`).
    """
    q = flatten_per_example(f)
    gram = tf.matmul(q, q, transpose_b=True)
    return safe_l2_normalize(gram, axis=1)


def similarity_preserving_loss(teacher_features, student_features):
    """Similarity-preserving knowledge-distillation loss (batch-level).

    Each example's activations are flattened to a row of `Q ∈ R^{b×d}`
    (`b` the batch size); `G = Q·Qᵀ` holds the pairwise similarities of
    the examples of the batch, each row L2-normalised. The loss is

    `L = ‖G_T − G_S‖²_F / b²`.

    The `b × b` matrices do not depend on the feature sizes, so teacher and
    student features may have different shapes (e.g. `(b, 8, 8, 64)` and
    `(b, 4, 4, 16)`) and no adapter is needed.

    The paper's `γ` (3000 on CIFAR-10, as in the authors' released
    configuration) is the weight of the knowledge term, not an argument of
    this function; the paper sums the loss over the tapped layer pairs,
    which is also the term's business.

    An all-zero example (e.g. a dead ReLU map) gives a zero row of `G`, as
    in the authors' code, whose `F.normalize` then back-propagates a
    gradient of order 1e12; here it gets a zero gradient through the row
    norm instead.

    Args:
        teacher_features: Tensor of shape `(b, ...)`.
        student_features: Tensor of shape `(b, ...)`, same batch size `b`.

    Returns:
        Scalar float32 tensor.

    Example:

    >>> t = [[1.0, 0.0], [0.0, 1.0]]
    >>> s = [[1.0, 0.0], [1.0, 0.0]]
    >>> round(float(similarity_preserving_loss(t, s)), 4)
    0.2929

    Reference:
        Tung & Mori, "Similarity-Preserving Knowledge Distillation",
        ICCV 2019, eqs. 1–4. Code (verified by the paper's author):
        https://github.com/HobbitLong/RepDistiller
        (`distiller_zoo/SP.py`).
    """
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", min_rank=2, layout="(batch, ...)")
    check_rank(s, "student_features", min_rank=2, layout="(batch, ...)")
    check_same_batch(t, s, "teacher_features", "student_features")
    diff = _similarity_matrix(t) - _similarity_matrix(s)
    b = tf.cast(tf.shape(t)[0], tf.float32)
    return tf.reduce_sum(tf.square(diff)) / (b * b)


@keras.saving.register_keras_serializable(package="tfkd")
class SimilarityPreservingDistillation(DistillationTerm):
    """Similarity preserving: examples similar for the teacher stay similar.

    For each tapped pair, the `b × b` matrix of the batch's pairwise
    similarities (`G = Q·Qᵀ`, rows L2-normalised, `Q` the flattened
    activations) of the student is matched to the teacher's:
    `‖G_T − G_S‖²_F / b²` (`tfkd.losses.similarity_preserving_loss`),
    summed over pairs. A batch-level term: its value depends on the batch,
    sample weights do not apply, and under `tf.distribute` each replica
    compares its own examples. Feature shapes may differ (no adapter).

    The paper's `γ = 3000` is the term's weight: the method `sp` builds
    `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[3000.0], student_loss_weight=0.5)`, i.e.
    the paper's `CE + γ · L_SP` divided by 2.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"sp"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [SimilarityPreservingDistillation("conv2", "conv2")],
    ...     distillation_loss_weights=[3000.0])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'sp_loss', 'student_loss', 'total_loss']

    Reference:
        Tung & Mori, "Similarity-Preserving Knowledge Distillation",
        ICCV 2019; code: github.com/HobbitLong/RepDistiller
        (`distiller_zoo/SP.py`).
    """

    method = Method(
        name="sp",
        description="similarity preserving: match the batch's pairwise "
                    "similarity matrices",
        paper="Tung & Mori, ICCV 2019",
        weight=3000.0,
        soft_targets=True,
        search_space={
            "weight": {"type": "float", "min_value": 300.0,
                       "max_value": 30000.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    batch_level = True

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "sp")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)

    def pair_loss(self, teacher_feature, student_feature):
        return similarity_preserving_loss(teacher_feature, student_feature)
