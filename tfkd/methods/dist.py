"""DIST: inter- and intra-class Pearson correlation of the predictions.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_live
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import safe_l2_norm
from tfkd.losses._utils import to_float32
from tfkd import hyperparameters as hp
from tfkd.terms.base import Method
from tfkd.methods.kd import _LogitTerm


# Added to the product of the two norms in the Pearson correlation, as in
# the authors' code: a constant row or column correlates as 0, not NaN.
_PEARSON_EPSILON = 1e-8


def _pearson_rows(a, b):
    """Pearson correlation of each row of `a` with the same row of `b`,
    `(n, m)` -> `(n,)`."""
    a = a - tf.reduce_mean(a, axis=1, keepdims=True)
    b = b - tf.reduce_mean(b, axis=1, keepdims=True)
    # safe_l2_norm: a constant row has norm 0, where sqrt's gradient is inf.
    norms = safe_l2_norm(a, axis=1) * safe_l2_norm(b, axis=1)
    return tf.reduce_sum(a * b, axis=1) / (norms + _PEARSON_EPSILON)


def dist_loss(teacher_logits, student_logits, *, beta=1.0, gamma=1.0,
              temperature=1.0):
    """DIST loss: relations of the predictions, not their values
    (batch-level).

    With `Y = softmax(Z / τ)` the `(batch, num_classes)` predictions of
    each network and `ρ` the Pearson correlation coefficient,

    - inter-class relation: `L_inter = 1 − mean_i ρ(Y_S[i, :], Y_T[i, :])`,
      for each example, across the classes;
    - intra-class relation: `L_intra = 1 − mean_c ρ(Y_S[:, c], Y_T[:, c])`,
      for each class, across the examples of the batch;

    `L = τ² · (beta · L_inter + gamma · L_intra)`.

    `ρ(u, v) = ⟨u − ū, v − v̄⟩ / (‖u − ū‖ ‖v − v̄‖ + 1e-8)`: the epsilon is
    added to the product of the norms, as in the authors' code, so a
    constant row or column (uniform predictions; a batch of one for the
    intra-class term) correlates as 0. The `τ²` factor is the code's too,
    like Hinton KD's; the paper's equations do not show it.

    The loss is batch-level because the intra-class term correlates the
    examples of the batch: it is not a sum over examples.

    Args:
        teacher_logits: Tensor of shape `(batch, num_classes)`.
        student_logits: Tensor of the same shape.
        beta: Weight of the inter-class term, `>= 0` (code default: 1).
        gamma: Weight of the intra-class term, `>= 0` (code default: 1).
        temperature: Softmax temperature `τ > 0` (code default: 1).

    Returns:
        Scalar float32 tensor.

    Example:

    >>> t = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    >>> round(float(dist_loss(t, t)), 6)
    0.0
    >>> s = [[0.0, 1.0, 0.0], [2.0, 0.0, -1.0]]  # predictions swapped
    >>> round(float(dist_loss(t, s)), 4)
    3.4279

    Reference:
        Huang, You, Wang, Qian, Xu, "Knowledge Distillation from A Stronger
        Teacher", NeurIPS 2022, eqs. 6–10. Code:
        https://github.com/hunto/DIST_KD, loss in
        https://github.com/hunto/image_classification_sota
        (`lib/models/losses/dist_kd.py`).
    """
    beta = check_live(check_non_negative, beta, "beta")
    gamma = check_live(check_non_negative, gamma, "gamma")
    temperature = check_live(check_positive, temperature, "temperature")
    t = to_float32(teacher_logits, "teacher_logits")
    s = to_float32(student_logits, "student_logits")
    check_rank(t, "teacher_logits", rank=2, layout="(batch, num_classes)")
    check_same_shape(t, s, "teacher_logits", "student_logits")
    y_t = tf.nn.softmax(t / temperature, axis=-1)
    y_s = tf.nn.softmax(s / temperature, axis=-1)
    inter = 1.0 - tf.reduce_mean(_pearson_rows(y_s, y_t))
    intra = 1.0 - tf.reduce_mean(
        _pearson_rows(tf.transpose(y_s), tf.transpose(y_t)))
    return temperature**2 * (beta * inter + gamma * intra)


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
