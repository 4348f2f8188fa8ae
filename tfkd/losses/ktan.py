"""KTAN losses: feature-map MSE (eq. 2) and the adversarial pair.

Pure functions returning per-example values of shape `(batch,)`; the
distiller reduces them with sample weights. The adversarial losses take the
discriminator's *logits* (its output before the sigmoid) so that
`−log D(·)` is computed as a numerically stable softplus.
"""

import tensorflow as tf

from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import to_float32


def _flat_logits(logits, name):
    logits = to_float32(logits, name)
    if logits.shape.rank is not None and logits.shape.rank > 1:
        logits = tf.reshape(logits, [tf.shape(logits)[0], -1])
        if logits.shape[-1] is not None and logits.shape[-1] != 1:
            raise ValueError(
                f"`{name}` must hold one discriminator logit per example, "
                f"shape `(batch,)` or `(batch, 1)`. Received shape "
                f"{tuple(logits.shape)}."
            )
        logits = logits[:, 0]
    return logits


def ktan_mse_loss(teacher_features, student_features):
    """Feature-map mean squared error of KTAN (eq. 2), per example.

    `L_MSE = 1 / (r²·c·w·h) · Σ (m_t − m_s)²`, the mean over all elements of
    one example's feature map. `teacher_features` is the teacher's map after
    the teacher-to-student regressor, `R(m_t)`, which already has the
    student's size (the scale ratio `r` of the paper is folded into the
    regressor), so the normaliser is the element count of `m_s`.

    Args:
        teacher_features: Regressed teacher map `R(m_t)`, shape
            `(batch, H, W, C)`: the target.
        student_features: Student map `m_s` of the same shape.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> import numpy as np
    >>> t = np.ones((2, 4, 4, 3), "float32")
    >>> s = np.zeros((2, 4, 4, 3), "float32")
    >>> ktan_mse_loss(t, s).numpy().tolist()
    [1.0, 1.0]

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", eq. 2.
    """
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_same_shape(t, s, "teacher_features", "student_features")
    squared = tf.square(t - s)
    if squared.shape.rank is not None and squared.shape.rank > 1:
        return tf.reduce_mean(squared, axis=list(range(1, squared.shape.rank)))
    return squared


def adversarial_loss(fake_logits):
    """The student's adversarial loss `−log D(m_s)`, per example.

    The non-saturating generator loss of Algorithm 2 (`L_D = Σ −log D(m_s)`
    in the paper's notation): small when the discriminator takes the
    student's map for the teacher's. Computed from the discriminator's
    logit `l` as `softplus(−l) = −log sigmoid(l)`.

    Args:
        fake_logits: Discriminator logits on the student maps, shape
            `(batch,)` or `(batch, 1)`.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> round(float(adversarial_loss([0.0])[0]), 4)  # -log(0.5)
    0.6931

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", Algorithm 2.
    """
    return tf.nn.softplus(-_flat_logits(fake_logits, "fake_logits"))


def discriminator_loss(real_logits, fake_logits):
    """Binary cross entropy of the discriminator, per example.

    Real maps (`R(m_t)`, label 1) against fake maps (`m_s`, label 0):
    `−log D(R(m_t)) − log(1 − D(m_s))`, from logits as
    `softplus(−l_real) + softplus(l_fake)`.

    Args:
        real_logits: Discriminator logits on the regressed teacher maps,
            shape `(batch,)` or `(batch, 1)`.
        fake_logits: Discriminator logits on the student maps, same shape.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> round(float(discriminator_loss([0.0], [0.0])[0]), 4)  # 2·log(2)
    1.3863
    """
    real = _flat_logits(real_logits, "real_logits")
    fake = _flat_logits(fake_logits, "fake_logits")
    check_same_shape(real, fake, "real_logits", "fake_logits")
    return tf.nn.softplus(-real) + tf.nn.softplus(fake)


def discriminator_accuracy(real_logits, fake_logits):
    """Fraction of the two maps of each example the discriminator gets right.

    A real map counts as right when `D > 0.5` (logit `> 0`), a fake map when
    `D <= 0.5`; the per-example value is 0, 0.5 or 1.

    Args:
        real_logits: Discriminator logits on the regressed teacher maps.
        fake_logits: Discriminator logits on the student maps.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> discriminator_accuracy([2.0, -1.0], [-3.0, -1.0]).numpy().tolist()
    [1.0, 0.5]
    """
    real = _flat_logits(real_logits, "real_logits")
    fake = _flat_logits(fake_logits, "fake_logits")
    check_same_shape(real, fake, "real_logits", "fake_logits")
    right_real = tf.cast(real > 0.0, tf.float32)
    right_fake = tf.cast(fake <= 0.0, tf.float32)
    return 0.5 * (right_real + right_fake)
