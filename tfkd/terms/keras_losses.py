"""Keras losses inside tfkd: Keras's distillation losses as terms, and the
student loss.

`tfkd.Distiller` takes Keras's own `keras.distillation.LogitsDistillation`
/ `FeatureDistillation` beside tfkd's terms: `_KerasTerm` reads one the way
`keras.distillation.Distiller` does (its layer names, the scalar of its
`compute_loss`), with a live temperature. `_resolve_student_loss` checks
the `compile(loss=...)` of the student, which must read logits.
"""

import warnings

import keras
import tensorflow as tf

from tfkd import hyperparameters as hp
from tfkd.terms.base import LOGITS
from tfkd.terms.base import DistillationTerm


#: Losses that expect probabilities unless told `from_logits=True`; tfkd
#: students output logits.
_PROBABILITY_LOSSES = (
    "sparse_categorical_crossentropy", "categorical_crossentropy",
    "binary_crossentropy", "categorical_focal_crossentropy",
    "binary_focal_crossentropy",
)


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
            value = value * tf.distribute.get_strategy().num_replicas_in_sync
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


def student_loss_values(loss_fn, config, y, logits, sparse_labels):
    """Unreduced student loss (`(batch,)` or more dims) of the resolved
    `loss_fn` (`None`: cross entropy from logits); a loss that cannot
    compare the labels with the logits is named (its `compile` `config`)
    with the fix (`sparse_labels(y, logits)`: labels are class ids)."""
    from tfkd.methods.kd import cross_entropy

    if loss_fn is None:
        return cross_entropy(y, logits)
    logits = tf.cast(logits, tf.float32)
    if y.dtype.is_floating:
        y = tf.cast(y, tf.float32)
    try:
        return _per_example(loss_fn, y, logits)
    except (ValueError, tf.errors.InvalidArgumentError) as e:
        # TensorFlow's own message names neither the loss nor why
        # ("Dimensions must be equal, but are 8 and 10").
        loss = config
        name = loss if isinstance(loss, str) else getattr(
            loss, "name", type(loss).__name__)
        sparse = sparse_labels(y, logits)
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
