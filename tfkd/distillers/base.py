"""`tfkd.Distiller`: the one engine every tfkd method runs on.

The engine follows Keras's `keras.distillation.Distiller` convention: a
teacher, a student, a list of distillation losses ("knowledge terms") with
weights, and a student loss weight,

    total = w_s · L_student + (1 − w_s) · Σ_i w_i · L_i,

where `L_student` is the compiled loss of the student against the labels.
It accepts Keras's own `LogitsDistillation` / `FeatureDistillation` and
tfkd's terms (`tfkd.terms`), in any combination. What it owns:

- the frozen teacher, always called with `training=False`;
- taps: every layer any term reads, gathered into one fused extractor per
  network, so teacher and student each run forward once per step;
- per-term metrics (`<term>_loss`, plus `student_loss` and the total
  `loss`), in training and validation;
- reduction with sample weights, unlabelled examples (label `-1`), loss
  scaling under `tf.distribute` and mixed precision as Keras's trainer
  does it, teacher outputs cached with the data
  (`tfkd.data.cache_teacher_outputs`);
- live hyperparameters: every weight and temperature is a variable (see
  `tfkd.hyperparameters`), assignable between steps without recompiling.

Presets (`CorrelationDistiller`, `LocalityPreservingDistiller`, ...) are
thin subclasses that build their paper's terms and derive the weights from
the paper's symbols.
"""

import contextlib
import copy
import os
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfkd import _compat
from tfkd import hyperparameters as hp
from tfkd.callbacks import NonFiniteDataError
from tfkd.callbacks import NonFiniteLossError
from tfkd.distillers.taps import Extractor
from tfkd.losses import kd as kd_losses
from tfkd.terms.base import LOGITS
from tfkd.terms.base import DistillationTerm
from tfkd.terms.kd import KDDistillation

#: Keys of the input dict of a batch that carries cached teacher outputs
#: (see `tfkd.data.cache_teacher_outputs`).
IMAGES_KEY = "images"
TEACHER_LOGITS_KEY = "teacher_logits"
TEACHER_FEATURES_KEY = "teacher_features"

#: Kinds of the engine's in-graph checks. A failed check reaches `fit` /
#: `evaluate` as a `tf.errors.InvalidArgumentError` whose message carries
#: the kind and its values; the engine raises `_MESSAGES[kind](*values)`.
_IMAGES = "tfkd-non-finite-images"
_GRADIENTS = "tfkd-non-finite-gradients"
_LOSSES = "tfkd-non-finite-losses"
_LABELS_FRACTIONAL = "tfkd-labels-fractional"
_LABELS_RANGE = "tfkd-labels-range"
_LABELS_WIDTH = "tfkd-labels-width"
_LABELS_DENSE = "tfkd-labels-dense"
_PROBABILITIES = "tfkd-probabilities"

_OFF = "`distiller.check_finite = False` turns this check off."

_MESSAGES = {
    _IMAGES: lambda where, example: (
        f"NaN or Inf in the images of {where}, first in example {example} "
        "of the batch. The step stopped before changing any weight, so "
        "nothing half-trained was saved. Clean the data (e.g. "
        "`dataset.filter(lambda x, y: tf.reduce_all(tf.math.is_finite(x)))`"
        f") or fix its source. {_OFF}"),
    _GRADIENTS: lambda where, terms=None: (
        f"Non-finite gradients at {where}, although the images are finite"
        + ("" if terms is None else f"; non-finite loss terms: {terms}"
           if terms else ", with finite loss terms")
        + ". The step stopped before changing any weight. Lower the "
        "learning rate or the term's weight, use a less extreme "
        "temperature, check the labels and sample weights for NaN/Inf, and "
        "the student's weights (`tfkd.callbacks.StopOnNonFiniteLoss` names "
        f"a bad one). {_OFF}"),
    _LOSSES: lambda where, terms: (
        f"Non-finite loss at {where}: {terms}. The step stopped before "
        "changing any weight. Lower the learning rate or the term's weight, "
        "use a less extreme temperature, check the data, the labels and "
        "sample weights for NaN/Inf, and the teacher's and student's "
        "weights (`tfkd.callbacks.StopOnNonFiniteLoss` names a bad one). "
        f"{_OFF}"),
    _LABELS_FRACTIONAL: lambda value: (
        f"Labels `y` hold fractional or non-finite floats (e.g. {value}); "
        "class ids must be whole numbers (e.g. 3.0 or 3). Round or cast "
        "your labels, or pass one-hot / soft labels with one column per "
        "class."),
    _LABELS_RANGE: lambda low, high, num_classes: (
        f"Labels `y` must be class ids in [0, {num_classes}) for a student "
        f"with {num_classes} logits (or -1 for an unlabelled example). "
        f"Received labels in [{low}, {high}]. Check the data's number of "
        "classes against the models'."),
    _LABELS_DENSE: lambda low, total: (
        "One-hot / soft labels `y` must be rows of non-negative values "
        "summing to 1, or all zeros for an unlabelled example. Received a "
        f"row with smallest value {low} and sum {total}. `-1` marks an "
        "unlabelled example only in class-id labels; in one-hot form give "
        "it an all-zero row."),
    _PROBABILITIES: lambda role, name: (
        f"The {role} {name!r} outputs probabilities, not logits: on the "
        "first batch every row of its output is non-negative and sums to 1 "
        "(a softmax tfkd cannot see as a layer: a `keras.ops.softmax(...)` "
        "call, a `Lambda` softmax, or a softmax followed by a layer such as "
        "`Flatten`). tfkd distils logits: build the model without its "
        "final softmax (e.g. `classifier_activation=None` for "
        "`keras.applications` models, or `activation=None` on the last "
        "layer) and apply softmax only when predicting."),
    _LABELS_WIDTH: lambda width, num_classes: (
        f"One-hot labels `y` have {width} columns but the student outputs "
        f"{num_classes} logits. Use one column per class, or integer class "
        "ids."),
}
_ERRORS = {_IMAGES: NonFiniteDataError, _GRADIENTS: NonFiniteDataError,
           _LOSSES: NonFiniteLossError}


def _parse_check(message):
    """`(kind, [values])` of a failed engine check in a TensorFlow error
    message (graph or eager form), else `None`."""
    found = re.search(r"\[(tfkd-[a-z-]+)\]((?: \[[^\]]*\])*)", message)
    if found:
        return found.group(1), re.findall(r"\[([^\]]*)\]", found.group(2))
    found = re.search(r"b'(tfkd-[a-z-]+)'((?:\n[^\n]*)*)", message)
    if found:
        return found.group(1), found.group(2).split("\n")[1:]
    return None


def _number(text):
    """A check's value: a number, or a string (eager errors print string
    tensors as `b'...'`), or a value already converted."""
    if not isinstance(text, str):
        return text
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return re.sub(r"^b'(.*)'$", r"\1", text)
    return int(value) if value.is_integer() else value


def _check_error(kind, values, progress=None):
    """The Python exception of a failed check `kind` with its `values`."""
    values = [_number(v) for v in values]
    if kind in (_IMAGES, _GRADIENTS, _LOSSES):
        values[0] = _where(values[0], progress)
    return _ERRORS.get(kind, ValueError)(_MESSAGES[kind](*values))


def _where(step, progress):
    if progress is not None and progress.epoch is not None:
        return (f"training batch {step - progress.first_step} of epoch "
                f"{progress.epoch} (optimizer step {step}; all counted "
                "from 0)")
    return f"optimizer step {step}"


class _Progress(keras.callbacks.Callback):
    """Where `fit` is, for the guard's messages; raises the XLA guard's
    recorded bad step after each batch."""

    def __init__(self):
        super().__init__()
        self.epoch = None
        self.first_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.first_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        # A Keras term's temperature assigned by a callback counts.
        self.model._sync_terms()

    def on_train_batch_end(self, batch, logs=None):
        self.model._raise_recorded(self)


def _finite_examples(images):
    """`(batch,)` bools: all float values of the example are finite; `None`
    when no input is a float."""
    finite = None
    for leaf in tf.nest.flatten(images):
        leaf = tf.convert_to_tensor(leaf)
        if not leaf.dtype.is_floating:
            continue
        flat = tf.reshape(tf.math.is_finite(leaf), [tf.shape(leaf)[0], -1])
        ok = tf.reduce_all(flat, axis=1)
        finite = ok if finite is None else tf.logical_and(finite, ok)
    return finite


def _global_index(index, local_batch):
    """An example's index in the global batch, from its index in this
    replica's slice (a strategy splits the batch into contiguous slices)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return index
    replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
    return index + replica * tf.cast(tf.shape(local_batch)[0], tf.int64)


def _non_finite_names(losses):
    """A string tensor: the `, `-joined names of the non-finite scalars in
    `losses` (`{name: scalar}`), for a failed check's message."""
    if not losses:
        return tf.constant("")
    names = tf.constant([f"`{name}`" for name in losses])
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(
        tf.cast(value, tf.float32))) for value in losses.values()])
    return tf.strings.reduce_join(
        tf.boolean_mask(names, tf.logical_not(finite)), separator=", ")


def _losses_finite(losses):
    """`(all finite, int64 bit mask of the non-finite ones)` of the scalars
    `losses` (`{name: scalar}`, bit `i` for the `i`-th), else `None`."""
    if not losses:
        return None
    finite = tf.stack([tf.reduce_all(tf.math.is_finite(
        tf.cast(value, tf.float32))) for value in losses.values()])
    bits = tf.bitwise.left_shift(
        tf.constant(1, tf.int64), tf.range(len(losses), dtype=tf.int64))
    mask = tf.reduce_sum(tf.where(finite, tf.zeros_like(bits), bits))
    return tf.reduce_all(finite), mask


def _all_finite(gradients):
    flags = []
    for g in gradients:
        if g is None:
            continue
        if isinstance(g, tf.IndexedSlices):
            g = g.values
        flags.append(tf.reduce_all(tf.math.is_finite(g)))
    return tf.reduce_all(tf.stack(flags)) if flags else None


#: Losses that expect probabilities unless told `from_logits=True`; tfkd
#: students output logits.
_PROBABILITY_LOSSES = (
    "sparse_categorical_crossentropy", "categorical_crossentropy",
    "binary_crossentropy", "categorical_focal_crossentropy",
    "binary_focal_crossentropy",
)


