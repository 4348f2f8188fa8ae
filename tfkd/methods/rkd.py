"""Relational knowledge distillation (RKD): distances and angles in a batch.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_live
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_batch
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import safe_l2_normalize
from tfkd.losses._utils import to_float32
from tfkd import hyperparameters as hp
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


# The authors' `pdist` clamps squared distances at 1e-12 before the square
# root: coincident examples are 1e-6 apart, with a zero gradient.
_MIN_SQUARED_DISTANCE = 1e-12


def _is_zero(weight):
    return isinstance(weight, float) and weight == 0.0


def _huber(x):
    """Smooth L1 (`F.smooth_l1_loss`, beta 1): `x²/2` if `|x| < 1`, else
    `|x| − 1/2`, elementwise."""
    ax = tf.abs(x)
    return tf.where(ax < 1.0, 0.5 * tf.square(x), ax - 0.5)


def _pair_distances(e):
    """`(b, d)` -> `(b, b)` Euclidean distances, 0 on the diagonal.

    From the Gram matrix, as the authors' `pdist`: `‖a‖² + ‖b‖² − 2⟨a, b⟩`
    clamped at 1e-12, then the square root. The embeddings are centred
    first (distances do not change; the cancellation error does).
    """
    e = e - tf.stop_gradient(tf.reduce_mean(e, axis=0, keepdims=True))
    sq = tf.reduce_sum(tf.square(e), axis=1)
    gram = tf.matmul(e, e, transpose_b=True)
    d = tf.sqrt(tf.maximum(sq[:, None] + sq[None, :] - 2.0 * gram,
                           _MIN_SQUARED_DISTANCE))
    eye = tf.eye(tf.shape(e)[0], dtype=tf.bool)
    return tf.where(eye, tf.zeros_like(d), d)


def _normalized_distances(e):
    """Pair distances divided by their mean over the `b(b − 1)` pairs
    `i ≠ j` (all > 0 after the clamp, as the code's `d[d > 0]`)."""
    d = _pair_distances(e)
    b = tf.cast(tf.shape(e)[0], tf.float32)
    pairs = tf.maximum(b * (b - 1.0), 1.0)  # a batch of one has no pairs
    mean = tf.reduce_sum(d) / pairs
    return d / tf.where(mean > 0.0, mean, 1.0)


def _angles(e):
    """`(b, d)` -> `(b, b, b)`: `A[i, j, k] = ⟨u_ij, u_ik⟩`, the cosine of
    the angle at `e_i` between `e_j` and `e_k`, `u_ij` the unit vector from
    `e_i` to `e_j` (0 when `e_j = e_i`, so degenerate triplets give 0 or
    1 on both sides)."""
    diff = e[None, :, :] - e[:, None, :]  # diff[i, j] = e_j − e_i
    u = safe_l2_normalize(diff, axis=-1)
    return tf.matmul(u, u, transpose_b=True)


def relational_loss(teacher_embeddings, student_embeddings, *,
                    distance_weight=25.0, angle_weight=50.0):
    """Relational knowledge-distillation loss (RKD-DA, batch-level).

    The student reproduces the *structure* of the teacher's embeddings in
    the batch, not the embeddings themselves:

    - distance-wise: `ψ_D(i, j) = ‖e_i − e_j‖ / μ`, `μ` the mean distance
      over the pairs `i ≠ j` of the batch;
    - angle-wise: `ψ_A(i, j, k) = cos ∠(e_j, e_i, e_k)`, the cosine of the
      angle at `e_i` (from unit difference vectors).

    `L = distance_weight · mean_{i,j} h(ψ_D^S − ψ_D^T) + angle_weight ·
    mean_{i,j,k} h(ψ_A^S − ψ_A^T)`, `h` the Huber (smooth L1, δ = 1) loss.

    As in the authors' code, the means run over all `b²` ordered pairs and
    all `b³` ordered triplets, the degenerate ones included (pairs `i = j`
    and triplets with a repeated index count in the denominator), while the
    paper writes sums over the distinct pairs and triplets. The defaults 25
    and 50 are the CIFAR-100 weights of RepDistiller and mdistiller, tuned
    with these means. The teacher side carries no gradient, as in the
    code. Embeddings of any shape are flattened per example; teacher and
    student sizes may differ. Two coinciding examples have a zero
    difference vector (cosine 0 with any other), as in the code, but with
    a zero gradient (see `safe_l2_normalize`).

    Memory: the angle term builds the `b × b × d` unit difference vectors
    (as the authors' code does) and a `b × b × b` tensor; for `b = 128`,
    `d = 512` that is 32 MiB and 8 MiB of float32 per side.

    Args:
        teacher_embeddings: Tensor of shape `(b, ...)`.
        student_embeddings: Tensor of shape `(b, ...)`, same batch size.
        distance_weight: Weight of the distance-wise term, `>= 0` (code: 25).
        angle_weight: Weight of the angle-wise term, `>= 0` (code: 50).

    Returns:
        Scalar float32 tensor. A batch of one example gives 0.

    Example:

    >>> t = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    >>> s = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]  # t scaled: same structure
    >>> float(relational_loss(t, s))
    0.0
    >>> s = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]  # all on one line
    >>> round(float(relational_loss(t, s, distance_weight=0.0)), 4)
    6.4815

    Reference:
        Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR 2019,
        eqs. 3–7. Code: https://github.com/lenscloth/RKD (`metric/loss.py`)
        and https://github.com/HobbitLong/RepDistiller
        (`distiller_zoo/RKD.py`), which this follows.
    """
    distance_weight = check_live(check_non_negative, distance_weight,
                                 "distance_weight")
    angle_weight = check_live(check_non_negative, angle_weight,
                              "angle_weight")
    t = to_float32(teacher_embeddings, "teacher_embeddings")
    s = to_float32(student_embeddings, "student_embeddings")
    check_rank(t, "teacher_embeddings", min_rank=2, layout="(batch, ...)")
    check_rank(s, "student_embeddings", min_rank=2, layout="(batch, ...)")
    check_same_batch(t, s, "teacher_embeddings", "student_embeddings")
    t = tf.stop_gradient(flatten_per_example(t))
    s = flatten_per_example(s)

    loss = tf.constant(0.0)
    # A weight of Python 0 skips its term (the angle term is the costly
    # one); a live weight (a tensor) always computes it.
    if not _is_zero(distance_weight):
        loss += distance_weight * tf.reduce_mean(
            _huber(_normalized_distances(s) - _normalized_distances(t)))
    if not _is_zero(angle_weight):
        loss += angle_weight * tf.reduce_mean(_huber(_angles(s) - _angles(t)))
    return loss


@keras.saving.register_keras_serializable(package="tfkd")
class RelationalDistillation(DistillationTerm):
    """Relational KD: the student keeps the distances and angles between
    the teacher's embeddings of a batch.

    For each tapped pair (`tfkd.losses.relational_loss`), with `h` the
    Huber (smooth L1) loss:

    `L = distance_weight · mean_{i,j} h(ψ_D^S(i, j) − ψ_D^T(i, j)) +
    angle_weight · mean_{i,j,k} h(ψ_A^S(i, j, k) − ψ_A^T(i, j, k))`,

    `ψ_D` the pair distances divided by their mean over the batch and
    `ψ_A` the cosine of the angle at `e_i` between `e_j` and `e_k`; means
    over all ordered pairs and triplets, as the authors' code. Features
    are flattened per example (tap the pooled embedding, the penultimate
    layer, as the paper does); teacher and student sizes may differ, no
    adapter. A batch-level term: sample weights do not apply, and under
    `tf.distribute` each replica relates its own examples. The teacher
    side carries no gradient. `distance_weight` and `angle_weight` are
    live hyperparameters. The angle term costs `O(b²·d + b³)` memory.

    The paper's objective is `CE + λ_D · L_D + λ_A · L_A`; the weights 25
    and 50 are those of RepDistiller and mdistiller on CIFAR-100, tuned for
    the means: the method `rkd` builds `tfkd.Distiller(teacher, student,
    [term], distillation_loss_weights=[1.0], student_loss_weight=0.5)`,
    i.e. that objective divided by 2.

    Args:
        distance_weight: `λ_D >= 0`, weight of the distance-wise term.
        angle_weight: `λ_A >= 0`, weight of the angle-wise term.
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"rkd"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [RelationalDistillation(25.0, 50.0, "pool", "pool")])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'rkd_loss', 'student_loss', 'total_loss']

    Reference:
        Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR
        2019, eqs. 3-7; code: github.com/lenscloth/RKD (`metric/loss.py`)
        and github.com/HobbitLong/RepDistiller (`distiller_zoo/RKD.py`).
    """

    method = Method(
        name="rkd",
        embedding=True,
        description="relational KD: distances and angles between the "
                    "batch's embeddings",
        paper="Park et al., CVPR 2019",
        weight=1.0,
        student_loss_weight=0.5,
        soft_targets=True,
        # RepDistiller's 25 / 50 for the means (ratio 1:2 as the paper's
        # lambda_D = 1, lambda_A = 2 for sums), searched around them.
        search_space={
            "distance_weight": {"type": "float", "min_value": 5.0,
                                "max_value": 125.0, "sampling": "log"},
            "angle_weight": {"type": "float", "min_value": 10.0,
                             "max_value": 250.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    batch_level = True

    distance_weight = hp.Hyperparameter(
        hp.non_negative, doc="Weight of the distance-wise term.")
    angle_weight = hp.Hyperparameter(
        hp.non_negative, doc="Weight of the angle-wise term.")

    def __init__(self, distance_weight=25.0, angle_weight=50.0,
                 teacher_layer_name=None, student_layer_name=None, *,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "rkd")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def pair_loss(self, teacher_feature, student_feature):
        return relational_loss(teacher_feature, student_feature,
                               distance_weight=self.distance_weight,
                               angle_weight=self.angle_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"distance_weight": self.distance_weight,
                       "angle_weight": self.angle_weight})
        return config
