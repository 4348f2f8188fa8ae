"""Search spaces of the distillation methods, as plain data.

Each method publishes the hyperparameters worth tuning and the ranges its
paper reports or recommends. An entry maps a hyperparameter name -- always
the distiller's constructor argument of the same name -- to a spec in the
style of Keras Tuner's `HyperParameter` configs:

- `{"type": "float", "min_value": 1.0, "max_value": 10.0,
  "sampling": "linear" | "log" | "reverse_log", "step": None, "default": 4.0}`
- `{"type": "int", "min_value": 1, "max_value": 10, "step": 1, ...}`
- `{"type": "choice", "values": [...], "default": ...}`
- `{"type": "boolean", "default": False}`

Shorthands accepted wherever a spec is: `(low, high)` or
`(low, high, "log")` for a range (int if both bounds are ints, else float),
a list for a choice, or a `keras_tuner.engine.hyperparameters` object
(`Float`, `Int`, `Choice`, `Boolean`).

Each method's space is published by its knowledge term
(`tfkd.terms.Method.search_space`) and read here: a new method's term
declares it once. `register_search_space` overrides one for a user's own
method; `DistillerHyperModel` does the rest.
"""

import collections.abc
import copy
import math
import numbers

#: Hyperparameters every method shares: the optimizer's learning rate and,
#: when the student builder accepts it, the student's width multiplier.
#: Adam's useful range for these small students starts at 1e-3: at 1e-4 a
#: trial of tens of epochs ends near chance (a wasted trial).
COMMON_SEARCH_SPACE = {
    "learning_rate": {"type": "float", "min_value": 1e-3, "max_value": 1e-2,
                      "sampling": "log", "default": 3e-3},
    # Half width (462 parameters on the digits) trains far below the
    # others in a trial's budget; pass --space width_multiplier=0.5,1 to
    # search it.
    "width_multiplier": {"type": "choice", "values": [1.0, 1.5, 2.0],
                         "default": 1.0},
}


#: Search spaces registered by users (`register_search_space`); they take
#: precedence over the ones the methods' terms publish.
_REGISTERED = {}
_REGISTERED_LIMITS = {}


class _Spaces(collections.abc.Mapping):
    """`{method: search space}`: each method's space as its term publishes
    it (`tfkd.terms.Method.search_space`), plus registered ones."""

    def _names(self):
        from tfkd.distillers import registry

        return list(dict.fromkeys(registry.method_names() + list(_REGISTERED)))

    def __getitem__(self, method):
        if method in _REGISTERED:
            return copy.deepcopy(_REGISTERED[method])
        from tfkd.distillers import registry

        if method not in registry.method_names():
            raise KeyError(method)
        spec = registry.get(method)
        defaults = spec.arguments()
        space = {}
        for name, entry in spec.search_space.items():
            entry = dict(entry)
            default = defaults.get(name)
            # The constructor's default is the space's default: one source.
            if "default" not in entry and isinstance(default, (int, float)) \
                    and not isinstance(default, bool):
                entry["default"] = default
            space[name] = entry
        return space

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())


#: Per-method search spaces with the papers' ranges (default = the
#: constructor's default), derived from the terms.
DEFAULT_SEARCH_SPACES = _Spaces()

#: Valid values of each hyperparameter: `min`/`max` are inclusive bounds,
#: `above` an exclusive lower bound, `integer` requires ints. A method's
#: own hyperparameters (`tfkd.hyperparameters.Hyperparameter` attributes of
#: its distiller) are checked by their own check instead.
LIMITS = {
    "alpha": {"min": 0.0, "max": 1.0},
    "beta": {"min": 0.0},
    "gamma": {"min": 0.0},
    "lam": {"min": 0.0},
    "kd_weight": {"min": 0.0},
    "weight": {"min": 0.0},
    "student_loss_weight": {"min": 0.0, "max": 1.0},
    "temperature": {"above": 0.0},
    "k": {"min": 1, "integer": True},
    "learning_rate": {"above": 0.0},
    "width_multiplier": {"above": 0.0},
}


def _limits_of_check(check):
    from tfkd import hyperparameters as hp

    return {
        hp.unit_interval: {"min": 0.0, "max": 1.0},
        hp.non_negative: {"min": 0.0},
        hp.positive: {"above": 0.0},
    }.get(check)