def split_cached_inputs(x):
    """Splits a batch into `(images, cached teacher outputs or None)`.

    A batch may be a dict holding the images under `"images"` and more:
    the teacher's logits and tapped features of
    `tfkd.data.cache_teacher_outputs`, or per-example data a term reads
    (e.g. an example index, see `DistillationTerm.uses_inputs`). The
    networks see the images only. Any other input is returned unchanged,
    with `None`.
    """
    if isinstance(x, dict) and IMAGES_KEY in x:
        cached = None
        if TEACHER_LOGITS_KEY in x:
            features = x.get(TEACHER_FEATURES_KEY, ())
            cached = (x[TEACHER_LOGITS_KEY], list(features))
        return x[IMAGES_KEY], cached
    return x, None


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
    first = tf.nest.flatten(split_cached_inputs(x)[0])[0]
    return tf.shape(first)[0]


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


def _term_name(term):
    """A term's metric stem: its layer name, or Keras's class name."""
    if isinstance(term, DistillationTerm):
        return term.name
    name = type(term).__name__
    if name.endswith("Distillation") and len(name) > len("Distillation"):
        name = name[: -len("Distillation")]
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(c.lower())
    return "".join(out)


class _KerasTerm:
    """Reads a Keras `DistillationLoss` (e.g. `LogitsDistillation`) the way
    `keras.distillation.Distiller` does: its `teacher_layer_name` /
    `student_layer_name` (final outputs when absent) and the scalar of its
    `compute_loss`."""

    batch_level = True

    def __init__(self, loss):
        self.loss = loss
        # A `keras.losses.Loss` instance reducing to a mean divides it by
        # the number of replicas itself under `tf.distribute` (Keras's
        # `reduce_values`), and the engine scales the total again: undo
        # the first.
        self._prescaled = any(
            isinstance(fn, keras.losses.Loss)
            and getattr(fn, "reduction", None) not in (None, "none")
            for fn in keras.tree.flatten(getattr(loss, "loss", None)))
        if isinstance(loss, keras.distillation.LogitsDistillation):
            if any(_reads_probabilities(fn)
                   for fn in keras.tree.flatten(loss.loss)):
                warnings.warn(
                    "Keras's `LogitsDistillation` applies a loss other than "
                    "a `keras.losses.KLDivergence()` instance (e.g. its "
                    "default `loss=\"kl_divergence\"`) to the raw scaled "
                    "logits `t/T`, `s/T` as if they were probabilities: no "
                    "softmax, and the loss can be negative. Received: "
                    f"loss={loss.loss!r}. Pass `loss=keras.losses."
                    "KLDivergence()` (Keras then takes the softmaxes and "
                    "multiplies by T²) or use tfkd's `tfkd.losses."
                    "KDDistillation(temperature=...)`.", UserWarning,
                    stacklevel=5)
            # The temperature is live, as tfkd's terms' are: the traced
            # step reads this variable, synchronised with the Python
            # attribute before each batch (`sync`).
            self._temperature = tf.Variable(
                float(loss.temperature), trainable=False, dtype=tf.float32)
            self._assigned = loss.temperature
        teacher = getattr(loss, "teacher_layer_name", None)
        student = getattr(loss, "student_layer_name", None)
        # Keras's Distiller decides on `teacher_layer_name` alone.
        if teacher is None:
            self.teacher_taps, self.student_taps = (LOGITS,), (LOGITS,)
        else:
            self.teacher_taps = (teacher,)
            self.student_taps = (student,)

    @property
    def temperature(self):
        return self.loss.temperature

    @temperature.setter
    def temperature(self, value):
        self.loss.temperature = value
        self.sync()

    def sync(self):
        """Copies an assigned `temperature` into the step's variable."""
        if not hasattr(self, "_temperature"):
            return
        value = self.loss.temperature
        if value is self._assigned or (
                not isinstance(value, tf.Tensor) and value == self._assigned):
            return
        self._temperature.assign(hp.positive(value, "temperature"))
        self._assigned = value

    def bind(self, teacher, student, teacher_tensors, student_tensors):
        self.loss.validate_model_compatibility(teacher, student)
        t, s = teacher_tensors[0], student_tensors[0]
        if isinstance(self.loss, keras.distillation.FeatureDistillation) \
                and t is not None and s is not None and not tf.TensorShape(
                    t.shape).is_compatible_with(tf.TensorShape(s.shape)):
            raise ValueError(
                "Keras's `FeatureDistillation` compares the tapped outputs "
                "element by element, so their shapes must match. Received: "
                f"teacher layer {self.teacher_taps[0]!r} of shape "
                f"{tuple(t.shape)}, student layer {self.student_taps[0]!r} of "
                f"shape {tuple(s.shape)}. Tap layers of the same shape, or "
                "use a tfkd term with an adapter (e.g. "
                "`tfkd.losses.HintDistillation`, which regresses the "
                "student's features)."
            )

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        self.loss.validate_outputs(teacher_outputs, student_outputs)
        # Losses in float32, as tfkd's terms compute (mixed precision).
        teacher_outputs, student_outputs = keras.tree.map_structure(
            _float32_if_floating, (teacher_outputs, student_outputs))
        if hasattr(self, "_temperature"):
            python_value = self.loss.temperature
            self.loss.temperature = tf.convert_to_tensor(self._temperature)
            try:
                value = self.loss.compute_loss(teacher_outputs,
                                               student_outputs)
            finally:
                self.loss.temperature = python_value
        else:
            value = self.loss.compute_loss(teacher_outputs, student_outputs)
        if self._prescaled:
            value = value * num_replicas()
        if getattr(value, "shape", ()) and len(value.shape) > 0:
            raise ValueError(
                f"Distillation loss {type(self.loss).__name__} returned a "
                f"non-scalar loss of shape {value.shape}; "
                "`DistillationLoss.compute_loss` must return a scalar."
            )
        return value

    @property
    def trainable_weights(self):
        return []

    @property
    def losses(self):
        return []


def _reads_probabilities(fn):
    """Whether a `LogitsDistillation` loss treats the scaled logits as
    probabilities (Keras softmaxes them only for a `KLDivergence`
    instance)."""
    if fn is None or isinstance(fn, keras.losses.KLDivergence):
        return False
    if isinstance(fn, keras.losses.Loss):
        return fn.get_config().get("from_logits") is False
    return getattr(fn, "__name__", None) in (
        "kl_divergence", "categorical_crossentropy", "binary_crossentropy")


def _tokens(teacher, student, y, sample_weight):
    """Sequence logits `(batch, time, classes)` as `(batch · time,
    classes)`: every token an example, its labels and weights flattened
    alike, so terms and the student loss are reduced per token as Keras's
    losses reduce them (`sum(loss · weight) / tokens`). Other logits pass
    unchanged."""
    logits = student[LOGITS]
    rank = logits.shape.rank
    if rank is None or rank <= 2:
        return teacher, student, y, sample_weight

    def flat(v):
        width = v.shape[-1] if v.shape[-1] is not None else tf.shape(v)[-1]
        return tf.reshape(v, [-1, width])

    teacher = {**teacher, LOGITS: flat(teacher[LOGITS])}
    student = {**student, LOGITS: flat(logits)}
    if y is not None:
        y = tf.convert_to_tensor(y)
        y = tf.reshape(y, [-1]) if y.shape.rank == rank - 1 else flat(y)
    if sample_weight is not None:
        sample_weight = tf.reshape(sample_weight, [-1])
    return teacher, student, y, sample_weight


def _float32_if_floating(x):
    x = tf.convert_to_tensor(x)
    return tf.cast(x, tf.float32) if x.dtype.is_floating else x


def _as_term(loss, index):
    if isinstance(loss, DistillationTerm):
        return loss
    if isinstance(loss, keras.distillation.DistillationLoss):
        return _KerasTerm(loss)
    raise TypeError(
        "`distillation_losses` must hold `keras.distillation."
        "DistillationLoss` objects (tfkd's terms in `tfkd.losses`, or "
        "Keras's `LogitsDistillation` / `FeatureDistillation`). Received "
        f"item {index}: {loss!r} of type {type(loss).__name__}."
    )


def _resolve_student_loss(loss):
    """`None` (tfkd's cross entropy from logits) or a per-example loss."""
    if loss is None:
        return None
    if isinstance(loss, (list, tuple, dict)):
        raise TypeError(
            "`loss` must be one loss for the student's single output. "
            f"Received: loss={loss!r}."
        )
    if isinstance(loss, str):
        if loss in _PROBABILITY_LOSSES:
            raise ValueError(
                f"`loss={loss!r}` treats the student's outputs as "
                "probabilities, but tfkd students output logits. Pass "
                f"`keras.losses.{_class_name(loss)}(from_logits=True)` or "
                "leave `loss=None` (cross entropy from logits)."
            )
        try:
            return keras.losses.get(loss)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"`loss` does not name a Keras loss. Received: loss={loss!r}."
                f" Details: {e}"
            ) from e
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        if config.get("from_logits") is False:
            raise ValueError(
                f"`loss={type(loss).__name__}(from_logits=False)` treats the "
                "student's outputs as probabilities, but tfkd students "
                "output logits. Build it with `from_logits=True`."
            )
        return loss
    if callable(loss):
        return loss
    raise TypeError(
        "`loss` must be None, a Keras loss name, a `keras.losses.Loss` or a "
        f"callable `(y_true, y_pred)`. Received: loss={loss!r} of type "
        f"{type(loss).__name__}."
    )


def _class_name(loss_name):
    return "".join(part.capitalize() for part in loss_name.split("_"))


def _per_example(loss, y, y_pred):
    """Unreduced values of a Keras loss or loss function."""
    if isinstance(loss, keras.losses.Loss):
        return loss.call(y, y_pred)
    return loss(y, y_pred)


