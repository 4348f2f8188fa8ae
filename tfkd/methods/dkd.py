"""Decoupled knowledge distillation (DKD): target and non-target class KD.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_live
from tfkd.losses._utils import check_min_size
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import to_float32
from tfkd import hyperparameters as hp
from tfkd.terms.base import Method
from tfkd.methods.kd import _LogitTerm


def _target_mask(labels, logits):
    """`(mask, valid)`: the one-hot boolean mask of the target class,
    `(batch, num_classes)`, and a boolean `(batch,)`, False for examples
    without a target class in `[0, num_classes)` (label -1: unlabelled)."""
    try:
        labels = tf.convert_to_tensor(labels)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`labels` must be a tensor or array of class ids or one-hot "
            f"rows. Received: labels={labels!r} of type "
            f"{type(labels).__name__}."
        ) from e
    if not (labels.dtype.is_integer or labels.dtype.is_floating):
        raise TypeError(
            f"`labels` must have a numeric dtype. Received dtype "
            f"{labels.dtype.name}."
        )
    rank = labels.shape.rank
    width = labels.shape[-1] if rank else None
    if rank not in (None, 1, 2):
        raise ValueError(
            f"`labels` must be class ids of shape (batch,) or (batch, 1), or "
            f"one-hot rows of shape (batch, num_classes). Received: "
            f"labels.shape={tuple(labels.shape)}."
        )
    num_classes = tf.shape(logits)[-1]
    if rank == 2 and width != 1:
        if not labels.shape[-1:].is_compatible_with(logits.shape[-1:]):
            raise ValueError(
                f"One-hot `labels` must have one column per class. Received: "
                f"labels.shape={tuple(labels.shape)}, "
                f"teacher_logits.shape={tuple(logits.shape)}."
            )
        # One-hot (or soft) rows: the target is the largest entry; an
        # all-zero row has no target.
        labels = tf.cast(labels, tf.float32)
        ids = tf.argmax(labels, axis=-1, output_type=tf.int32)
        valid = tf.reduce_max(labels, axis=-1) > 0.0
    else:
        if rank == 2:
            labels = tf.squeeze(labels, axis=-1)
        ids = tf.cast(labels, tf.int32)
        valid = (ids >= 0) & (ids < num_classes)
    if not labels.shape[:1].is_compatible_with(logits.shape[:1]):
        raise ValueError(
            f"`labels` must have one entry per example. Received: "
            f"labels.shape={tuple(labels.shape)}, "
            f"teacher_logits.shape={tuple(logits.shape)}."
        )
    # tf.one_hot gives an all-False row for an id outside [0, num_classes).
    mask = tf.one_hot(ids, num_classes, on_value=True, off_value=False,
                      dtype=tf.bool)
    return mask, valid


def _split_log_probs(z, mask):
    """Log-space pieces of DKD for scaled logits `z = logits / T`.

    Returns `log_b` `(batch, 2)`: the log-probabilities of the binary split
    (target, all non-targets), and `log_p_hat` `(batch, num_classes)`: the
    log-softmax over the non-target classes only, 0 at the target (never
    used there). Nothing is exponentiated before the logsumexp, so logits
    like ±1e4 give finite values, where the probabilities of the authors'
    code underflow to 0 and their log to -inf.
    """
    lse = tf.reduce_logsumexp(z, axis=-1)
    # -inf at the target drops it from the non-target logsumexp; its
    # gradient there is exp(-inf - lse) = 0, not NaN (one class at least
    # is left since num_classes >= 2).
    non_target = tf.where(mask, tf.constant(-float("inf")), z)
    lse_nt = tf.reduce_logsumexp(non_target, axis=-1)
    z_target = tf.reduce_sum(tf.where(mask, z, tf.zeros_like(z)), axis=-1)
    # An example without a target (mask all False) gets a meaningless but
    # finite split; the caller zeroes its loss.
    log_b = tf.stack([z_target - lse, lse_nt - lse], axis=-1)
    log_p_hat = tf.where(mask, tf.zeros_like(z), z - lse_nt[:, None])
    return log_b, log_p_hat


#: Values of `unlabelled_target`: `"teacher"` (an example without a label
#: is split at the teacher's top class) or `None` (its loss is 0).
UNLABELLED_TARGETS = ("teacher", None)


def check_unlabelled_target(value):
    """Returns `value` if it is a valid `unlabelled_target`, else raises."""
    return check_option(value, "unlabelled_target", UNLABELLED_TARGETS, {
        "teacher": "split an unlabelled example at the teacher's top class",
        None: "its loss is 0"})


def dkd_loss(teacher_logits, student_logits, labels, *, alpha=1.0, beta=8.0,
             temperature=4.0, unlabelled_target=None):
    """Decoupled knowledge distillation loss, per example.

    DKD splits Hinton's KD at the ground-truth class `y`. With
    `p = softmax(z / T)`:

    - TCKD, target-class KD: the KL divergence between the binary
      distributions `b = (p_y, 1 − p_y)` of teacher and student;
    - NCKD, non-target-class KD: the KL divergence between the teacher's
      and the student's distributions over the non-target classes,
      `p̂_j = p_j / (1 − p_y)` for `j ≠ y`.

    `L = T² · (alpha · TCKD + beta · NCKD)`. Both terms are multiplied by
    `T²`, as the authors' code does (the paper writes the loss without
    it). Every probability is computed in log space (logsumexp over the
    non-target logits), so very confident logits (±1e4) keep the loss and
    its gradient finite; the authors' code takes the log of softmax
    probabilities and removes the target with a `−1000` logit offset.

    Examples without a target class in `[0, num_classes)` — label `-1`,
    tfkd's mark of an unlabelled example, or an all-zero one-hot row — have
    no target/non-target split: with `unlabelled_target=None` (the
    function's default) their loss is 0; with `"teacher"` they are split
    at the teacher's top class (`argmax` of `teacher_logits`), so every
    example is distilled.

    The authors' code also ramps the whole DKD term up linearly over the
    first 20 epochs (`min(epoch / 20, 1)`) and adds the cross entropy with
    weight 1; both belong to the caller (the knowledge term and the
    student loss).

    Args:
        teacher_logits: Tensor of shape `(batch, num_classes)`,
            `num_classes >= 2`.
        student_logits: Tensor of the same shape.
        labels: Integer class ids of shape `(batch,)` or `(batch, 1)`, or
            one-hot (or soft) targets of shape `(batch, num_classes)`, whose
            largest entry is taken as the target.
        alpha: Weight of TCKD, `>= 0` (paper and code: 1).
        beta: Weight of NCKD, `>= 0` (code default 8 for CIFAR-100; the
            paper tunes it per teacher-student pair, e.g. 0.5 on ImageNet).
        temperature: Softening temperature `T > 0` (CIFAR-100: 4,
            ImageNet: 1).
        unlabelled_target: `None` (an example without a label gives 0) or
            `"teacher"` (it is split at the teacher's top class).

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = [[3.0, 1.0, 0.0, -1.0]]
    >>> s = [[3.0, 1.0, 0.0, -1.0]]
    >>> float(dkd_loss(t, s, [0])[0])
    0.0

    Only the non-target classes differ: TCKD is 0, NCKD is not.

    >>> s = [[3.0, -1.0, 0.0, 1.0]]
    >>> round(float(dkd_loss(t, s, [0], alpha=1.0, beta=0.0)[0]), 4)
    0.0
    >>> round(float(dkd_loss(t, s, [0], alpha=0.0, beta=1.0)[0]), 4)
    1.3196

    An unlabelled example (`-1`) gives 0, or, with
    `unlabelled_target="teacher"`, the loss at the teacher's top class
    (here class 0, its label above):

    >>> float(dkd_loss(t, s, [-1], alpha=0.0, beta=1.0)[0])
    0.0
    >>> round(float(dkd_loss(t, s, [-1], alpha=0.0, beta=1.0,
    ...                      unlabelled_target="teacher")[0]), 4)
    1.3196

    Reference:
        Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation",
        CVPR 2022. Code: https://github.com/megvii-research/mdistiller
        (`mdistiller/distillers/DKD.py`).
    """
    alpha = check_live(check_non_negative, alpha, "alpha")
    beta = check_live(check_non_negative, beta, "beta")
    temperature = check_live(check_positive, temperature, "temperature")
    unlabelled_target = check_unlabelled_target(unlabelled_target)
    t = to_float32(teacher_logits, "teacher_logits")
    s = to_float32(student_logits, "student_logits")
    check_rank(t, "teacher_logits", rank=2, layout="(batch, num_classes)")
    check_same_shape(t, s, "teacher_logits", "student_logits")
    check_min_size(
        t, "teacher_logits", -1, 2, "classes",
        "DKD splits the classes into the target and the others.")
    mask, valid = _target_mask(labels, t)
    if unlabelled_target == "teacher":
        top = tf.one_hot(tf.argmax(t, axis=-1, output_type=tf.int32),
                         tf.shape(t)[-1], on_value=True, off_value=False,
                         dtype=tf.bool)
        mask = tf.where(valid[:, None], mask, top)
        valid = tf.ones_like(valid)

    log_b_t, log_p_hat_t = _split_log_probs(t / temperature, mask)
    log_b_s, log_p_hat_s = _split_log_probs(s / temperature, mask)
    tckd = tf.reduce_sum(tf.exp(log_b_t) * (log_b_t - log_b_s), axis=-1)
    nckd = tf.reduce_sum(
        tf.where(mask, tf.zeros_like(log_p_hat_t),
                 tf.exp(log_p_hat_t) * (log_p_hat_t - log_p_hat_s)),
        axis=-1)
    # Both KLs are >= 0 mathematically; clip the float round-off.
    tckd = tf.maximum(tckd, 0.0)
    nckd = tf.maximum(nckd, 0.0)
    loss = temperature**2 * (alpha * tckd + beta * nckd)
    # tf.where, not a product: an example without a target is exactly 0.
    return tf.where(valid, loss, tf.zeros_like(loss))


@keras.saving.register_keras_serializable(package="tfkd")
class DKDDistillation(_LogitTerm):
    """Decoupled KD: target-class and non-target-class KD, weighted apart.

    Hinton's KD split at each example's ground-truth class `y`
    (`tfkd.losses.dkd_loss`): TCKD, the KL divergence between the binary
    distributions `(p_y, 1 − p_y)` of teacher and student, and NCKD, the KL
    divergence between their distributions over the non-target classes,
    both softened by `T` and multiplied by `T²` (the authors' code):

    `L = T² · (alpha · TCKD + beta · NCKD)`, per example.

    The term reads the logits of both networks and the batch's labels
    (integer ids or one-hot). An example without a target class (label
    `-1`, tfkd's mark of an unlabelled example) is split at the teacher's
    top class (`unlabelled_target="teacher"`, the default: unlabelled
    images are distilled too) or gives 0 (`unlabelled_target=None`, the
    paper's labelled-only setting). `alpha`, `beta` and `temperature` are live hyperparameters
    (`tfkd.hyperparameters.Hyperparameter`): assign them, or schedule them
    with `tfkd.callbacks.HyperparameterScheduler`, during training.

    The authors' objective is `CE + w(epoch) · L_DKD` with a linear
    warm-up `w(epoch) = min(epoch / 20, 1)`: the method `dkd` builds
    `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[1.0], student_loss_weight=0.5)`, i.e. that
    objective divided by 2. The warm-up belongs to the term: every
    `fit` of a distiller holding it ramps the term's weight (`dkd/weight`,
    logged in the history) linearly from 0 to the weight it had at the
    first `fit` over `warmup_epochs` epochs
    (`tfkd.callbacks.linear_warmup`; Keras counts epochs from 0, so epoch
    0 trains at weight 0). `warmup_epochs=0` turns it off.

    Args:
        alpha: Weight of TCKD, `>= 0` (paper and code: 1).
        beta: Weight of NCKD, `>= 0` (code's CIFAR-100 default 8; the
            paper tunes it per teacher-student pair, 0.5 on ImageNet).
        temperature: Softening temperature `T > 0` (CIFAR-100: 4,
            ImageNet: 1).
        warmup_epochs: Epochs of the linear warm-up of the term's weight,
            an int `>= 0` (the authors' code: 20; 0: no warm-up).
        unlabelled_target: `"teacher"` (default: an unlabelled example is
            split at the teacher's top class) or `None` (its value is 0).
        **kwargs: Layer arguments; `name` (default `"dkd"`) names the
            term's metric (`dkd_loss`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [DKDDistillation(alpha=1.0, beta=8.0, temperature=4.0)],
    ...     distillation_loss_weights=[1.0], student_loss_weight=0.5)
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> history = distiller.fit(x, y, epochs=2, verbose=0)
    >>> history.history["dkd/weight"]
    [0.0, 0.05]

    Reference:
        Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation",
        CVPR 2022; code: github.com/megvii-research/mdistiller
        (`mdistiller/distillers/DKD.py`).
    """

    method = Method(
        name="dkd",
        description="decoupled KD: target-class and non-target-class KD "
                    "weighted apart",
        paper="Zhao et al., CVPR 2022",
        uses_features=False,
        weight=1.0,
        student_loss_weight=0.5,
        soft_targets=True,
        # The paper keeps alpha = 1 and varies beta (1-10 on CIFAR-100,
        # 0.5 on ImageNet) and T (4 on CIFAR-100, 1 on ImageNet).
        search_space={
            "beta": {"type": "float", "min_value": 0.5, "max_value": 10.0,
                     "sampling": "log"},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 8.0},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )

    alpha = hp.Hyperparameter(hp.non_negative, doc="Weight of TCKD.")
    beta = hp.Hyperparameter(hp.non_negative, doc="Weight of NCKD.")
    temperature = hp.Hyperparameter(hp.positive, doc="Softening temperature.")

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0,
                 warmup_epochs=20, unlabelled_target="teacher", **kwargs):
        kwargs.setdefault("name", "dkd")
        if isinstance(warmup_epochs, bool) or not isinstance(
            warmup_epochs, int
        ) or warmup_epochs < 0:
            raise ValueError(
                "`warmup_epochs` must be an int >= 0 (0: no warm-up). "
                f"Received: warmup_epochs={warmup_epochs!r}."
            )
        super().__init__(**kwargs)
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.warmup_epochs = warmup_epochs
        self.unlabelled_target = check_unlabelled_target(unlabelled_target)
        # The weight the warm-up ramps to: read at the first `fit` (a later
        # `fit` continues the same ramp instead of ramping to the value the
        # ramp left).
        self._warmup_target = None

    def training_callbacks(self, distiller):
        """DKD's warm-up: a `HyperparameterScheduler` ramping
        `<name>/weight` over `warmup_epochs` (none if 0)."""
        if not self.warmup_epochs:
            return []
        from tfkd.callbacks import HyperparameterScheduler
        from tfkd.callbacks import linear_warmup

        path = f"{self.name}/weight"
        if self._warmup_target is None:
            self._warmup_target = float(distiller.get_hyperparameter(path))
        return [HyperparameterScheduler(
            {path: linear_warmup(self._warmup_target, self.warmup_epochs)})]

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        if labels is None:
            raise ValueError(
                "DKDDistillation splits each example's classes at its label "
                "and needs the batch's labels. Received: labels=None. Pass "
                "labels (`fit(x, y)`, `compute_terms(x, y)`, or "
                "`compute_loss(teacher_logits, student_logits, labels=y)`); "
                "-1 marks an unlabelled example (split at the teacher's top "
                "class, or 0 with unlabelled_target=None)."
            )
        return dkd_loss(teacher_outputs, student_outputs, labels,
                        alpha=self.alpha, beta=self.beta,
                        temperature=self.temperature,
                        unlabelled_target=self.unlabelled_target)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "beta": self.beta,
                       "temperature": self.temperature,
                       "warmup_epochs": self.warmup_epochs,
                       "unlabelled_target": self.unlabelled_target})
        return config
