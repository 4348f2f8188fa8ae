"""Checks of the data and labels a distiller trains on.

One module for the checks that arrays and streams share: in-memory arrays
are checked eagerly before `fit` traces anything (`check_arrays`), and
every batch inside the step (`LabelChecks`), so a stream gets the same
errors as arrays. A check that fails inside the graph raises a
`tf.errors.InvalidArgumentError` whose message carries its kind and values;
`LabelChecks._clear_errors` turns it into the one-message Python exception
of `_MESSAGES`.
"""

import contextlib
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfkd import _compat
from tfkd.callbacks import _GuardProgress
from tfkd.callbacks import _ScaleCheck
from tfkd.callbacks import NonFiniteDataError
from tfkd.callbacks import NonFiniteLossError
from tfkd.hyperparameters import unit_interval
from tfkd.losses._utils import check_unlabelled_weight
from tfkd.terms.base import LOGITS
from tfkd.terms.keras_losses import _KerasTerm
from tfkd.terms.keras_losses import _term_name

#: Keys of the input dict of a batch that carries cached teacher outputs
#: (see `tfkd.data.cache_teacher_outputs`).
IMAGES_KEY = "images"
TEACHER_LOGITS_KEY = "teacher_logits"
TEACHER_FEATURES_KEY = "teacher_features"


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


def _check_schedule_clash(callbacks, own):
    """Refuses a user's `HyperparameterScheduler` of a path that a term's
    own schedule (`own`, e.g. DKD's warm-up of `dkd/weight`) also sets:
    the term's runs after it and would silently overwrite it."""
    from tfkd.callbacks import HyperparameterScheduler

    def paths(group):
        return {path for callback in group
                if isinstance(callback, HyperparameterScheduler)
                for path in callback.schedules}

    clash = sorted(paths(callbacks) & paths(own))
    if clash:
        raise ValueError(
            f"A `HyperparameterScheduler` passed to `fit` schedules {clash}, "
            "which a term of this distiller already schedules itself (e.g. "
            "DKD's warm-up of its weight): the term's schedule would "
            "overwrite yours every epoch. Turn the term's own schedule off "
            "(e.g. `DKDDistillation(..., warmup_epochs=0)`, or "
            "`--set dkd.warmup_epochs=0` in the recipes) or drop that path "
            "from your scheduler."
        )


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

def checked_arguments(teacher, student, distillation_losses,
                      distillation_loss_weights, student_loss_weight, alpha,
                      temperature, kwargs, defaults):
    """Checks `tfkd.Distiller`'s arguments: `(hinton, terms, w_s)`, where
    `hinton` says no terms were given (Hinton KD with `alpha` and
    `temperature`, their `defaults` when `None`)."""
    from tfkd.methods.kd import KDDistillation

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
            alpha = defaults["alpha"] \
                if student_loss_weight is None else student_loss_weight
        if temperature is None:
            temperature = defaults["temperature"]
        student_loss_weight = unit_interval(alpha, "alpha")
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
    return hinton, terms, student_loss_weight


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


class LabelChecks:
    """The distiller's checks of labels and logits (a mixin of
    `tfkd.Distiller`: reads its `teacher`, `student`, `_student_loss_fn`
    and extractors)."""

    #: Keras's compiled-metrics container, read once by `compile`.
    _metrics_container = None

    @property
    def unlabelled_weight(self):
        """`"whole"` or `"share"`: what an unlabelled example's knowledge
        weighs (see `tfkd.Distiller`); an assignment holds from the next
        step on."""
        return self._unlabelled_weight

    @unlabelled_weight.setter
    def unlabelled_weight(self, value):
        value = check_unlabelled_weight(value)
        if value != getattr(self, "_unlabelled_weight", value):
            # The traced steps hold the old objective.
            self.train_function = None
            self.test_function = None
        self._unlabelled_weight = value

    def _check_fit_data(self, x, y, validation):
        """The eager checks `fit` runs before tracing its step."""
        _check_not_empty(x, "x")
        # Labels are class ids only with the default student loss; a
        # custom one (e.g. a regression head's) takes any targets.
        num_classes = self._num_classes() if self._student_loss_fn is None \
            else None
        _check_arrays(x, y, num_classes, "x", "y", self._logits_rank())
        if validation is not None:
            _check_not_empty(validation, "validation_data")
            if isinstance(validation, (tuple, list)) and len(validation) >= 2:
                _check_arrays(validation[0], validation[1], num_classes,
                              "validation_data[0]", "validation_data[1]",
                              self._logits_rank())

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
        if tf.executing_eagerly():
            # Checked (it raises otherwise): later eager steps skip even
            # the flag; a step traced later reads the flag, now False.
            object.__setattr__(self, "_logits_pending", False)
            return student
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in student.items()}

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
        # As `_sparse_labels` (inline: it runs every step).
        if not (y.dtype.is_integer or (
            y.shape.rank is not None and logits.shape.rank is not None
            and (y.shape.rank < logits.shape.rank or y.shape[-1] == 1)
        )):
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
        (see `_check_logits`), eagerly, before `fit` traces its step
        (`False` once an eager step has checked)."""
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
        if flag is None or flag is False:
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

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # The compiled metrics see the student's logits only; the loss
        # trackers were updated by the step itself.
        metrics = self._metrics_container
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
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) \
                and _compat.in_multi_worker_mode(strategy):
            # Keras reduces step outputs across workers with
            # `strategy.reduce("MEAN", v, axis=0)`, which rejects scalars
            # (keras-team/keras#20585); the results are global already.
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    def get_metrics_result(self):
        """The metrics' values; a compiled metric that has seen no labelled
        example (data without labels, all `-1`) is NaN, not Keras's 0."""
        results = super().get_metrics_result()
        metrics = self._metrics_container
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

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_fit_data(x, y, kwargs.get("validation_data"))
        self._check_teacher_once(x, y, kwargs.get("batch_size"))
        self._prepare_logits_check()
        progress = _GuardProgress()
        if len(args) < 4:  # `callbacks` not given positionally
            own = self._schedule_callbacks()
            _check_schedule_clash(kwargs.get("callbacks") or [], own)
            # Progress first: under XLA it raises a skipped bad step before
            # any other callback sees the batch.
            kwargs["callbacks"] = [progress] + list(
                kwargs.get("callbacks") or []) + own + [_ScaleCheck()]
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
        # Each preparation once, or when it applies: nothing to run on
        # most batches.
        if self.__dict__.get("_logits_pending") is None:
            self._prepare_logits_check()
        if self._check_finite and self.jit_compile:
            self._prepare_guard()
        if self._keras_terms:
            self._sync_terms()
        try:
            logs = super().train_on_batch(*args, **kwargs)
            for guard in self._guards.values():
                if guard.record is not None:  # Skipped steps, under XLA.
                    guard.raise_recorded()
            return logs
        except tf.errors.InvalidArgumentError as e:
            # `_clear_errors`, inline.
            parsed = _parse_check(e.message)
            if parsed is None:
                raise
            raise _check_error(*parsed) from None

    def test_on_batch(self, *args, **kwargs):
        self._sync_terms()
        with self._clear_errors():
            return super().test_on_batch(*args, **kwargs)