_TYPES = ("float", "int", "choice", "boolean", "fixed")
_SAMPLINGS = ("linear", "log", "reverse_log")
_KEYS = {
    "float": {"type", "min_value", "max_value", "step", "sampling", "default"},
    "int": {"type", "min_value", "max_value", "step", "sampling", "default"},
    "choice": {"type", "values", "ordered", "default"},
    "boolean": {"type", "default"},
    "fixed": {"type", "value"},
}


def register_search_space(method, space, limits=None):
    """Publishes (or replaces) the default search space of a method.

    Args:
        method: The method name, as in `tfkd.distillers.registry`.
        space: Dict of hyperparameter name to spec (see the module doc).
        limits: Optional dict of method-specific limits (see `LIMITS`).

    Example:

    >>> register_search_space("my_kd", {"temperature": (1.0, 10.0)})
    >>> default_search_space("my_kd")["temperature"]["type"]
    'float'
    """
    if not isinstance(method, str) or not method:
        raise ValueError(
            "`method` must be a non-empty string. Received: "
            f"method={method!r}."
        )
    if not isinstance(space, dict):
        raise TypeError(
            "`space` must be a dict of hyperparameter name to spec. "
            f"Received: space={space!r} of type {type(space).__name__}."
        )
    _REGISTERED[method] = {
        name: normalize_spec(name, spec, method=method)
        for name, spec in space.items()
    }
    if limits:
        _REGISTERED_LIMITS[method] = dict(limits)


def default_search_space(method):
    """A copy of `method`'s published search space (`{}` if it has none).

    Args:
        method: A method name.

    Returns:
        A dict of hyperparameter name to normalised spec.

    Example:

    >>> sorted(default_search_space("kd"))
    ['alpha', 'temperature']
    """
    space = DEFAULT_SEARCH_SPACES[method] if method in \
        DEFAULT_SEARCH_SPACES else {}
    return {
        name: normalize_spec(name, spec, method=method)
        for name, spec in space.items()
    }


def limits_for(name, method=None):
    """The limits of hyperparameter `name` for `method` (`{}` if none).

    A registered method's limits come first; then, when `name` is a
    `tfkd.hyperparameters.Hyperparameter` of the method's distiller, the
    limits its check enforces (KTAN's `alpha` is any weight >= 0, STC's is
    in [0, 1]); else the generic `LIMITS`.
    """
    registered = _REGISTERED_LIMITS.get(method, {})
    if name in registered:
        return registered[name]
    if method is not None and method not in _REGISTERED:
        from tfkd import hyperparameters as hp
        from tfkd.distillers import registry

        if method in registry.method_names():
            spec = registry.get(method)
            # A preset's own hyperparameters, or an engine-built method's
            # term's.
            owner = spec.load() if spec.preset else spec.term
            attribute = getattr(owner, name, None)
            if isinstance(attribute, hp.Hyperparameter):
                limits = _limits_of_check(attribute.check)
                if limits is not None:
                    return limits
    return LIMITS.get(name, {})


def _where(name, method):
    return f"'{name}'" + (f" of method {method!r}" if method else "")


def _bad(name, method, spec, problem, fix):
    return ValueError(
        f"Bad search-space entry {_where(name, method)}: {problem}. "
        f"Received: {name}={spec!r}. {fix}"
    )


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _from_keras_tuner(spec):
    """Converts a `keras_tuner` `HyperParameter` object to a spec dict."""
    config = dict(spec.get_config())
    for key in ("name", "conditions"):
        config.pop(key, None)
    kind = type(spec).__name__.lower()
    config["type"] = kind
    if kind == "fixed":
        config = {"type": "fixed", "value": config.get("value")}
    return {k: v for k, v in config.items() if v is not None}


