"""The locality-preserving (LP) loss as a knowledge term."""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses.locality import locality_preserving_loss
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method

#: Values of `normalize`: `"l2"` (tfkd's default) or `None` (the paper's
#: eq. 6 on the raw features).
NORMALIZE_MODES = ("l2", None)


def check_normalize(value):
    """Returns `value` if it is a valid `normalize`, else raises."""
    if value not in NORMALIZE_MODES or isinstance(value, bool):
        raise ValueError(
            "`normalize` must be 'l2' (unit-length features, tfkd's "
            "default) or None (the paper's raw features). Received: "
            f"normalize={value!r}."
        )
    return value


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
