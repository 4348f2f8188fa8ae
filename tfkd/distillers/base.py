"""`tfkd.Distiller`: the one engine every tfkd method runs on.

Keras's `keras.distillation.Distiller` convention on Keras's own trainer:
the objective is `compute_loss`, `train_step` runs the frozen teacher
outside the tape and then Keras's pieces (`compute_loss`, the optimizer's
`apply_gradients` through the finite guard, `compute_metrics`). What is not
distillation lives beside it: forward passes in `tfkd.distillers.taps`,
data and label checks in `tfkd.checks`, the finite guard in
`tfkd.optimizers`, the live hyperparameters in `tfkd.hyperparameters`,
Keras's losses as terms in `tfkd.terms.keras_losses`, saving in
`tfkd.saving`. Presets (`CorrelationDistiller`, ...) are thin subclasses.
"""

import inspect
import threading

import keras
import tensorflow as tf

from tfkd import _compat
from tfkd import hyperparameters as hp
from tfkd.checks import IMAGES_KEY
from tfkd.checks import TEACHER_FEATURES_KEY  # noqa: F401 (public here too)
from tfkd.checks import TEACHER_LOGITS_KEY  # noqa: F401
from tfkd.checks import LabelChecks
from tfkd.checks import _tokens
from tfkd.checks import checked_arguments
from tfkd.checks import split_cached_inputs
from tfkd.distillers.taps import TappedForward
from tfkd.losses._utils import _batch_size
from tfkd.losses._utils import _mean_over_replicas
from tfkd.losses._utils import reduce_term
from tfkd.losses._utils import unlabelled_knowledge
from tfkd.optimizers import FiniteGuardMixin
from tfkd.optimizers import assert_finite_images
from tfkd.saving import DistillerSaving
from tfkd.terms.base import LOGITS
from tfkd.terms.base import DistillationTerm
from tfkd.terms.keras_losses import _as_term
from tfkd.terms.keras_losses import _KerasTerm
from tfkd.terms.keras_losses import _resolve_student_loss
from tfkd.terms.keras_losses import student_loss_values


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(TappedForward, LabelChecks, hp.DistillerHyperparameters,
                FiniteGuardMixin, DistillerSaving,
                _compat.MultiWorkerBuildMixin, keras.Model):
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
        unlabelled_weight: `"whole"` (default) or `"share"`: the knowledge
            weighs 1 or `1 − w_s` on an example labelled `-1`.
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
                 *, alpha=None, temperature=None, unlabelled_weight="whole",
                 **kwargs):
        hinton, terms, student_loss_weight = checked_arguments(
            teacher, student, distillation_losses, distillation_loss_weights,
            student_loss_weight, alpha, temperature, kwargs,
            self.preset_defaults)
        if "dtype" not in kwargs and student.dtype_policy.name.startswith(
            "mixed"
        ):
            # compile() wraps the optimizer in a LossScaleOptimizer when the
            # model's own policy is mixed_float16, as Keras's trainer does.
            kwargs["dtype"] = student.dtype_policy
        super().__init__(**kwargs)
        self._hinton = hinton
        self.unlabelled_weight = unlabelled_weight  # checked by its setter
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self._check_inputs()
        self.distillation_losses = terms
        object.__setattr__(self, "_terms", [
            _as_term(t, i) for i, t in enumerate(terms)])
        object.__setattr__(self, "_keras_terms", [
            t for t in self._terms if isinstance(t, _KerasTerm)])
        # The terms' state writes wait for the checked optimizer update
        # (`apply_term_state_updates`), in one list per thread for all.
        object.__setattr__(self, "_term_state", threading.local())
        for i, term in enumerate(self._terms):
            if isinstance(term, DistillationTerm):
                # One attribute per term too: TensorFlow checkpoints
                # (`tf.train.Checkpoint`, multi-worker backups) do not look
                # into Keras's tracked lists.
                setattr(self, f"_term_{i}", term)
                object.__setattr__(term, "defer_state_updates", True)
                object.__setattr__(term, "_state_local", self._term_state)
        # What each step reads of a term, once: its taps, whether it pairs
        # several of them, whether it takes the batch's inputs.
        object.__setattr__(self, "_term_reads", [
            (tuple(t.teacher_taps), tuple(t.student_taps),
             getattr(t, "_several", False), getattr(t, "uses_inputs", False))
            for t in self._terms])
        self._term_names = self._unique_names()
        self._student_loss_weight = student_loss_weight
        self._set_up_term_weights(distillation_loss_weights)
        self._build_extractors()
        self._student_loss_fn = None
        self._student_loss_config = None
        self.checkpoint_student_only = False
        self._check_finite = True
        # `{id(optimizer): FiniteGuard}` (see `guard`).
        object.__setattr__(self, "_guards", {})
        # The current step's forward outputs and loss values, for
        # `compute_loss` and the guard's message (see `train_step`).
        object.__setattr__(self, "_step_outputs", None)
        object.__setattr__(self, "_step_values", {})
        # As Keras's trainer: an override of `compute_loss` written before
        # Keras 3.3 takes no `training`.
        object.__setattr__(self, "_loss_takes_training", "training" in (
            inspect.signature(self.compute_loss).parameters))
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

    # ------------------------------------------------------------------
    # Forward passes: each network once per step.

    def call(self, inputs, training=False):
        inputs, _ = split_cached_inputs(inputs)
        return self.student(inputs, training=training)

    # ------------------------------------------------------------------
    # Losses.

    def term_values(self, teacher, student, y, training, inputs=None):
        """`{name: unreduced value}` of every term on one forward pass.

        `inputs` (the batch's inputs, e.g. a dict with an example index)
        is passed to the terms that declare `uses_inputs`.
        """
        # Writes left pending by a trace that did not run are dropped.
        pending = getattr(self._term_state, "updates", None)
        if pending:
            pending.clear()
        values = {}
        for name, term, (t_taps, s_taps, several, uses_inputs) in zip(
            self._term_names, self._terms, self._term_reads
        ):
            if several:
                t, s = [], []
                for n in t_taps:
                    t.append(teacher[n])
                for n in s_taps:
                    s.append(student[n])
            else:
                t, s = teacher[t_taps[0]], student[s_taps[0]]
            extra = {"inputs": inputs} if uses_inputs else {}
            values[name] = term.call(t, s, labels=y, training=training,
                                     **extra)
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

    def student_loss_values(self, y, logits):
        """Unreduced student loss (`(batch,)` or more dims)."""
        return student_loss_values(self._student_loss_fn,
                                   self._student_loss_config, y, logits,
                                   self._sparse_labels)

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
        rank = student[LOGITS].shape.rank
        if rank is not None and rank > 2:
            teacher, student, y, sample_weight = _tokens(
                teacher, student, y, sample_weight)
        logits = student[LOGITS]
        y, labelled = self._check_labels(y, logits)
        values, given = {"student_loss": None}, sample_weight
        raw = self.term_values(teacher, student, y, training, inputs=x)
        for name, value in raw.items():
            values[f"{name}_loss"] = reduce_term(value, sample_weight)
        if labelled is None:
            values["student_loss"] = reduce_term(
                self.student_loss_values(y, logits), sample_weight)
        else:
            # Any class id for the unlabelled examples: their student loss
            # carries weight 0 (the returned labels keep their -1, for
            # `compute_metrics`).
            if self._student_loss_fn is None and y.dtype == tf.int64:
                # The default loss on the checked class ids.
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=tf.maximum(y, 0),
                    logits=tf.cast(logits, tf.float32))
            else:
                per_example = self.student_loss_values(tf.maximum(y, 0),
                                                       logits)
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
            count = tf.reduce_sum(mask)
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                count = _mean_over_replicas(count)
            values["student_loss"] = tf.math.divide_no_nan(
                tf.reduce_sum(value * weights), count)
            sample_weight = weights
        w_s, w = self.loss_weights()
        w_s = tf.cast(w_s, tf.float32)
        weighted = []
        for name, wi in zip(self._term_names, w):
            weighted.append(tf.cast(wi, tf.float32) * values[f"{name}_loss"])
        distillation = values["distillation_loss"] = tf.add_n(weighted)
        total = w_s * values["student_loss"] + (1.0 - w_s) * distillation
        if self._unlabelled_weight == "whole" and labelled is not None:
            total += w_s * unlabelled_knowledge(raw, w, labelled, given)
        if training:
            regularization = list(self.student.losses)
            for term in self._terms:
                regularization += term.losses
            if regularization:
                total += tf.add_n(
                    [tf.cast(r, tf.float32) for r in regularization])
        return total, values, logits, y, sample_weight

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
            outputs, batch = step[1:3], step[3]
        else:
            outputs = self._outputs_for(x, y_pred, training)
            batch = _batch_size(x)
        total, values, _, _, _ = self.compute_losses(
            x, y, sample_weight, training, outputs=outputs)
        object.__setattr__(self, "_step_values", values)
        self._update_trackers(total, values, x, batch=batch)
        return total

    def _run_step(self, x, y, sample_weight, training, teacher=None):
        """The student's forward pass, then `compute_loss` on it (and on
        `teacher`, the teacher's outputs, computed here when `None`):
        `(loss, the student's logits)`."""
        images = x[IMAGES_KEY] if isinstance(x, dict) and IMAGES_KEY in x \
            else x
        if teacher is None:
            teacher = self._teacher_outputs(x)
        student = self._student_extractor(images, training=training)
        if training and self.__dict__.get("_logits_pending") is not False:
            student = self._logits_checked(x, teacher, student)
        y_pred = student[LOGITS]
        batch = tf.shape(tf.nest.flatten(images)[0])[0]
        object.__setattr__(self, "_step_outputs",
                           (y_pred, teacher, student, batch))
        # Hyperparameters read as tensors in the step, however it runs.
        outer = getattr(hp.in_step, "active", False)
        hp.in_step.active = True
        try:
            if self._loss_takes_training:
                loss = self.compute_loss(x, y, y_pred, sample_weight,
                                         training=training)
            else:
                loss = self.compute_loss(x, y, y_pred, sample_weight)
        finally:
            hp.in_step.active = outer
            object.__setattr__(self, "_step_outputs", None)
        self._loss_metric.update_state(loss, sample_weight=batch)
        return loss, y_pred

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        object.__setattr__(self, "_step_values", {})
        if self._check_finite and not (self.jit_compile
                                       and self._guard_in_xla()):
            x = assert_finite_images(x, self._iterations)  # `_checked_inputs`
        # The frozen teacher runs outside the tape: nothing to record.
        teacher = self._teacher_outputs(x)
        with tf.GradientTape() as tape:
            loss, y_pred = self._run_step(x, y, sample_weight, True, teacher)
            # Per-replica mean -> global mean under tf.distribute (see
            # `_scaled`).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(
                loss / replicas if replicas > 1 else loss)
        # Read after the forward pass: a lazily built student has its
        # variables only now.
        variables = self.step_variables()
        gradients = tape.gradient(scaled, variables)
        images = x[IMAGES_KEY] if isinstance(x, dict) and IMAGES_KEY in x \
            else x
        self.apply_checked_gradients(gradients, variables, images=images,
                                     losses={"loss": loss,
                                             **self._step_values})
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        _, y_pred = self._run_step(x, y, sample_weight, False)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def _update_trackers(self, total, values, x, weights=None, batch=None):
        """Updates the loss metrics (not Keras's `loss`, which the steps
        update) from `values`, `{metric name: scalar}`, each weighted by
        `weights[name]` or the batch size (`batch`, default `x`'s)."""
        if batch is None:
            batch = _batch_size(x)
        weights = weights or {}
        for tracker in self._trackers:
            value = total if tracker.name == "total_loss" else values.get(
                tracker.name)
            if value is not None:
                tracker.update_state(
                    value, sample_weight=weights.get(tracker.name, batch))

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
            # Read by every step: Keras's `loss` tracker and compiled
            # metrics, and the step counter the finite guard names.
            object.__setattr__(self, "_loss_metric",
                               _compat.loss_tracker(self))
            object.__setattr__(self, "_metrics_container",
                               _compat.compile_metrics(self))
            object.__setattr__(self, "_iterations", self.optimizer.iterations)
            # Built now over exactly the variables `fit` updates, so a saved
            # optimizer state loads back in the same order.
            if self.student.built:
                self.optimizer.build(self.optimizer_variables())

    def _default_student_loss(self):
        """The student loss when `compile` gets none (a preset may set
        one); `None` is cross entropy from logits."""
        return None

    # ------------------------------------------------------------------
    # Data checks, checkpoints and serialisation.
