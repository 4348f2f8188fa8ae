"""Correlation congruence (CC): match the batch's kernel correlation matrix.

Not to be confused with `tfkd.methods.correlation` (the student-centric
correlation paper's Gram matrices *inside* one feature map): correlation
congruence correlates the *examples* of a batch.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_live
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_batch
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import safe_l2_normalize
from tfkd.losses._utils import to_float32
from tfkd import hyperparameters as hp
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


def _kernel_matrix(f, gamma, order):
    """Float32 `(b, ...)` -> `(b, b)` Taylor-approximated Gaussian RBF kernel
    of the L2-normalised embeddings (see `correlation_congruence_loss`)."""
    f = safe_l2_normalize(flatten_per_example(f), axis=1)
    cos = tf.matmul(f, f, transpose_b=True)
    # Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! · cos^p = e^{−2γ} Σ_p (2γ·cos)^p / p!,
    # by Horner's rule; γ may be a live tensor.
    x = 2.0 * gamma * cos
    series = tf.ones_like(cos)
    for p in range(order, 0, -1):
        series = 1.0 + series * x / float(p)
    return tf.exp(-2.0 * tf.cast(gamma, tf.float32)) * series


def correlation_congruence_loss(teacher_embeddings, student_embeddings, *,
                                gamma=0.4, order=2):
    """Correlation-congruence loss (CC, batch-level).

    The correlation between the examples `i, j` of a batch is the Gaussian
    RBF kernel of their L2-normalised embeddings `f`,
    `k(f_i, f_j) = exp(−γ ‖f_i − f_j‖²) = e^{−2γ} · e^{2γ f_iᵀf_j}`,
    approximated by its Taylor expansion to order `P`:

    `K[i, j] = Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! · (f_iᵀ f_j)^p`.

    The student's correlation matrix is made congruent with the teacher's:

    `L = ‖K_T − K_S‖²_F / b²`, `b` the batch size.

    The `b × b` matrices do not depend on the embedding sizes, so teacher
    and student embeddings may have different shapes (they are flattened
    per example). An all-zero embedding stays 0 after the normalisation
    (its correlations are then the constant `e^{−2γ}`), with a zero
    gradient through its norm.

    The paper's `β` (the weight of this term next to cross entropy and KD)
    is the knowledge term's weight, not an argument of this function. The
    authors did not release code; the `Correlation` class of RepDistiller
    ("code emailed to me by the original author") computes a different
    quantity (products of consecutive examples' `|f_S − f_T|`); tfkd
    follows the paper.

    Args:
        teacher_embeddings: Tensor of shape `(b, ...)`.
        student_embeddings: Tensor of shape `(b, ...)`, same batch size.
        gamma: Kernel parameter `γ > 0` (paper: 0.4).
        order: Order `P >= 1` of the Taylor expansion (paper: 2).

    Returns:
        Scalar float32 tensor.

    Example:

    >>> t = [[1.0, 0.0], [0.0, 1.0]]
    >>> float(correlation_congruence_loss(t, [[2.0, 0.0], [0.0, 0.5]]))
    0.0
    >>> round(float(correlation_congruence_loss(t, [[1.0, 0.0], [1.0, 0.0]])),
    ...       4)
    0.1266

    Reference:
        Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang, "Correlation Congruence
        for Knowledge Distillation", ICCV 2019, eqs. 6–9.
    """
    gamma = check_live(check_positive, gamma, "gamma")
    order = check_positive_int(order, "order")
    t = to_float32(teacher_embeddings, "teacher_embeddings")
    s = to_float32(student_embeddings, "student_embeddings")
    check_rank(t, "teacher_embeddings", min_rank=2, layout="(batch, ...)")
    check_rank(s, "student_embeddings", min_rank=2, layout="(batch, ...)")
    check_same_batch(t, s, "teacher_embeddings", "student_embeddings")
    diff = _kernel_matrix(t, gamma, order) - _kernel_matrix(s, gamma, order)
    b = tf.cast(tf.shape(t)[0], tf.float32)
    return tf.reduce_sum(tf.square(diff)) / (b * b)


@keras.saving.register_keras_serializable(package="tfkd")
class CorrelationCongruenceDistillation(DistillationTerm):
    """Correlation congruence: match the batch's kernel correlation matrix.

    For each tapped pair (`tfkd.losses.correlation_congruence_loss`), the
    correlation between examples `i, j` is the Gaussian RBF kernel of
    their L2-normalised embeddings, approximated by its Taylor expansion
    to order `P`:

    `K[i, j] = Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! · (f_iᵀ f_j)^p`,
    `L = ‖K_T − K_S‖²_F / b²`.

    Not the student-centric paper's `tfkd.losses.CorrelationDistillation`
    (Gram matrices inside one feature map): CC correlates the *examples*.
    Features are flattened per example (tap the pooled embedding, as the
    paper does); teacher and student sizes may differ, no adapter. A
    batch-level term: sample weights do not apply, and under
    `tf.distribute` each replica correlates its own examples. `gamma` is a
    live hyperparameter. The authors released no code; tfkd follows the
    paper (RepDistiller's `CC.py` computes a different quantity).

    The paper's objective adds `β · L_CC` to the cross entropy: the method
    `cc` uses `β = 100`, the weight of Knowledge-Distillation-Zoo (whose
    CC computes this same mean, `γ = 0.4`, `P = 2`):
    `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[100.0], student_loss_weight=0.5)`, i.e.
    `CE + 100 · L_CC` divided by 2.

    Args:
        gamma: Kernel parameter `γ > 0` (paper: 0.4).
        order: Order `P >= 1` of the Taylor expansion (paper: 2).
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"cc"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [CorrelationCongruenceDistillation(0.4, 2, "pool", "pool")],
    ...     distillation_loss_weights=[100.0])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['cc_loss', 'distillation_loss', 'loss', 'student_loss', 'total_loss']

    Reference:
        Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang, "Correlation Congruence
        for Knowledge Distillation", ICCV 2019, eqs. 6-9; weight from
        github.com/AberHu/Knowledge-Distillation-Zoo.
    """

    method = Method(
        name="cc",
        embedding=True,
        description="correlation congruence: match the batch's Taylor-RBF "
                    "kernel between examples",
        paper="Peng et al., ICCV 2019",
        weight=100.0,
        student_loss_weight=0.5,
        soft_targets=True,
        search_space={
            "weight": {"type": "float", "min_value": 10.0,
                       "max_value": 1000.0, "sampling": "log"},
            "gamma": {"type": "float", "min_value": 0.1, "max_value": 1.0},
            "order": {"type": "int", "min_value": 1, "max_value": 4},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    batch_level = True

    gamma = hp.Hyperparameter(hp.positive, doc="Kernel parameter.")

    def __init__(self, gamma=0.4, order=2, teacher_layer_name=None,
                 student_layer_name=None, *, guided_channels=None,
                 **kwargs):
        kwargs.setdefault("name", "cc")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.gamma = gamma
        self.order = check_positive_int(order, "order")

    def pair_loss(self, teacher_feature, student_feature):
        return correlation_congruence_loss(teacher_feature, student_feature,
                                           gamma=self.gamma,
                                           order=self.order)

    def get_config(self):
        config = super().get_config()
        config.update({"gamma": self.gamma, "order": self.order})
        return config
