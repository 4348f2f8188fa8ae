"""Hyperparameters as live state: non-trainable variables behind attributes.

A distiller's weights and temperatures are read by its traced training
step. Stored as Python floats they would be baked into the trace, and a
later assignment (`distiller.temperature = 1.0` after `fit`) would be
silently ignored. `Hyperparameter` stores each one in a scalar, float32,
non-trainable variable owned by the layer or model (so it is saved and
restored with the weights) and checks every assignment:

- read eagerly, the attribute is a Python float;
- read inside a traced function or a distiller's step (also one run
  eagerly, see `in_step`), it is the variable's current value as a
  float32 tensor, so an assignment takes effect at the next step without
  recompiling, and an eager step computes what the traced one does;
- an out-of-range assignment raises exactly as the constructor does.

`tfkd.callbacks.HyperparameterScheduler` assigns them per epoch or step.
"""

import math
import numbers
import threading

import keras
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


#: `in_step.active`: whether a distiller's step is running in this thread
#: (`tf.distribute` replicas run it in threads of their own). The step
#: reads hyperparameters as their variables' values (float32 tensors),
#: also when it runs eagerly (`run_eagerly=True`), as a traced step does.
in_step = threading.local()


def live():
    """Whether hyperparameters read as tensors here (inside a traced
    function, or a distiller's step, see `in_step`)."""
    return tf.inside_function() or getattr(in_step, "active", False)


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
        variable = obj.__dict__.get(self.slot)
        if variable is None:
            raise AttributeError(
                f"Hyperparameter {self.name!r} of {type(obj).__name__} is "
                f"not set yet."
            )
        if tf.inside_function() or getattr(in_step, "active", False):
            # The step reads the variable, so later assignments take
            # effect without retracing.
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


