"""Correlation congruence (CC) as a knowledge term."""

import keras

from tfkd import hyperparameters as hp
from tfkd.losses._utils import check_positive_int
from tfkd.losses.congruence import correlation_congruence_loss
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


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
