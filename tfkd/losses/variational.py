"""Variational information distillation (VID): Gaussian likelihood of the
teacher's features under the student's prediction."""

import math

import tensorflow as tf

from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import to_float32

# Added to the softplus of `log_scale`, as the authors' code (`eps`): the
# variance never goes below it.
VID_MIN_VARIANCE = 1e-5


def vid_log_scale_for_variance(variance):
    """The `log_scale` whose VID variance is `variance`.

    The inverse of `softplus(log_scale) + 1e-5`; the authors' code
    initialises every channel's `log_scale` with it at `variance = 5.0`.

    Args:
        variance: A number `> 1e-5`.

    Returns:
        A Python float.

    Example:

    >>> round(vid_log_scale_for_variance(5.0), 4)
    4.9932
    """
    variance = check_positive(variance, "variance")
    if variance <= VID_MIN_VARIANCE:
        raise ValueError(
            f"`variance` must be > {VID_MIN_VARIANCE}, the variance floor. "
            f"Received: variance={variance}."
        )
    return math.log(math.expm1(variance - VID_MIN_VARIANCE))


def vid_loss(teacher_features, predicted_mean, log_scale):
    """Variational information distillation loss, per example.

    VID maximises a variational lower bound of the mutual information
    between the teacher's and the student's features: the teacher's
    features `t` are modelled as Gaussian, with a mean `μ` regressed from
    the student's features and one trainable variance per channel,
    `σ²_c = softplus(log_scale_c) + 1e-5`. The loss is the negative log
    likelihood (without the constant `½ log 2π`), averaged over the
    positions and channels of each example:

    `L = mean_{h,w,c} ½ · ((μ − t)² / σ²_c + log σ²_c)`.

    The mean regressor (in the authors' code three 1×1 convolutions with
    ReLUs between them) and `log_scale` belong to the knowledge term, which
    passes the regressed mean here; the authors initialise `log_scale` to
    `vid_log_scale_for_variance(5.0)`. The paper sums the negative log
    likelihood over positions and channels; the authors' code averages it,
    which tfkd follows (the code's weight, 1 on CIFAR-100, is tuned for
    the mean).

    Args:
        teacher_features: Tensor of shape `(batch, ..., C)` (typically
            `(batch, H, W, C)`; channels last).
        predicted_mean: Tensor of the same shape: the student's prediction
            `μ` of the teacher's features.
        log_scale: Tensor of shape `(C,)`: the per-channel variance
            parameter.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = tf.zeros((2, 4, 4, 3))
    >>> log_scale = tf.fill([3], vid_log_scale_for_variance(1.0))
    >>> [round(float(v), 4) for v in vid_loss(t, t + 1.0, log_scale)]
    [0.5, 0.5]

    Reference:
        Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information
        Distillation for Knowledge Transfer", CVPR 2019, eqs. 2–5. Code:
        https://github.com/HobbitLong/RepDistiller (`distiller_zoo/VID.py`,
        "code from author").
    """
    t = to_float32(teacher_features, "teacher_features")
    mu = to_float32(predicted_mean, "predicted_mean")
    log_scale = to_float32(log_scale, "log_scale")
    check_rank(t, "teacher_features", min_rank=2, layout="(batch, ..., C)")
    check_same_shape(t, mu, "teacher_features", "predicted_mean")
    check_rank(log_scale, "log_scale", rank=1, layout="(C,)")
    if not log_scale.shape.is_compatible_with(t.shape[-1:]):
        raise ValueError(
            "`log_scale` must have one entry per channel of "
            "`teacher_features` (its last axis). Received: "
            f"log_scale.shape={tuple(log_scale.shape)}, "
            f"teacher_features.shape={tuple(t.shape)}."
        )
    variance = tf.nn.softplus(log_scale) + VID_MIN_VARIANCE
    nll = 0.5 * (tf.square(mu - t) / variance + tf.math.log(variance))
    return tf.reduce_mean(tf.reshape(nll, [tf.shape(nll)[0], -1]), axis=1)
