"""The finite guard: an optimizer wrapper that lets nothing non-finite
reach the weights.

In the pattern of `keras.optimizers.LossScaleOptimizer`, `FiniteGuard`
wraps the optimizer that updates a step's variables and checks, before the
update, that the gradients, the step's loss terms and (under XLA) its
images are finite. Outside XLA a failed check is an assertion: the step
stops before any weight, slot or iteration changes, and the distiller turns
the assertion into a `tfkd.callbacks.NonFiniteDataError` or
`NonFiniteLossError` naming the step and the terms. XLA drops assertions:
there the guard skips the update and records the step, and the callback of
`fit` (or `train_on_batch`) raises the same named error after the batch
(`FiniteGuard.raise_recorded`).

`tfkd.Distiller` guards its optimizer, and KTAN both of its own
(`Distiller.guarded_optimizers`).
"""

import warnings

import keras
import tensorflow as tf

from tfkd.checks import IMAGES_KEY
from tfkd.checks import _GRADIENTS
from tfkd.checks import _IMAGES
from tfkd.checks import _LOSSES
from tfkd.checks import _check_error
from tfkd.losses._utils import num_replicas


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


def _step_number(optimizer):
    return tf.cast(optimizer.iterations, tf.int64)


def assert_finite_images(images, iterations=None):
    """`images`, asserted free of NaN / Inf before the step uses them.

    The assertion names the optimizer step (`iterations`, the optimizer's
    step counter; step -1 when `None`, before `compile`) and the first bad
    example of the batch; the distiller turns it into a
    `NonFiniteDataError`. A batch carrying cached teacher outputs (a dict
    with the images under `"images"`) is returned with its images checked.
    """
    if isinstance(images, dict) and IMAGES_KEY in images:
        return {**images, IMAGES_KEY: assert_finite_images(
            images[IMAGES_KEY], iterations)}
    # As `_finite_examples` (inline: it runs every step).
    finite = None
    for leaf in tf.nest.flatten(images):
        leaf = tf.convert_to_tensor(leaf)
        if leaf.dtype.is_floating:
            ok = tf.reduce_all(tf.reshape(tf.math.is_finite(leaf),
                                          [tf.shape(leaf)[0], -1]), axis=1)
            finite = ok if finite is None else tf.logical_and(finite, ok)
    if finite is None:
        return images
    all_finite = tf.reduce_all(finite)
    if tf.executing_eagerly() and bool(all_finite):
        # Nothing to assert, nor to name (run eagerly).
        return images
    first_bad = _global_index(tf.argmin(tf.cast(finite, tf.int32),
                                        output_type=tf.int64), finite)
    step = tf.constant(-1, tf.int64) if iterations is None else tf.cast(
        iterations, tf.int64)
    check = tf.debugging.Assert(all_finite, [_IMAGES, step, first_bad])
    with tf.control_dependencies([check]):
        return tf.nest.map_structure(tf.identity, images)


