"""Callbacks that guard distillation runs and log what they reach."""

import math

import keras
import tensorflow as tf


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term becomes NaN or infinite during training."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training as soon as any loss term is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which only looks at the total
    `loss`, this checks every reported term (`student_loss`, `kd_loss`,
    `knowledge_loss`, ...) and names the first one that went bad (a term
    rather than the total `loss` it spoils), so you know which part of the
    objective to fix (a learning rate too high for a
    knowledge loss, a temperature too extreme, NaN in the data, ...).

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
        # The total `loss` goes bad with any of its terms: name a term first.
        items = sorted((logs or {}).items(),
                       key=lambda item: item[0] in ("loss", "val_loss"))
        for name, value in items:
            if not name.endswith("loss"):
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                self.message = (
                    f"Training stopped: loss term `{name}` became {value} "
                    f"{where}. Lower the learning rate or this term's weight, "
                    f"check the data for NaN/Inf, or use a less extreme "
                    f"temperature."
                )
                if self.model is not None:
                    self.model.stop_training = True
                if self.raise_error:
                    raise NonFiniteLossError(self.message)
                print(self.message)
                return

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"at training batch {batch}")

    def on_test_batch_end(self, batch, logs=None):
        self._check(logs, f"at validation batch {batch}")


class EvaluateAccuracy(keras.callbacks.Callback):
    """Logs a model's top-1 accuracy on held-out data after every epoch.

    Adds `logs[name]` at the end of each epoch, so that `History` records
    it: with the default name `"test_accuracy"`,
    `tfkd.reporting.RunResult.from_history` reads it as the per-epoch test
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
