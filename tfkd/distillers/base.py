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

import keras
import tensorflow as tf

from tfkd import _compat
from tfkd import hyperparameters as hp
from tfkd.checks import IMAGES_KEY  # noqa: F401 (public here too)
from tfkd.checks import TEACHER_FEATURES_KEY  # noqa: F401 (public here too)
from tfkd.checks import TEACHER_LOGITS_KEY  # noqa: F401
from tfkd.checks import LabelChecks
from tfkd.checks import _tokens
from tfkd.checks import checked_arguments
from tfkd.checks import split_cached_inputs
from tfkd.distillers.taps import TappedForward
from tfkd.losses._utils import _batch_size
from tfkd.losses._utils import _mean_over_replicas
from tfkd.losses._utils import num_replicas
from tfkd.losses._utils import reduce_term
from tfkd.optimizers import FiniteGuardMixin
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
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self._check_inputs()
        self.distillation_losses = terms
        object.__setattr__(self, "_terms", [
            _as_term(t, i) for i, t in enumerate(terms)])
        object.__setattr__(self, "_keras_terms", [
            t for t in self._terms if isinstance(t, _KerasTerm)])
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
        # `{id(optimizer): FiniteGuard}` (see `guard`).
        object.__setattr__(self, "_guards", {})
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

    def apply_term_state_updates(self):
        """Writes the state the terms computed in this step's forward pass
        (CRD's memory banks and counters, ...): called right after the
        optimizer update, so a step the finite guard refuses changes
        neither weights nor term state."""
        for term in self._terms:
            if isinstance(term, DistillationTerm):
                for update in term.take_state_updates():
                    update()

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

    # ------------------------------------------------------------------
    # Data checks, checkpoints and serialisation.
