"""The locality-preserving (LP) distiller of Chen et al. (eq. 8)."""

import keras
import tensorflow as tf

from tfkd.distillers.base import Distiller
from tfkd.losses import kd as kd_losses
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses.locality import locality_preserving_loss


@keras.saving.register_keras_serializable(package="tfkd")
class LocalityPreservingDistiller(Distiller):
    """Locality-preserving distillation: keep the teacher's neighbourhoods.

    The student learns from the labels, from the teacher's softened outputs
    and from the neighbourhood structure of the teacher's features: examples
    that are near neighbours in the teacher's feature space (its `k` nearest
    within the mini-batch) are pulled together in the student's. The
    objective is the LP paper's eq. 8 (its `H(y, P_T)` typo read as
    `H(y, P_S)`, as tfkd's SPEC fixes):

    `loss = CE(y, s) + lam · H(softmax(t/τ), softmax(s/τ)) + gamma · L_LP`,

    with `L_LP = 1/(2m) Σ_i Σ_{j∈N(i)} a_ij ‖f_S^i − f_S^j‖²` (see
    `tfkd.losses.locality_preserving_loss`). Eq. 8 writes the LP term with
    `1/m` where eq. 6 has `1/(2m)`; tfkd uses eq. 6's `L_LP` throughout, so
    `gamma = 2` reproduces eq. 8's literal factor.

    Reported metrics (training and validation), besides `loss`:

    - `class_loss`: `CE(y, s)`, the cross entropy with the labels;
    - `soft_loss`: `H(softmax(t/τ), softmax(s/τ))`, the soft-target cross
      entropy of `tfkd.losses.soft_cross_entropy` *without* the `T²` factor
      (the paper uses none). It is named `soft_loss`, not `kd_loss`,
      because tfkd's `kd_loss` is `T² · KL`, a different quantity (they
      differ by the teacher's entropy and the `T²` factor);
    - `lp_loss`: `L_LP`, summed over the tapped layer pairs.

    Features are flattened per example, so teacher and student features may
    have any (different) shapes: no regressor and no new weights. With
    several layer pairs (lists of names for `teacher_layer` and
    `student_layer`, paired in order), `lp_loss` is the sum of one LP term
    per pair. Tapped layers with guided channels (`SelfTaughtConv2D`)
    contribute only those channels.

    **A batch-level loss.** `L_LP` is a scalar over the whole mini-batch
    (neighbours are searched within it), not a mean of per-example terms,
    so sample weights scale `class_loss` and `soft_loss` but not `lp_loss`,
    and its value depends on the batch size. Under `tf.distribute` each
    replica computes `L_LP` on its *local* batch: the `k` nearest
    neighbours are searched among that replica's examples only, and the
    replicas' losses are averaged (as every term is). To reproduce the
    paper's neighbourhoods of `m = 128` examples, use a per-replica batch
    of 128 (global batch `128 × replicas`), not a global batch of 128.

    **Scale.** `L_LP` only pulls neighbours together (it has no repulsive
    term) and grows with the squared scale and the dimension of the
    student's features. If `gamma · L_LP` dwarfs the class loss, the
    student can minimise it by shrinking or collapsing its features, and
    accuracy drops to chance. Watch `lp_loss` against `class_loss`: e.g. on
    the digits pair (`tfkd.models.digits_student`), tapping the 8×8×16 conv
    map `block2_relu` with `gamma = 1` starts at `lp_loss ≈ 100` vs
    `class_loss ≈ 2.4` and collapses, while the 16-d `gap` embedding
    trains well. Tap a lower-dimensional layer or lower `gamma`.

    Cost: O(m² (d_T + d_S)) per pair and step for the LP term, O(m²)
    memory; nothing of size `m × m × d` is built.

    Args:
        teacher: A trained `keras.Model` outputting logits. It is frozen.
        student: The `keras.Model` to train; logits of the teacher's shape.
        teacher_layer: Name (or list of names) of the teacher layer(s) whose
            features define the neighbourhoods (the paper: FitNets' hint
            layer, e.g. `lp_tap_layers(teacher)["lp"]`).
        student_layer: Name (or list of names) of the paired student
            layer(s) (FitNets' guided layer).
        k: Neighbours per example, an integer >= 1 (paper: 5); clipped to
            the batch size minus one.
        gamma: Weight of the LP term, >= 0 (paper: 1).
        lam: Weight `λ` of the soft-target term, >= 0 (paper: 2).
        temperature: Softening temperature `τ > 0` (paper: 0.5).
        sigma: Gaussian width `σ > 0` of the neighbour weights, or `None`
            for the per-batch estimate of `locality_preserving_loss`.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import keras
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = LocalityPreservingDistiller(
    ...     teacher, student, teacher_layer="conv2", student_layer="conv2")
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = testing.random_images(32)
    >>> history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'class_loss', 'loss', 'lp_loss', 'soft_loss']

    Reference:
        Chen, Wang, Xu, Xu, Tao. "Learning Student Networks via Feature
        Embedding", IEEE TNNLS 2020 (arXiv:1812.06597), §III-B, eqs. 4-8,
        Algorithm 1.
    """

    loss_term_names = ("class_loss", "soft_loss", "lp_loss")

    def __init__(self, teacher, student, *, teacher_layer, student_layer,
                 k=5, gamma=1.0, lam=2.0, temperature=0.5, sigma=None,
                 **kwargs):
        kwargs.pop("alpha", None)  # The base's KD weight; unused here.
        k = check_positive_int(k, "k")
        gamma = check_non_negative(gamma, "gamma")
        lam = check_non_negative(lam, "lam")
        sigma = None if sigma is None else check_positive(sigma, "sigma")
        for name, value in (("teacher_layer", teacher_layer),
                            ("student_layer", student_layer)):
            if value is None or (isinstance(value, (list, tuple))
                                 and not value):
                raise ValueError(
                    f"`{name}` must name at least one layer: the LP loss "
                    f"compares the neighbourhoods of tapped features. "
                    f"Received: {name}={value!r}. Pass a layer name, e.g. "
                    f"`tfkd.models.lp_tap_layers(model)['lp']`."
                )
        super().__init__(
            teacher, student, alpha=1.0, temperature=temperature,
            teacher_layer=teacher_layer, student_layer=student_layer,
            **kwargs,
        )
        self.k = k
        self.gamma = gamma
        self.lam = lam
        self.sigma = sigma

    def compute_loss_terms(self, y, teacher_logits, student_logits,
                           teacher_features, student_features):
        lp = tf.add_n([
            locality_preserving_loss(t, s, k=self.k, sigma=self.sigma)
            for t, s in zip(teacher_features, student_features)
        ])
        return {
            "class_loss": kd_losses.cross_entropy(y, student_logits),
            "soft_loss": kd_losses.soft_cross_entropy(
                teacher_logits, student_logits, self.temperature
            ),
            "lp_loss": lp,
        }

    def loss_weights(self):
        return {"class_loss": 1.0, "soft_loss": self.lam,
                "lp_loss": self.gamma}

    def get_config(self):
        config = super().get_config()
        config.pop("alpha", None)
        config.update({
            "k": self.k,
            "gamma": self.gamma,
            "lam": self.lam,
            "sigma": self.sigma,
        })
        return config
