"""`DistillationTerm`: the base of tfkd's knowledge terms.

A knowledge term is one summand of the student's objective: KD on the
logits, a FitNets hint, attention transfer, correlation, LP, the STC
collaboration loss, ... It is a `keras.distillation.DistillationLoss` (so
Keras's own `keras.distillation.Distiller` accepts it) and a Keras layer
(so it can own trainable parts such as adapters and regressors, and its
hyperparameters are variables saved with the distiller). A term owns:

- its taps: the teacher and student layers it reads (`teacher_layer_name`,
  `student_layer_name`: a name, a list of names paired in order, or `None`
  for the logits);
- its parts: student-side adapters or regressors, built by `bind` once the
  tapped shapes are known, trained with the student and never part of it;
- its hyperparameters (`tfkd.hyperparameters.Hyperparameter`: live
  variables such as a temperature) and defaults (its constructor);
- its method entry (`method`, a `Method`): the one-line description,
  Keras Tuner search space and preset from which `tfkd demo --method`,
  `tfkd tune`, the docs' method table and the test battery are derived.

`tfkd.Distiller` gathers the taps of all its terms into one forward pass per
network, calls each term's `call` (per-example values, or a batch-level
scalar) and weighs the results.
"""

import dataclasses
import re
import threading

import keras
import tensorflow as tf

from tfkd.layers.feature_adapter import FeatureAdapter
from tfkd.layers.self_taught_conv2d import find_guided_channels

#: Tap key of a network's logits (its single output).
LOGITS = None

#: Dimensions a feature term may require to match within a pair.
SPATIAL = "spatial"
CHANNELS = "channels"


@dataclasses.dataclass(frozen=True)
class Method:
    """How the command line, the tuner, the recipes and the docs build a
    method from a term.

    Attributes:
        name: The method's name (`tfkd demo --method NAME`).
        description: One line for `--help` and the docs' method table.
        paper: The paper (authors, title, venue year).
        search_space: Keras Tuner search space: `{argument: spec}` with
            the spec forms of `tfkd.tuning.spaces` (the default of each
            entry is the constructor's default unless given). Arguments are
            those of `preset` when there is one, else the term's
            constructor arguments plus `weight` (the term's
            `distillation_loss_weights` entry) and `student_loss_weight`.
        preset: `"module:Class"` of the preset distiller that builds the
            method (its paper's objective), or `None` for
            `tfkd.Distiller(teacher, student, [term])`.
        build_defaults: Arguments the command line and tuner pass on top of
            the constructor defaults, each needed to build the method on any
            teacher/student pair (e.g. `adapter=True`) or to select the
            method's own form (DLN's `alpha=0`, FitNets' two-stage
            `stage=1`); not different tuning defaults.
        uses_features: Whether the method taps intermediate layers (then it
            needs `feature_layers=(teacher_layer, student_layer)`).
        two_optimizers: Whether `compile` takes a `discriminator_optimizer`.
        embedding: Whether the method compares pooled embeddings (vectors)
            rather than feature maps; on the digits demo pair it then taps
            the pooled `gap` layer instead of the last conv block.
        weight: Without a preset: the term's default weight (its paper's
            weight in front of the term).
        student_loss_weight: Without a preset: the default student loss
            weight.
        soft_targets: Without a preset: whether the method's default
            objective adds the teacher's soft targets
            (`tfkd.losses.SoftTargetDistillation`, named `soft`, at the
            temperature and weight of `tfkd.methods.kd.SOFT_TARGETS`, the
            LP paper's eq. 8 setting) beside its own term. The method then
            takes `soft_target_weight` and `soft_target_temperature`;
            `soft_target_weight=0.0` builds its paper's objective alone.
    """

    name: str
    description: str
    paper: str = ""
    search_space: dict = dataclasses.field(default_factory=dict)
    preset: str = None
    build_defaults: dict = dataclasses.field(default_factory=dict)
    uses_features: bool = True
    two_optimizers: bool = False
    embedding: bool = False
    weight: float = 1.0
    student_loss_weight: float = 0.5
    soft_targets: bool = False


_TERM_CLASSES = []


def term_classes():
    """Every `DistillationTerm` subclass defined so far, in definition
    order."""
    return list(_TERM_CLASSES)


def _snake(name):
    name = re.sub(r"Distillation$", "", name) or name
    return re.sub(r"(?<!^)(?=[A-Z][a-z])|(?<=[a-z0-9])(?=[A-Z])", "_",
                  name).lower()