def normalize_spec(name, spec, method=None, like=None):
    """Checks one search-space entry and returns it as a canonical dict.

    Args:
        name: The hyperparameter's name (a constructor argument).
        spec: A spec dict, a `(low, high[, sampling])` tuple, a list of
            choices, or a `keras_tuner` `HyperParameter` object.
        method: The method it belongs to, for limits and messages.
        like: Optional normalised spec this one replaces; a shorthand
            (tuple or list) of ints for a float hyperparameter becomes
            floats, so `(1, 8)` for `temperature` is a float range.

    Returns:
        A new dict with `"type"` and the keys of that type.

    Raises:
        ValueError: For an unknown type or key, an empty or inverted range,
            values outside the hyperparameter's limits, or a wrong value
            type.

    Example:

    >>> normalize_spec("temperature", (1.0, 10.0))["max_value"]
    10.0
    >>> normalize_spec("k", [3, 5])["values"]
    [3, 5]
    """
    original = spec
    if hasattr(spec, "get_config") and hasattr(spec, "random_sample"):
        spec = _from_keras_tuner(spec)
    as_float = like is not None and (
        like.get("type") == "float"
        or (like.get("type") == "choice"
            and all(isinstance(v, float) for v in like.get("values", [])))
    )
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3):
            raise _bad(name, method, original, "a range tuple has two or "
                       "three items", "Write (low, high) or (low, high, "
                       "'log').")
        low, high = spec[0], spec[1]
        kind = "int" if _is_int(low) and _is_int(high) else "float"
        if as_float and kind == "int":
            kind = "float"
        spec = {"type": kind, "min_value": low, "max_value": high}
        if len(original) == 3:
            spec["sampling"] = original[2]
    elif isinstance(spec, list):
        values = list(spec)
        if as_float and all(_is_int(v) for v in values):
            values = [float(v) for v in values]
        spec = {"type": "choice", "values": values}
    if not isinstance(spec, dict):
        raise _bad(
            name, method, original,
            f"a spec must be a dict, a (low, high) tuple or a list of "
            f"choices, not {type(original).__name__}",
            f"To fix a value instead of searching it, pass it in `fixed=` "
            f"(e.g. fixed={{'{name}': {original!r}}}).",
        )
    spec = copy.deepcopy(spec)
    kind = spec.get("type")
    if isinstance(kind, str):
        kind = kind.lower()
    if kind not in _TYPES:
        raise _bad(name, method, original, f"unknown type {kind!r}",
                   f"Use one of {list(_TYPES)}.")
    spec["type"] = kind
    unknown = sorted(set(spec) - _KEYS[kind])
    if unknown:
        raise _bad(name, method, original,
                   f"unknown keys {unknown} for type {kind!r}",
                   f"Allowed keys: {sorted(_KEYS[kind])}.")
    if kind in ("float", "int"):
        _check_range(name, method, spec, original)
    elif kind == "choice":
        _check_choice(name, method, spec, original)
    elif kind == "boolean":
        if not isinstance(spec.get("default", False), bool):
            raise _bad(name, method, original, "a boolean default must be "
                       "True or False", "Fix `default`.")
    else:
        if "value" not in spec:
            raise _bad(name, method, original, "a fixed entry needs "
                       "`value`", "Add it, or use `fixed=`.")
        _check_limits(name, method, spec["value"], original)
    return spec


def _check_range(name, method, spec, original):
    kind = spec["type"]
    for key in ("min_value", "max_value"):
        if key not in spec:
            raise _bad(name, method, original, f"a {kind} range needs "
                       f"`{key}`", "Give both `min_value` and `max_value`.")
        value = spec[key]
        if kind == "int" and not _is_int(value):
            raise _bad(name, method, original, f"`{key}` of an int range "
                       f"must be an int, got {value!r}",
                       "Use ints, or type 'float'.")
        if kind == "float" and not _is_number(value):
            raise _bad(name, method, original, f"`{key}` must be a number, "
                       f"got {value!r} of type {type(value).__name__}",
                       "Use numbers.")
        if not math.isfinite(value):
            raise _bad(name, method, original, f"`{key}` must be finite",
                       "Use finite bounds.")
    if kind == "float":
        spec["min_value"] = float(spec["min_value"])
        spec["max_value"] = float(spec["max_value"])
    low, high = spec["min_value"], spec["max_value"]
    if low > high:
        raise _bad(name, method, original,
                   f"the range is inverted (min_value={low} > "
                   f"max_value={high})", "Swap the bounds.")
    if low == high:
        raise _bad(name, method, original,
                   f"the range is empty (min_value == max_value == {low})",
                   f"To use one value, pass fixed={{'{name}': {low!r}}}.")
    sampling = spec.setdefault("sampling", "linear")
    if isinstance(sampling, str):
        sampling = spec["sampling"] = sampling.lower()
    if sampling not in _SAMPLINGS:
        raise _bad(name, method, original, f"unknown sampling {sampling!r}",
                   f"Use one of {list(_SAMPLINGS)}.")
    if sampling != "linear" and low <= 0:
        raise _bad(name, method, original,
                   f"{sampling} sampling needs min_value > 0 (got {low})",
                   "Raise min_value or use linear sampling.")
    step = spec.get("step")
    if step is not None and (not _is_number(step) or step <= 0
                             or (kind == "int" and not _is_int(step))):
        raise _bad(name, method, original, f"`step` must be a positive "
                   f"{'int' if kind == 'int' else 'number'}, got {step!r}",
                   "Fix `step` or drop it.")
    if spec.get("default") is not None:
        default = spec["default"]
        if not _is_number(default) or not low <= default <= high:
            raise _bad(name, method, original, f"default {default!r} is not "
                       f"in [{low}, {high}]", "Move the default into range.")
    _check_limits(name, method, low, original)
    _check_limits(name, method, high, original)


