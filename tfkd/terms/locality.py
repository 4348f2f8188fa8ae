"""The locality-preserving (LP) loss as a knowledge term."""

import keras

from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses.locality import locality_preserving_loss
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


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

    Args:
        k: Neighbours per example, an int `>= 1` (paper: 5), clipped to the
            batch size minus one.
        sigma: Gaussian width `σ > 0`, or `None` for the per-batch estimate.
        teacher_layer_name: Teacher layer(s) defining the neighbourhoods.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"lp"`).

    Example:

    >>> loss = LocalityPreservingDistillation(k=1, sigma=1.0)
    >>> t = [[0.0], [1.0], [3.0]]
    >>> s = [[0.0], [2.0], [2.0]]
    >>> round(float(loss.compute_loss(t, s)), 4)
    0.4905

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
        # Eq. 8: k = 5 neighbours, gamma = 1, lam = 2, tau = 0.5.
        search_space={
            "k": {"type": "int", "min_value": 1, "max_value": 10},
            "gamma": {"type": "float", "min_value": 0.1, "max_value": 10.0,
                      "sampling": "log"},
            "lam": {"type": "float", "min_value": 0.5, "max_value": 4.0},
            "temperature": {"type": "float", "min_value": 0.25,
                            "max_value": 4.0, "sampling": "log"},
        },
    )
    batch_level = True

    def __init__(self, k=5, sigma=None, teacher_layer_name=None,
                 student_layer_name=None, *, guided_channels=None,
                 **kwargs):
        kwargs.setdefault("name", "lp")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.k = check_positive_int(k, "k")
        self.sigma = None if sigma is None else check_positive(sigma,
                                                               "sigma")

    def pair_loss(self, teacher_feature, student_feature):
        return locality_preserving_loss(teacher_feature, student_feature,
                                        k=self.k, sigma=self.sigma)

    def get_config(self):
        config = super().get_config()
        config.update({"k": self.k, "sigma": self.sigma})
        return config
