"""`DistillerHyperModel`: Keras Tuner searches over tfkd distillers.

The hypermodel builds and compiles any registered distiller with
hyperparameters drawn from the method's published search space
(`tfkd.tuning.spaces`), optionally choosing among several methods and the
student's width. The teacher is built or loaded once and shared by every
trial; it is never retrained and never written to the tuner's directory.

Student-only checkpoints: Keras Tuner saves and restores a trial's weights
through three calls on the built model -- `SaveBestEpoch` calls
`model.save_weights` at the best epoch, `Tuner.load_model` (behind
`get_best_models`) and Hyperband's continuation of a trial call
`model.load_weights`. The distillers built here have
`checkpoint_student_only` set, so those two methods write and read
`distiller.student` alone (see `student_checkpoints`), and every Keras
Tuner tuner (`RandomSearch`,
`BayesianOptimization`, `Hyperband`, chief/worker distributed tuning) keeps
student-only checkpoints without a custom tuner class.
"""

import functools
import inspect
import json
import os
import warnings

import keras
import keras_tuner as kt

from tfkd.distillers import registry
from tfkd.tuning import spaces



# ----------------------------------------------------------------------
# Students.


def scaled_digits_student(width_multiplier=1.0, num_classes=10,
                          input_shape=(16, 16, 1)):
    """The digits student with its conv widths scaled by `width_multiplier`.

    `width_multiplier=1.0` is `tfkd.models.digits_student()` (8 and 16
    filters); layer names are the same at every width, so the feature layer
    `block2_relu` can be tapped at any width.

    Args:
        width_multiplier: Factor applied to the filters of each conv layer,
            `> 0` (each width is rounded, at least 1).
        num_classes: Number of output logits.
        input_shape: `(H, W, C)` of the images.

    Returns:
        A functional `keras.Model` outputting logits.

    Example:

    >>> model = scaled_digits_student(width_multiplier=2.0)
    >>> model.get_layer("block2_relu").output.shape
    (None, 8, 8, 32)
    """
    from tfkd.models import digits_student

    if isinstance(width_multiplier, bool) or not isinstance(
        width_multiplier, (int, float)
    ) or not width_multiplier > 0:
        raise ValueError(
            "`width_multiplier` must be a number > 0. Received: "
            f"width_multiplier={width_multiplier!r}."
        )
    widths = tuple(max(1, round(w * width_multiplier)) for w in (8, 16))
    return digits_student(num_classes, input_shape, widths=widths)


def _builder_kind(builder):
    """How to call a student builder: `"hp"`, `"width"` or `"plain"`."""
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return "plain"
    if "hp" in parameters:
        return "hp"
    if "width_multiplier" in parameters:
        return "width"
    return "plain"


# ----------------------------------------------------------------------
# Student-only checkpoints.


def student_checkpoints(distiller):
    """Makes `distiller.save_weights` / `load_weights` student-only.

    Keras Tuner checkpoints each trial with `model.save_weights` and
    restores it with `model.load_weights`; on a distiller those would carry
    the teacher's weights into every trial directory. With
    `checkpoint_student_only` set they carry `distiller.student` alone
    (the terms' adapters, regressors and discriminators are not saved
    either: a restored distiller is for reading its student).

    Args:
        distiller: A `tfkd.Distiller` (any method).

    Returns:
        The same distiller object.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = student_checkpoints(tfkd.Distiller(
    ...     testing.tiny_conv_model("t"), testing.tiny_conv_model("s")))
    >>> distiller.checkpoint_student_only
    True
    """
    if not hasattr(distiller, "checkpoint_student_only"):
        raise TypeError(
            "`distiller` must be a tfkd distiller with a `student`. "
            f"Received: distiller={distiller!r} of type "
            f"{type(distiller).__name__}."
        )
    distiller.checkpoint_student_only = True
    return distiller


# ----------------------------------------------------------------------
# Method arguments.