def _check_choice(name, method, spec, original):
    values = spec.get("values")
    if not isinstance(values, (list, tuple)) or not values:
        raise _bad(name, method, original, "a choice needs a non-empty list "
                   "of `values`", "List at least one value.")
    # NumPy scalars -> Python; mixed ints and floats -> floats.
    values = [int(v) if _is_int(v) else float(v) if _is_number(v) else v
              for v in values]
    kinds = {type(v) for v in values}
    if kinds == {int, float}:
        values = [float(v) for v in values]
        kinds = {float}
    if len(kinds) != 1 or not kinds <= {int, float, str, bool}:
        raise _bad(name, method, original,
                   "choice values must all be of one type among int, float, "
                   f"str and bool; got {sorted(k.__name__ for k in kinds)}",
                   "Make the values one type.")
    if len(set(values)) != len(values):
        raise _bad(name, method, original, "choice values repeat",
                   "List each value once.")
    for value in values:
        _check_limits(name, method, value, original)
    spec["values"] = values
    if "default" in spec and spec["default"] is not None:
        if spec["default"] not in values:
            raise _bad(name, method, original, f"default {spec['default']!r} "
                       "is not one of the values", "Pick a listed default.")


def _limit_problem(name, method, value):
    """Why `value` is not a valid `name` (with the fix), or `None`."""
    limits = limits_for(name, method)
    if not limits:
        return None
    if not _is_number(value):
        return f"{name} takes a number, got {value!r}", "Use numbers."
    if limits.get("integer") and not _is_int(value):
        return (f"{name} takes ints, got {value!r}",
                "Use ints (type 'int' or integer choices).")
    if "min" in limits and value < limits["min"]:
        return (f"{value} is below the smallest valid {name}, "
                f"{limits['min']}", "Raise it.")
    if "max" in limits and value > limits["max"]:
        return (f"{value} is above the largest valid {name}, "
                f"{limits['max']}", "Lower it.")
    if "above" in limits and value <= limits["above"]:
        return f"{name} must be > {limits['above']}, got {value}", "Raise it."
    return None


def _check_limits(name, method, value, original):
    problem = _limit_problem(name, method, value)
    if problem:
        raise _bad(name, method, original, *problem)


def check_fixed_value(name, value, method=None):
    """Checks a `fixed=` value against the hyperparameter's limits.

    Args:
        name: Hyperparameter name.
        value: The fixed value.
        method: The method it is fixed for.

    Returns:
        `value`.

    Raises:
        ValueError: If `value` is outside the valid values of `name`.
    """
    problem = _limit_problem(name, method, value)
    if problem:
        raise ValueError(
            f"Bad fixed value {_where(name, method)}: {problem[0]}. "
            f"Received: fixed={{'{name}': {value!r}}}. {problem[1]}"
        )
    return value


def declare(hp, name, spec, parent_name=None, parent_values=None):
    """Declares `spec` on a `keras_tuner.HyperParameters`; returns its value.

    Args:
        hp: The `HyperParameters` of the trial.
        name: Hyperparameter name.
        spec: A normalised spec (see `normalize_spec`).
        parent_name: Optional conditional parent (e.g. `"method"`).
        parent_values: Values of the parent that activate this one.

    Returns:
        The hyperparameter's value in this trial (`None` if inactive).
    """
    condition = {"parent_name": parent_name, "parent_values": parent_values}
    kind = spec["type"]
    if kind == "float":
        return hp.Float(name, spec["min_value"], spec["max_value"],
                        step=spec.get("step"), sampling=spec["sampling"],
                        default=spec.get("default"), **condition)
    if kind == "int":
        return hp.Int(name, spec["min_value"], spec["max_value"],
                      step=spec.get("step") or 1, sampling=spec["sampling"],
                      default=spec.get("default"), **condition)
    if kind == "choice":
        return hp.Choice(name, spec["values"],
                         ordered=spec.get("ordered"),
                         default=spec.get("default"), **condition)
    if kind == "boolean":
        return hp.Boolean(name, default=spec.get("default", False),
                          **condition)
    return hp.Fixed(name, spec["value"], **condition)
