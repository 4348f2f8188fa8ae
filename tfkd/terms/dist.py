"""DIST (inter- and intra-class relations of the predictions) as a term."""

import keras

from tfkd import hyperparameters as hp
from tfkd.losses.dist import dist_loss
from tfkd.terms.base import Method
from tfkd.terms.kd import _LogitTerm


@keras.saving.register_keras_serializable(package="tfkd")
class DISTDistillation(_LogitTerm):
    """DIST: match the relations of the predictions, not their values.

    With `Y = softmax(Z / τ)` the predictions of each network on the batch
    and `ρ` the Pearson correlation (`tfkd.losses.dist_loss`):

    `L = τ² · (beta · (1 − mean_i ρ(Y_S[i, :], Y_T[i, :])) + gamma ·
    (1 − mean_c ρ(Y_S[:, c], Y_T[:, c])))`,

    the inter-class relation (each example across its classes) and the
    intra-class relation (each class across the examples of the batch).
    The `τ²` factor is the authors' code's. A batch-level term: its value
    depends on the whole batch (sample weights do not apply, and under
    `tf.distribute` each replica correlates its own examples). `beta`,
    `gamma` and `temperature` are live hyperparameters.

    The paper's objective is `CE + beta · L_inter + gamma · L_intra`: the
    method `dist` builds `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[1.0], student_loss_weight=0.5)`, i.e. that
    objective divided by 2.

    Args:
        beta: Weight of the inter-class term, `>= 0` (paper: 1; 2 on
            CIFAR-100).
        gamma: Weight of the intra-class term, `>= 0` (paper: 1; 2 on
            CIFAR-100).
        temperature: Softmax temperature `τ > 0` (paper: 1; 4 on
            CIFAR-100).
        **kwargs: Layer arguments; `name` (default `"dist"`) names the
            term's metric (`dist_loss`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [DISTDistillation(beta=1.0, gamma=1.0, temperature=1.0)],
    ...     distillation_loss_weights=[1.0], student_loss_weight=0.5)
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['dist_loss', 'distillation_loss', 'loss', 'student_loss', 'total_loss']

    Reference:
        Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger
        Teacher", NeurIPS 2022; code: github.com/hunto/DIST_KD (loss in
        github.com/hunto/image_classification_sota,
        `lib/models/losses/dist_kd.py`).
    """

    method = Method(
        name="dist",
        description="DIST: Pearson correlation of the predictions across "
                    "classes and across the batch",
        paper="Huang et al., NeurIPS 2022",
        uses_features=False,
        weight=1.0,
        student_loss_weight=0.5,
        # ImageNet: beta = gamma = tau = 1; CIFAR-100: beta = gamma = 2,
        # tau = 4.
        search_space={
            "beta": {"type": "float", "min_value": 0.5, "max_value": 4.0},
            "gamma": {"type": "float", "min_value": 0.5, "max_value": 4.0},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 8.0},
        },
    )
    batch_level = True

    beta = hp.Hyperparameter(hp.non_negative,
                             doc="Weight of the inter-class term.")
    gamma = hp.Hyperparameter(hp.non_negative,
                              doc="Weight of the intra-class term.")
    temperature = hp.Hyperparameter(hp.positive, doc="Softmax temperature.")

    def __init__(self, beta=1.0, gamma=1.0, temperature=1.0, **kwargs):
        kwargs.setdefault("name", "dist")
        super().__init__(**kwargs)
        self.beta = beta
        self.gamma = gamma
        self.temperature = temperature

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        return dist_loss(teacher_outputs, student_outputs, beta=self.beta,
                         gamma=self.gamma, temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"beta": self.beta, "gamma": self.gamma,
                       "temperature": self.temperature})
        return config
