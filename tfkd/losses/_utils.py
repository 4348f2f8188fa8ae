"""Shared helpers for the loss functions (argument checks, dtype handling)."""

import math
import numbers

import numpy as np
import tensorflow as tf


def _is_real_number(value):
    """True for Python and NumPy real scalars (`0.5`, `np.float32(0.5)`),
    False for bools (also `np.bool_`), strings, arrays and tensors."""
    return (isinstance(value, numbers.Real)
            and not isinstance(value, (bool, np.bool_)))


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


def check_option(value, name, options, meanings=None):
    """Returns `value` if it is one of `options`, else raises a `ValueError`.

    Args:
        value: The argument received.
        name: The argument's name, quoted in the message.
        options: The accepted values: strings, and `None` where "none" is
            an option (`True`/`False` are never accepted for it).
        meanings: Optional `{option: what it does}`, quoted next to each
            option so that the message says which one to pick.

    Returns:
        `value`.

    Example:

    >>> check_option(None, "normalize", ("l2", None))
    >>> check_option("l1", "normalize", ("l2", None),
    ...              {"l2": "unit-length features", None: "raw features"})
    Traceback (most recent call last):
    ...
    ValueError: `normalize` must be one of 'l2' (unit-length features), None (raw features). Received: normalize='l1'.
    """
    def matches(option):
        if option is None:
            return value is None
        return isinstance(value, str) and value == option

    if not any(matches(option) for option in options):
        meanings = meanings or {}
        allowed = ", ".join(
            repr(o) + (f" ({meanings[o]})" if o in meanings else "")
            for o in options)
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


def check_bool(value, name):
    """Raises a `TypeError` unless `value` is a bool (also `np.bool_`)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"`{name}` must be True or False. Received: {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    return bool(value)


def check_same_batch(teacher, student, teacher_name, student_name):
    """Raises a `ValueError` if two tensors' static batch sizes differ.

    For losses whose teacher and student feature sizes may differ: the
    message says so, so that users do not add a needless adapter.
    """
    if not teacher.shape[:1].is_compatible_with(student.shape[:1]):
        raise ValueError(
            f"`{teacher_name}` and `{student_name}` must have the same batch "
            f"size (their other dimensions may differ). Received: "
            f"{teacher_name}.shape={tuple(teacher.shape)}, "
            f"{student_name}.shape={tuple(student.shape)}."
        )


def check_min_size(x, name, axis, minimum, what, fix):
    """Raises a `ValueError` if the static size of `x` along `axis` is known
    and smaller than `minimum`. `what` names the axis (e.g. "classes") and
    `fix` says what to do."""
    size = x.shape[axis] if x.shape.rank is not None else None
    if size is not None and size < minimum:
        raise ValueError(
            f"`{name}` must have at least {minimum} {what} (axis {axis}). "
            f"Received: {name}.shape={tuple(x.shape)}. {fix}"
        )


def safe_l2_normalize(x, axis=-1):
    """`x / ‖x‖` along `axis`; an all-zero slice stays 0, with gradient 0.

    The authors' PyTorch code divides by `max(‖x‖, 1e-12)` (`F.normalize`):
    the same values (but for norms below 1e-12), but a gradient of 1e12 at
    an all-zero slice, which a dead ReLU example or channel hits exactly.
    Here that gradient is 0, as `safe_l2_norm`'s.
    """
    sq = tf.reduce_sum(tf.square(x), axis=axis, keepdims=True)
    positive = sq > 0.0
    inv = tf.where(positive, tf.math.rsqrt(tf.where(positive, sq, 1.0)),
                   tf.zeros_like(sq))
    return x * inv


# Reduction, as Keras's losses reduce (used by the distillers' steps).

def num_replicas():
    """Replicas of the current `tf.distribute` strategy (1 by default)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def _mean_over_replicas(value):
    """`value` averaged over the replicas of a `tf.distribute` step (itself
    on one device or outside a replica context)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.MEAN,
                              tf.stop_gradient(value))


def _batch_size(x):
    if isinstance(x, dict) and "images" in x:  # cached teacher outputs
        x = x["images"]
    first = tf.nest.flatten(x)[0]
    return tf.shape(first)[0]


def check_unlabelled_weight(value):
    """`Distiller(unlabelled_weight=...)`: returns it if valid, else raises."""
    return check_option(value, "unlabelled_weight", ("whole", "share"), {
        "whole": "the knowledge weighs 1 on an unlabelled example: the "
                 "absent student loss's share goes to it (default)",
        "share": "it weighs 1 - w_s there, as on a labelled example",
    })


def unlabelled_knowledge(values, weights, labelled, sample_weight=None):
    """`Σ_i w_i L_i` over the unlabelled examples, per example of the batch.

    What `Distiller(unlabelled_weight="whole")` adds to the objective,
    times `w_s`: each term's per-example values times the unlabelled mask
    (and `sample_weight`), summed and divided by the batch size, as
    `reduce_term` does; a batch-level (scalar) term's value times the
    global batch's (weighted) unlabelled fraction: under `tf.distribute`
    averaged over the replicas, so that the replicas' mean of the term
    times it is one device's.

    Args:
        values: `{term name: unreduced value}` (`Distiller.term_values`).
        weights: The terms' weights `w_i`, in the same order.
        labelled: Boolean `(batch,)`, `False` for label `-1`.
        sample_weight: Optional per-example weights.

    Returns:
        A float32 scalar.
    """
    unlabelled = 1.0 - tf.cast(labelled, tf.float32)
    if sample_weight is not None:
        unlabelled *= tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    total = []
    for value, weight in zip(values.values(), weights):
        value = tf.cast(value, tf.float32)
        if value.shape.rank == 0:
            value = value * _mean_over_replicas(tf.reduce_mean(unlabelled))
        else:
            value = reduce_term(value, unlabelled)
        total.append(tf.cast(weight, tf.float32) * value)
    return tf.add_n(total)


def reduce_term(value, sample_weight=None):
    """Reduces a loss term to a scalar the way Keras does.

    Per-example terms of shape `(batch,)` (or more dims, averaged first) are
    reduced as `sum(value * sample_weight) / batch_size`, Keras's
    `"sum_over_batch_size"`; scalars (batch-level losses such as LP) pass
    through unchanged.
    """
    value = tf.cast(value, tf.float32)
    if value.shape.rank == 0:
        return value
    if value.shape.rank > 1:
        value = tf.reduce_mean(value, axis=list(range(1, value.shape.rank)))
    if sample_weight is not None:
        sample_weight = tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        value = value * sample_weight
    count = tf.cast(tf.shape(value)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(value), count)

