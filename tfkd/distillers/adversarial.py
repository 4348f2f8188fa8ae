"""KTAN: knowledge transfer adversarial network (and DLN, its `alpha = 0`).

The student's last conv map `m_s` learns the teacher's last conv map `m_t`
seen through a pre-trained, frozen teacher-to-student regressor `R`: pixel
to pixel with an MSE (eq. 2) and region to region by fooling a
discriminator `D` that tells `R(m_t)` from `m_s`. Two phases run inside one
`train_step`, so a plain `fit` does both:

1. the first `pretrain_steps` steps: the student minimises
   `CE + beta · L_MSE`;
2. then each step is a discriminator step (binary cross entropy, real
   `R(m_t)` vs fake `m_s`) followed by a student step on
   `CE + alpha · (−log D(m_s)) + beta · L_MSE (+ kd_weight · KD)`.

The phase is read from a step-counter variable, so it is saved and restored
with the distiller's weights.
"""

import copy
import numbers

import keras
import tensorflow as tf

from tfkd import _compat
from tfkd import hyperparameters as hp
from tfkd.distillers.base import Distiller
from tfkd.saving import PresetSaving
from tfkd.checks import split_cached_inputs
from tfkd.distillers.base import reduce_term
from tfkd.layers.teacher_to_student import pretrain_regressor
from tfkd.methods.ktan import AdversarialDistillation
from tfkd.methods.ktan import RegressedFeatureDistillation
from tfkd.methods.ktan import _single_layer_name
from tfkd.terms.base import LOGITS
from tfkd.methods.kd import KDDistillation
from tfkd.terms.base import layer_name_arguments
from tfkd.distillers.feature import PRESET_KD_TEMPERATURE


