"""The locality-preserving (LP) distiller of Chen et al. (eq. 8)."""

import keras

from tfkd import hyperparameters as hp
from tfkd.distillers.base import Distiller
from tfkd.saving import PresetSaving
from tfkd.methods.kd import SOFT_TARGETS
from tfkd.methods.kd import SoftTargetDistillation
from tfkd.methods.lp import LocalityPreservingDistillation
from tfkd.methods.lp import check_normalize
from tfkd.terms.base import layer_name_arguments


@keras.saving.register_keras_serializable(package="tfkd")
class LocalityPreservingDistiller(PresetSaving, Distiller):
    """Locality-preserving distillation: keep the teacher's neighbourhoods.

    The LP paper's eq. 8 (its `H(y, P_T)` typo read as `H(y, P_S)`, see
    `docs/methods/lp.md`):
    `L = CE(y, s) + lam · H(softmax(t/τ), softmax(s/τ)) + gamma · L_LP`,
    with `L_LP = 1/(2m) Σ_i Σ_{j∈N(i)} a_ij ‖f_S^i − f_S^j‖²`
    (`tfkd.losses.LocalityPreservingDistillation`: examples among each
    other's `k` nearest neighbours in the teacher's features are pulled
    together in the student's). Eq. 8 writes the LP term with `1/m` where
    eq. 6 has `1/(2m)`; tfkd uses eq. 6's `L_LP`, so `gamma = 2` reproduces
    eq. 8's literal factor. In the engine's convention the terms are `soft`
    (`tfkd.losses.SoftTargetDistillation`, no `T²` factor) and `lp`, and
    the total is `L / 2` (`student_loss_weight = 0.5`, term weights
    `lam` and `gamma`).

    Metrics (training and validation), besides `loss`: `student_loss`
    (`CE(y, s)`), `soft_loss` (the soft-target cross entropy, not tfkd's
    `kd_loss = T² · KL`) and `lp_loss` (summed over the tapped pairs).

    **A batch-level loss.** `L_LP` is one scalar per mini-batch (neighbours
    are searched within it): sample weights do not scale it, and under
    `tf.distribute` each replica searches its own examples (use a
    per-replica batch of 128 for the paper's neighbourhoods).

    **Scale, and tfkd's one departure from the paper.** `L_LP` only pulls
    neighbours together (no repulsive term). On raw features it grows with
    the squared scale and the dimension of the student's features: tapping
    a wide conv map, `gamma · L_LP` dwarfs the class loss and the student
    maps every image to one point (on the digits student's 8×8×16 map:
    chance accuracy). So by default (`normalize="l2"`) each example's
    flattened features, teacher's and student's, are scaled to unit length
    before eq. 4-6: the term is bounded (at most `2k`) and scale-free, and
    `gamma` means the same on any layer. `normalize=None` is the paper's
    form on raw features. Watch `lp_loss` against `student_loss`.

    Args:
        teacher: A trained `keras.Model` outputting logits. It is frozen.
        student: The `keras.Model` to train; logits of the teacher's shape.
        teacher_layer_name: Name (or list of names) of the teacher
            layer(s) whose features define the neighbourhoods.
        student_layer_name: Name (or list of names) of the paired student
            layer(s).
        k: Neighbours per example, an integer >= 1 (paper: 5).
        gamma: Weight of the LP term, >= 0 (paper: 1).
        lam: Weight `λ` of the soft-target term, >= 0 (paper: 2).
        temperature: Softening temperature `τ > 0` (paper: 0.5).
        sigma: Gaussian width `σ > 0`, or `None` for the per-batch estimate.
        normalize: `"l2"` (default): unit-length features per example
            before the distances (tfkd's decision, see above); `None`: the
            paper's raw features.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = LocalityPreservingDistiller(
    ...     teacher, student, teacher_layer_name="conv2",
    ...     student_layer_name="conv2")
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = testing.random_images(32)
    >>> history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'distillation_loss', 'loss', 'lp_loss', 'soft_loss',
     'student_loss', 'total_loss']

    Reference:
        Chen, Wang, Xu, Xu, Tao. "Learning Student Networks via Feature
        Embedding", IEEE TNNLS 2020 (arXiv:1812.06597), §III-B, eqs. 4-8,
        Algorithm 1.
    """

    gamma = hp.Hyperparameter(hp.non_negative, doc="Weight of the LP term.")
    lam = hp.Hyperparameter(hp.non_negative,
                            doc="Weight of the soft-target term.")

    def __init__(self, teacher, student, *, teacher_layer_name=None,
                 student_layer_name=None, k=5, gamma=1.0,
                 lam=SOFT_TARGETS["weight"],
                 temperature=SOFT_TARGETS["temperature"], sigma=None, normalize="l2", **kwargs):
        teacher_layer, student_layer = layer_name_arguments(
            type(self).__name__, teacher_layer_name, student_layer_name,
            kwargs)
        for name, value in (("teacher_layer_name", teacher_layer),
                            ("student_layer_name", student_layer)):
            if value is None or (isinstance(value, (list, tuple))
                                 and not value):
                raise ValueError(
                    f"`{name}` must name at least one layer: the LP loss "
                    f"compares the neighbourhoods of tapped features. "
                    f"Received: {name}={value!r}. Pass a layer name, e.g. "
                    f"`tfkd.models.lp_tap_layers(model)['lp']`."
                )
        gamma = hp.non_negative(gamma, "gamma")
        lam = hp.non_negative(lam, "lam")
        normalize = check_normalize(normalize)
        super().__init__(
            teacher, student,
            distillation_losses=[
                SoftTargetDistillation(temperature=temperature, name="soft"),
                LocalityPreservingDistillation(
                    k, sigma, teacher_layer, student_layer,
                    normalize=normalize, name="lp"),
            ],
            **kwargs,
        )
        self.gamma = gamma
        self.lam = lam

    def _unique_names(self):
        return ["soft", "lp"]

    def paper_weights(self):
        return 1.0, [self.lam, self.gamma], 2.0

    def weight_hint(self, term_name):
        return {"lp": "lower `gamma`, or tap a lower-dimensional layer "
                      "(e.g. the pooled embedding)",
                "soft": "lower `lam`"}[term_name]

    @property
    def temperature(self):
        """Softening temperature `τ` (the `soft` term's; live)."""
        return self._terms[0].temperature

    @temperature.setter
    def temperature(self, value):
        self._terms[0].temperature = value

    def _aliases(self):
        return ("temperature",)
