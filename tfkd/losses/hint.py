"""FitNets hint loss: match the student's (regressed) features to a hint."""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import to_float32


def hint_loss(teacher_features, student_features):
    """FitNets hint loss `½ ‖f_S − f_T‖²`, summed over elements per example.

    In FitNets the student side is `r(f_S)`, the student's guided layer put
    through a trainable convolutional regressor so that its shape matches
    the teacher's hint layer. The regressor is a weight of the distiller
    (never exported with the student), so this function only sees the two
    tensors, which must have the same shape.

    Args:
        teacher_features: Tensor of shape `(batch, ...)`: the hint.
        student_features: Tensor of the same shape: the (regressed) guided
            layer's output.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = [[[1.0, 2.0], [3.0, 4.0]]]
    >>> s = [[[1.0, 2.0], [3.0, 6.0]]]
    >>> float(hint_loss(t, s)[0])
    2.0

    Reference:
        Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, eq. 3.
    """
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", min_rank=1, layout="(batch, ...)")
    check_same_shape(
        t, s, "teacher_features", "student_features",
        what=" (put the student's features through a regressor first, "
        "e.g. pass adapter=True to the distiller)",
    )
    diff = flatten_per_example(s - t)
    return 0.5 * tf.reduce_sum(tf.square(diff), axis=1)


@keras.saving.register_keras_serializable(package="tfkd")
class HintLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `hint_loss`.

    `y_true` is the teacher's hint and `y_pred` the student's (regressed)
    features.

    Args:
        reduction: Keras reduction, `"sum_over_batch_size"` by default.
        name: Name of the loss.

    Example:

    >>> loss = HintLoss()
    >>> float(loss([[0.0, 0.0]], [[1.0, 1.0]]))
    1.0
    """

    def __init__(self, reduction="sum_over_batch_size", name="hint_loss",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return hint_loss(y_true, y_pred)