def method_arguments(method):
    """Constructor arguments of `method`'s distiller that can be tuned.

    Args:
        method: A registered method name.

    Returns:
        A sorted list of argument names (teacher/student and the layer taps
        excluded).

    Example:

    >>> method_arguments("kd")
    ['alpha', 'temperature']
    """
    return sorted(registry.get(method).arguments())


def _as_methods(method):
    if isinstance(method, str):
        methods = [method]
    elif isinstance(method, (list, tuple)) and all(
        isinstance(m, str) for m in method
    ):
        methods = list(method)
    else:
        raise TypeError(
            "`method` must be a method name or a list of names. Received: "
            f"method={method!r}. Choose from {registry.method_names()}."
        )
    if not methods:
        raise ValueError(
            "`method` must name at least one method. Received: method=[]. "
            f"Choose from {registry.method_names()}."
        )
    if len(set(methods)) != len(methods):
        raise ValueError(
            f"`method` lists a method twice. Received: method={methods!r}."
        )
    for name in methods:
        registry.get(name)  # Raises a clear ValueError for unknown names.
    return methods


def _check_mapping(value, name, what):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(
            f"`{name}` must be a dict of hyperparameter name to {what}. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    for key in value:
        if not isinstance(key, str):
            raise ValueError(
                f"`{name}` keys must be hyperparameter names (str). "
                f"Received key {key!r} in {name}={value!r}."
            )
    return dict(value)


def _make_optimizer(optimizer, learning_rate):
    """A fresh optimizer for one trial, with `learning_rate` if not None."""
    if isinstance(optimizer, type) and issubclass(
        optimizer, keras.optimizers.Optimizer
    ):
        if learning_rate is None:
            return optimizer()
        return optimizer(learning_rate=learning_rate)
    if isinstance(optimizer, (str, keras.optimizers.Optimizer)):
        template = keras.optimizers.get(optimizer)
        config = template.get_config()
        if learning_rate is not None:
            config["learning_rate"] = learning_rate
        return template.__class__.from_config(config)
    raise TypeError(
        "`optimizer` must be an optimizer name (e.g. 'adam'), a "
        "`keras.optimizers.Optimizer` instance or class. Received: "
        f"optimizer={optimizer!r} of type {type(optimizer).__name__}."
    )


# ----------------------------------------------------------------------
# The hypermodel.


class DistillerHyperModel(kt.HyperModel):
    """A Keras Tuner `HyperModel` that builds and compiles tfkd distillers.

    Each trial builds a fresh student, wraps it with the shared, frozen
    teacher in the method's distiller (`tfkd.distillers.registry`) and
    compiles it. Hyperparameters are drawn from each method's published
    search space (`tfkd.tuning.spaces.DEFAULT_SEARCH_SPACES`, the papers'
    ranges) plus `learning_rate` and, when the student builder accepts it,
    `width_multiplier`. Hyperparameter names equal the distiller's
    constructor argument names (`alpha`, `beta`, `temperature`, `gamma`, `k`,
    `lam`, ...). With several methods, `method` is a `Choice`, and each
    method's hyperparameters are conditional on it and prefixed with its
    name (`kd/temperature`, `lp/temperature`): Keras Tuner keeps one value
    per name, and methods share argument names with different ranges.
    `search_space` and `fixed` always take the plain argument names.

    Use it with any Keras Tuner tuner (`kt.RandomSearch`,
    `kt.BayesianOptimization`, `kt.Hyperband`) and a student validation
    metric as objective (`"val_accuracy"` with the default metrics). Trial
    checkpoints hold the student only (see `student_checkpoints`);
    `tfkd.tuning.best_student(tuner)` returns the best student, ready for
    `tfkd.export.to_tflite`.

    Args:
        teacher: The trained teacher `keras.Model`, or a path to a `.keras`
            file (loaded once). Shared by all trials, never retrained.
        student: The student: a `keras.Model` (cloned for every trial, each
            clone starting from its current weights), or a builder called
            once per trial as `student(hp)` if it takes an argument named
            `hp`, as `student(width_multiplier=...)` if it takes
            `width_multiplier` (then searched), else as `student()`.
        method: A method name (`"kd"`, `"lp"`, ...; see
            `tfkd.distillers.registry.method_names()`) or a list of names to
            choose among.
        feature_layers: `(teacher_layer, student_layer)` for methods that
            distil features, or a dict `{method: (teacher_layer,
            student_layer)}` when the methods tap different layers.
        search_space: Optional dict overriding entries of the default
            spaces: `{name: spec}` (see `tfkd.tuning.spaces` for the spec
            forms; applies to every listed method that takes `name`),
            `{name: None}` to stop searching `name` (the method's default
            applies), or `{method: {name: spec}}` for one method only.
        fixed: Optional dict of values to use instead of searching:
            `{name: value}` or `{method: {name: value}}`.
        optimizer: Optimizer name, instance (cloned per trial) or class;
            its learning rate is the `learning_rate` hyperparameter.
        metrics: Metrics compiled into each distiller (on the student's
            logits).
        decay_steps: Optional total training steps of a trial: the learning
            rate then decays from its drawn value to 0 along a cosine over
            those steps (`keras.optimizers.schedules.CosineDecay`, the
            demo's schedule), so a trial's last epochs are not a lottery.
            `None`: a constant learning rate.
        seed: Optional seed set before each trial builds its student, so
            builder-made students of equal width start alike.
        name: Optional name of the hypermodel.
        tunable: Whether new hyperparameters may be added (Keras Tuner).

    Example:

    >>> import keras_tuner as kt
    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> hypermodel = DistillerHyperModel(
    ...     teacher, testing.tiny_conv_model("student", width=4),
    ...     method="kd", fixed={"alpha": 0.3})
    >>> distiller = hypermodel.build(kt.HyperParameters())
    >>> distiller.alpha
    0.3

    Reference:
        O'Malley et al. "KerasTuner", 2019,
        https://github.com/keras-team/keras-tuner.
    """

    def __init__(self, teacher, student, *, method="kd", feature_layers=None,
                 search_space=None, fixed=None, optimizer="adam",
                 metrics=("accuracy",), seed=None, name=None, tunable=True,
                 decay_steps=None):
        super().__init__(name=name, tunable=tunable)
        self.teacher = self._load_teacher(teacher)
        if isinstance(student, keras.Model):
            self._student_kind = "model"
            self._student_template = student
            self._student_weights = student.get_weights()
        elif callable(student):
            self._student_kind = _builder_kind(student)
            self._student_template = student
        else:
            raise TypeError(
                "`student` must be a `keras.Model` or a callable that builds "
                f"one. Received: student={student!r} of type "
                f"{type(student).__name__}."
            )
        self.methods = _as_methods(method)
        self.feature_layers = self._check_feature_layers(feature_layers)
        _make_optimizer(optimizer, None)  # Fails early on a bad optimizer.
        self.optimizer = optimizer
        self.metrics = list(metrics or [])
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be None or an int. Received: "
                            f"seed={seed!r}.")
        self.seed = seed
        if decay_steps is not None and (
            isinstance(decay_steps, bool) or not isinstance(decay_steps, int)
            or decay_steps < 1
        ):
            raise ValueError(
                "`decay_steps` must be None or a positive int (the steps of "
                f"a trial). Received: decay_steps={decay_steps!r}."
            )
        self.decay_steps = decay_steps
        self._resolve(_check_mapping(search_space, "search_space", "spec"),
                      _check_mapping(fixed, "fixed", "value"))

    # ------------------------------------------------------------------
    # Construction.

    @staticmethod
    def _load_teacher(teacher):
        if isinstance(teacher, keras.Model):
            return teacher
        if isinstance(teacher, (str, os.PathLike)):
            path = os.fspath(teacher)
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"Teacher file not found. Received: teacher={path!r}. "
                    "Pass a saved `.keras` model or a `keras.Model`."
                )
            from tfkd import saving

            # tfkd.load names a damaged file (Keras calls a truncated
            # archive "not found").
            return saving.load(path, compile=False)
        raise TypeError(
            "`teacher` must be a `keras.Model` or a path to a `.keras` "
            f"file. Received: teacher={teacher!r} of type "
            f"{type(teacher).__name__}."
        )

    def _check_feature_layers(self, feature_layers):
        needing = [m for m in self.methods if registry.get(m).uses_features]
        if isinstance(feature_layers, dict):
            missing = [m for m in needing if m not in feature_layers]
            if missing:
                raise ValueError(
                    f"`feature_layers` has no (teacher_layer, student_layer) "
                    f"for method(s) {missing}, which distil features. "
                    f"Received: feature_layers={feature_layers!r}."
                )
            return {m: self._check_feature_layers(pair)
                    for m, pair in feature_layers.items()
                    if m in self.methods}
        if feature_layers is None:
            if needing:
                raise ValueError(
                    f"Method(s) {needing} distil intermediate features: "
                    "pass `feature_layers=(teacher_layer, student_layer)`. "
                    "Received: feature_layers=None."
                )
            return None
        if not (isinstance(feature_layers, (list, tuple))
                and len(feature_layers) == 2):
            raise ValueError(
                "`feature_layers` must be a pair (teacher_layer, "
                f"student_layer). Received: feature_layers={feature_layers!r}."
            )
        return tuple(feature_layers)

    def _common_names(self):
        names = ["learning_rate"]
        if self._student_kind == "width":
            names.append("width_multiplier")
        return names

    def _resolve(self, search_space, fixed):
        """Validates the user's entries and fixes each method's space."""
        arguments = {m: method_arguments(m) for m in self.methods}
        common = self._common_names()
        per_method_space = {
            m: _check_mapping(search_space.pop(m), f"search_space[{m!r}]",
                              "spec")
            for m in list(search_space) if m in self.methods
        }
        per_method_fixed = {
            m: _check_mapping(fixed.pop(m), f"fixed[{m!r}]", "value")
            for m in list(fixed) if m in self.methods
        }

        def check_name(name, where, methods):
            if name == "method":
                raise ValueError(
                    f"`{where}` cannot set 'method'; list the methods to "
                    f"choose among in `method=` instead. Received: "
                    f"{where}={{'method': ...}}."
                )
            if name in ("teacher_layer", "student_layer",
                        "teacher_layer_name", "student_layer_name"):
                raise ValueError(
                    f"`{where}` cannot set {name!r}; pass "
                    "`feature_layers=(teacher_layer_name, "
                    "student_layer_name)`."
                )
            if name == "width_multiplier" and name not in common:
                raise ValueError(
                    f"`{where}` sets 'width_multiplier', but the student is "
                    "not a builder taking `width_multiplier`. Pass a "
                    "builder such as `tfkd.tuning.scaled_digits_student`, or "
                    "drop the entry."
                )
            if name in common or any(name in arguments[m] for m in methods):
                return
            accepted = {m: arguments[m] for m in methods}
            raise ValueError(
                f"Unknown hyperparameter {name!r} in `{where}` for method(s) "
                f"{methods}. Received: {where} key {name!r}. Each method "
                f"takes {accepted}, plus {common}; names are the "
                "distiller's constructor arguments."
            )

        for name in search_space:
            check_name(name, "search_space", self.methods)
        for name in fixed:
            check_name(name, "fixed", self.methods)
        for m in self.methods:
            for name in per_method_space.get(m, {}):
                check_name(name, "search_space", [m])
            for name in per_method_fixed.get(m, {}):
                check_name(name, "fixed", [m])
        for m in [None] + self.methods:
            a = search_space if m is None else per_method_space.get(m, {})
            b = fixed if m is None else per_method_fixed.get(m, {})
            both = sorted(set(a) & set(b))
            if both:
                raise ValueError(
                    f"{both} appear in both `search_space` and `fixed`; "
                    "keep each name in one of them."
                )

        # The shared space: learning rate (and width).
        self.common_space = {}
        self.common_fixed = {}
        for name in common:
            spec = search_space.get(name, spaces.COMMON_SEARCH_SPACE[name])
            if name in fixed:
                self.common_fixed[name] = self._check_fixed(name,
                                                            fixed[name], None)
            elif spec is not None:
                self.common_space[name] = spaces.normalize_spec(
                    name, spec, like=spaces.normalize_spec(
                        name, spaces.COMMON_SEARCH_SPACE[name]))

        # Per-method spaces and fixed values.
        self.method_spaces, self.method_fixed = {}, {}
        for m in self.methods:
            space = {}
            for name, spec in spaces.default_search_space(m).items():
                if name not in arguments[m]:
                    warnings.warn(
                        f"The default search space of {m!r} names {name!r}, "
                        f"which its distiller does not take "
                        f"({arguments[m]}); it is not searched."
                    )
                    continue
                space[name] = spec
            overrides = {n: s for n, s in search_space.items()
                         if n in arguments[m]}
            overrides.update(per_method_space.get(m, {}))
            for name, spec in overrides.items():
                if spec is None:
                    space.pop(name, None)
                else:
                    space[name] = spaces.normalize_spec(
                        name, spec, method=m, like=space.get(name))
            values = {n: v for n, v in fixed.items() if n in arguments[m]}
            values.update(per_method_fixed.get(m, {}))
            for name in values:
                space.pop(name, None)
                values[name] = self._check_fixed(name, values[name], m)
            self.method_spaces[m] = space
            self.method_fixed[m] = values

    @staticmethod
    def _check_fixed(name, value, method):
        return spaces.check_fixed_value(name, value, method)

    def search_signature(self):
        """What a tuner directory searched with this hypermodel holds.

        The methods, the search space (shared and per method) and the fixed
        values, as plain JSON data. tfkd's tuners write it into their
        project directory and refuse to resume a directory whose signature
        differs (see `tfkd.tuning.build_tuner`).

        Returns:
            A dict with keys `methods`, `search_space` and `fixed`.

        Example:

        >>> from tfkd import testing
        >>> hypermodel = DistillerHyperModel(
        ...     testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        ...     fixed={"alpha": 0.3})
        >>> signature = hypermodel.search_signature()
        >>> signature["methods"], signature["fixed"]
        (['kd'], {'kd': {'alpha': 0.3}})
        """
        space = {"common": dict(self.common_space)}
        space.update(self.method_spaces)
        fixed = {m: v for m, v in self.method_fixed.items() if v}
        if self.common_fixed:
            fixed["common"] = dict(self.common_fixed)
        # A JSON round trip: tuples become lists, as they do in the file.
        return json.loads(json.dumps(
            {"methods": list(self.methods), "search_space": space,
             "fixed": fixed}, default=repr))

    # ------------------------------------------------------------------
    # Keras Tuner hooks.

    def hyperparameter_name(self, method, name):
        """The tuner's name of `method`'s argument `name`.

        `name` itself with one method; `"{method}/{name}"` when several
        methods are searched (Keras Tuner keeps one value per name, and
        methods share argument names such as `temperature` with different
        ranges).
        """
        if len(self.methods) == 1:
            return name
        return f"{method}/{name}"

    def _declare_method(self, hp, method):
        """Declares `method`'s hyperparameters; returns `{argument: value}`."""
        parent = (None, None) if len(self.methods) == 1 else (
            "method", [method])
        return {
            name: spaces.declare(hp, self.hyperparameter_name(method, name),
                                 spec, *parent)
            for name, spec in self.method_spaces[method].items()
        }

    def declare_hyperparameters(self, hp):
        """Declares the whole search space (every method's, conditionally)."""
        if len(self.methods) > 1:
            hp.Choice("method", list(self.methods))
        for name, spec in self.common_space.items():
            spaces.declare(hp, name, spec)
        for method in self.methods:
            self._declare_method(hp, method)

    def _is_declared(self, hp):
        names = {p.name for p in hp.space}
        wanted = set(self.common_space)
        for method, space in self.method_spaces.items():
            wanted |= {self.hyperparameter_name(method, n) for n in space}
        if len(self.methods) > 1:
            wanted.add("method")
        return wanted <= names

    def build(self, hp):
        """Builds and compiles one trial's distiller.

        Args:
            hp: The trial's `keras_tuner.HyperParameters`.

        Returns:
            A compiled distiller whose `save_weights` / `load_weights` are
            student-only.
        """
        if not self._is_declared(hp):
            # A fresh HyperParameters (not from a tuner's oracle).
            self.declare_hyperparameters(hp)
        if len(self.methods) > 1:
            method = hp.Choice("method", list(self.methods))
        else:
            method = self.methods[0]
        common = dict(self.common_fixed)
        for name, spec in self.common_space.items():
            common[name] = spaces.declare(hp, name, spec)
        kwargs = dict(self.method_fixed[method])
        kwargs.update(self._declare_method(hp, method))
        student = self.build_student(hp, common.get("width_multiplier"))
        layers = self.feature_layers
        if isinstance(layers, dict):
            layers = layers.get(method)
        distiller = registry.build(method, self.teacher, student,
                                   feature_layers=layers, **kwargs)

        student_checkpoints(distiller)
        learning_rate = common.get("learning_rate")
        if self.decay_steps is not None:
            if learning_rate is None:
                learning_rate = _make_optimizer(
                    self.optimizer, None).get_config()["learning_rate"]
            learning_rate = keras.optimizers.schedules.CosineDecay(
                float(learning_rate), self.decay_steps)
        distiller.compile(
            optimizer=_make_optimizer(self.optimizer, learning_rate),
            metrics=list(self.metrics),
        )
        return distiller

    def build_student(self, hp=None, width_multiplier=None):
        """A fresh student for one trial (see the `student` argument)."""
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        kind = self._student_kind
        template = self._student_template
        if kind == "model":
            student = keras.models.clone_model(template)
            student.set_weights(self._student_weights)
            return student
        if kind == "hp":
            student = template(hp if hp is not None else kt.HyperParameters())
        elif kind == "width" and width_multiplier is not None:
            student = template(width_multiplier=width_multiplier)
        else:
            student = template()
        if not isinstance(student, keras.Model):
            raise TypeError(
                "The student builder must return a `keras.Model`. Received "
                f"{student!r} of type {type(student).__name__} from "
                f"{template!r}."
            )
        return student


def digits_hypermodel(teacher, method="kd", num_classes=10,
                      input_shape=(16, 16, 1), **kwargs):
    """A `DistillerHyperModel` on the digits pair, searching student width.

    Args:
        teacher: The trained digits teacher (or a `.keras` path).
        method: Method name or list of names.
        num_classes: Classes of the data.
        input_shape: `(H, W, C)` of the images.
        **kwargs: Other `DistillerHyperModel` arguments.

    Returns:
        A `DistillerHyperModel` whose student is `scaled_digits_student` and
        whose feature layers are each method's digits taps
        (`tfkd.distillers.registry.digits_taps`).
    """
    methods = _as_methods(method)
    kwargs.setdefault("feature_layers",
                      {m: registry.digits_taps(m) for m in methods})
    builder = functools.partial(scaled_digits_student,
                                num_classes=num_classes,
                                input_shape=tuple(input_shape))
    return DistillerHyperModel(teacher, builder, method=method, **kwargs)