def _without_compile_config(model):
    """`model` serialised without its own compile state.

    A teacher (or student) compiled for its own training carries its
    optimizer into the config; loaded inside a distiller it would be
    compiled afresh, and Keras would then warn "Skipping variable loading
    for optimizer ..." (the fresh optimizer has no slots). The distiller
    trains with its own optimizer only, so the models load uncompiled.
    """
    config = keras.saving.serialize_keras_object(model)
    if isinstance(config, dict) and config.get("compile_config"):
        config = dict(config, compile_config=None)
    return config


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(_compat.MultiWorkerBuildMixin, keras.Model):
    """Knowledge distillation in Keras's convention; Hinton KD by default.

    The student learns from the labels (the compiled `loss`, cross entropy
    from logits by default) and from each knowledge term:

    `loss = w_s · L_student + (1 − w_s) · Σ_i w_i · L_i`

    with `w_s = student_loss_weight` and `w_i = distillation_loss_weights[i]`,
    exactly as `keras.distillation.Distiller`. Terms are tfkd's
    (`tfkd.losses.KDDistillation`, `HintDistillation`,
    `AttentionDistillation`, `CorrelationDistillation`,
    `LocalityPreservingDistillation`, `CollaborationDistillation`, ...) or
    Keras's own `LogitsDistillation` / `FeatureDistillation`, in any
    combination. Without `distillation_losses` it is Hinton KD:
    `alpha · CE(y, s) + (1 − alpha) · kd_loss(t, s, temperature)`.

    Use it like any Keras model: `compile(optimizer=..., loss=...,
    metrics=[...])`, then `fit`, `evaluate`, `predict` (the student alone).
    Training and validation report `loss` (the total), `student_loss` and
    one `<term>_loss` per term (its unweighted value), plus the compiled
    metrics (on the student's logits).

    - **One forward pass per network.** Every layer any term taps is read
      from one fused extractor per network (Keras's own distiller runs the
      student twice when it taps features).
    - **The teacher is frozen** (`teacher.trainable = False`, called with
      `training=False`); its weights never change.
    - **Trainable parts of terms** (adapters, regressors) are trained with
      the student and saved with the distiller, never part of
      `distiller.student`.
    - **Logits, always.** A teacher or student ending in a softmax (a
      `Softmax` or `Activation("softmax")` layer, or a `Dense` /
      convolution with `activation="softmax"`, as `keras.applications`
      builds them) is read before it, with one warning; the model itself
      is unchanged. A softmax that cannot be reached is refused.
    - **Nested models.** Terms tap layers of nested functional models by
      path, e.g. `"MobileNetV3Small/expanded_conv_2_add"`.
    - **Nothing non-finite reaches the weights.** Each training step
      checks its images, gradients and loss terms first (`check_finite`);
      a bad batch raises `tfkd.callbacks.NonFiniteDataError` (a
      non-finite loss with finite gradients:
      `tfkd.callbacks.NonFiniteLossError`) naming it.
    - **Labels** are class ids (int, or whole floats) or one-hot / soft
      rows. An unlabelled example is a class id `-1`, or an all-zero row
      in one-hot form (a row of `-1` is refused): the student loss and the
      compiled metrics average over the labelled examples of the (global)
      batch (0 when there are none), knowledge terms use every example. A
      custom sparse `compile(loss=...)` sees the same mask: it gets a valid
      class id in place of each `-1`, with weight 0.
    - **Live hyperparameters.** `student_loss_weight`,
      `distillation_loss_weights` and the terms' temperatures are variables:
      assigning them (`distiller.student_loss_weight = 0.2`,
      `distiller.set_hyperparameter("kd/temperature", 2.0)`) takes effect at
      the next step, and `tfkd.callbacks.HyperparameterScheduler` schedules
      them. `distiller.hyperparameters` lists them.

    Args:
        teacher: A trained `keras.Model` that outputs logits (or ends in a
            softmax, see above). It is frozen.
        student: The `keras.Model` to train, outputting logits: functional,
            `Sequential` or subclassed (built or not; terms that tap layers
            need a functional one).
        distillation_losses: A knowledge term or a list of them. `None`
            (default) is Hinton KD with `alpha` and `temperature`.
        distillation_loss_weights: One weight `>= 0` per term (default 1
            each).
        student_loss_weight: Weight `w_s` of the student loss, in `[0, 1]`
            (default 0.5).
        alpha: Hinton KD only (no `distillation_losses`): the weight of the
            cross entropy with the labels, in `[0, 1]`, i.e.
            `student_loss_weight` (default 0.5).
        temperature: Hinton KD only: the KD temperature `> 0` (default 4).
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = tfkd.Distiller(
    ...     teacher, student,
    ...     distillation_losses=[
    ...         tfkd.losses.KDDistillation(temperature=4.0),
    ...         tfkd.losses.AttentionDistillation(
    ...             teacher_layer_name="conv2", student_layer_name="conv2"),
    ...     ],
    ...     distillation_loss_weights=[1.0, 500.0],
    ...     student_loss_weight=0.5)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = testing.random_images(32)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'attention_loss', 'distillation_loss', 'kd_loss', 'loss',
     'student_loss', 'total_loss']
    >>> hinton = tfkd.Distiller(teacher, student, alpha=0.3, temperature=2.0)
    >>> hinton.alpha, hinton.temperature
    (0.3, 2.0)

    Reference:
        Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural
        Network", NIPS Deep Learning Workshop 2015.
    """

    #: Hinton KD's defaults, used when `alpha` / `temperature` are not
    #: given (their signature default is `None`, to tell them apart from
    #: `student_loss_weight`).
    preset_defaults = {"alpha": 0.5, "temperature": 4.0}

    _student_loss_weight = hp.Hyperparameter(
        hp.unit_interval, name="student_loss_weight",
        doc="Weight of the student loss, in [0, 1].")

    def __init__(self, teacher, student, distillation_losses=None,
                 distillation_loss_weights=None, student_loss_weight=None,
                 *, alpha=None, temperature=None, **kwargs):
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                # A ValueError, as `keras.distillation.Distiller` raises.
                raise ValueError(
                    f"`{role}` must be a `keras.Model`. Received: {role}="
                    f"{model!r} of type {type(model).__name__}. Wrap a layer "
                    f"or function in a functional `keras.Model` first."
                )
        if teacher is student:
            raise ValueError(
                "`teacher` and `student` are the same model object; the "
                "teacher is frozen, so the student could not learn. Pass a "
                "separate student model."
            )
        for key in ("teacher_layer_name", "student_layer_name", "teacher_layer",
                    "student_layer"):
            if key in kwargs:
                raise TypeError(
                    f"`tfkd.Distiller` taps layers through its terms, not "
                    f"`{key}`. Received: {key}={kwargs[key]!r}. Pass a "
                    "feature term, e.g. `distillation_losses=["
                    "tfkd.losses.KDDistillation(), tfkd.losses."
                    "HintDistillation(teacher_layer_name=..., "
                    "student_layer_name=...)]`, or use a preset such as "
                    "`tfkd.FitNetDistiller`."
                )
        hinton = distillation_losses is None
        if hinton:
            if distillation_loss_weights is not None:
                raise ValueError(
                    "`distillation_loss_weights` weighs `distillation_losses`"
                    ", but none were given. Received: distillation_loss_"
                    f"weights={distillation_loss_weights!r}. Pass the terms "
                    "too, or leave both out for Hinton KD."
                )
            if alpha is not None and student_loss_weight is not None:
                raise ValueError(
                    "`alpha` is Hinton KD's name for `student_loss_weight`; "
                    f"pass one of them. Received: alpha={alpha!r}, "
                    f"student_loss_weight={student_loss_weight!r}."
                )
            if alpha is None:
                alpha = self.preset_defaults["alpha"] \
                    if student_loss_weight is None else student_loss_weight
            if temperature is None:
                temperature = self.preset_defaults["temperature"]
            student_loss_weight = hp.unit_interval(alpha, "alpha")
            terms = [KDDistillation(temperature=temperature)]
        else:
            for name, value in (("alpha", alpha),
                                ("temperature", temperature)):
                if value is not None:
                    raise TypeError(
                        f"`{name}` configures Hinton KD, used when no "
                        "`distillation_losses` are given. With terms, pass "
                        "`student_loss_weight=` and set temperatures on the "
                        f"terms (e.g. `KDDistillation(temperature=...)`). "
                        f"Received: {name}={value!r}."
                    )
            terms = distillation_losses
            if not isinstance(terms, (list, tuple)):
                terms = [terms]
            terms = list(terms)
            if not terms:
                raise ValueError(
                    "`distillation_losses` is empty. Pass at least one term, "
                    "or None for Hinton KD."
                )
            if student_loss_weight is None:
                student_loss_weight = 0.5
        if "dtype" not in kwargs and student.dtype_policy.name.startswith(
            "mixed"
        ):
            # compile() wraps the optimizer in a LossScaleOptimizer when the
            # model's own policy is mixed_float16, as Keras's trainer does.
            kwargs["dtype"] = student.dtype_policy
        super().__init__(**kwargs)
        self._hinton = hinton
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self._check_inputs()
        self.distillation_losses = terms
        object.__setattr__(self, "_terms", [
            _as_term(t, i) for i, t in enumerate(terms)])
        # One attribute per term too: TensorFlow checkpoints
        # (`tf.train.Checkpoint`, multi-worker backups) do not look into
        # Keras's tracked lists.
        for i, term in enumerate(self._terms):
            if isinstance(term, DistillationTerm):
                setattr(self, f"_term_{i}", term)
                # Its state writes wait for the checked optimizer update
                # (`apply_term_state_updates`).
                object.__setattr__(term, "defer_state_updates", True)
        self._term_names = self._unique_names()
        self._student_loss_weight = student_loss_weight
        self._set_up_term_weights(distillation_loss_weights)
        self._build_extractors()
        self._student_loss_fn = None
        self._student_loss_config = None
        self.checkpoint_student_only = False
        self._check_finite = True
        object.__setattr__(self, "_non_finite_record", None)
        object.__setattr__(self, "_guard_loss_names", [])
        # The current step's forward outputs and loss values, for
        # `compute_loss` and the guard's message (see `train_step`).
        object.__setattr__(self, "_step_outputs", None)
        object.__setattr__(self, "_step_values", {})
        # Keras's distiller's three metrics first (the order `evaluate`
        # returns them in), then tfkd's per-term ones.
        self._trackers = [keras.metrics.Mean(name=n) for n in (
            "student_loss", "distillation_loss", "total_loss")] + [
            keras.metrics.Mean(name=f"{n}_loss") for n in self._term_names
        ] + [keras.metrics.Mean(name=n) for n in self.extra_metric_names()]
        # Teacher and student arrive built; marking the distiller built lets
        # `.keras` loading restore optimizer state after compile.
        self.built = True

    # ------------------------------------------------------------------
    # Construction.

    def _check_inputs(self):
        """Checks that teacher and student take the same inputs."""
        if not (_compat.is_functional(self.teacher)
                and _compat.is_functional(self.student)):
            return
        t_in = [tuple(t.shape[1:]) for t in self.teacher.inputs]
        s_in = [tuple(t.shape[1:]) for t in self.student.inputs]
        if len(t_in) != len(s_in) or any(
            len(a) != len(b)
            or any(i is not None and j is not None and i != j
                   for i, j in zip(a, b))
            for a, b in zip(t_in, s_in)
        ):
            raise ValueError(
                "`teacher` and `student` must take the same inputs. Received "
                f"teacher input shapes {t_in} and student input shapes "
                f"{s_in}. Resize the data for one of them inside the model "
                f"(e.g. a `keras.layers.Resizing` layer) so both accept it."
            )

    def _unique_names(self):
        bases = [_term_name(t.loss if isinstance(t, _KerasTerm) else t)
                 for t in self._terms]
        # A repeated name gets the first free suffix, never one another
        # term already carries (`kd`, `kd`, `kd_2` -> `kd`, `kd_3`, `kd_2`):
        # the names key the terms' weights, metrics and losses.
        names, used, taken = [], set(), set(bases)
        for base in bases:
            name, k = base, 2
            while name in used or (name != base and name in taken):
                name, k = f"{base}_{k}", k + 1
            used.add(name)
            names.append(name)
        reserved = {"student", "total", "distillation"}
        for name in names:
            if name in reserved:
                raise ValueError(
                    f"A term is named {name!r}, which the distiller reports "
                    "itself. Give the term another `name=`."
                )
        return names

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
            value = hp.non_negative(weight, f"distillation_loss_weights"
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

    def _build_extractors(self):
        teacher_taps = [n for t in self._terms for n in t.teacher_taps]
        student_taps = [n for t in self._terms for n in t.student_taps]
        # Kept out of Keras's attribute tracking: they share every layer
        # with teacher/student, which already own (and save) those weights.
        object.__setattr__(self, "_teacher_extractor",
                           Extractor(self.teacher, teacher_taps, "teacher"))
        object.__setattr__(self, "_student_extractor",
                           Extractor(self.student, student_taps, "student"))
        self._check_logit_widths()
        for term in self._terms:
            term.bind(
                self.teacher, self.student,
                self._teacher_extractor.symbolic(term.teacher_taps),
                self._student_extractor.symbolic(term.student_taps),
            )

    def _check_logit_widths(self):
        """Refuses teacher and student logits of different widths when a
        term compares them class by class."""
        t = self._teacher_extractor.tensors[LOGITS]
        s = self._student_extractor.tensors[LOGITS]
        if t is None or s is None or None in (t.shape[-1], s.shape[-1]) \
                or t.shape[-1] == s.shape[-1]:
            return
        readers = [n for n, term in zip(self._term_names, self._terms)
                   if LOGITS in term.teacher_taps
                   and LOGITS in term.student_taps]
        if readers:
            raise ValueError(
                f"The teacher outputs {t.shape[-1]} logits and the student "
                f"{s.shape[-1]}, but the terms {readers} compare them class "
                "by class. Received: teacher logits of shape "
                f"{tuple(t.shape)}, student logits of shape {tuple(s.shape)}"
                ". Give both models the same number of classes, or "
                "distil features only."
            )

    # ------------------------------------------------------------------
    # Terms and hyperparameters.

    @property
    def terms(self):
        """`{name: term}` of the distiller's knowledge terms, in order."""
        return {n: (t.loss if isinstance(t, _KerasTerm) else t)
                for n, t in zip(self._term_names, self._terms)}

    def term(self, name):
        """The knowledge term called `name` (its metric is `<name>_loss`)."""
        terms = self.terms
        if name not in terms:
            raise ValueError(
                f"No term named {name!r}. Received: name={name!r}. This "
                f"distiller's terms: {list(terms)}."
            )
        return terms[name]

    def extra_metric_names(self):
        """Metrics a preset reports besides the loss terms (none here)."""
        return ()

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
            return (self._student_loss_weight,
                    [self._weight_value(v) for v in
                     self._term_weight_variables])
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

    @staticmethod
    def _weight_value(variable):
        if tf.inside_function():
            return tf.cast(tf.convert_to_tensor(variable.value), tf.float32)
        return hp.to_python(variable.numpy())

    def _derived(self, what):
        return ValueError(
            f"{type(self).__name__} derives `{what}` from its paper's "
            f"hyperparameters ({', '.join(self._own_hyperparameters())}); "
            "assign those instead, or build `tfkd.Distiller(teacher, "
            "student, distillation_losses=[...])` to set the weights "
            "directly."
        )

    def _own_hyperparameters(self):
        return hp.hyperparameter_names(self)

    @property
    def student_loss_weight(self):
        """Weight `w_s` of the student loss (a float; live, assignable)."""
        value = self.loss_weights()[0]
        return value if tf.inside_function() else float(value)

    @student_loss_weight.setter
    def student_loss_weight(self, value):
        if self.paper_weights() is not None:
            raise self._derived("student_loss_weight")
        self._student_loss_weight = value

    @property
    def distillation_loss_weights(self):
        """The terms' weights `w_i` (floats; assign a list to change them)."""
        weights = self.loss_weights()[1]
        if tf.inside_function():
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
        checked = [hp.non_negative(v, f"distillation_loss_weights[{n!r}]")
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
        self._student_loss_weight = hp.unit_interval(value, "alpha")

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
            if isinstance(term, DistillationTerm):
                for attr in hp.hyperparameter_names(term):
                    values[f"{name}/{attr}"] = getattr(term, attr)
            elif hasattr(term, "_temperature"):
                values[f"{name}/temperature"] = term.temperature
        return values

    def _sync_terms(self):
        """Takes in the temperatures assigned to Keras terms (see
        `_KerasTerm.sync`)."""
        for term in self._terms:
            if isinstance(term, _KerasTerm):
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

    # ------------------------------------------------------------------
    # Forward passes: each network once per step.

    def call(self, inputs, training=False):
        inputs, _ = split_cached_inputs(inputs)
        return self.student(inputs, training=training)

    def teacher_forward(self, x):
        """Runs the frozen teacher once: `(logits, [tapped features])`,
        the features in the order of `teacher_taps`."""
        outputs = self._teacher_extractor(x, training=False)
        outputs = {k: tf.stop_gradient(v) for k, v in outputs.items()}
        return outputs[LOGITS], [outputs[n] for n in self.teacher_taps]

    def student_forward(self, x, training):
        """Runs the student once: `(logits, [tapped features])`."""
        outputs = self._student_extractor(x, training=training)
        return outputs[LOGITS], [outputs[n] for n in self.student_taps]

    @property
    def _teacher_feature_extractor(self):
        """The teacher's extractor when a term taps its layers, else `None`
        (the name and meaning of Keras's distiller's attribute)."""
        return self._teacher_extractor if self.teacher_taps else None

    @property
    def _student_feature_extractor(self):
        """The student's extractor when a term taps its layers, else
        `None` (as Keras's distiller's)."""
        return self._student_extractor if self.student_taps else None

    @property
    def teacher_taps(self):
        """Teacher layers tapped by the terms (besides the logits)."""
        return list(self._teacher_extractor.names)

    @property
    def student_taps(self):
        """Student layers tapped by the terms (besides the logits)."""
        return list(self._student_extractor.names)

    def forward(self, x, training):
        """Both networks once: `(teacher outputs, student outputs)`, each a
        `{tap: tensor}` dict (key `None`: the logits)."""
        if training:
            x = self._checked_inputs(x)
        teacher = self._teacher_outputs(x)
        student = self._student_outputs(x, training)
        if training:
            student = self._logits_checked(x, teacher, student)
        return teacher, student

    def _logits_checked(self, x, teacher, student):
        """`student`'s outputs, once the first batch's logits are checked
        (see `_check_logits`); the step's losses wait for the check."""
        if self._guard_in_xla():
            return student
        cached = split_cached_inputs(x)[1] is not None
        checks = self._check_logits(None if cached else teacher[LOGITS],
                                    student[LOGITS])
        if not checks:
            return student
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in student.items()}

    def _teacher_outputs(self, x):
        """The teacher's `{tap: tensor}` (cached with the data, or one
        frozen forward pass), without gradient."""
        images, cached = split_cached_inputs(x)
        if cached is not None:
            return self._cached_outputs(cached)
        outputs = self._teacher_extractor(images, training=False)
        return {k: tf.stop_gradient(v) for k, v in outputs.items()}

    def _student_outputs(self, x, training):
        return self._student_extractor(split_cached_inputs(x)[0],
                                       training=training)

    def _checked_inputs(self, x):
        """`x` with its images asserted finite (see `check_finite`)."""
        if not self._check_finite or self._guard_in_xla():
            return x
        if isinstance(x, dict) and IMAGES_KEY in x:
            return {**x, IMAGES_KEY: self.checked_images(x[IMAGES_KEY])}
        return self.checked_images(x)

    def _cached_outputs(self, cached):
        logits, features = cached
        names = self._teacher_extractor.names
        if len(features) != len(names):
            raise ValueError(
                f"The cached teacher outputs hold {len(features)} tapped "
                f"feature(s) but this distiller taps {len(names)} teacher "
                f"layer(s) ({names}). Rebuild the cache with "
                "`tfkd.data.cache_teacher_outputs(distiller, ...)` for this "
                "distiller."
            )
        outputs = {LOGITS: logits, **dict(zip(names, features))}
        return {k: tf.stop_gradient(v) for k, v in outputs.items()}

    # ------------------------------------------------------------------
    # Losses.

    def term_values(self, teacher, student, y, training, inputs=None):
        """`{name: unreduced value}` of every term on one forward pass.

        `inputs` (the batch's inputs, e.g. a dict with an example index)
        is passed to the terms that declare `uses_inputs`.
        """
        values = {}
        for name, term in zip(self._term_names, self._terms):
            if isinstance(term, DistillationTerm):
                term.take_state_updates()  # Drops any left from a trace.
            t = [teacher[n] for n in term.teacher_taps]
            s = [student[n] for n in term.student_taps]
            several = getattr(term, "_several", False)
            extra = {"inputs": inputs} if getattr(term, "uses_inputs",
                                                  False) else {}
            values[name] = term.call(
                t if several else t[0], s if several else s[0],
                labels=y, training=training, **extra)
        return values

    def compute_terms(self, x, y=None, training=False):
        """Every term's unreduced value on one batch, keyed by metric name.

        One forward pass of each network (the one `fit` would run); useful
        to inspect or differentiate the terms directly.

        Args:
            x: A batch of inputs.
            y: Its labels (needed by terms that read them).
            training: Run the student in training mode.

        Returns:
            `{"<term>_loss": value}`: `(batch,)` per example, or a scalar for
            batch-level terms.

        Example:

        >>> import tfkd
        >>> from tfkd import testing
        >>> d = tfkd.Distiller(testing.tiny_conv_model("t"),
        ...                    testing.tiny_conv_model("s"))
        >>> x, _ = testing.random_images(4)
        >>> {k: tuple(v.shape) for k, v in d.compute_terms(x).items()}
        {'kd_loss': (4,)}
        """
        teacher, student = self.forward(x, training)
        if y is not None:
            y = tf.convert_to_tensor(y)
        return {f"{name}_loss": value for name, value in self.term_values(
            teacher, student, y, training, inputs=x).items()}

    def _sparse_labels(self, y, logits):
        return y.dtype.is_integer or (
            y.shape.rank is not None and logits.shape.rank is not None
            and (y.shape.rank < logits.shape.rank or y.shape[-1] == 1)
        )

    def _check_labels(self, y, logits):
        """Checks labels in the graph; returns `(labels, labelled mask)`.

        The mask is `None` unless labels are class ids; then the labels are
        int64 ids of shape `(batch,)` in which `-1` marks an unlabelled
        example (the terms see it; the student loss and the metrics skip
        it).
        """
        if y is None:
            raise ValueError(
                "Distillers need labels: call `fit(x, y)` or pass a dataset "
                "of `(images, labels)` pairs (label -1 marks an unlabelled "
                "example). Received: y=None."
            )
        y = tf.convert_to_tensor(y)
        if (self._student_loss_fn is not None and y.dtype.is_floating
                and logits.shape.rank is not None
                and logits.shape[-1] == 1):
            # A single-output head with its own loss (regression, binary
            # logit): its targets are values, neither class ids nor rows.
            return y, None
        if not self._sparse_labels(y, logits):
            return self._check_dense_labels(y, logits)
        checks = []
        if y.dtype.is_floating:
            fractional = tf.reshape(tf.not_equal(y, tf.round(y)), [-1])
            checks.append(tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(fractional)),
                [_LABELS_FRACTIONAL,
                 tf.reshape(y, [-1])[tf.argmax(tf.cast(fractional,
                                                       tf.int32))]]))
        labels = tf.cast(y, tf.int64)
        num_classes = tf.cast(tf.shape(logits)[-1], tf.int64)
        low, high = tf.reduce_min(labels), tf.reduce_max(labels)
        checks.append(tf.debugging.Assert(
            tf.logical_or(tf.size(labels) == 0, tf.logical_and(
                low >= -1, high < num_classes)),
            [_LABELS_RANGE, low, high, num_classes]))
        with tf.control_dependencies(checks):
            labels = tf.reshape(tf.identity(labels), [-1])
        return labels, labels >= 0

    def _check_dense_labels(self, y, logits):
        """One-hot / soft labels: `(labels, labelled mask)`.

        With the default cross entropy, each row is a distribution (non-
        negative, summing to 1) or all zeros, which marks an unlabelled
        example (masked like a `-1` class id). A custom `compile(loss=)`
        gets its rows as they are (an all-zero row may mean something to
        it), but never negative ones: a `-1` row is refused in any case.
        """
        num_classes = logits.shape[-1]
        checks = []
        if y.shape[-1] is not None and num_classes is not None:
            if y.shape[-1] != num_classes:
                raise ValueError(_MESSAGES[_LABELS_WIDTH](
                    y.shape[-1], num_classes)
                    + f" Received labels of shape {tuple(y.shape)}.")
        else:
            # Widths unknown until the batch arrives (a stream without
            # static shapes): checked in the step.
            checks.append(tf.debugging.Assert(
                tf.equal(tf.shape(y)[-1], tf.shape(logits)[-1]),
                [_LABELS_WIDTH, tf.shape(y)[-1], tf.shape(logits)[-1]]))
        values = tf.cast(y, tf.float32)
        low = tf.reduce_min(values, axis=-1)
        total = tf.reduce_sum(values, axis=-1)
        default_loss = self._student_loss_fn is None
        bad = low < 0
        if default_loss:
            bad = tf.logical_or(bad, tf.logical_and(
                tf.not_equal(total, 0.0), tf.abs(total - 1.0) > 1e-3))
        bad = tf.reshape(bad, [-1])
        first = tf.argmax(tf.cast(bad, tf.int32))
        checks.append(tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            [_LABELS_DENSE, tf.reshape(low, [-1])[first],
             tf.reshape(total, [-1])[first]]))
        with tf.control_dependencies(checks):
            y = tf.identity(y)
        if not default_loss or y.shape.rank != 2:
            return y, None
        return y, tf.reduce_any(tf.not_equal(y, 0), axis=-1)

    def _labelled_for_metrics(self, y):
        """The labelled mask of the labels `_check_labels` returns (class
        ids with `-1`, or one-hot rows with all-zero ones), or `None`."""
        if y is None:
            return None
        if y.dtype == tf.int64 and y.shape.rank == 1:
            return y >= 0
        if (self._student_loss_fn is None and y.dtype.is_floating
                and y.shape.rank == 2):
            return tf.reduce_any(tf.not_equal(y, 0), axis=-1)
        return None

    def student_loss_values(self, y, logits):
        """Unreduced student loss (`(batch,)` or more dims)."""
        if self._student_loss_fn is None:
            return kd_losses.cross_entropy(y, logits)
        logits = tf.cast(logits, tf.float32)
        if y.dtype.is_floating:
            y = tf.cast(y, tf.float32)
        try:
            return _per_example(self._student_loss_fn, y, logits)
        except (ValueError, tf.errors.InvalidArgumentError) as e:
            # TensorFlow's own message names neither the loss nor why
            # ("Dimensions must be equal, but are 8 and 10").
            loss = self._student_loss_config
            name = loss if isinstance(loss, str) else getattr(
                loss, "name", type(loss).__name__)
            sparse = self._sparse_labels(y, logits)
            fix = (
                "Class-id labels need a loss that takes class ids (leave "
                "`loss=None`, cross entropy from logits, or pass "
                "`keras.losses.SparseCategoricalCrossentropy("
                "from_logits=True)`), or give this loss one-hot labels "
                "(`keras.utils.to_categorical(y, num_classes)`)."
                if sparse else
                "Give the loss labels of the logits' shape, or choose a "
                "loss that takes these labels."
            )
            raise ValueError(
                f"The student loss {name!r} cannot compare the labels with "
                f"the student's logits: labels of shape {tuple(y.shape)} "
                f"(dtype {y.dtype.name}), logits of shape "
                f"{tuple(logits.shape)}. {fix} Details: "
                f"{str(e).splitlines()[0]}"
            ) from e

    def compute_losses(self, x, y=None, sample_weight=None, training=False,
                       outputs=None):
        """The step's losses on one batch.

        Args:
            x: The batch's inputs (or a cached-teacher dict).
            y: Labels.
            sample_weight: Optional per-example weights.
            training: Whether this is a training step.
            outputs: Optional `(teacher, student)` outputs of `forward`,
                when the caller ran it already.

        Returns:
            `(total, {metric name: value}, student logits, labels,
            metric sample weights)`.
        """
        teacher, student = outputs or self.forward(x, training)
        teacher, student, y, sample_weight = _tokens(
            teacher, student, y, sample_weight)
        logits = student[LOGITS]
        y, labelled = self._check_labels(y, logits)
        values = {
            f"{name}_loss": reduce_term(value, sample_weight)
            for name, value in self.term_values(
                teacher, student, y, training, inputs=x).items()
        }
        # Any class id for the unlabelled examples: their student loss
        # carries weight 0 (the returned labels keep their -1, for
        # `compute_metrics`).
        per_example = self.student_loss_values(
            y if labelled is None else tf.maximum(y, 0), logits)
        weights = sample_weight
        if labelled is not None:
            mask = tf.cast(labelled, tf.float32)
            weights = mask if sample_weight is None else mask * tf.cast(
                tf.reshape(sample_weight, [-1]), tf.float32)
            value = tf.cast(per_example, tf.float32)
            if value.shape.rank and value.shape.rank > 1:
                value = tf.reduce_mean(
                    value, axis=list(range(1, value.shape.rank)))
            # The global batch's labelled count: under `tf.distribute`
            # each replica's sum is divided by the replicas' mean count, so
            # the replicas' average (the engine divides by their number
            # and sums their gradients) is the global sum over the global
            # count, however the labels fall on replicas.
            student_loss = tf.math.divide_no_nan(
                tf.reduce_sum(value * weights),
                _mean_over_replicas(tf.reduce_sum(mask)))
        else:
            student_loss = reduce_term(per_example, sample_weight)
        values = {"student_loss": student_loss, **values}
        w_s, w = self.loss_weights()
        w_s = tf.cast(w_s, tf.float32)
        distillation = tf.add_n([
            tf.cast(wi, tf.float32) * values[f"{n}_loss"]
            for n, wi in zip(self._term_names, w)
        ])
        values["distillation_loss"] = distillation
        total = w_s * student_loss + (1.0 - w_s) * distillation
        if training:
            regularization = list(self.student.losses) + [
                loss for t in self._terms for loss in t.losses]
            if regularization:
                total += tf.add_n(
                    [tf.cast(r, tf.float32) for r in regularization])
        return total, values, logits, y, weights

    # ------------------------------------------------------------------
    # Steps.

    def step_variables(self):
        """Variables the optimizer updates: the student plus the terms'
        trainable parts (adapters, regressors)."""
        seen, variables = set(), []
        for v in list(self.student.trainable_variables) + [
            v for t in self._terms for v in t.trainable_weights
        ]:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
        return variables

    def _scaled(self, total, optimizer=None):
        # Per-replica mean -> global mean under tf.distribute, as
        # keras.src.losses.loss.scale_loss_for_distribution does.
        replicas = num_replicas()
        loss = total / replicas if replicas > 1 else total
        return (optimizer or self.optimizer).scale_loss(loss)

    # ------------------------------------------------------------------
    # The finite guard: nothing non-finite reaches the weights.

    @property
    def check_finite(self):
        """Whether each training step checks its images, gradients and loss
        terms for NaN / Inf before any weight changes (default `True`).

        A bad batch stops `fit` with a `tfkd.callbacks.NonFiniteDataError`
        naming the epoch, the batch and the optimizer step (a non-finite
        loss whose gradients are finite, e.g. an overflowing term, with a
        `tfkd.callbacks.NonFiniteLossError` naming the terms); the step is
        not applied, so no weight (and no checkpoint) takes it in. The
        checks' own work is about 0.2% of a VGG step, the whole cost
        within measurement noise (`docs/benchmarks.md`); set
        `distiller.check_finite = False` to drop them (the next `fit`
        retraces its step). Gradients (but not the loss) are not checked
        under a `LossScaleOptimizer`, which skips overflowing float16
        steps itself. Under `jit_compile=True` (XLA drops assertions) a bad step
        is skipped instead, and `fit` raises after the batch.
        """
        return self._check_finite

    @check_finite.setter
    def check_finite(self, value):
        if not isinstance(value, bool):
            raise TypeError(
                "`check_finite` must be True or False. Received: "
                f"check_finite={value!r} of type {type(value).__name__}."
            )
        if value != self._check_finite:
            self._check_finite = value
            # The compiled step holds the old setting.
            self.train_function = None

    def _step_number(self):
        optimizer = getattr(self, "optimizer", None)
        if optimizer is None:
            return tf.constant(-1, tf.int64)
        return tf.cast(optimizer.iterations, tf.int64)

    def _guard_in_xla(self):
        """Whether the guard skips steps instead of asserting (XLA ignores
        `tf.debugging.Assert`)."""
        return self._non_finite_record is not None and bool(
            self.jit_compile)

    def checked_images(self, images):
        """`images`, asserted free of NaN / Inf before the step uses them.

        The assertion names the optimizer step and the first bad example
        of the batch; `fit` turns it into a `NonFiniteDataError`.
        """
        finite = _finite_examples(images)
        if finite is None:
            return images
        first_bad = _global_index(tf.argmin(tf.cast(finite, tf.int32),
                                            output_type=tf.int64), finite)
        check = tf.debugging.Assert(
            tf.reduce_all(finite),
            [_IMAGES, self._step_number(), first_bad])
        with tf.control_dependencies([check]):
            return tf.nest.map_structure(tf.identity, images)

    def apply_term_state_updates(self):
        """Writes the state the terms computed in this step's forward pass
        (CRD's memory banks and counters, ...): called right after the
        optimizer update, so a step the finite guard refuses changes
        neither weights nor term state."""
        for term in self._terms:
            if isinstance(term, DistillationTerm):
                for update in term.take_state_updates():
                    update()

    def apply_checked_gradients(self, gradients, variables, images=None,
                                losses=None, optimizer=None):
        """Applies `gradients` once they, the step's `losses` and (under
        XLA) `images` are known to be finite (see `check_finite`).

        A non-finite loss stops the step even when its gradients are
        finite (e.g. an overflowing term whose gradient saturates): its
        reported value would otherwise be the only trace of a step that
        already moved the weights.

        Args:
            gradients: One gradient (or `None`) per variable.
            variables: The variables to update.
            images: The step's images (checked here only under XLA; the
                forward pass asserts them otherwise).
            losses: Optional `{metric name: scalar}` of the step's loss
                terms, checked too; a failed check names the non-finite
                ones.
            optimizer: Default: the distiller's optimizer.
        """
        optimizer = optimizer or self.optimizer
        if not self._check_finite:
            optimizer.apply_gradients(zip(gradients, variables))
            self.apply_term_state_updates()
            return
        # A loss-scale optimizer skips (and recovers from) overflowing
        # float16 gradients itself.
        checked = not isinstance(optimizer,
                                 keras.optimizers.LossScaleOptimizer)
        grads_finite = _all_finite(gradients) if checked else None
        # The loss is checked under a loss-scale optimizer too: it skips
        # non-finite gradients only.
        losses_finite = _losses_finite(losses)
        if self._guard_in_xla():
            self._apply_or_skip(optimizer, gradients, variables, images,
                                grads_finite, losses, losses_finite)
            return
        # Gradients first: non-finite ones are reported with the loss
        # terms that are non-finite too.
        checks = []
        if grads_finite is not None:
            checks.append(tf.debugging.Assert(
                grads_finite,
                [_GRADIENTS, self._step_number(), _non_finite_names(losses)]))
        if losses_finite is not None:
            with tf.control_dependencies(checks):
                checks.append(tf.debugging.Assert(
                    losses_finite[0],
                    [_LOSSES, self._step_number(),
                     _non_finite_names(losses)]))
        if not checks:
            optimizer.apply_gradients(zip(gradients, variables))
            self.apply_term_state_updates()
            return
        # Everything the optimizer does waits for the checks, its step
        # counter included: a failed step leaves no trace.
        with tf.control_dependencies(checks):
            gradients = [None if g is None else tf.identity(g)
                         for g in gradients]
            optimizer.apply_gradients(zip(gradients, variables))
            self.apply_term_state_updates()

    def _apply_or_skip(self, optimizer, gradients, variables, images,
                       grads_finite, losses=None, losses_finite=None):
        finite = _finite_examples(images) if images is not None else None
        images_finite = tf.constant(True) if finite is None else \
            tf.reduce_all(finite)
        ok = images_finite if grads_finite is None else tf.logical_and(
            images_finite, grads_finite)
        if losses_finite is None:
            loss_ok, bad_losses = tf.constant(True), tf.constant(0, tf.int64)
        else:
            loss_ok, bad_losses = losses_finite
            # Read back by `_raise_recorded` to name the bad terms.
            object.__setattr__(self, "_guard_loss_names", list(losses))
        ok = tf.logical_and(ok, loss_ok)
        if not optimizer.built:
            # Not inside the branch: that would create its variables there.
            optimizer.build(variables)
        record = self._non_finite_record
        step = self._step_number()

        def apply():
            optimizer.apply_gradients(zip(gradients, variables))
            self.apply_term_state_updates()
            return tf.constant(True)

        def skip():
            first_bad = tf.constant(-1, tf.int64) if finite is None else \
                _global_index(tf.argmin(tf.cast(finite, tf.int32),
                                        output_type=tf.int64), finite)
            # Images first (the cause of everything else), then the
            # gradients, then the loss (as outside XLA); the third value
            # is the first bad example for images, the bit mask of the bad
            # loss terms for a loss.
            grads_ok = tf.constant(True) if grads_finite is None \
                else grads_finite
            kind = tf.where(
                tf.logical_not(images_finite), tf.constant(1, tf.int64),
                tf.where(grads_ok, tf.constant(3, tf.int64),
                         tf.constant(2, tf.int64)))
            first_bad = tf.where(kind == 3, bad_losses, first_bad)
            # The first bad step of a run is the one reported.
            record.assign(tf.where(record[0] < 0,
                                   tf.stack([step, kind, first_bad]),
                                   record))
            return tf.constant(False)

        tf.cond(ok, apply, skip)

    def _prepare_guard(self):
        """Creates, once, the XLA guard's record (`[step, kind, example]`;
        step -1 while nothing went wrong) when the step will be compiled
        with XLA. Called eagerly, before `fit` traces its step."""
        if self._non_finite_record is not None or not (
            self._check_finite and self.jit_compile
        ):
            return
        # `fit` enters the model's strategy later: ask inside its scope.
        with self.distribute_strategy.scope():
            distributed = tf.distribute.has_strategy()
        if distributed:
            warnings.warn(
                "`check_finite` cannot guard a step compiled with "
                "`jit_compile=True` under a `tf.distribute` strategy (XLA "
                "drops assertions, and skipping a step would need a "
                "cross-replica decision): non-finite data may reach the "
                "weights. Compile with `jit_compile=False` (the default "
                "under a strategy) to keep the guard.", stacklevel=3)
            return
        object.__setattr__(self, "_non_finite_record", tf.Variable(
            [-1, 0, -1], dtype=tf.int64, trainable=False))

    def _raise_recorded(self, progress=None):
        """Raises the XLA guard's recorded bad step, if any."""
        record = self._non_finite_record
        if record is None:
            return
        step, kind, example = (int(v) for v in record.numpy())
        if step < 0:
            return
        record.assign([-1, 0, -1])
        if kind == 3:
            raise _check_error(_LOSSES, [step, ", ".join(
                f"`{name}`" for i, name in enumerate(self._guard_loss_names)
                if example >> i & 1)], progress)
        values = [step, example] if kind == 1 else [step]
        raise _check_error(_IMAGES if kind == 1 else _GRADIENTS, values,
                           progress)

    # ------------------------------------------------------------------
    # The objective and the steps, on Keras's trainer.

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        """The distillation objective of one batch, as on any Keras model.

        `w_s · L_student + (1 − w_s) · Σ_i w_i · L_i` (plus the student's
        and the terms' regularisation losses in training); updates the
        `student_loss`, `<term>_loss`, `distillation_loss` (`Σ_i w_i L_i`)
        and `total_loss` metrics. `train_step` and `test_step` call it
        with the outputs of their single forward pass of each network; a
        direct call runs the networks it needs (the teacher always; the
        student when `y_pred` is `None` or a term taps its layers). A
        subclass may override it (Keras's convention); the steps call the
        override.

        Args:
            x: The batch's inputs (or a cached-teacher dict).
            y: Labels (class ids, `-1` for unlabelled, or one-hot).
            y_pred: The student's logits on `x` (default: computed).
            sample_weight: Optional per-example (or per-token) weights.
            training: Whether this is a training step.

        Returns:
            The total loss, a float32 scalar.

        Example:

        >>> import tfkd
        >>> from tfkd import testing
        >>> d = tfkd.Distiller(testing.tiny_conv_model("t"),
        ...                    testing.tiny_conv_model("s"))
        >>> x, y = testing.random_images(4)
        >>> float(d.compute_loss(x, y, d(x))) > 0
        True
        """
        step = self._step_outputs
        if step is not None and step[0] is y_pred:
            outputs = step[1:]
        else:
            outputs = self._outputs_for(x, y_pred, training)
        total, values, _, _, _ = self.compute_losses(
            x, y, sample_weight, training, outputs=outputs)
        object.__setattr__(self, "_step_values", values)
        self._update_trackers(total, values, x)
        return total

    def _outputs_for(self, x, y_pred, training):
        """`(teacher, student)` outputs for a direct `compute_loss` call:
        `y_pred` as the student's logits, the student run only when it is
        missing or a term taps the student's layers."""
        teacher = self._teacher_outputs(x)
        if y_pred is None or self._student_extractor.names:
            student = self._student_outputs(x, training)
        else:
            student = {}
        if y_pred is not None:
            student[LOGITS] = y_pred
        return teacher, student

    def _run_step(self, x, y, sample_weight, training, teacher=None):
        """The student's forward pass, then `compute_loss` on it (and on
        `teacher`, the teacher's outputs, computed here when `None`):
        `(loss, the student's logits)`."""
        if teacher is None:
            teacher = self._teacher_outputs(x)
        student = self._student_outputs(x, training)
        if training:
            student = self._logits_checked(x, teacher, student)
        y_pred = student[LOGITS]
        object.__setattr__(self, "_step_outputs", (y_pred, teacher, student))
        try:
            loss = _compat.compute_loss(self, x, y, y_pred, sample_weight,
                                        training)
        finally:
            object.__setattr__(self, "_step_outputs", None)
        _compat.loss_tracker(self).update_state(loss,
                                                sample_weight=_batch_size(x))
        return loss, y_pred

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        object.__setattr__(self, "_step_values", {})
        x = self._checked_inputs(x)
        # The frozen teacher runs outside the tape: nothing to record.
        teacher = self._teacher_outputs(x)
        with tf.GradientTape() as tape:
            loss, y_pred = self._run_step(x, y, sample_weight, True, teacher)
            scaled = self._scaled(loss)
        # Read after the forward pass: a lazily built student has its
        # variables only now.
        variables = self.step_variables()
        gradients = tape.gradient(scaled, variables)
        self.apply_checked_gradients(gradients, variables,
                                     images=split_cached_inputs(x)[0],
                                     losses={"loss": loss,
                                             **self._step_values})
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, y_pred = self._run_step(x, y, sample_weight, False)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def _update_trackers(self, total, values, x, weights=None):
        """Updates the loss metrics (not Keras's `loss`, which the steps
        update) from `values`, `{metric name: scalar}`."""
        batch = _batch_size(x)
        weights = weights or {}
        for tracker in self._trackers:
            value = total if tracker.name == "total_loss" else values.get(
                tracker.name)
            if value is not None:
                tracker.update_state(
                    value, sample_weight=weights.get(tracker.name, batch))

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # The compiled metrics see the student's logits only; the loss
        # trackers were updated by the step itself.
        metrics = _compat.compile_metrics(self)
        if metrics is not None and y is not None:
            y = tf.convert_to_tensor(y)
            labelled = None
            if self._sparse_labels(y, y_pred):
                # Class ids, one per example (or token), -1 unlabelled.
                y = tf.reshape(tf.cast(y, tf.int64), [-1])
                y_pred = tf.reshape(y_pred, [-1, tf.shape(y_pred)[-1]])
                labelled = y >= 0
                y = tf.maximum(y, 0)
            elif (self._student_loss_fn is None and y.dtype.is_floating
                  and y.shape.rank == 2):
                # One-hot rows; an all-zero row is unlabelled.
                labelled = tf.reduce_any(tf.not_equal(y, 0), axis=-1)
            if labelled is not None:
                # Keras's unweighted `metrics=` ignore sample weights: give
                # them the labelled mask, or every unlabelled example would
                # count (as class 0) in "accuracy".
                labelled = tf.cast(labelled, tf.float32)
                weighted = labelled if sample_weight is None else \
                    labelled * tf.reshape(
                        tf.cast(sample_weight, tf.float32), [-1])
                _compat.update_compile_metrics(
                    metrics, y, y_pred,
                    unweighted=labelled, weighted=weighted)
            else:
                metrics.update_state(y, y_pred, sample_weight)
        results = self.get_metrics_result()
        if _compat.in_multi_worker_mode(tf.distribute.get_strategy()):
            # Keras reduces step outputs across workers with
            # `strategy.reduce("MEAN", v, axis=0)`, which rejects scalars
            # (keras-team/keras#20585); the results are global already.
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    def get_metrics_result(self):
        """The metrics' values; a compiled metric that has seen no labelled
        example (data without labels, all `-1`) is NaN, not Keras's 0."""
        results = super().get_metrics_result()
        metrics = _compat.compile_metrics(self)
        if metrics is None or not metrics.built:
            return results
        stack = _compat.compiled_metric_list(metrics)
        while stack:
            metric = stack.pop()
            if metric is None:
                continue
            count = getattr(metric, "count", None)
            if count is None:
                # Keras groups an output's metrics in a `MetricsList`.
                stack += list(getattr(metric, "metrics", []))
                continue
            if metric.name not in results:
                continue
            value = results[metric.name]
            results[metric.name] = tf.where(
                count > 0, value, tf.constant(float("nan"), value.dtype))
        return results

    # ------------------------------------------------------------------
    # Compilation.

    def compile(self, optimizer="adam", loss=None, metrics=None,
                **kwargs):
        """Configures training; `loss` is the student loss (Keras's
        convention).

        Args:
            optimizer: Optimizer of the student and the terms' parts
                (default `"adam"`, as `keras.distillation.Distiller`).
            loss: The student's loss against the labels: `None` (default)
                for cross entropy from logits with integer or one-hot
                labels (unlabelled: class id `-1` or an all-zero one-hot
                row), or any Keras loss on logits. A loss on class ids
                never sees a `-1`: unlabelled examples reach it as class 0
                with weight 0, so they count in neither its value nor its
                gradient
                (name, `keras.losses.Loss`, or callable). Losses that take
                probabilities (`from_logits=False`) are refused.
            metrics: Metrics on the student's logits.
            **kwargs: Other `keras.Model.compile` arguments
                (`weighted_metrics`, `jit_compile`, `steps_per_execution`,
                `auto_scale_loss`, ...). `loss_weights` is refused: the
                distiller's weights are `student_loss_weight` and
                `distillation_loss_weights`.
        """
        if kwargs.get("loss_weights") is not None:
            raise ValueError(
                "`compile(loss_weights=...)` has no meaning for a distiller: "
                "its weights are `student_loss_weight` and "
                "`distillation_loss_weights`. Received: loss_weights="
                f"{kwargs['loss_weights']!r}."
            )
        kwargs.pop("loss_weights", None)
        self._student_loss_fn = _resolve_student_loss(
            self._default_student_loss() if loss is None else loss)
        self._student_loss_config = loss
        # In the model's strategy (the one it was built under), even when
        # called outside its scope (e.g. stage 2's re-compile in
        # `fit_two_stage`): Keras's `loss` tracker, the compiled metrics and
        # the optimizer's variables made outside it are not aggregated over
        # replicas/workers (each worker would report its own `loss`).
        with self.distribute_strategy.scope():
            super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
            # Built now over exactly the variables `fit` updates, so a saved
            # optimizer state loads back in the same order.
            if self.student.built:
                self.optimizer.build(self.optimizer_variables())

    def optimizer_variables(self):
        """Variables the optimizer is built on (every variable any step may
        update; by default `step_variables()`)."""
        return self.step_variables()

    def _default_student_loss(self):
        """The student loss when `compile` gets none (a preset may set
        one); `None` is cross entropy from logits."""
        return None

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self._student_loss_config is not None:
            config["loss"] = keras.saving.serialize_keras_object(
                self._student_loss_config)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    # ------------------------------------------------------------------
    # Data checks, checkpoints and serialisation.

    def fit(self, x=None, y=None, *args, **kwargs):
        _check_not_empty(x, "x")
        # Labels are class ids only with the default student loss; a
        # custom one (e.g. a regression head's) takes any targets.
        num_classes = self._num_classes() if self._student_loss_fn is None \
            else None
        _check_arrays(x, y, num_classes, "x", "y", self._logits_rank())
        validation = kwargs.get("validation_data")
        if validation is not None:
            _check_not_empty(validation, "validation_data")
            if isinstance(validation, (tuple, list)) and len(validation) >= 2:
                _check_arrays(validation[0], validation[1], num_classes,
                              "validation_data[0]", "validation_data[1]",
                              self._logits_rank())
        self._check_teacher_once(x, y, kwargs.get("batch_size"))
        self._prepare_logits_check()
        progress = _Progress()
        if len(args) < 4:  # `callbacks` not given positionally
            # Progress first: under XLA it raises a skipped bad step before
            # any other callback sees the batch.
            kwargs["callbacks"] = [progress] + list(
                kwargs.get("callbacks") or []) + self._schedule_callbacks(
            ) + [_ScaleCheck()]
        _warn_unknown_monitors(kwargs.get("callbacks") or [],
                               self._loss_metric_names())
        if isinstance(x, tf.data.Dataset) and len(args) < 7:
            # A dataset shuffles itself and Keras ignores `shuffle` for it,
            # but warns on every `fit` that keeps its default `True`.
            kwargs.setdefault("shuffle", False)
        self._prepare_guard()
        self._sync_terms()
        with self._clear_errors(progress):
            return super().fit(x, y, *args, **kwargs)

    def _schedule_callbacks(self):
        """The callbacks of the terms' own schedules (e.g. DKD's warm-up:
        `tfkd.terms.DistillationTerm.training_callbacks`)."""
        callbacks = []
        for term in self._terms:
            own = getattr(term, "training_callbacks", None)
            if own is not None:
                callbacks += list(own(self))
        return callbacks

    def _loss_metric_names(self):
        return ["loss"] + [t.name for t in self._trackers]

    def evaluate(self, *args, **kwargs):
        self._sync_terms()
        with self._clear_errors():
            return super().evaluate(*args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        self._prepare_logits_check()
        self._prepare_guard()
        self._sync_terms()
        with self._clear_errors():
            logs = super().train_on_batch(*args, **kwargs)
            self._raise_recorded()
            return logs

    def test_on_batch(self, *args, **kwargs):
        self._sync_terms()
        with self._clear_errors():
            return super().test_on_batch(*args, **kwargs)

    def _check_teacher_once(self, x, y, batch_size):
        """Warns (once per distiller) when the teacher is at chance on the
        labelled examples of the first batch: an untrained teacher, or
        inputs it was not trained on (`keras.applications` models expect
        pixels in [0, 255]; tfkd's loaders give [0, 1]). Its student would
        learn nothing from it. One teacher forward pass on one batch."""
        if getattr(self, "_teacher_checked", False):
            return
        self._teacher_checked = True
        batch = _first_labelled_batch(x, y, batch_size)
        num_classes = self._num_classes()
        if batch is None or not num_classes or num_classes < 2:
            return
        images, labels = batch
        images, cached = split_cached_inputs(images)
        if cached is not None:
            return
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[-1] == num_classes:
            # One-hot; an all-zero row is unlabelled.
            labels = np.where(labels.any(-1), labels.argmax(-1), -1)
        labels = labels.reshape(-1)
        labelled = labels >= 0
        count = int(labelled.sum())
        if count < 2 * num_classes:
            # Too few labels to tell chance from bad luck: not worth the
            # teacher's forward pass.
            return
        with self.distribute_strategy.scope():
            logits = self._teacher_extractor(images, training=False)[LOGITS]
        predicted = np.asarray(keras.ops.convert_to_numpy(logits))
        if predicted.ndim != 2 or len(predicted) != len(labels):
            return
        accuracy = float((predicted.argmax(-1) == labels)[labelled].mean())
        chance = 1.0 / num_classes
        if accuracy < min(2 * chance, (chance + 1) / 2):
            warnings.warn(
                f"The teacher {self.teacher.name!r} is at chance on the "
                f"first batch: {accuracy:.0%} top-1 on its {count} labelled "
                f"images ({num_classes} classes: chance {chance:.0%}). Its "
                "student would learn nothing from it. Train the teacher "
                "first, and feed it the inputs it was trained on: "
                "`keras.applications` models expect pixels in [0, 255] "
                "(they rescale inside), while tfkd's data loaders give "
                "[0, 1] (put `keras.layers.Rescaling(255.0)` in front of "
                "such a teacher, and train it that way).",
                UserWarning, stacklevel=3)

    def _prepare_logits_check(self):
        """Creates, once, the flag of the first-batch probability check
        (see `_check_logits`), eagerly, before `fit` traces its step."""
        if self.__dict__.get("_logits_pending") is not None:
            return
        # Outside the strategy's scope: a plain variable, which replicas
        # may assign inside a `cond` (a mirrored one needs a merge_call).
        with tf.init_scope():
            flag = tf.Variable(True, trainable=False, dtype=tf.bool)
        object.__setattr__(self, "_logits_pending", flag)

    def _check_logits(self, teacher_logits, student_logits):
        """Refuses networks whose outputs are probabilities, by their values
        on the first training batch (once per distiller).

        A final `Softmax` layer is found in the graph and read around (see
        `tfkd.distillers.taps`); a softmax the graph does not show (a
        `keras.ops.softmax` call, a `Lambda`, a nested classifier's softmax
        behind a `Flatten`) is caught here: every row non-negative and
        summing to 1 is a distribution, not logits. Later steps only read
        the flag. (XLA drops assertions: not checked under
        `jit_compile=True`.)
        """
        flag = self.__dict__.get("_logits_pending")
        if flag is None:
            return []
        found = [("student", self.student.name, student_logits)]
        if teacher_logits is not None:
            found.insert(0, ("teacher", self.teacher.name, teacher_logits))

        def check():
            asserts = []
            for role, name, logits in found:
                if logits.shape[-1] is not None and logits.shape[-1] < 2:
                    continue
                rows = tf.reshape(tf.cast(logits, tf.float32),
                                  [-1, tf.shape(logits)[-1]])
                probabilities = tf.logical_and(
                    tf.reduce_all(rows >= -1e-6),
                    tf.reduce_all(tf.abs(tf.reduce_sum(rows, -1) - 1.0)
                                  <= 1e-3))
                asserts.append(tf.debugging.Assert(
                    tf.logical_not(probabilities),
                    [_PROBABILITIES, role, name]))
            with tf.control_dependencies(asserts):
                flag.assign(False)
            return tf.constant(True)

        return [tf.cond(flag, check, lambda: tf.constant(True))]

    @contextlib.contextmanager
    def _clear_errors(self, progress=None):
        """Raises a failed in-graph check (NaN images, bad labels, ...) as
        its own one-message Python exception."""
        try:
            yield
        except tf.errors.InvalidArgumentError as e:
            parsed = _parse_check(e.message)
            if parsed is None:
                raise
            raise _check_error(*parsed, progress) from None

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

    def _logits_rank(self):
        """Rank of the student's logits (3 for a sequence model's)."""
        try:
            return len(self.student.outputs[0].shape)
        except (AttributeError, TypeError, IndexError):
            return 2

    def _num_classes(self):
        try:
            return int(self.student.outputs[0].shape[-1])
        except (AttributeError, TypeError, ValueError, IndexError):
            return None

    def save_student(self, path, **kwargs):
        """Saves the student alone to a `.keras` file, atomically.

        The file holds no teacher, adapter, regressor or discriminator
        weights; a kill or a full disk during the save leaves a previous
        file at `path` intact (see `tfkd.saving.save`).

        Args:
            path: The `.keras` path; its directory must exist.
            **kwargs: Other arguments of `keras.Model.save`.

        Returns:
            `path`, as a `str`.
        """
        from tfkd import saving

        return saving.save(self.student, path, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """Saves the distiller's weights, or only the student's when
        `checkpoint_student_only` is set (Keras Tuner's trial
        checkpoints: no teacher weights in every trial directory).
        Student-only checkpoints are written atomically."""
        if self.checkpoint_student_only:
            from tfkd import io as tfkd_io

            path = os.fspath(filepath)
            # Atomic: a trial killed mid-save keeps its previous checkpoint.
            with tfkd_io.atomic_path(path, tfkd_io.keras_suffix(path)) as tmp:
                return self.student.save_weights(tmp, overwrite=overwrite,
                                                 **kwargs)
        return super().save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        """Loads weights saved by `save_weights` (same mode)."""
        if self.checkpoint_student_only:
            return self.student.load_weights(filepath, **kwargs)
        return super().load_weights(filepath, **kwargs)

    def base_config(self):
        """`keras.Model`'s config plus the serialised teacher and student;
        presets add their own arguments to it."""
        config = keras.Model.get_config(self)
        config.update({
            "teacher": _without_compile_config(self.teacher),
            "student": _without_compile_config(self.student),
        })
        return config

    def get_config(self):
        config = self.base_config()
        if self._hinton:
            config.update({"alpha": self.alpha,
                           "temperature": self.temperature})
        else:
            config.update({
                "distillation_losses": [
                    keras.saving.serialize_keras_object(t)
                    for t in self.distillation_losses
                ],
                "distillation_loss_weights": self.distillation_loss_weights,
                "student_loss_weight": self.student_loss_weight,
            })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's deserialisation consumes nested dicts; keep the caller's.
        config = copy.deepcopy(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects)
        if config.get("distillation_losses") is not None:
            config["distillation_losses"] = [
                keras.saving.deserialize_keras_object(
                    t, custom_objects=custom_objects)
                for t in config["distillation_losses"]
            ]
        return cls(**config)


class _ScaleCheck(keras.callbacks.Callback):
    """Warns once, after the first training batch, when a knowledge term
    dwarfs the student loss (see `Distiller.scale_report`)."""

    def __init__(self):
        super().__init__()
        self._done = False

    def on_train_batch_end(self, batch, logs=None):
        if self._done:
            return
        self._done = True
        message = self.model.scale_report(logs or {})
        if message:
            warnings.warn(message, stacklevel=2)


def _warn_unknown_monitors(callbacks, names):
    """Warns about a callback (`EarlyStopping`, `ModelCheckpoint`, ...)
    that monitors a loss this distiller does not report: it would never
    fire (Keras only warns at the end of each epoch)."""
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or not monitor.endswith("loss"):
            continue
        name = monitor[4:] if monitor.startswith("val_") else monitor
        if name not in names:
            warnings.warn(
                f"`{type(callback).__name__}(monitor={monitor!r})` monitors "
                f"a loss this distiller does not report, so it would never "
                f"act. Its losses: {names} (with `val_` for validation). "
                "Keras's distiller's `student_loss`, `distillation_loss` and "
                "`total_loss` exist here too; each term reports "
                "`<term>_loss`.", UserWarning, stacklevel=3)


def _check_arrays(x, y, num_classes, x_name, y_name, logits_rank=2):
    """Eager checks of in-memory arrays, before any graph is traced.

    Non-finite images would otherwise train silently (fused conv + ReLU
    kernels map NaN to 0), and out-of-range labels would only fail inside
    the graph, without the offending value.
    """
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argwhere(bad.reshape(len(x), -1).any(1))[0][0])
            raise ValueError(
                f"`{x_name}` contains NaN or Inf values ({int(bad.sum())} "
                f"elements; the first in example {first}). Clean or impute "
                f"the data before training."
            )
    if not isinstance(y, np.ndarray) or num_classes is None or not y.size:
        return
    sparse = y.ndim == logits_rank - 1 or (
        y.ndim == logits_rank and y.shape[-1] == 1)
    if not sparse:
        if y.ndim == logits_rank and y.shape[-1] != num_classes:
            raise ValueError(
                f"`{y_name}` holds one-hot labels with {y.shape[-1]} columns "
                f"but the student outputs {num_classes} logits. Received: "
                f"{y_name}.shape={y.shape}. Use one column per class, or "
                "integer class ids."
            )
        if np.issubdtype(y.dtype, np.number) and (y < 0).any():
            row = int(np.argwhere((y < 0).reshape(len(y), -1).any(1))[0][0])
            raise ValueError(
                f"`{y_name}` holds one-hot / soft labels with negative "
                f"values (first in row {row}: {y[row].tolist()!r}). `-1` "
                "marks an unlabelled example only in class-id labels; in "
                "one-hot form give it an all-zero row."
            )
        return
    if np.issubdtype(y.dtype, np.floating):
        flat = y.reshape(-1)
        bad = ~np.isfinite(flat) | (flat != np.round(flat))
        if bad.any():
            raise ValueError(
                f"`{y_name}` holds fractional or non-finite float labels "
                f"(e.g. {flat[np.argmax(bad)].item()!r} at index "
                f"{int(np.argmax(bad))}); class ids must be whole numbers. "
                "Round or cast them, or pass one-hot / soft labels with one "
                "column per class."
            )
    elif not np.issubdtype(y.dtype, np.integer):
        return
    low, high = int(y.min()), int(y.max())
    if low < -1 or high >= num_classes:
        raise ValueError(
            f"`{y_name}` must hold class ids in [0, {num_classes}) for a "
            f"student with {num_classes} logits (or -1 for an unlabelled "
            f"example). Received labels in [{low}, {high}]. Check the "
            "data's number of classes against the models'."
        )


def _first_labelled_batch(x, y, batch_size):
    """`(inputs, labels)` of the first batch of `fit`'s data, when they can
    be read without consuming anything (arrays, a `tf.data` pipeline of
    `(inputs, labels)`); else `None`."""
    if isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            if isinstance(element, tuple) and len(element) >= 2:
                return element[0], element[1]
        return None
    if y is None:
        return None
    images = _first_images(x, batch_size)
    if images is None or not isinstance(y, (np.ndarray, tf.Tensor)):
        return None
    return images, y[:batch_size or 32]


def _first_images(x, batch_size):
    """The inputs of the first batch of `fit`'s `x`, when they can be read
    without consuming anything (arrays, dicts of arrays, a `tf.data`
    pipeline); else `None`."""
    if isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            return element[0] if isinstance(element, tuple) else element
        return None
    batch = batch_size or 32

    def head(value):
        return value[:batch] if isinstance(value, (np.ndarray, tf.Tensor)) \
            else None

    if isinstance(x, dict):
        first = {k: head(v) for k, v in x.items()}
        return None if any(v is None for v in first.values()) else first
    if isinstance(x, (np.ndarray, tf.Tensor)):
        return head(x) if len(x) else None
    return None


def _check_not_empty(data, name):
    """Raises a clear `ValueError` for empty arrays or datasets."""
    if data is None:
        return
    if isinstance(data, tf.data.Dataset):
        cardinality = int(data.cardinality())
        if cardinality == 0:
            raise ValueError(
                f"`{name}` is an empty `tf.data.Dataset` (0 batches). Check "
                f"the data source, `take`/`filter` calls and the batch size."
            )
        return
    first = data[0] if isinstance(data, tuple) and data else data
    for leaf in tf.nest.flatten(first):
        shape = getattr(leaf, "shape", None)
        if shape is not None and len(shape) > 0 and shape[0] == 0:
            raise ValueError(
                f"`{name}` holds no examples (first dimension is 0; received "
                f"shape {tuple(shape)}). Pass at least one example."
            )