class DistillerHyperparameters:
    """The live hyperparameters of `tfkd.Distiller` (a mixin): the loss
    weights as variables, Hinton KD's `alpha` / `temperature`, a preset's
    paper symbols, and `hyperparameters` / `set_hyperparameter` /
    `get_hyperparameter` over all of them and the terms' own."""

    def _set_up_term_weights(self, weights):
        count = len(self._terms)
        if weights is None:
            weights = [1.0] * count
        if not isinstance(weights, (list, tuple)) or len(weights) != count:
            raise ValueError(
                "`distillation_loss_weights` must be a list with one weight "
                f"per term ({count}: {self._term_names}). Received: "
                f"distillation_loss_weights={weights!r}."
            )
        variables = []
        for i, (name, weight) in enumerate(zip(self._term_names, weights)):
            value = non_negative(weight, f"distillation_loss_weights"
                                            f"[{name!r}]")
            variable = self.add_weight(
                name=f"{name}_weight", shape=(), dtype="float32",
                initializer=keras.initializers.Constant(value),
                trainable=False,
            )
            # A tracked attribute, for TensorFlow checkpoints (see above).
            setattr(self, f"_term_weight_{i}", variable)
            variables.append(variable)
        object.__setattr__(self, "_term_weight_variables", variables)

    def paper_weights(self):
        """A preset's objective as `(a, [b_i], s)`, or `None`.

        Presets state their paper's objective `a · L_student + Σ_i b_i L_i`
        and a normalisation `s >= a`; the engine then uses
        `w_s = a / s` and `w_i = b_i / (s − a)`, i.e. the total is the
        paper's objective divided by `s`. The engine itself returns `None`
        (weights are its own variables).
        """
        return None

    def loss_weights(self):
        """`(w_s, [w_i])` used by the next step (tensors inside a step)."""
        paper = self.paper_weights()
        if paper is None:
            tensors = tf.inside_function() or getattr(in_step, "active", False)
            weights = []
            for variable in self._term_weight_variables:
                weights.append(
                    tf.cast(tf.convert_to_tensor(variable.value), tf.float32)
                    if tensors else to_python(variable.numpy()))
            return self._student_loss_weight, weights
        a, b, s = paper
        denominator = s - a
        if isinstance(denominator, (int, float)) and not isinstance(
            a, tf.Tensor
        ):
            weights = [0.0 if denominator == 0 else bi / denominator
                       for bi in b]
        else:
            weights = [tf.math.divide_no_nan(tf.cast(bi, tf.float32),
                                             tf.cast(denominator, tf.float32))
                       for bi in b]
        return a / s, weights

    def _derived(self, what):
        return ValueError(
            f"{type(self).__name__} derives `{what}` from its paper's "
            f"hyperparameters ({', '.join(self._own_hyperparameters())}); "
            "assign those instead, or build `tfkd.Distiller(teacher, "
            "student, distillation_losses=[...])` to set the weights "
            "directly."
        )

    def _own_hyperparameters(self):
        return hyperparameter_names(self)

    @property
    def student_loss_weight(self):
        """Weight `w_s` of the student loss (a float; live, assignable)."""
        value = self.loss_weights()[0]
        return value if live() else float(value)

    @student_loss_weight.setter
    def student_loss_weight(self, value):
        if self.paper_weights() is not None:
            raise self._derived("student_loss_weight")
        self._student_loss_weight = value

    @property
    def distillation_loss_weights(self):
        """The terms' weights `w_i` (floats; assign a list to change them)."""
        weights = self.loss_weights()[1]
        if live():
            return weights
        return [float(w) for w in weights]

    @distillation_loss_weights.setter
    def distillation_loss_weights(self, values):
        if self.paper_weights() is not None:
            raise self._derived("distillation_loss_weights")
        if not isinstance(values, (list, tuple)) or len(values) != len(
            self._terms
        ):
            raise ValueError(
                "`distillation_loss_weights` must be a list with one weight "
                f"per term ({len(self._terms)}: {self._term_names}). "
                f"Received: {values!r}."
            )
        checked = [non_negative(v, f"distillation_loss_weights[{n!r}]")
                   for v, n in zip(values, self._term_names)]
        for variable, value in zip(self._term_weight_variables, checked):
            variable.assign(value)

    @property
    def alpha(self):
        """Hinton KD: weight of the cross entropy (`student_loss_weight`)."""
        if not self._hinton:
            raise AttributeError(
                "`alpha` is Hinton KD's name for `student_loss_weight`; this "
                "distiller was built with `distillation_losses`. Use "
                "`student_loss_weight`."
            )
        return self.student_loss_weight

    @alpha.setter
    def alpha(self, value):
        if not self._hinton:
            raise AttributeError(
                "`alpha` is Hinton KD's name for `student_loss_weight`; this "
                "distiller was built with `distillation_losses`. Use "
                "`student_loss_weight`."
            )
        self._student_loss_weight = unit_interval(value, "alpha")

    @property
    def temperature(self):
        """Hinton KD: the KD term's temperature (live, assignable)."""
        if not self._hinton:
            raise AttributeError(
                "`temperature` belongs to a term in this distiller: use "
                "`distiller.term(name).temperature` or "
                "`set_hyperparameter('<term>/temperature', value)`."
            )
        return self._terms[0].temperature

    @temperature.setter
    def temperature(self, value):
        if not self._hinton:
            raise AttributeError(
                "`temperature` belongs to a term in this distiller: use "
                "`distiller.term(name).temperature = value`."
            )
        self._terms[0].temperature = value

    @property
    def hyperparameters(self):
        """`{path: value}` of every live hyperparameter.

        Paths are the distiller's own (`student_loss_weight`, or a preset's
        paper symbols such as `alpha`, `beta`), `<term>/weight` for each
        term's weight, and `<term>/<name>` for a term's own (e.g.
        `kd/temperature`). `set_hyperparameter(path, value)` assigns one;
        so does `tfkd.callbacks.HyperparameterScheduler`.
        """
        values = {}
        if self.paper_weights() is None:
            values["student_loss_weight"] = self.student_loss_weight
            for name, w in zip(self._term_names,
                               self.distillation_loss_weights):
                values[f"{name}/weight"] = w
        for name in self._own_hyperparameters():
            values[name] = getattr(self, name)
        for name, term in zip(self._term_names, self._terms):
            if not hasattr(term, "sync"):  # tfkd's own term
                for attr in hyperparameter_names(term):
                    values[f"{name}/{attr}"] = getattr(term, attr)
            elif hasattr(term, "_temperature"):
                values[f"{name}/temperature"] = term.temperature
        return values

    def _sync_terms(self):
        """Takes in the temperatures assigned to Keras terms (see
        `_KerasTerm.sync`)."""
        for term in self._keras_terms:
            term.sync()

    def _aliases(self):
        """Names a preset or Hinton KD accepts besides `hyperparameters`."""
        return ("alpha", "temperature") if self._hinton else ()

    def set_hyperparameter(self, path, value):
        """Assigns a live hyperparameter; the next step uses it.

        Args:
            path: A key of `hyperparameters` (e.g. `"kd/temperature"`,
                `"student_loss_weight"`, `"beta"`) or a preset alias
                (`"temperature"`).
            value: The new value; checked like the constructor's argument.

        Example:

        >>> import tfkd
        >>> from tfkd import testing
        >>> d = tfkd.Distiller(testing.tiny_conv_model("t"),
        ...                    testing.tiny_conv_model("s"))
        >>> d.set_hyperparameter("kd/temperature", 2.0)
        >>> d.hyperparameters["kd/temperature"]
        2.0
        """
        known = list(self.hyperparameters) + list(self._aliases())
        if not isinstance(path, str) or path not in known:
            raise ValueError(
                f"Unknown hyperparameter. Received: path={path!r}. This "
                f"distiller's live hyperparameters: {known}."
            )
        if "/" in path:
            name, attr = path.split("/", 1)
            if attr == "weight":
                weights = self.distillation_loss_weights
                weights[self._term_names.index(name)] = value
                self.distillation_loss_weights = weights
            else:
                setattr(self._terms[self._term_names.index(name)], attr,
                        value)
        else:
            setattr(self, path, value)

    def get_hyperparameter(self, path):
        """The current value of a live hyperparameter (see
        `hyperparameters`; aliases accepted)."""
        if path in self._aliases():
            return getattr(self, path)
        values = self.hyperparameters
        if path not in values:
            raise ValueError(
                f"Unknown hyperparameter. Received: path={path!r}. This "
                f"distiller's live hyperparameters: "
                f"{list(values) + list(self._aliases())}."
            )
        return values[path]

    def weight_hint(self, term_name):
        """How to shrink term `term_name`'s share of the loss (quoted in the
        first-step scale warning)."""
        return (f"lower `{term_name}/weight` (or raise "
                "`student_loss_weight`)")

    def scale_report(self, logs):
        """The first-step check: warns when a term's weighted contribution
        to the loss exceeds the student loss's by more than 100×.

        Args:
            logs: The metrics of the first training batch.

        Returns:
            The warning message, or `None`.
        """
        if "student_loss" not in logs:
            return None
        w_s, weights = self.loss_weights()
        w_s = float(w_s)
        student = w_s * float(logs["student_loss"])
        if student <= 0:
            return None
        for name, w in zip(self._term_names, weights):
            value = logs.get(f"{name}_loss")
            if value is None:
                continue
            contribution = (1.0 - w_s) * float(w) * float(value)
            if contribution > 100.0 * student:
                return (
                    f"At the first step the term `{name}_loss` adds "
                    f"{contribution:.4g} to the loss (value {float(value):.4g}"
                    f" × weight {(1.0 - w_s) * float(w):.4g}), "
                    f"{contribution / student:.0f}× the student loss's "
                    f"{student:.4g} (value {float(logs['student_loss']):.4g}"
                    f" × weight {w_s:.4g}). The student may learn the term "
                    "and ignore the labels, or collapse its features: "
                    f"{self.weight_hint(name)}."
                )
        return None
