"""Probabilistic knowledge transfer (PKT): match in-batch similarity
distributions."""

import tensorflow as tf

from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_batch
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import safe_l2_norm
from tfkd.losses._utils import to_float32


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