class FiniteGuard:
    """Wraps an optimizer: its update runs only on a finite step.

    Like `keras.optimizers.LossScaleOptimizer`, which skips a step whose
    float16 gradients overflow, it wraps the `inner_optimizer` and checks
    the gradients before `apply_gradients` updates anything; it also checks
    the step's loss terms (a non-finite loss with finite gradients, e.g. an
    overflowing term whose gradient saturates, would otherwise move the
    weights with only its reported value as a trace) and, under XLA, the
    images. It holds no weights of its own, so the optimizer it wraps saves
    and loads as before.

    Args:
        inner_optimizer: The `keras.optimizers.Optimizer` to guard. Under a
            `LossScaleOptimizer` the gradients are left to it (it skips
            overflowing steps and lowers its scale) and only the losses are
            checked.

    Example:

    >>> import keras
    >>> import tensorflow as tf
    >>> from tfkd.optimizers import FiniteGuard
    >>> w = keras.Variable(1.0)
    >>> guard = FiniteGuard(keras.optimizers.SGD(0.1))
    >>> guard.apply_gradients([(tf.constant(1.0), w)])
    >>> round(float(w.numpy()), 4)
    0.9
    """

    def __init__(self, inner_optimizer):
        self.inner_optimizer = inner_optimizer
        # `[step, kind, example]` of the first skipped step under XLA (step
        # -1: none); `None` outside XLA, where a bad step asserts.
        self.record = None
        self._loss_names = []

    @property
    def skips(self):
        """Whether a bad step is skipped and recorded (under XLA) rather
        than asserted."""
        return self.record is not None

    def prepare(self, strategy):
        """Creates, once, the record of skipped steps, eagerly, before a
        step compiled with XLA is traced; warns instead under a
        `tf.distribute` strategy (a skip would need a cross-replica
        decision)."""
        if self.record is not None:
            return
        # `fit` enters the model's strategy later: ask inside its scope.
        with strategy.scope():
            distributed = tf.distribute.has_strategy()
        if distributed:
            warnings.warn(
                "`check_finite` cannot guard a step compiled with "
                "`jit_compile=True` under a `tf.distribute` strategy (XLA "
                "drops assertions, and skipping a step would need a "
                "cross-replica decision): non-finite data may reach the "
                "weights. Compile with `jit_compile=False` (the default "
                "under a strategy) to keep the guard.", stacklevel=4)
            return
        self.record = tf.Variable([-1, 0, -1], dtype=tf.int64,
                                  trainable=False)

    def apply_gradients(self, grads_and_vars, losses=None, images=None,
                        after=None):
        """Applies the gradients once they, `losses` and (when skipping)
        `images` are known to be finite.

        Args:
            grads_and_vars: `(gradient or None, variable)` pairs.
            losses: Optional `{metric name: scalar}` of the step's loss
                terms, checked too; a failed check names the non-finite
                ones.
            images: The step's images (checked here only when skipping;
                the forward pass asserts them otherwise).
            after: Optional callable run right after the update, and
                skipped with it (e.g. the terms' state writes).
        """
        gradients, variables = [], []
        for gradient, variable in grads_and_vars:
            gradients.append(gradient)
            variables.append(variable)
        optimizer = self.inner_optimizer
        # A loss-scale optimizer skips (and recovers from) overflowing
        # float16 gradients itself; the loss is checked under it too.
        grads_finite = None
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            flags = []
            for g in gradients:
                if g is not None:
                    values = g.values if isinstance(g, tf.IndexedSlices) else g
                    flags.append(tf.reduce_all(tf.math.is_finite(values)))
            if flags:
                grads_finite = tf.reduce_all(tf.stack(flags))
        # One flag per loss term, in `losses`' order.
        loss_flags = []
        for value in (losses or {}).values():
            loss_flags.append(tf.reduce_all(tf.math.is_finite(
                tf.cast(value, tf.float32))))
        losses_finite = tf.reduce_all(tf.stack(loss_flags)) if loss_flags \
            else None
        if self.record is not None:
            self._apply_or_skip(gradients, variables, images, grads_finite,
                                losses, loss_flags, after)
            return
        checks = []
        if not (tf.executing_eagerly()
                and (grads_finite is None or bool(grads_finite))
                and (losses_finite is None or bool(losses_finite))):
            # Gradients first: non-finite ones are reported with the loss
            # terms that are non-finite too. (Run eagerly, a finite step
            # has nothing to assert, nor to name.)
            step = _step_number(optimizer)
            if grads_finite is not None:
                checks.append(tf.debugging.Assert(
                    grads_finite,
                    [_GRADIENTS, step, _non_finite_names(losses)]))
            if losses_finite is not None:
                with tf.control_dependencies(checks):
                    checks.append(tf.debugging.Assert(
                        losses_finite,
                        [_LOSSES, step, _non_finite_names(losses)]))
        # Everything the optimizer does waits for the checks, its step
        # counter included: a failed step leaves no trace.
        with tf.control_dependencies(checks):
            if checks:
                gradients = [None if g is None else tf.identity(g)
                             for g in gradients]
            optimizer.apply_gradients(zip(gradients, variables))
            if after is not None:
                after()

    def _apply_or_skip(self, gradients, variables, images, grads_finite,
                       losses, loss_flags, after):
        optimizer = self.inner_optimizer
        finite = _finite_examples(images) if images is not None else None
        images_finite = tf.constant(True) if finite is None else \
            tf.reduce_all(finite)
        ok = images_finite if grads_finite is None else tf.logical_and(
            images_finite, grads_finite)
        if not loss_flags:
            loss_ok, bad_losses = tf.constant(True), tf.constant(0, tf.int64)
        else:
            # Bit `i` of `bad_losses` set: the `i`-th loss is not finite.
            # Not `finite`: that names the images' finite examples.
            losses_ok = tf.stack(loss_flags)
            bits = tf.bitwise.left_shift(
                tf.constant(1, tf.int64),
                tf.range(len(loss_flags), dtype=tf.int64))
            loss_ok = tf.reduce_all(losses_ok)
            bad_losses = tf.reduce_sum(tf.where(
                losses_ok, tf.zeros_like(bits), bits))
            # Read back by `raise_recorded` to name the bad terms.
            self._loss_names = list(losses)
        ok = tf.logical_and(ok, loss_ok)
        if not optimizer.built:
            # Not inside the branch: that would create its variables there.
            optimizer.build(variables)
        record = self.record
        step = _step_number(optimizer)

        def apply():
            optimizer.apply_gradients(zip(gradients, variables))
            if after is not None:
                after()
            return tf.constant(True)

        def skip():
            first_bad = tf.constant(-1, tf.int64) if finite is None else \
                _global_index(tf.argmin(tf.cast(finite, tf.int32),
                                        output_type=tf.int64), finite)
            # Images first (the cause of everything else), then the
            # gradients, then the loss (as outside XLA); the third value
            # is the first bad example for images, else the bit mask of the
            # non-finite loss terms (named with bad gradients too, as
            # outside XLA).
            grads_ok = tf.constant(True) if grads_finite is None \
                else grads_finite
            kind = tf.where(
                tf.logical_not(images_finite), tf.constant(1, tf.int64),
                tf.where(grads_ok, tf.constant(3, tf.int64),
                         tf.constant(2, tf.int64)))
            first_bad = tf.where(kind >= 2, bad_losses, first_bad)
            # The first bad step of a run is the one reported.
            record.assign(tf.where(record[0] < 0,
                                   tf.stack([step, kind, first_bad]),
                                   record))
            return tf.constant(False)

        tf.cond(ok, apply, skip)

    def raise_recorded(self, progress=None):
        """Raises the named error of the first skipped step, if any (and
        forgets it).

        Args:
            progress: Optional `fit` progress (epoch, first step of the
                epoch), to name the batch.
        """
        record = self.record
        if record is None:
            return
        step, kind, example = (int(v) for v in record.numpy())
        if step < 0:
            return
        record.assign([-1, 0, -1])
        if kind == 1:
            raise _check_error(_IMAGES, [step, example], progress)
        names = ", ".join(f"`{name}`" for i, name in
                          enumerate(self._loss_names) if example >> i & 1)
        raise _check_error(_LOSSES if kind == 3 else _GRADIENTS,
                           [step, names], progress)


