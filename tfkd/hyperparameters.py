"""Hyperparameters as live state: non-trainable variables behind attributes.

A distiller's weights and temperatures are read by its traced training
step. Stored as Python floats they would be baked into the trace, and a
later assignment (`distiller.temperature = 1.0` after `fit`) would be
silently ignored. `Hyperparameter` stores each one in a scalar, float32,
non-trainable variable owned by the layer or model (so it is saved and
restored with the weights) and checks every assignment:

- read eagerly, the attribute is a Python float;
- read inside a traced function (the training step), it is the variable's
  current value, so an assignment takes effect at the next step without
  recompiling;
- an out-of-range assignment raises exactly as the constructor does.

`tfkd.callbacks.HyperparameterScheduler` assigns them per epoch or step.
"""

import math
import numbers

import numpy as np
import tensorflow as tf


def as_number(value, name):
    """Returns `value` as a Python float, or raises a `TypeError`.

    Accepts Python and NumPy numbers, 0-d arrays and 0-d tensors; refuses
    booleans and strings, which are never a weight.
    """
    if isinstance(value, (bool, np.bool_)) or isinstance(value, str):
        raise TypeError(
            f"`{name}` must be a number. Received: {name}={value!r} of type "
            f"{type(value).__name__}."
        )
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, tf.Tensor, tf.Variable)) or hasattr(
        value, "numpy"
    ):
        array = np.asarray(value)
        if array.shape == () and np.issubdtype(array.dtype, np.number) and (
            array.dtype != np.bool_
        ):
            return float(array)
    raise TypeError(
        f"`{name}` must be a number. Received: {name}={value!r} of type "
        f"{type(value).__name__}."
    )


def unit_interval(value, name):
    """A number in `[0, 1]`."""
    value = as_number(value, name)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1]. Received: {name}={value}."
        )
    return value


def non_negative(value, name):
    """A finite number `>= 0`."""
    value = as_number(value, name)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{name}` must be a finite number >= 0. Received: "
            f"{name}={value}."
        )
    return value


def positive(value, name):
    """A finite number `> 0`."""
    value = as_number(value, name)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"`{name}` must be a finite number > 0. Received: {name}={value}."
        )
    return value


def any_finite(value, name):
    """Any finite number."""
    value = as_number(value, name)
    if not math.isfinite(value):
        raise ValueError(
            f"`{name}` must be a finite number. Received: {name}={value}."
        )
    return value


def to_python(value):
    """A float32 value as the Python float it was set from (`0.3`, not
    `0.30000001192092896`): NumPy's shortest repr of the float32."""
    return float(str(np.float32(np.asarray(value))))


class Hyperparameter:
    """A float attribute of a Keras layer or model, stored in a variable.

    Declare it in the class body with the check its values must pass, then
    assign it in `__init__` (after `super().__init__`) like any attribute:
    the first assignment creates the variable, later ones assign it.

    Args:
        check: `check(value, name) -> float`, raising on a bad value (e.g.
            `tfkd.hyperparameters.positive`).
        doc: One line describing the hyperparameter.
        name: Name of the variable and in error messages (default: the
            attribute's name).

    Example:

    >>> import keras
    >>> class Softener(keras.layers.Layer):
    ...     temperature = Hyperparameter(positive, doc="Softening.")
    ...     def __init__(self, temperature=4.0, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.temperature = temperature
    >>> layer = Softener()
    >>> layer.temperature = 2.0
    >>> layer.temperature
    2.0
    >>> len(layer.non_trainable_weights)
    1
    """

    def __init__(self, check, *, doc="", name=None):
        self.check = check
        self.__doc__ = doc
        self.name = name

    def __set_name__(self, owner, name):
        self.name = self.name or name
        self.slot = f"_hyperparameter_{name}"

    def variable(self, obj):
        """The variable behind the attribute on `obj` (or `None`)."""
        return obj.__dict__.get(self.slot)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        variable = self.variable(obj)
        if variable is None:
            raise AttributeError(
                f"Hyperparameter {self.name!r} of {type(obj).__name__} is "
                f"not set yet."
            )
        if tf.inside_function():
            # The traced step reads the variable, so later assignments
            # take effect without retracing.
            return tf.cast(tf.convert_to_tensor(variable.value), tf.float32)
        return to_python(variable.numpy())

    def __set__(self, obj, value):
        value = self.check(value, self.name)
        variable = self.variable(obj)
        if variable is None:
            variable = obj.add_weight(
                name=self.name, shape=(), dtype="float32",
                initializer=_Constant(value), trainable=False,
            )
            # A tracked attribute, so `tf.train.Checkpoint` saves it too
            # (Keras already tracks it; it does not add it twice).
            setattr(obj, self.slot, variable)
        else:
            variable.assign(value)


class _Constant:
    """Initializer of a scalar hyperparameter (picklable, no config)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        return tf.constant(self.value, dtype=dtype or "float32", shape=shape)


def hyperparameter_names(obj):
    """Public `Hyperparameter` attributes set on `obj`, base classes first."""
    names = []
    for cls in reversed(type(obj).__mro__):
        for name, value in vars(cls).items():
            if (isinstance(value, Hyperparameter) and name not in names
                    and not name.startswith("_")):
                names.append(name)
    return [n for n in names
            if getattr(type(obj), n).variable(obj) is not None]