def _as_names(value, name):
    """`None | str | list[str]` -> `(tuple of names or (None,), is_list)`."""
    if value is None:
        return (LOGITS,), False
    if isinstance(value, str):
        return (value,), False
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, str) for v in value
    ):
        return tuple(value), True
    raise TypeError(
        f"`{name}` must be a layer name (str), a non-empty list of layer "
        f"names or None (the logits). Received: {name}={value!r}."
    )


def layer_name_arguments(owner, teacher_layer_name, student_layer_name,
                         kwargs):
    """`(teacher_layer_name, student_layer_name)` of a preset's arguments.

    Keras's spelling (`teacher_layer_name=`, `student_layer_name=`) is the
    one name of a layer argument in presets and terms alike; the presets'
    old `teacher_layer_name=` / `student_layer_name=` still work, popped from
    `kwargs` with a `DeprecationWarning`.

    Args:
        owner: Name of the class, for the messages.
        teacher_layer_name: The value given under the new name.
        student_layer_name: The value given under the new name.
        kwargs: The caller's other keyword arguments (the old names are
            removed from it).

    Returns:
        The pair of values.

    Raises:
        TypeError: If a layer is given under both names.
    """
    import warnings

    values = {"teacher": teacher_layer_name, "student": student_layer_name}
    for role in values:
        old = f"{role}_layer"
        if old not in kwargs:
            continue
        value = kwargs.pop(old)
        if values[role] is not None:
            raise TypeError(
                f"{owner} got the {role} layer twice: `{old}_name="
                f"{values[role]!r}` and the deprecated `{old}={value!r}`. "
                f"Pass only `{old}_name=`."
            )
        warnings.warn(
            f"{owner}: `{old}=` is deprecated; use `{old}_name=` (Keras's "
            "spelling, also the terms'). Received: "
            f"{old}={value!r}.", DeprecationWarning, stacklevel=3)
        values[role] = value
    return values["teacher"], values["student"]


def default_of(function, name):
    """The default of argument `name` in `function`'s signature.

    Defaults are written once, in the term; a preset that exposes the same
    argument reads it from there (`temperature=default_of(KDDistillation,
    "temperature")`), so the two cannot drift.

    Args:
        function: A callable, or a class (its `__init__`).
        name: The argument's name.

    Returns:
        The default value.

    Example:

    >>> from tfkd.methods.kd import KDDistillation
    >>> default_of(KDDistillation, "temperature")
    4.0
    """
    import inspect

    if isinstance(function, type):
        function = function.__init__
    return inspect.signature(function).parameters[name].default


def check_bool(value, name):
    """Returns `value` if it is a bool, else raises a `TypeError`."""
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be True or False. Received: {name}={value!r} of "
            f"type {type(value).__name__}."
        )
    return value


def _check_guided(value, num_pairs):
    """Normalises `None | int | list[int | None]` to one entry per pair."""
    def valid(v):
        return v is None or (
            isinstance(v, int) and not isinstance(v, bool) and v >= 1
        )

    if value is None:
        return [None] * num_pairs
    if valid(value):
        return [value] * num_pairs
    if isinstance(value, (list, tuple)) and all(valid(v) for v in value):
        if len(value) != num_pairs:
            raise ValueError(
                "`guided_channels` must have one entry per tapped pair "
                f"({num_pairs}). Received: guided_channels={list(value)}."
            )
        return list(value)
    raise ValueError(
        "`guided_channels` must be None, a positive int (for every pair) or "
        "a list with one positive int (or None, for all channels) per "
        f"tapped pair. Received: guided_channels={value!r}."
    )


def _guided_channels(model, name):
    """`find_guided_channels` for a tap name, which may be a `/`-separated
    path through nested models: looked up in the model that holds the
    layer."""
    *outer, name = name.split("/")
    for part in outer:
        model = model.get_layer(part)
    return find_guided_channels(model, name)


def _static_shape(tensor):
    return tuple(None if d is None else int(d) for d in tensor.shape)


