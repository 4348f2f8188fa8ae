"""Locality-preserving (LP) loss: keep the teacher's in-batch neighbours.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import to_float32
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


def _pairwise_sq_distances(f):
    """`D[i, j] = ‖f_i − f_j‖²` from the Gram matrix, `(m, d)` -> `(m, m)`.

    Uses `‖a‖² + ‖b‖² − 2⟨a, b⟩`, O(m²d) time and O(m²) memory, never an
    `m × m × d` difference tensor. Shifting by the first sample leaves the
    distances unchanged but reduces the cancellation round-off, and keeps
    them exact for identical samples (0) and small-integer inputs (so ties
    stay ties); the remaining small negatives are clipped to 0.
    """
    f = f - tf.stop_gradient(f[:1])
    sq = tf.reduce_sum(tf.square(f), axis=1)
    gram = tf.matmul(f, f, transpose_b=True)
    return tf.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)


def locality_preserving_loss(teacher_features, student_features, k=5,
                             sigma=None):
    """Locality-preserving loss over a mini-batch (batch-level).

    Features are flattened per example to `f_T ∈ R^{m×d_T}` and
    `f_S ∈ R^{m×d_S}` (`d_T` and `d_S` may differ: no regressor is needed).
    With `D_T[i, j] = ‖f_T^i − f_T^j‖²` and `N(i)` the `k` nearest `j ≠ i`
    by `D_T` within the batch,

    `L = 1/(2m) · Σ_i Σ_{j∈N(i)} a_ij ‖f_S^i − f_S^j‖²`,
    `a_ij = exp(−D_T[i, j] / σ²)`.

    - `k` is clipped to `m − 1`; a batch of one example gives 0.
    - Equal distances are resolved by index: the lower `j` is the nearer
      neighbour (`tf.math.top_k` is stable, also under XLA). Distances come
      from Gram matrices, so exact ties hold only when that arithmetic is
      exact; near-ties may be decided by float round-off.
    - `sigma=None`: `σ²` is the mean of `D_T[i, j]` over all kNN pairs of
      the batch, a constant without gradient (the paper calls σ "a
      normalized constant" without giving a value). If that mean is 0 (all
      neighbours coincide with their anchors) every `a_ij` is 1. A float
      `sigma > 0` fixes `σ²` to `sigma²`.
    - The teacher side (neighbours, weights, σ) carries no gradient.

    Cost is O(m² (d_T + d_S)) time and O(m²) memory.

    Args:
        teacher_features: Tensor of shape `(m, ...)`.
        student_features: Tensor of shape `(m, ...)`, same batch size `m`.
        k: Number of nearest neighbours, an integer >= 1 (paper: 5).
        sigma: Gaussian width `σ > 0`, or `None` for the batch estimate.

    Returns:
        Scalar float32 tensor.

    Example:

    >>> t = [[0.0], [1.0], [3.0]]
    >>> s = [[0.0], [2.0], [2.0]]
    >>> round(float(locality_preserving_loss(t, s, k=1, sigma=1.0)), 4)
    0.4905

    Reference:
        Chen, Wang, Xu, Xu, Tao, "Learning Student Networks via Feature
        Embedding", arXiv:1812.06597, eqs. 4–6.
    """
    k = check_positive_int(k, "k")
    if sigma is not None:
        sigma = check_positive(sigma, "sigma")
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", min_rank=2, layout="(batch, ...)")
    check_rank(s, "student_features", min_rank=2, layout="(batch, ...)")
    if not t.shape[:1].is_compatible_with(s.shape[:1]):
        raise ValueError(
            "`teacher_features` and `student_features` must have the same "
            "batch size (their feature sizes may differ). Received: "
            f"teacher_features.shape={tuple(t.shape)}, "
            f"student_features.shape={tuple(s.shape)}."
        )
    f_t = tf.stop_gradient(flatten_per_example(t))
    f_s = flatten_per_example(s)

    m = t.shape[0]
    if m is None:
        m = tf.shape(f_t)[0]
        k_eff = tf.minimum(k, m - 1)
    else:
        k_eff = min(k, m - 1)

    d_t = _pairwise_sq_distances(f_t)
    d_s = _pairwise_sq_distances(f_s)
    # A sample is not its own neighbour: push the diagonal to +inf before
    # taking the k smallest distances.
    self_mask = tf.eye(tf.shape(d_t)[0], dtype=tf.bool)
    masked = tf.where(self_mask, tf.fill(tf.shape(d_t), float("inf")), d_t)
    neg_knn_dist, knn_idx = tf.math.top_k(-masked, k=k_eff)
    knn_dist = -neg_knn_dist  # (m, k), all finite since k <= m - 1.

    if sigma is None:
        count = tf.maximum(tf.cast(tf.size(knn_dist), tf.float32), 1.0)
        sigma_sq = tf.reduce_sum(knn_dist) / count
    else:
        sigma_sq = tf.constant(sigma * sigma, tf.float32)
    # σ² = 0 only when every kNN distance is 0; then every weight is 1.
    safe_sigma_sq = tf.where(sigma_sq > 0.0, sigma_sq, 1.0)
    weights = tf.stop_gradient(tf.exp(-knn_dist / safe_sigma_sq))

    student_dist = tf.gather(d_s, knn_idx, batch_dims=1)  # (m, k)
    m_float = tf.cast(tf.shape(f_s)[0], tf.float32)
    return tf.reduce_sum(weights * student_dist) / (2.0 * m_float)


#: Values of `normalize`: `"l2"` (tfkd's default) or `None` (the paper's
#: eq. 6 on the raw features).
NORMALIZE_MODES = ("l2", None)


def check_normalize(value):
    """Returns `value` if it is a valid `normalize`, else raises."""
    return check_option(value, "normalize", NORMALIZE_MODES, {
        "l2": "unit-length features, tfkd's default",
        None: "the paper's raw features"})


def l2_normalize_per_example(features):
    """Flattens `(m, ...)` features per example and scales each row to unit
    L2 norm (an all-zero row stays zero)."""
    flat = tf.reshape(tf.cast(features, tf.float32),
                      [tf.shape(features)[0], -1])
    return tf.math.l2_normalize(flat, axis=1, epsilon=1e-12)


@keras.saving.register_keras_serializable(package="tfkd")
class LocalityPreservingDistillation(DistillationTerm):
    """Locality preserving: keep the teacher's in-batch neighbourhoods.

    `tfkd.losses.locality_preserving_loss` over the mini-batch: examples
    that are among each other's `k` nearest neighbours in the teacher's
    features are pulled together in the student's, with Gaussian weights. A
    batch-level term (one scalar per batch: sample weights do not apply, and
    under `tf.distribute` each replica searches its own examples). Features
    are flattened per example, so teacher and student may have any
    (different) shapes: no adapter, no new weights. Pairs are summed.

    **Normalisation (a decision beside the paper's form).** With
    `normalize="l2"` (the default) both networks' flattened features are
    scaled to unit length per example before eq. 4-6, so distances are
    `2 − 2·cos` (at most 4) and the term is at most `2k`, whatever the
    layer's size or scale. On raw features (`normalize=None`, the paper's
    eq. 6 exactly) the term is a sum over every feature dimension and grows
    with the features' squared scale: tapping a wide conv map (8×8×16 =
    1,024 values on the digits student) it starts ~100× the class loss and
    the student minimises it by mapping every image to one point (chance
    accuracy). Unit-length features cannot shrink towards each other, and
    the bounded term leaves the class loss in charge.

    Args:
        k: Neighbours per example, an int `>= 1` (paper: 5), clipped to the
            batch size minus one.
        sigma: Gaussian width `σ > 0`, or `None` for the per-batch estimate
            (with `normalize="l2"`, `σ` is in units of the normalised
            features' distances, which lie in `[0, 2]`).
        normalize: `"l2"` (default: unit-length features per example) or
            `None` (the paper's raw features).
        teacher_layer_name: Teacher layer(s) defining the neighbourhoods.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"lp"`).

    Example:

    >>> loss = LocalityPreservingDistillation(k=1, sigma=1.0, normalize=None)
    >>> t = [[0.0], [1.0], [3.0]]
    >>> s = [[0.0], [2.0], [2.0]]
    >>> round(float(loss.compute_loss(t, s)), 4)
    0.4905

    The paper's raw form grows with the features' squared scale, the
    default (unit-length features) does not:

    >>> f = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    >>> f100 = [[100 * v for v in row] for row in f]
    >>> raw = LocalityPreservingDistillation(k=1, normalize=None)
    >>> unit = LocalityPreservingDistillation(k=1)  # normalize="l2"
    >>> [round(float(raw.compute_loss(t, t)), 2) for t in (f, f100)]
    [0.18, 1839.4]
    >>> [round(float(unit.compute_loss(t, t)), 4) for t in (f, f100)]
    [0.1077, 0.1077]

    Reference:
        Chen, Wang, Xu, Xu, Tao. "Learning Student Networks via Feature
        Embedding", IEEE TNNLS 2020 (arXiv:1812.06597), eqs. 4-6.
    """

    method = Method(
        name="lp",
        embedding=True,
        description="locality-preserving loss + soft targets (LP, eq. 8)",
        paper="Chen et al., IEEE TNNLS 2020",
        preset="tfkd.distillers.locality:LocalityPreservingDistiller",
        # Eq. 8: k = 5 neighbours, gamma = 1, lam = 2, tau = 0.5. Searched
        # around them: with unit-length features the LP term is bounded,
        # so gamma beyond ~3 only drowns the labels; tau above ~2 spreads
        # the soft targets too thin for small students.
        search_space={
            "k": {"type": "int", "min_value": 3, "max_value": 8},
            "gamma": {"type": "float", "min_value": 0.3, "max_value": 3.0,
                      "sampling": "log"},
            "lam": {"type": "float", "min_value": 0.5, "max_value": 4.0},
            "temperature": {"type": "float", "min_value": 0.25,
                            "max_value": 2.0, "sampling": "log"},
        },
    )
    batch_level = True

    def __init__(self, k=5, sigma=None, teacher_layer_name=None,
                 student_layer_name=None, *, normalize="l2",
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "lp")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.k = check_positive_int(k, "k")
        self.sigma = None if sigma is None else check_positive(sigma,
                                                               "sigma")
        self.normalize = check_normalize(normalize)

    def pair_loss(self, teacher_feature, student_feature):
        if self.normalize == "l2":
            teacher_feature = l2_normalize_per_example(teacher_feature)
            student_feature = l2_normalize_per_example(student_feature)
        return locality_preserving_loss(teacher_feature, student_feature,
                                        k=self.k, sigma=self.sigma)

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k, "sigma": self.sigma,
                       "normalize": self.normalize})
        return config
