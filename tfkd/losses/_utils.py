"""Shared helpers for the loss functions (argument checks, dtype handling)."""

import math
import numbers

import numpy as np
import tensorflow as tf


def to_float32(x, name):
    """Converts `x` to a float32 tensor; losses compute in float32 so that
    mixed-precision students keep exact softmax and Gram arithmetic."""
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"`{name}` must be a tensor or array. Received: {name}={x!r} "
            f"of type {type(x).__name__}."
        ) from e
    if not (x.dtype.is_floating or x.dtype.is_integer):
        raise TypeError(
            f"`{name}` must have a numeric dtype. Received dtype {x.dtype.name}."
        )
    return tf.cast(x, tf.float32)


def _real_scalar(value):
    """`value` as a Python `int` or `float`, or `None` if it is not a number.

    Accepts Python numbers, NumPy scalars (`np.float32(0.5)`, `np.int64(3)`)
    and 0-d arrays -- what NumPy arithmetic and config files hand back;
    refuses bools (`True` is an `int` to Python, never a hyperparameter),
    complex numbers, strings and arrays with elements.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def _type_error(value, name, what):
    return TypeError(
        f"`{name}` must be {what}. Received: {name}={value!r} of type "
        f"{type(value).__name__}."
    )


def check_positive(value, name):
    """Raises a `ValueError` unless `value` is a finite number > 0.

    Python and NumPy scalars and 0-d arrays are accepted; returns a `float`.
    """
    number = _real_scalar(value)
    if number is None:
        raise _type_error(value, name, "a number")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={number}."
        )
    return float(number)


def check_unit_interval(value, name):
    """Raises a `ValueError` unless `0 <= value <= 1` (NaN refused).

    Python and NumPy scalars and 0-d arrays are accepted; returns a `float`.
    """
    number = _real_scalar(value)
    if number is None:
        raise _type_error(value, name, "a number in [0, 1]")
    if not 0.0 <= number <= 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1]. Received: {name}={number}."
        )
    return float(number)


def check_non_negative(value, name):
    """Raises a `ValueError` unless `value` is a finite number >= 0.

    Python and NumPy scalars and 0-d arrays are accepted; returns a `float`.
    """
    number = _real_scalar(value)
    if number is None:
        raise _type_error(value, name, "a number >= 0")
    if not math.isfinite(number) or number < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: {name}={number}."
        )
    return float(number)


def check_same_shape(teacher, student, teacher_name, student_name, what=""):
    """Raises a `ValueError` if two tensors' static shapes differ."""
    if not teacher.shape.is_compatible_with(student.shape):
        raise ValueError(
            f"`{teacher_name}` and `{student_name}` must have the same shape"
            f"{what}. Received: {teacher_name}.shape={tuple(teacher.shape)}, "
            f"{student_name}.shape={tuple(student.shape)}."
        )


def check_positive_int(value, name):
    """Raises unless `value` is an integer >= 1 (bools and floats refused).

    Python and NumPy integers and 0-d integer arrays are accepted; returns an
    `int`.
    """
    number = _real_scalar(value)
    if not isinstance(number, int):
        raise _type_error(value, name, "an integer >= 1")
    if number < 1:
        raise ValueError(
            f"`{name}` must be an integer >= 1. Received: {name}={number}."
        )
    return number


def check_option(value, name, options):
    """Raises a `ValueError` unless `value` is one of the strings `options`."""
    if not isinstance(value, str) or value not in options:
        allowed = ", ".join(repr(o) for o in options)
        raise ValueError(
            f"`{name}` must be one of {allowed}. Received: {name}={value!r}."
        )
    return value


def check_rank(x, name, rank=None, min_rank=None, layout=None):
    """Raises a `ValueError` unless `x` has the given (minimum) static rank.

    `layout` (e.g. `"(batch, H, W, C)"`) is quoted in the message.
    """
    r = x.shape.rank
    if r is None:
        return
    if (rank is not None and r != rank) or (min_rank is not None
                                            and r < min_rank):
        want = f"rank {rank}" if rank is not None else f"rank >= {min_rank}"
        if layout:
            want += f" {layout}"
        raise ValueError(
            f"`{name}` must have {want}. Received: {name}.shape="
            f"{tuple(x.shape)} (rank {r})."
        )


def flatten_per_example(x):
    """Reshapes `(batch, ...)` to `(batch, prod(...))`."""
    return tf.reshape(x, [tf.shape(x)[0], -1])


def safe_l2_norm(x, axis=-1):
    """Euclidean norm whose gradient is 0 (not NaN) where the norm is 0.

    `sqrt` has an infinite derivative at 0, so the plain norm of a zero
    difference back-propagates NaN; the double `where` keeps both the value
    and the gradient exact elsewhere.
    """
    sq = tf.reduce_sum(tf.square(x), axis=axis)
    positive = sq > 0.0
    safe_sq = tf.where(positive, sq, tf.ones_like(sq))
    return tf.where(positive, tf.sqrt(safe_sq), tf.zeros_like(sq))


def check_live(check, value, name):
    """Checks a hyperparameter that may also be a live tensor.

    Distillers pass their hyperparameters to the loss functions as the
    current value of a variable (a tensor inside the traced step); those
    were checked when assigned (`tfkd.hyperparameters`). Python numbers are
    checked here with `check`.
    """
    if isinstance(value, (tf.Tensor, tf.Variable)):
        return tf.cast(value, tf.float32)
    return check(value, name)