def _scaled_copy(optimizer, scale):
    """A fresh optimizer of `optimizer`'s configuration, its learning rate
    (or a schedule's `initial_learning_rate`) times `scale`."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
        scale > 0
    ):
        raise ValueError(
            "`discriminator_learning_rate_scale` must be a number > 0. "
            f"Received: discriminator_learning_rate_scale={scale!r}."
        )
    config = copy.deepcopy(optimizer.get_config())
    rate = config.get("learning_rate")
    if isinstance(rate, numbers.Real):
        config["learning_rate"] = float(rate) * scale
    elif isinstance(rate, dict) and "initial_learning_rate" in rate.get(
        "config", {}
    ):
        rate["config"]["initial_learning_rate"] *= scale
    elif scale != 1:
        raise ValueError(
            "Cannot scale the learning rate of the student's optimizer "
            f"({type(optimizer).__name__}, learning_rate={rate!r}) for the "
            "discriminator. Pass `discriminator_optimizer=` explicitly."
        )
    return optimizer.__class__.from_config(config)


@keras.saving.register_keras_serializable(package="tfkd")
class AdversarialDistiller(PresetSaving, Distiller):
    """KTAN: feature-map MSE plus an adversarial discriminator (and DLN).

    A preset over two terms: `tfkd.losses.RegressedFeatureDistillation`
    (`mse`: the teacher's last conv map `m_t` through a frozen
    `TeacherToStudent` regressor `R`, compared with the student's map `m_s`
    by eq. 2's MSE) and `tfkd.losses.AdversarialDistillation` (`adv`: a
    discriminator `D` tells `R(m_t)` from `m_s`; the student's term is
    `−log D(m_s)`), plus Hinton KD (`kd`). Training has two phases, both
    inside `train_step` so a plain `fit` runs them (Algorithm 2):

    - phase 1, the first `pretrain_steps` steps: the student minimises
      `CE(y, s) + beta · L_MSE(R(m_t), m_s)`;
    - phase 2, every later step: first a discriminator step with its own
      optimizer on the binary cross entropy of real `R(m_t)` against fake
      `m_s`, then a student step on
      `CE + alpha · (−log D(m_s)) + beta · L_MSE + kd_weight · KD`.

    In the engine's convention the total is that objective divided by 2
    (`student_loss_weight = 0.5`, term weights `beta`, `alpha` (0 in phase
    1) and `kd_weight`). `alpha = 0` is DLN (the paper's "directly learning
    network"); the discriminator still trains then, as a monitor
    (`d_accuracy`). The phase is decided by `distiller.step_counter` (a
    non-trainable variable saved with the weights), so a restored distiller
    resumes in the right phase; a phase-1 step leaves the discriminator and
    its optimizer untouched. Compile with two optimizers:
    `compile(optimizer=..., discriminator_optimizer=...)`; by default the
    discriminator's is the student's at 1/100 of its learning rate
    (`discriminator_learning_rate_scale`): at the student's rate it wins
    outright and `−log D(m_s)` collapses a small student. Both are saved in
    `.keras` files and wrapped in a `LossScaleOptimizer` under mixed
    float16; under `tf.distribute` both losses are scaled to the global
    mean.

    Metrics: `loss`, `student_loss`, `mse_loss`, `adv_loss`, `kd_loss`
    (reported even when `kd_weight = 0`), `d_loss` and `d_accuracy` (the
    discriminator's binary cross entropy and accuracy on real and fake
    maps). During training `adv_loss`, `d_loss` and `d_accuracy` average
    over phase-2 steps only (they read 0 during phase 1); validation
    reports them for the current discriminator.

    The regressor is pre-trained first (Algorithm 1): the first `fit`
    runs `pretrain_regressor` on its training data for `pretrain_epochs`
    epochs, unless the regressor is already trained (`pretrain_regressor`
    called by hand, or a trained `regressor=` passed; see
    `regressor_pretrained`).
    The regressor and discriminator belong to the terms (saved with the
    distiller), never to `distiller.student`.

    Args:
        teacher: Trained functional teacher outputting logits; frozen.
        student: Functional student outputting logits.
        teacher_layer_name: Name of the teacher's last conv (feature map)
            layer.
        student_layer_name: Name of the student's last conv (feature map)
            layer.
        alpha: Weight of the adversarial term, `>= 0`; `0` is DLN.
        beta: Weight of `L_MSE`, `>= 0`.
        pretrain_steps: Phase-1 steps (the paper's `k`, which it does not
            give), an int `>= 0`.
        kd_weight: Weight of Hinton's KD term, `>= 0` (default 3, the
            paper's "KD+KTAN" form; 0 is KTAN alone): without it the
            student reads none of the teacher's logits, which loses to the
            student trained alone where labels are few (digits, 6 labels
            a class, `docs/results_transfer_digits.md`).
        temperature: KD temperature, `> 0` (default 1, the
            feature presets' `PRESET_KD_TEMPERATURE`, not Hinton KD's 4).
        regressor: Optional `TeacherToStudent` (or any layer mapping the
            teacher map to the student map's shape), taken as trained
            unless `regressor_pretrained=False`.
        discriminator_width: Filters of the discriminator's conv layers.
        pretrain_epochs: Epochs of the regressor's pre-training run by the
            first `fit`, an int `>= 0` (0: none).
        regressor_pretrained: Whether the regressor is trained already
            (then `fit` does not pre-train it); default: whether a
            `regressor` was passed.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=16)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = AdversarialDistiller(
    ...     teacher, student, teacher_layer_name="conv2",
    ...     student_layer_name="conv2",
    ...     pretrain_steps=2, discriminator_width=8)
    >>> x, y = testing.random_images(64)
    >>> _ = distiller.pretrain_regressor((x, y), num_classes=10)
    >>> distiller.compile(optimizer="adam", discriminator_optimizer="adam")
    >>> history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    >>> int(distiller.step_counter.numpy())
    4
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['adv_loss', 'd_accuracy', 'd_loss', 'distillation_loss', 'kd_loss',
     'loss', 'mse_loss', 'student_loss', 'total_loss']

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", eq. 2 and Algorithms 1-2.
    """

    alpha = hp.Hyperparameter(hp.non_negative,
                              doc="Weight of the adversarial term.")
    beta = hp.Hyperparameter(hp.non_negative, doc="Weight of L_MSE.")
    kd_weight = hp.Hyperparameter(hp.non_negative,
                                  doc="Weight of the KD term.")

    _phase2_metrics = ("adv_loss", "d_loss", "d_accuracy")

    def __init__(self, teacher, student, *, teacher_layer_name=None,
                 student_layer_name=None, alpha=0.6, beta=0.5,
                 pretrain_steps=100,
                 kd_weight=3.0, temperature=PRESET_KD_TEMPERATURE,
                 regressor=None,
                 discriminator_width=64, pretrain_epochs=1,
                 regressor_pretrained=None, **kwargs):
        teacher_layer, student_layer = layer_name_arguments(
            type(self).__name__, teacher_layer_name, student_layer_name,
            kwargs)
        teacher_layer = _single_layer_name(teacher_layer, "teacher_layer_name")
        student_layer = _single_layer_name(student_layer, "student_layer_name")
        alpha = hp.non_negative(alpha, "alpha")
        beta = hp.non_negative(beta, "beta")
        kd_weight = hp.non_negative(kd_weight, "kd_weight")
        if isinstance(pretrain_steps, bool) or not isinstance(
            pretrain_steps, numbers.Integral
        ) or pretrain_steps < 0:
            raise ValueError(
                "`pretrain_steps` must be an int >= 0 (the number of "
                "phase-1 steps before adversarial training). Received: "
                f"pretrain_steps={pretrain_steps!r}."
            )
        super().__init__(
            teacher, student,
            distillation_losses=[
                RegressedFeatureDistillation(
                    teacher_layer, student_layer, regressor=regressor,
                    name="mse"),
                AdversarialDistillation(
                    teacher_layer, student_layer,
                    discriminator_width=discriminator_width, name="adv"),
                KDDistillation(temperature=temperature, name="kd"),
            ],
            **kwargs,
        )
        self.alpha = alpha
        self.beta = beta
        self.kd_weight = kd_weight
        self.pretrain_steps = int(pretrain_steps)
        self.step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int64",
            initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self.discriminator_optimizer = None
        if isinstance(pretrain_epochs, bool) or not isinstance(
            pretrain_epochs, numbers.Integral
        ) or pretrain_epochs < 0:
            raise ValueError(
                "`pretrain_epochs` must be an int >= 0 (epochs of the "
                "regressor's pre-training; 0: none). Received: "
                f"pretrain_epochs={pretrain_epochs!r}."
            )
        self.pretrain_epochs = int(pretrain_epochs)
        if regressor_pretrained is None:
            regressor_pretrained = regressor is not None
        #: Whether the regressor is trained (`fit` then skips Algorithm 1).
        self.regressor_pretrained = bool(regressor_pretrained)

    def _unique_names(self):
        return ["mse", "adv", "kd"]

    def extra_metric_names(self):
        return ("d_loss", "d_accuracy")

    # ------------------------------------------------------------------
    # Parts.

    @property
    def temperature(self):
        """The KD temperature (live, assignable)."""
        return self._terms[2].temperature

    @temperature.setter
    def temperature(self, value):
        self._terms[2].temperature = value

    def _aliases(self):
        return ("temperature",)

    def adversarial_phase(self):
        """Boolean tensor: whether the next step is a phase-2 step."""
        return self.step_counter >= self.pretrain_steps

    def paper_weights(self):
        phase = tf.cast(self.adversarial_phase(), tf.float32)
        return 1.0, [self.beta, self.alpha * phase, self.kd_weight], 2.0

    def weight_hint(self, term_name):
        return {"mse": "lower `beta`", "adv": "lower `alpha`",
                "kd": "lower `kd_weight`"}[term_name]

    def apply_term_state_updates(self):
        """The terms' state writes and the step counter's, with the
        student's update (none on a step the finite guard refuses)."""
        super().apply_term_state_updates()
        self.step_counter.assign_add(1)

    def guarded_optimizers(self):
        """The discriminator's and the student's optimizers: the finite
        guard checks both updates (listed in the step's order, so a step
        both guards skip under XLA is reported by the first)."""
        return [self.discriminator_optimizer, self.optimizer]

    def step_variables(self):
        """The student's trainable variables (regressor and teacher frozen;
        the discriminator has its own optimizer)."""
        return list(self.student.trainable_variables)

    # ------------------------------------------------------------------
    # Regressor pre-training (Algorithm 1).

    def pretrain_regressor(self, data, num_classes=None, *, epochs=1,
                           optimizer="adam", batch_size=32,
                           steps_per_epoch=None, verbose=0):
        """Pre-trains the regressor on the frozen teacher (Algorithm 1).

        Delegates to `tfkd.layers.pretrain_regressor` with this distiller's
        teacher, tapped teacher layer and regressor; the regressor stays
        frozen for distillation afterwards.

        Args:
            data: `tf.data.Dataset` of `(images, labels)` or an
                `(images, labels)` tuple.
            num_classes: Classes of the temporary head; defaults to the
                teacher's number of logits.
            epochs: Training epochs.
            optimizer: Optimizer of the regressor and temporary head.
            batch_size: Batch size for array data.
            steps_per_epoch: Optional cap on the steps per epoch.
            verbose: Verbosity of `fit`.

        Returns:
            The `keras.callbacks.History` of the pre-training.
        """
        if num_classes is None:
            num_classes = int(self.teacher.outputs[0].shape[-1])
        history = pretrain_regressor(
            self.teacher, self._terms[0].teacher_layer_name,
            self._terms[0].regressor,
            data, num_classes, epochs=epochs, optimizer=optimizer,
            batch_size=batch_size, steps_per_epoch=steps_per_epoch,
            verbose=verbose,
        )
        self.regressor_pretrained = True
        return history

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, after the regressor's pre-training.

        The first `fit` of a distiller whose regressor is not trained yet
        (`regressor_pretrained`) runs `pretrain_regressor` on the same
        training data for `pretrain_epochs` epochs (Algorithm 1), then
        distils.
        """
        if self.pretrain_epochs and not self.regressor_pretrained:
            data = x if y is None else (x, y)
            self.pretrain_regressor(
                data, epochs=self.pretrain_epochs,
                batch_size=kwargs.get("batch_size") or 32)
        return super().fit(x, y, *args, **kwargs)

    # ------------------------------------------------------------------
    # Compilation with two optimizers.

    def compile(self, optimizer="rmsprop", discriminator_optimizer=None,
                metrics=None, loss=None, *,
                discriminator_learning_rate_scale=0.01, **kwargs):
        """Configures the student's and the discriminator's optimizers.

        Args:
            optimizer: Optimizer of the student (name or instance).
            discriminator_optimizer: Optimizer of the discriminator (name or
                instance, a separate object). Defaults to a fresh copy of
                `optimizer`'s configuration with its learning rate (or its
                schedule's initial rate) times
                `discriminator_learning_rate_scale`.
            metrics: Metrics computed on the student's logits.
            loss: The student loss (default: cross entropy from logits).
            discriminator_learning_rate_scale: Factor `> 0` on the
                student's learning rate for the default discriminator
                optimizer (ignored when `discriminator_optimizer` is
                given). At the student's own rate (`1.0`) the
                discriminator saturates within an epoch and `−log D(m_s)`
                collapses the student (see docs/methods/ktan.md).
            **kwargs: Other `keras.Model.compile` arguments
                (`jit_compile`, `steps_per_execution`, ...).
        """
        student_optimizer = keras.optimizers.get(optimizer)
        if discriminator_optimizer is None:
            discriminator_optimizer = _scaled_copy(
                student_optimizer, discriminator_learning_rate_scale)
        discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
        inner = getattr(student_optimizer, "inner_optimizer", None)
        if discriminator_optimizer is student_optimizer or (
            discriminator_optimizer is inner
        ):
            raise ValueError(
                "`discriminator_optimizer` must be a different optimizer "
                "object from `optimizer` (each keeps its own state). Pass "
                "a new instance, e.g. keras.optimizers.Adam(1e-4)."
            )
        super().compile(optimizer=student_optimizer, loss=loss,
                        metrics=metrics, **kwargs)
        if (
            kwargs.get("auto_scale_loss", True)
            and self.dtype_policy.name == "mixed_float16"
            and not isinstance(discriminator_optimizer,
                               keras.optimizers.LossScaleOptimizer)
        ):
            discriminator_optimizer = keras.optimizers.LossScaleOptimizer(
                discriminator_optimizer,
                name="discriminator_loss_scale_optimizer",
            )
        self.discriminator_optimizer = discriminator_optimizer
        # Built now, over exactly the variables each one updates, so that
        # (a) saved optimizer states load back and (b) no variable is
        # created inside the phase-2 `tf.cond`.
        self.discriminator_optimizer.build(
            self._terms[1].discriminator.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.discriminator_optimizer is not None:
            config["discriminator_optimizer"] = (
                keras.saving.serialize_keras_object(
                    self.discriminator_optimizer))
        return config

    # ------------------------------------------------------------------
    # The step.

    def _maps(self, teacher, student):
        """`(R(m_t), m_s)` from one forward pass of each network."""
        mse, adv = self._terms[0], self._terms[1]
        real = mse.regress(teacher[mse.teacher_taps[0]])
        fake = adv.student_feature(0, student[adv.student_taps[0]])
        return real, fake

    def compute_losses(self, x, y=None, sample_weight=None, training=False,
                       outputs=None, discriminator=True):
        outputs = outputs or self.forward(x, training)
        result = super().compute_losses(x, y, sample_weight, training,
                                        outputs=outputs)
        if discriminator:
            real, fake = self._maps(*outputs)
            d_loss, d_accuracy = self._terms[1].discriminator_terms(
                real, fake)
            result[1].update({
                "d_loss": reduce_term(d_loss, sample_weight),
                "d_accuracy": reduce_term(d_accuracy, sample_weight),
            })
        return result

    def _discriminator_gradients(self, real, fake, sample_weight):
        """One discriminator loss and its (scaled) gradients, no update."""
        discriminator = self._terms[1].discriminator
        variables = discriminator.trainable_variables
        with tf.GradientTape() as tape:
            per_example, accuracy = self._terms[1].discriminator_terms(
                real, fake)
            d_loss = reduce_term(per_example, sample_weight)
            total = d_loss
            if discriminator.losses:
                total += tf.add_n([tf.cast(r, tf.float32)
                                   for r in discriminator.losses])
            scaled = self._scaled(total, self.discriminator_optimizer)
        gradients = tape.gradient(scaled, variables)
        gradients = [tf.zeros_like(v) if g is None else g
                     for g, v in zip(gradients, variables)]
        return d_loss, reduce_term(accuracy, sample_weight), gradients

    def _discriminator_step(self, adversarial, real, fake, sample_weight):
        """The phase-2 discriminator step; a no-op while `adversarial` is
        False (no weight, slot or iteration of its optimizer changes)."""
        variables = self._terms[1].discriminator.trainable_variables
        d_loss, accuracy, gradients = tf.cond(
            adversarial,
            lambda: self._discriminator_gradients(real, fake, sample_weight),
            lambda: (tf.zeros((), tf.float32), tf.zeros((), tf.float32),
                     [tf.zeros_like(v) for v in variables]),
        )
        optimizer = self.discriminator_optimizer

        def apply(grads, loss):
            # Guarded like the student's update (see `check_finite`).
            self.apply_checked_gradients(
                grads, variables, losses={"d_loss": loss},
                optimizer=optimizer, state_updates=False)

        if _compat.strategy_supports_no_merge_call():
            tf.cond(adversarial, lambda: apply(gradients, d_loss),
                    lambda: None)
        else:
            # As keras.optimizers.LossScaleOptimizer does: strategies that
            # synchronise through `merge_call` (MirroredStrategy) forbid it
            # inside a replica-context `cond`, so branch in cross-replica
            # context and apply per replica there.
            def cross_replica(distribution, flag, grads, loss):
                flag = distribution.experimental_local_results(flag)[0]
                tf.cond(
                    flag,
                    lambda: distribution.extended.call_for_each_replica(
                        apply, args=(grads, loss)),
                    lambda: None,
                )

            tf.distribute.get_replica_context().merge_call(
                cross_replica, args=(adversarial, gradients, d_loss))
        return d_loss, accuracy

    def train_step(self, data):
        if self.discriminator_optimizer is None:
            raise ValueError(
                "Compile the distiller with "
                "`compile(optimizer=..., discriminator_optimizer=...)` "
                "before training."
            )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        adversarial = self.adversarial_phase()
        phase = tf.cast(adversarial, tf.float32)
        with tf.GradientTape() as tape:
            outputs = self.forward(x, training=True)
            real, fake = self._maps(*outputs)
            # Phase 2: the discriminator steps first, on the current m_s.
            with tape.stop_recording():
                d_loss, d_accuracy = self._discriminator_step(
                    adversarial, real, tf.stop_gradient(fake), sample_weight)
            total, values, logits, y, weights = self.compute_losses(
                x, y, sample_weight, training=True, outputs=outputs,
                discriminator=False)
            scaled = self._scaled(total)
        variables = self.step_variables()
        gradients = tape.gradient(scaled, variables)
        self.apply_checked_gradients(
            gradients, variables, images=split_cached_inputs(x)[0],
            losses={"loss": total, **values})
        values.update({"d_loss": d_loss, "d_accuracy": d_accuracy})
        batch = tf.cast(tf.shape(outputs[1][LOGITS])[0], tf.float32)
        _compat.loss_tracker(self).update_state(total, sample_weight=batch)
        self._update_trackers(total, values, x, weights={
            name: batch * phase for name in self._phase2_metrics})
        return self.compute_metrics(x, y, logits, weights)

    # ------------------------------------------------------------------
    # Serialisation.

    # `get_config` is `PresetSaving`'s: layer names, `regressor` and
    # `discriminator_width` from the terms, the rest from the distiller.

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        # Files saved before `fit` pre-trained the regressor: their
        # regressor is whatever the user made it; never pre-train it again.
        config.setdefault("regressor_pretrained", True)
        if isinstance(config.get("regressor"), dict):
            config["regressor"] = keras.saving.deserialize_keras_object(
                config["regressor"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
