"""Callbacks that guard distillation runs."""

import math

import keras


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term becomes NaN or infinite during training."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training as soon as any loss term is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which only looks at the total
    `loss`, this checks every reported term (`class_loss`, `kd_loss`,
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
