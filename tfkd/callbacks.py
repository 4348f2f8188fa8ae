"""Callbacks that guard distillation runs and log what they reach, and
`merge_histories`, which joins the histories of consecutive `fit`s."""

import inspect
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

# Keras's fault-tolerance callback, with atomic backups.
from tfkd.backup import BackupAndRestore  # noqa: F401


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term or a weight becomes NaN or infinite during
    training."""


class NonFiniteDataError(NonFiniteLossError):
    """Raised when a training step meets NaN or Inf images, or non-finite
    gradients, before they reach any weight (see `Distiller.check_finite`).
    """


def first_non_finite(variables):
    """`(path, value)` of the first variable holding NaN or Inf, else
    `None`; `value` is its first non-finite element."""
    for variable in variables:
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        if not np.issubdtype(value.dtype, np.floating):
            continue
        bad = ~np.isfinite(value)
        if bad.any():
            path = getattr(variable, "path", None) or variable.name
            return path, value.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
    return None


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training as soon as any loss term or weight is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which only looks at the total
    `loss`, this checks every reported term (`student_loss`, `kd_loss`,
    `hint_loss`, ...) and names the first one that went bad (a term
    rather than the total `loss` it spoils), so you know which part of the
    objective to fix (a learning rate too high for a
    knowledge loss, a temperature too extreme, NaN in the data, ...).

    At each epoch's end and when `fit` ends it also checks the student's
    weights (a distiller's `student`, else the trained model), batch-norm
    statistics included, and names the first non-finite one: a loss can
    stay finite while a weight does not (e.g. NaN images through a
    convolution and ReLU).

    Args:
        raise_error: If `True` (default) raise `NonFiniteLossError` so that
            nothing downstream (saving, export) runs on a broken model; if
            `False`, set `model.stop_training` and record the message in
            `self.message`.

    Example:

    >>> callback = StopOnNonFiniteLoss()
    >>> logs = {"loss": 0.7, "kd_loss": float("nan")}
    >>> try:
    ...     callback.on_train_batch_end(0, logs)
    ... except NonFiniteLossError as e:
    ...     print(e)  # doctest: +ELLIPSIS
    Training stopped: loss term `kd_loss` became nan at training batch 0. ...
    """

    def __init__(self, raise_error=True):
        super().__init__()
        if not isinstance(raise_error, bool):
            raise TypeError(
                "`raise_error` must be True or False. Received: "
                f"raise_error={raise_error!r} of type "
                f"{type(raise_error).__name__}."
            )
        self.raise_error = raise_error
        self.message = None

    def _check(self, logs, where):
        # The totals go bad with any of their terms: name a term first.
        totals = {f"{prefix}{name}" for prefix in ("", "val_") for name in (
            "loss", "total_loss", "distillation_loss")}
        items = sorted((logs or {}).items(),
                       key=lambda item: item[0] in totals)
        for name, value in items:
            if not name.endswith("loss"):
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                self._stop(
                    f"Training stopped: loss term `{name}` became {value} "
                    f"{where}. Lower the learning rate or this term's weight, "
                    f"check the data for NaN/Inf, or use a less extreme "
                    f"temperature."
                )
                return

    def _stop(self, message):
        self.message = message
        if self.model is not None:
            self.model.stop_training = True
        if self.raise_error:
            raise NonFiniteLossError(self.message)
        print(self.message)

    def _check_weights(self, where):
        model = self.model
        if model is None or self.message is not None:
            return  # Reported already: one message per run.
        student = getattr(model, "student", None)
        found = first_non_finite((student or model).weights)
        if found is not None:
            path, value = found
            self._stop(
                f"Training stopped: the student's weight `{path}` holds "
                f"{value} {where}. Do not save or export this model; restore "
                "a checkpoint, then lower the learning rate, check the data "
                "for NaN/Inf (batch-norm statistics take them in), or a "
                "term's weight."
            )

    def on_train_begin(self, logs=None):
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"at training batch {batch}")

    def on_test_batch_end(self, batch, logs=None):
        self._check(logs, f"at validation batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self._check_weights(f"after epoch {epoch}")

    def on_train_end(self, logs=None):
        self._check_weights("when training ended")


class EvaluateAccuracy(keras.callbacks.Callback):
    """Logs a model's top-1 accuracy on held-out data after every epoch.

    Adds `logs[name]` at the end of each epoch, so that `History` records
    it: with the default name `"test_accuracy"`,
    `tfkd.app.reporting.RunResult.from_history` reads it as the per-epoch test
    accuracy, giving the "best epoch" figure on data sets whose validation
    split is not the test split (the papers' CIFAR protocol validates on the
    test split, and needs no such callback). The model evaluated is
    `model`, else the trained model's `student` (a tfkd distiller), else
    the trained model itself; it must output logits or probabilities.

    Args:
        data: A `tf.data.Dataset` of `(images, labels)` batches (labels:
            class ids or one-hot), or of the `({"images": ...}, labels)`
            batches of `tfkd.data.cache_teacher_outputs`.
        model: Optional `keras.Model` to evaluate.
        name: Key written to the logs (default `"test_accuracy"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> data = tfkd.data.load_digits(image_size=8, batch_size=64)
    >>> student = testing.tiny_conv_model("student", input_shape=(8, 8, 1))
    >>> student.compile(optimizer="adam", loss=keras.losses.
    ...     SparseCategoricalCrossentropy(from_logits=True))
    >>> history = student.fit(data.train, epochs=2, verbose=0,
    ...                       callbacks=[EvaluateAccuracy(data.test)])
    >>> len(history.history["test_accuracy"])
    2
    """

    def __init__(self, data, *, model=None, name="test_accuracy"):
        super().__init__()
        if not isinstance(data, tf.data.Dataset):
            raise TypeError(
                "`data` must be a `tf.data.Dataset` of (images, labels) "
                f"batches. Received: data={data!r} of type "
                f"{type(data).__name__}."
            )
        if model is not None and not isinstance(model, keras.Model):
            raise TypeError(
                "`model` must be None (evaluate the trained model's "
                "student, or the model) or a `keras.Model`. Received: "
                f"model of type {type(model).__name__}."
            )
        if not isinstance(name, str) or not name:
            raise ValueError(
                "`name` must be a non-empty str, the key written to the "
                f"logs. Received: name={name!r}."
            )
        self.data = data
        self.evaluated_model = model
        self.name = name
        self._count = None

    def _evaluated(self):
        # Not `_model`: `keras.callbacks.Callback` keeps the trained model
        # there.
        if self.evaluated_model is not None:
            return self.evaluated_model
        student = getattr(self.model, "student", None)
        return self.model if student is None else student

    def _counter(self, model):
        # One trace per model: the batch dimension is left free.
        images_spec, labels_spec = self.data.element_spec[:2]
        if isinstance(images_spec, dict):
            images_spec = images_spec["images"]

        def free_batch(spec):
            return tf.TensorSpec((None,) + tuple(spec.shape[1:]), spec.dtype)

        @tf.function(input_signature=[free_batch(images_spec),
                                      free_batch(labels_spec)])
        def count(images, labels):
            predicted = tf.argmax(model(images, training=False), axis=-1)
            if labels.shape.rank == predicted.shape.rank + 1:
                labels = tf.argmax(labels, axis=-1)
            labels = tf.reshape(tf.cast(labels, predicted.dtype),
                                tf.shape(predicted))
            return tf.reduce_sum(tf.cast(predicted == labels, tf.int64))

        return count

    def accuracy(self):
        """The current top-1 accuracy on `data`, a fraction."""
        model = self._evaluated()
        if self._count is None or self._count[0] is not model:
            self._count = (model, self._counter(model))
        correct = total = 0
        for batch in self.data:
            images, labels = batch[0], batch[1]
            if isinstance(images, dict):
                images = images["images"]
            correct += int(self._count[1](images, labels))
            total += int(tf.shape(labels)[0])
        if total == 0:
            raise ValueError(
                "`EvaluateAccuracy` got an empty `data` set: pass held-out "
                "(images, labels) batches."
            )
        return correct / total

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.name] = self.accuracy()