class FiniteGuardMixin:
    """The optimizer's side of `tfkd.Distiller`'s steps (a mixin): the
    variables it updates, the loss it scales, the finite guard
    (`check_finite`, one `FiniteGuard` per optimizer that updates a step's
    variables) and the terms' state writes that go with the update."""

    # ------------------------------------------------------------------
    # The optimizer's side of a step.

    def step_variables(self):
        """Variables the optimizer updates: the student plus the terms'
        trainable parts (adapters, regressors)."""
        seen, variables = set(), []
        parts = [self.student.trainable_variables]
        for term in self._terms:
            parts.append(term.trainable_weights)
        for part in parts:
            for v in part:
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

    def apply_term_state_updates(self):
        """Writes the state the terms computed in this step's forward pass
        (CRD's memory banks and counters, ...): called right after the
        optimizer update, so a step the finite guard refuses changes
        neither weights nor term state."""
        pending = getattr(self._term_state, "updates", None)
        if pending:
            updates = list(pending)
            pending.clear()
            for update in updates:
                update()

    def optimizer_variables(self):
        """Variables the optimizer is built on (every variable any step may
        update; by default `step_variables()`)."""
        return self.step_variables()

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

    def guard(self, optimizer=None):
        """The `tfkd.optimizers.FiniteGuard` wrapping `optimizer` (default:
        the distiller's), which applies its updates (see `check_finite`)."""
        optimizer = optimizer or self.optimizer
        guard = self._guards.get(id(optimizer))
        if guard is None or guard.inner_optimizer is not optimizer:
            guard = self._guards[id(optimizer)] = FiniteGuard(optimizer)
        return guard

    def guarded_optimizers(self):
        """The optimizers whose updates the finite guard checks (a preset
        with more optimizers lists them all)."""
        return [self.optimizer]

    def apply_checked_gradients(self, gradients, variables, images=None,
                                losses=None, optimizer=None,
                                state_updates=True):
        """Applies `gradients` with `optimizer` (default: the distiller's)
        through its `FiniteGuard` when `check_finite` is on; then, with the
        update and only if it ran, the terms' state writes (unless
        `state_updates=False`). `images` and `losses` (`{metric name:
        scalar}`) are checked with the gradients."""
        optimizer = optimizer or self.optimizer
        after = self.apply_term_state_updates if state_updates else None
        if not self._check_finite:
            optimizer.apply_gradients(zip(gradients, variables))
            if after is not None:
                after()
            return
        guard = self._guards.get(id(optimizer))
        if guard is None or guard.inner_optimizer is not optimizer:
            guard = self.guard(optimizer)
        guard.apply_gradients(
            zip(gradients, variables), losses=losses, images=images,
            after=after)

    #: The step counter the image check names (`optimizer.iterations`,
    #: set by `compile`); `None` before, when a bad image is named at step
    #: -1.
    _iterations = None

    def _guard_in_xla(self):
        """Whether the guard skips steps instead of asserting (XLA ignores
        `tf.debugging.Assert`)."""
        if self._iterations is None or not self.jit_compile:
            return False
        guard = self._guards.get(id(self.optimizer))
        return guard is not None and guard.skips

    def _prepare_guard(self):
        """Creates the guards' records of skipped steps when the step will
        be compiled with XLA, eagerly, before `fit` traces it."""
        if self._check_finite and self.jit_compile:
            for optimizer in self.guarded_optimizers():
                if optimizer is not None:
                    self.guard(optimizer).prepare(self.distribute_strategy)

    def _raise_recorded(self, progress=None):
        """Raises a guard's recorded skipped step, if any."""
        for guard in list(self._guards.values()):
            guard.raise_recorded(progress)