class DistillationTerm(keras.layers.Layer,
                       keras.distillation.DistillationLoss):
    """Base class of tfkd's knowledge terms.

    Subclasses implement `pair_loss(teacher_feature, student_feature)` (a
    feature term, compared pair by pair after guided-channel slicing and
    the pair's adapter) or override `call` (a term that needs more: logits,
    labels). They declare which dimensions of a pair must match
    (`feature_requirements`), whether their value is batch-level
    (`batch_level`), and optionally a `method`.

    Args:
        teacher_layer_name: Teacher layer(s) to tap: a name, a list of names
            (pairs, summed) or `None` for the teacher's logits.
        student_layer_name: Student layer(s), paired in order with
            `teacher_layer_name`.
        adapter: Whether to insert a trainable student-side
            `tfkd.layers.FeatureAdapter` (1×1 conv for channels, bilinear
            resize for the spatial size) where a pair's required dimensions
            differ; without it a mismatch raises a `ValueError`.
        guided_channels: `None` (read from a `SelfTaughtConv2D` the tapped
            student layer is or follows), an int for every pair, or a list
            with an int or `None` per pair: the number of leading channels
            of the student feature this term sees.
        **kwargs: Layer arguments (`name`: also the name of the term's
            metric, `<name>_loss`).
    """

    #: The method this term provides (a `Method`, a tuple of them, or None).
    method = None
    #: Whether `call` returns one scalar for the batch (not `(batch,)`).
    batch_level = False
    #: Dimensions of a pair that must match: a subset of
    #: `("spatial", "channels")`.
    feature_requirements = ()
    #: Whether student features are sliced to their guided channels.
    slice_guided = True
    #: Name of the constructor option quoted in shape-mismatch errors.
    adapter_option = "adapter"
    #: Whether teacher and student logits must have the same shape.
    requires_matching_logits = False
    #: Whether `call` also receives the batch's inputs (`inputs=`: the
    #: images, or a dict holding them under `"images"` with per-example
    #: data such as an example index).
    uses_inputs = False
    #: Set by `bind`: every tapped shape was known there (all but the batch
    #: size), so the term's shape checks ran once, at bind, and its `call`
    #: may compute without them (a bound term's function need not check
    #: again on every step).
    shapes_checked = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _TERM_CLASSES.append(cls)

    def update_state_later(self, update):
        """Writes state (a memory bank, a counter) once the step is kept.

        A term that updates its own variables in the forward pass hands the
        writes to this method as a zero-argument callable. Alone, the term
        runs it at once. In a distiller (which sets `defer_state_updates`)
        it waits: the distiller runs it only after the step's checked
        optimizer update, so a step refused by the finite guard leaves the
        term's state as it was, like the weights.

        Args:
            update: A callable performing the writes, built from tensors of
                the current forward pass.
        """
        if not getattr(self, "defer_state_updates", False):
            update()
            return
        self._pending_state().append(update)

    def _pending_state(self):
        # One list per thread: `tf.distribute` replicas trace the step in
        # threads of their own.
        local = self.__dict__.get("_state_local")
        if local is None:
            local = threading.local()
            object.__setattr__(self, "_state_local", local)
        if not hasattr(local, "updates"):
            local.updates = []
        return local.updates

    def take_state_updates(self):
        """The writes `update_state_later` deferred, handed over once."""
        pending = self._pending_state()
        taken = list(pending)
        pending.clear()
        return taken

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 adapter=False, guided_channels=None, **kwargs):
        if (teacher_layer_name is None) != (student_layer_name is None):
            raise ValueError(
                "Pass both `teacher_layer_name` and `student_layer_name` (the "
                "layers to compare), or neither (the logits). Received: "
                f"teacher_layer_name={teacher_layer_name!r}, "
                f"student_layer_name={student_layer_name!r}."
            )
        kwargs.setdefault("name", _snake(type(self).__name__))
        # Terms compute in float32 (see `tfkd.losses`); an adapter runs in
        # the student's dtype policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        teacher_taps, t_list = _as_names(teacher_layer_name,
                                         "teacher_layer_name")
        student_taps, s_list = _as_names(student_layer_name,
                                         "student_layer_name")
        if len(teacher_taps) != len(student_taps) or t_list != s_list:
            raise ValueError(
                "`teacher_layer_name` and `student_layer_name` are paired in "
                "order and must both be names, or lists of the same length "
                f"(or both None). Received: teacher_layer_name="
                f"{teacher_layer_name!r}, student_layer_name="
                f"{student_layer_name!r}."
            )
        self._teacher_taps = teacher_taps
        self._student_taps = student_taps
        self._several = t_list
        self.adapter = check_bool(adapter, self.adapter_option)
        self._explicit_guided = guided_channels
        self._guided = _check_guided(guided_channels, len(student_taps))
        self.adapters = []
        self._adapter_slots = (None,) * len(student_taps)
        self._bound_to = None

    # ------------------------------------------------------------------
    # Taps.

    @property
    def teacher_taps(self):
        """Teacher layers this term reads (`None` stands for the logits)."""
        return self._teacher_taps

    @property
    def student_taps(self):
        """Student layers this term reads (`None` stands for the logits)."""
        return self._student_taps

    @property
    def guided_channels(self):
        """Leading channels of each student feature the term sees (`None`:
        all), one per pair; read from the student once the term is bound."""
        return list(self._guided) if self.slice_guided else [None] * len(
            self._student_taps)

    def _pack(self, values):
        """One tensor, or a list when the term taps several pairs."""
        return list(values) if self._several else values[0]

    # ------------------------------------------------------------------
    # Binding to a teacher/student pair.

    def bind(self, teacher, student, teacher_tensors, student_tensors):
        """Checks the tapped shapes and builds the term's parts.

        Called once by the distiller with the symbolic outputs of the
        tapped layers (in `teacher_taps` / `student_taps` order; a tensor
        may be `None` for a model without a static graph). Idempotent for
        the same models.

        Args:
            teacher: The teacher `keras.Model`.
            student: The student `keras.Model`.
            teacher_tensors: List of symbolic tensors (or `None`).
            student_tensors: List of symbolic tensors (or `None`).
        """
        key = (id(teacher), id(student))
        if self._bound_to is not None:
            if self._bound_to != key:
                raise ValueError(
                    f"The term {self.name!r} is already bound to another "
                    "teacher/student pair (its adapters are sized for "
                    "them). Create a new term for each distiller."
                )
            return
        if self.slice_guided:
            for i, name in enumerate(self._student_taps):
                if self._guided[i] is None and name is not LOGITS:
                    self._guided[i] = _guided_channels(student, name)
        teacher_shapes = [
            None if t is None else _static_shape(t) for t in teacher_tensors
        ]
        student_shapes = []
        for i, s in enumerate(student_tensors):
            shape = None if s is None else _static_shape(s)
            guided = self._guided[i] if self.slice_guided else None
            if shape is not None and guided is not None:
                if shape[-1] is not None and guided > shape[-1]:
                    raise ValueError(
                        f"`guided_channels`={guided} for student layer "
                        f"{self._student_taps[i]!r} exceeds its {shape[-1]} "
                        f"output channels. Received student feature shape "
                        f"{shape}."
                    )
                shape = shape[:-1] + (guided,)
            student_shapes.append(shape)
        self.build_parts(teacher, student, teacher_shapes, student_shapes)
        self._bound_to = key
        self.shapes_checked = all(
            shape is not None and None not in shape[1:]
            for shape in teacher_shapes + student_shapes)

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        """Creates the adapters a pair needs (or raises on a mismatch).

        Override to build other parts (regressors, a teacher's back, ...).
        Shapes are static tuples (student shapes after guided slicing), or
        `None` when unknown.
        """
        if not self.feature_requirements:
            return
        slots, adapters = [], []
        for i, (t, s) in enumerate(zip(teacher_shapes, student_shapes)):
            if t is None or s is None:
                slots.append(None)
                continue
            self._check_map(t, self._teacher_taps[i], "teacher")
            self._check_map(s, self._student_taps[i], "student")
            if not self._needs_adapter(t, s):
                slots.append(None)
                continue
            if not self.adapter:
                raise self._mismatch_error(i, t, s)
            adapter = self.make_adapter(i, t, s, student.dtype_policy)
            adapter.build((None,) + tuple(s[1:]))
            out = tuple(adapter.compute_output_shape((None,) + s[1:]))
            if self._mismatched(t, out):
                raise ValueError(
                    f"The adapter of pair {self._teacher_taps[i]!r} -> "
                    f"{self._student_taps[i]!r} maps the student shape {s} "
                    f"to {out}, which still does not match the teacher "
                    f"shape {t}."
                )
            slots.append(len(adapters))
            adapters.append(adapter)
        self.adapters = adapters
        self._adapter_slots = tuple(slots)

    def _check_map(self, shape, name, role):
        if len(shape) != 4 or None in shape[1:]:
            raise ValueError(
                f"{type(self).__name__} needs 4D feature maps (batch, H, W, "
                f"C) of known size. The {role} layer {name!r} outputs shape "
                f"{shape}. Tap a convolutional layer (or its activation) "
                "instead."
            )

    def _mismatched(self, t, s):
        bad = []
        if SPATIAL in self.feature_requirements and t[1:3] != s[1:3]:
            bad.append(SPATIAL)
        if CHANNELS in self.feature_requirements and t[3] != s[3]:
            bad.append(CHANNELS)
        return bad

    def _needs_adapter(self, t, s):
        return bool(self._mismatched(t, s))

    def _mismatch_error(self, i, t, s):
        what = {SPATIAL: "spatial sizes (H, W)", CHANNELS: "channel counts"}
        bad = self._mismatched(t, s)
        guided = (
            f" (the first {self._guided[i]} guided channels)"
            if self.slice_guided and self._guided[i] is not None else ""
        )
        return ValueError(
            f"{type(self).__name__} needs equal "
            f"{' and '.join(what[b] for b in bad)} for the tapped pair "
            f"{self._teacher_taps[i]!r} -> {self._student_taps[i]!r}. "
            f"Received: teacher feature shape {t}, student feature shape "
            f"{s}{guided}. Pass {self.adapter_option}=True to insert a "
            "trainable student-side adapter (1×1 conv for channels, resize "
            "for the spatial size), or tap layers whose shapes match."
        )

    def make_adapter(self, index, t, s, dtype):
        """The `FeatureAdapter` mapping student shape `s` to teacher `t`."""
        bad = self._mismatched(t, s)
        return FeatureAdapter(
            filters=t[3] if CHANNELS in bad else None,
            target_size=t[1:3] if SPATIAL in bad else None,
            dtype=dtype, name=f"{self.name}_adapter_{index}",
        )

    # ------------------------------------------------------------------
    # The loss.

    def student_feature(self, index, feature):
        """The student feature of pair `index` as the loss sees it: sliced
        to its guided channels, then through the pair's adapter."""
        guided = self._guided[index] if self.slice_guided else None
        if guided is not None:
            feature = feature[..., :guided]
        slot = self._adapter_slots[index]
        if slot is not None:
            feature = self.adapters[slot](feature)
        return feature

    def pair_loss(self, teacher_feature, student_feature):
        """The loss of one tapped pair: `(batch,)` or a batch-level scalar."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `pair_loss(teacher_feature"
            ", student_feature)` or override `call`."
        )

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        """Per-example values `(batch,)` (or a batch-level scalar).

        Args:
            teacher_outputs: The tapped teacher output(s): a tensor, or a
                list when the term taps several pairs.
            student_outputs: The tapped student output(s), likewise.
            labels: The batch's labels (terms that need them use them).
            training: Whether this is a training step.

        Returns:
            The term's value, float32: `(batch,)`, or a scalar for
            batch-level terms. Pairs are summed.
        """
        teachers = teacher_outputs if self._several else [teacher_outputs]
        students = student_outputs if self._several else [student_outputs]
        total = None
        for i, (t, s) in enumerate(zip(teachers, students)):
            value = tf.cast(
                self.pair_loss(t, self.student_feature(i, s)), tf.float32)
            total = value if total is None else total + value
        return total

    # ------------------------------------------------------------------
    # keras.distillation.DistillationLoss.

    def validate_model_compatibility(self, teacher, student):
        """Binds the term for Keras's own `keras.distillation.Distiller`."""
        tensors = []
        for role, model, taps in (("teacher", teacher, self._teacher_taps),
                                  ("student", student, self._student_taps)):
            found = []
            for name in taps:
                try:
                    if name is LOGITS:
                        found.append(model.outputs[0])
                    else:
                        found.append(model.get_layer(name).output)
                except (AttributeError, ValueError, TypeError) as e:
                    raise ValueError(
                        f"{type(self).__name__}: cannot tap {name!r} in the "
                        f"{role} model {model.name!r}: {e}"
                    ) from e
            tensors.append(found)
        self.bind(teacher, student, *tensors)

    def validate_outputs(self, teacher_outputs, student_outputs):
        keras.tree.assert_same_structure(teacher_outputs, student_outputs)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """Scalar loss (the batch mean), as Keras's `Distiller` expects."""
        value = self.call(teacher_outputs, student_outputs, **kwargs)
        return tf.reduce_mean(value)

    # ------------------------------------------------------------------
    # Serialisation.

    def training_callbacks(self, distiller):
        """Keras callbacks this term's method trains with (its schedule).

        `tfkd.Distiller.fit` adds them to every `fit`, so the schedule is the
        same whichever way the distiller was built (class, registry,
        tuner). The default is none; DKD's warm-up of its weight is one.

        Args:
            distiller: The `tfkd.Distiller` about to train.

        Returns:
            A list of `keras.callbacks.Callback`.
        """
        return []

    def get_config(self):
        config = super().get_config()
        guided = self._explicit_guided
        config.update({
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        })
        if self.feature_requirements:
            config[self.adapter_option] = self.adapter
        if self.slice_guided and self._student_taps != (LOGITS,):
            config["guided_channels"] = (
                list(guided) if isinstance(guided, (list, tuple)) else guided
            )
        return config


def methods_of(term_class):
    """The `Method`s a term class provides (an empty tuple if none)."""
    method = vars(term_class).get("method")
    if method is None:
        return ()
    if isinstance(method, Method):
        return (method,)
    return tuple(method)