def _arity(schedule):
    try:
        parameters = [
            p for p in inspect.signature(schedule).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return 1
    return 2 if len(parameters) >= 2 else 1


class HyperparameterScheduler(keras.callbacks.Callback):
    """Schedules a distiller's live hyperparameters per epoch or per step.

    Every weight and temperature of a tfkd distiller is a variable
    (`distiller.hyperparameters` lists them): this callback assigns new
    values while `fit` runs, e.g. annealing a KD temperature or warming up
    a knowledge term's weight, without recompiling. Each scheduled value is
    logged under its path (in `History` and TensorBoard), as Keras's
    `LearningRateScheduler` logs `learning_rate`.

    Args:
        schedules: `{path: schedule}`. `path` is a key of
            `distiller.hyperparameters` (e.g. `"kd/temperature"`,
            `"attention/weight"`, `"student_loss_weight"`, a preset's
            `"beta"`) or a preset alias such as `"temperature"`. `schedule`
            is called with the epoch index (`per="epoch"`, at each epoch's
            start) or the optimizer's step count (`per="step"`, before each
            batch), optionally with the current value as a second argument,
            and returns the new value; a
            `keras.optimizers.schedules.LearningRateSchedule` works too.
        per: `"epoch"` (default) or `"step"`.
        verbose: Print each new value (per-epoch schedules only).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(testing.tiny_conv_model("t"),
    ...                            testing.tiny_conv_model("s"))
    >>> distiller.compile(optimizer="sgd")
    >>> anneal = HyperparameterScheduler(
    ...     {"kd/temperature": lambda epoch: 4.0 / (1 + epoch)})
    >>> x, y = testing.random_images(16)
    >>> history = distiller.fit(x, y, epochs=2, verbose=0,
    ...                         callbacks=[anneal])
    >>> history.history["kd/temperature"]
    [4.0, 2.0]
    """

    _PER = ("epoch", "step")

    def __init__(self, schedules, per="epoch", verbose=0):
        super().__init__()
        if not isinstance(schedules, dict) or not schedules:
            raise TypeError(
                "`schedules` must be a non-empty dict of hyperparameter path "
                f"to schedule. Received: schedules={schedules!r}."
            )
        for path, schedule in schedules.items():
            if not isinstance(path, str) or not callable(schedule):
                raise TypeError(
                    "`schedules` maps hyperparameter paths (str) to "
                    "callables `schedule(epoch_or_step[, current]) -> "
                    f"value`. Received: {path!r}: {schedule!r}."
                )
        if per not in self._PER:
            raise ValueError(
                f"`per` must be 'epoch' or 'step'. Received: per={per!r}."
            )
        self.schedules = dict(schedules)
        self.per = per
        self.verbose = verbose
        self._arity = {path: _arity(s) for path, s in self.schedules.items()
                       if not isinstance(
                           s, keras.optimizers.schedules.LearningRateSchedule)}

    def on_train_begin(self, logs=None):
        model = self.model
        if not hasattr(model, "set_hyperparameter"):
            raise TypeError(
                "HyperparameterScheduler schedules a tfkd distiller's "
                f"hyperparameters; the model is a {type(model).__name__}. "
                "Use it with `tfkd.Distiller` (or a preset)."
            )
        for path in self.schedules:
            model.get_hyperparameter(path)  # A clear error for bad paths.

    def _value(self, path, index):
        schedule = self.schedules[path]
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            value = schedule(index)
        elif self._arity[path] == 2:
            value = schedule(index, self.model.get_hyperparameter(path))
        else:
            value = schedule(index)
        try:
            return float(value)
        except (TypeError, ValueError):
            # A schedule that forgot a `return` (None), or returned text.
            raise TypeError(
                f"The schedule of {path!r} returned {value!r} at {self.per} "
                f"{index}; a schedule must return a number (the value of "
                f"{path!r} from that {self.per} on). Check that every branch "
                "of the schedule returns one."
            ) from None

    def _assign(self, index):
        for path in self.schedules:
            value = self._value(path, index)
            try:
                self.model.set_hyperparameter(path, value)
            except (TypeError, ValueError) as e:
                raise ValueError(
                    f"The schedule of {path!r} returned {value!r} at {self.per} "
                    f"{index}, which the distiller refuses: {e}"
                ) from e

    def on_epoch_begin(self, epoch, logs=None):
        if self.per == "epoch":
            self._assign(epoch)
            if self.verbose:
                values = ", ".join(f"{p} = {self.model.get_hyperparameter(p)}"
                                   for p in self.schedules)
                print(f"Epoch {epoch + 1}: {values}")

    def on_train_batch_begin(self, batch, logs=None):
        if self.per == "step":
            self._assign(int(self.model.optimizer.iterations.numpy()))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for path in self.schedules:
                logs[path] = self.model.get_hyperparameter(path)


def linear_warmup(target, epochs, start=0.0):
    """A schedule rising linearly from `start` to `target` over `epochs`.

    For `HyperparameterScheduler`: e.g. a term's weight warmed up over the
    first 20 epochs, `{"kd/weight": linear_warmup(1.0, 20)}` (DKD's
    `warmup_epochs` schedules its own weight so; `fit` refuses a second
    schedule of the same path).

    Args:
        target: The value from epoch (or step) `epochs` on.
        epochs: Length of the ramp, an int `>= 1` (epochs or steps, as the
            scheduler counts).
        start: The value at index 0.

    Returns:
        A callable `schedule(index) -> float`.

    Example:

    >>> schedule = linear_warmup(1.0, 4)
    >>> [schedule(i) for i in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(
            f"`epochs` must be an int >= 1. Received: epochs={epochs!r}."
        )
    target, start = float(target), float(start)

    def schedule(index):
        fraction = min(1.0, index / epochs)
        return start + (target - start) * fraction

    return schedule


class _GuardProgress(keras.callbacks.Callback):
    """Where `fit` is, for the finite guard's messages; raises the named
    error of a step the guard skipped (under XLA) after each batch (see
    `tfkd.optimizers.FiniteGuard`)."""

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


def merge_histories(*histories):
    """One `{metric: [per-epoch values]}` from consecutive `fit` histories
    (e.g. the two stages of `fit_two_stage`).

    Example:

    >>> merge_histories({"loss": [3.0]}, {"loss": [2.0, 1.0]})
    {'loss': [3.0, 2.0, 1.0]}
    """
    merged = {}
    for history in histories:
        values = getattr(history, "history", history)
        for key, series in values.items():
            merged.setdefault(key, []).extend(series)
    return merged
