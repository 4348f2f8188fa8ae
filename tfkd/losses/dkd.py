"""Decoupled knowledge distillation (DKD): target and non-target class KD."""

import tensorflow as tf

from tfkd.losses._utils import check_live
from tfkd.losses._utils import check_min_size
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import to_float32


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


def dkd_loss(teacher_logits, student_logits, labels, *, alpha=1.0, beta=8.0,
             temperature=4.0):
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
    no target/non-target split: their loss is 0.

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

    Reference:
        Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation",
        CVPR 2022. Code: https://github.com/megvii-research/mdistiller
        (`mdistiller/distillers/DKD.py`).
    """
    alpha = check_live(check_non_negative, alpha, "alpha")
    beta = check_live(check_non_negative, beta, "beta")
    temperature = check_live(check_positive, temperature, "temperature")
    t = to_float32(teacher_logits, "teacher_logits")
    s = to_float32(student_logits, "student_logits")
    check_rank(t, "teacher_logits", rank=2, layout="(batch, num_classes)")
    check_same_shape(t, s, "teacher_logits", "student_logits")
    check_min_size(
        t, "teacher_logits", -1, 2, "classes",
        "DKD splits the classes into the target and the others.")
    mask, valid = _target_mask(labels, t)

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
