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

from tfkd.distillers.base import Distiller
from tfkd.distillers.base import num_replicas
from tfkd.distillers.base import reduce_term
from tfkd.distillers.base import split_cached_inputs
from tfkd.layers.teacher_to_student import TeacherToStudent
from tfkd.layers.teacher_to_student import pretrain_regressor
from tfkd.losses import kd as kd_losses
from tfkd.losses import ktan as ktan_losses
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_positive
from tfkd.models.discriminator import DISCRIMINATOR_LOGIT_LAYER
from tfkd.models.discriminator import build_discriminator


def _single_layer_name(value, name):
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise ValueError(
            f"`{name}` must be the name of one layer (KTAN transfers a single "
            f"feature map, the network's last conv map). Received: "
            f"{name}={value!r}."
        )
    return value


def _is_non_negative_output(layer):
    """True when the layer's output is a ReLU (so the regressor's is too)."""
    relus = (keras.activations.relu, keras.activations.relu6)
    if isinstance(layer, keras.layers.ReLU):
        return (not layer.negative_slope) and not layer.threshold
    return getattr(layer, "activation", None) in relus


@keras.saving.register_keras_serializable(package="tfkd")
class AdversarialDistiller(Distiller):
    """KTAN: feature-map MSE plus an adversarial discriminator (and DLN).

    Knowledge is the teacher's last conv feature map `m_t`
    (`teacher_layer`), mapped to the shape of the student's last conv map
    `m_s` (`student_layer`) by a frozen `TeacherToStudent` regressor `R`.
    Training has two phases, both inside `train_step` so a plain `fit` runs
    them (Algorithm 2):

    - phase 1, the first `pretrain_steps` steps: the student minimises
      `CE(y, s) + beta · L_MSE(R(m_t), m_s)`;
    - phase 2, every later step: first a discriminator step with its own
      optimizer on the binary cross entropy of real `R(m_t)` against fake
      `m_s`, then a student step on
      `CE + alpha · (−log D(m_s)) + beta · L_MSE + kd_weight · KD`.

    `alpha = 0` is DLN (the paper's "directly learning network"): no
    adversarial term reaches the student. The discriminator still trains
    then, as a monitor: its `d_accuracy` shows how well the student's maps
    can be told from the teacher's without the adversary. `kd_weight > 0`
    gives the "KD+KTAN" row (Hinton's `kd_loss` at `temperature`).

    The phase is decided by the step counter `distiller.step_counter` (a
    non-trainable variable saved with the weights), so a restored distiller
    resumes in the right phase; a phase-1 step leaves the discriminator and
    its optimizer untouched. Compile with two optimizers:
    `compile(optimizer=..., discriminator_optimizer=...)`; both are saved in
    `.keras` files. Under mixed float16 both are wrapped in a
    `LossScaleOptimizer`; under `tf.distribute` both losses are scaled to the
    global mean, as in `Distiller.train_step`.

    Metrics: `loss` (the student's objective), `class_loss`, `mse_loss`,
    `kd_loss` (reported even when `kd_weight = 0`), `adv_loss`
    (`−log D(m_s)`), `d_loss` and `d_accuracy` (the discriminator's binary
    cross entropy and accuracy on real and fake maps). During training
    `adv_loss`, `d_loss` and `d_accuracy` average over phase-2 steps only
    (they read 0 during phase 1); validation reports them for the current
    discriminator.

    The regressor `R` should be pre-trained (Algorithm 1) before `fit`:
    call `distiller.pretrain_regressor(data, num_classes)` (or the function
    `tfkd.layers.pretrain_regressor`), or pass an already trained
    `regressor=`. It stays frozen during distillation (so teacher outputs
    cached with `tfkd.data.cache_teacher_outputs`, which hold `R(m_t)`, must
    be built after pre-training). When `regressor` is
    `None` one is created from the map shapes, with a ReLU output when the
    student's tapped layer ends in a ReLU (so `R(m_t)` and `m_s` share a
    range and the discriminator cannot tell them apart by sign alone).
    The regressor and discriminator belong to the distiller
    (`distiller.weights`), never to `distiller.student`.

    Args:
        teacher: Trained functional teacher outputting logits; frozen.
        student: Functional student outputting logits.
        teacher_layer: Name of the teacher's last conv (feature map) layer.
        student_layer: Name of the student's last conv (feature map) layer.
        alpha: Weight of the adversarial term, `>= 0`; `0` is DLN.
        beta: Weight of `L_MSE`, `>= 0`.
        pretrain_steps: Phase-1 steps (the paper's `k`, which it does not
            give), an int `>= 0`.
        kd_weight: Weight of Hinton's KD term, `>= 0` ("+KD" rows).
        temperature: KD temperature, `> 0`.
        regressor: Optional `TeacherToStudent` (or any layer mapping the
            teacher map to the student map's shape), ideally pre-trained.
        discriminator_width: Filters of the discriminator's conv layers.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=16)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = AdversarialDistiller(
    ...     teacher, student, teacher_layer="conv2", student_layer="conv2",
    ...     pretrain_steps=2, discriminator_width=8)
    >>> x, y = testing.random_images(64)
    >>> _ = distiller.pretrain_regressor((x, y), num_classes=10)
    >>> distiller.compile(optimizer="adam", discriminator_optimizer="adam")
    >>> history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    >>> int(distiller.step_counter.numpy())
    4
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['adv_loss', 'class_loss', 'd_accuracy', 'd_loss', 'kd_loss', 'loss',
     'mse_loss']

    Reference:
        Liu, Liu, Ma, Jiang, Seok. "KTAN: Knowledge Transfer Adversarial
        Network", eq. 2 and Algorithms 1-2.
    """

    loss_term_names = ("class_loss", "mse_loss", "adv_loss", "kd_loss",
                       "d_loss", "d_accuracy")
    _adversarial_terms = ("adv_loss", "d_loss", "d_accuracy")

    def __init__(self, teacher, student, *, teacher_layer, student_layer,
                 alpha=0.6, beta=0.5, pretrain_steps=1000, kd_weight=0.0,
                 temperature=4.0, regressor=None, discriminator_width=64,
                 **kwargs):
        teacher_layer = _single_layer_name(teacher_layer, "teacher_layer")
        student_layer = _single_layer_name(student_layer, "student_layer")
        alpha = check_non_negative(alpha, "alpha")
        beta = check_non_negative(beta, "beta")
        kd_weight = check_non_negative(kd_weight, "kd_weight")
        check_positive(temperature, "temperature")
        if isinstance(pretrain_steps, bool) or not isinstance(
            pretrain_steps, numbers.Integral
        ) or pretrain_steps < 0:
            raise ValueError(
                "`pretrain_steps` must be an int >= 0 (the number of "
                "phase-1 steps before adversarial training). Received: "
                f"pretrain_steps={pretrain_steps!r}."
            )
        if isinstance(discriminator_width, bool) or not isinstance(
            discriminator_width, numbers.Integral
        ) or discriminator_width < 1:
            raise ValueError(
                "`discriminator_width` must be a positive int. Received: "
                f"discriminator_width={discriminator_width!r}."
            )
        if regressor is not None and not isinstance(regressor,
                                                    keras.layers.Layer):
            raise TypeError(
                "`regressor` must be a Keras layer such as "
                "`tfkd.layers.TeacherToStudent`, or None to create one. "
                f"Received: regressor={regressor!r} of type "
                f"{type(regressor).__name__}."
            )
        # The base's `alpha` (CE weight in [0, 1]) has no role here.
        super().__init__(teacher, student, alpha=1.0, temperature=temperature,
                         teacher_layer=teacher_layer,
                         student_layer=student_layer, **kwargs)
        self.alpha = alpha
        self.beta = beta
        self.kd_weight = kd_weight
        self.pretrain_steps = int(pretrain_steps)
        self.discriminator_width = int(discriminator_width)

        teacher_map = tuple(self._teacher_extractor.outputs[1].shape[1:])
        student_map = tuple(self._student_extractor.outputs[1].shape[1:])
        guided = self._guided[0]
        if guided is not None:
            student_map = student_map[:-1] + (guided,)
        for role, shape in (("teacher", teacher_map),
                            ("student", student_map)):
            if len(shape) != 3 or any(d is None for d in shape):
                raise ValueError(
                    f"The tapped {role} layer must output a feature map of "
                    f"static shape (batch, H, W, C). Received shape "
                    f"(batch,) + {shape}. Tap the last conv block's output "
                    f"and build the {role} with a fixed input size."
                )
        self.teacher_map_shape = teacher_map
        self.student_map_shape = student_map
        if regressor is None:
            activation = "relu" if _is_non_negative_output(
                self.student.get_layer(student_layer)) else None
            regressor = TeacherToStudent(
                student_map[-1], teacher_size=teacher_map[:2],
                student_size=student_map[:2], activation=activation,
                name="teacher_to_student",
            )
        regressor.trainable = False
        mapped = regressor(keras.Input(teacher_map, name="teacher_map"))
        if tuple(mapped.shape[1:]) != student_map:
            raise ValueError(
                f"The regressor maps the teacher's {teacher_map} map to "
                f"{tuple(mapped.shape[1:])}, but the student's map is "
                f"{student_map}. Build it as TeacherToStudent("
                f"{student_map[-1]}, teacher_size={teacher_map[:2]}, "
                f"student_size={student_map[:2]}) or pass regressor=None."
            )
        self.regressor = regressor
        self.discriminator = build_discriminator(
            student_map, width=self.discriminator_width,
            name="discriminator",
        )
        object.__setattr__(self, "_discriminator_logits", keras.Model(
            self.discriminator.inputs,
            self.discriminator.get_layer(DISCRIMINATOR_LOGIT_LAYER).output,
            name="discriminator_logits",
        ))
        self.step_counter = self.add_weight(
            name="step_counter", shape=(), dtype="int64",
            initializer="zeros", trainable=False,
            aggregation="only_first_replica",
        )
        self.discriminator_optimizer = None

    # ------------------------------------------------------------------
    # Regressor pre-training (Algorithm 1).

    def pretrain_regressor(self, data, num_classes=None, *, epochs=1,
                           optimizer="adam", batch_size=32,
                           steps_per_epoch=None, verbose=0):
        """Pre-trains the regressor on the frozen teacher (Algorithm 1).

        Delegates to `tfkd.layers.pretrain_regressor` with this distiller's
        teacher, `teacher_layer` and regressor; the regressor stays frozen
        for distillation afterwards.

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
        return pretrain_regressor(
            self.teacher, self.teacher_layer[0], self.regressor, data,
            num_classes, epochs=epochs, optimizer=optimizer,
            batch_size=batch_size, steps_per_epoch=steps_per_epoch,
            verbose=verbose,
        )

    # ------------------------------------------------------------------
    # Compilation with two optimizers.

    def compile(self, optimizer="rmsprop", discriminator_optimizer=None,
                metrics=None, **kwargs):
        """Configures the student's and the discriminator's optimizers.

        Args:
            optimizer: Optimizer of the student (name or instance).
            discriminator_optimizer: Optimizer of the discriminator (name or
                instance, a separate object). Defaults to a fresh copy of
                `optimizer`'s configuration.
            metrics: Metrics computed on the student's logits.
            **kwargs: Other `keras.Model.compile` arguments
                (`jit_compile`, `steps_per_execution`, ...). `loss` is not
                accepted: the distiller defines its losses.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "`AdversarialDistiller.compile` takes no `loss`: the "
                "distiller defines its objectives. Received: "
                f"loss={kwargs['loss']!r}."
            )
        kwargs.pop("loss", None)
        student_optimizer = keras.optimizers.get(optimizer)
        if discriminator_optimizer is None:
            discriminator_optimizer = student_optimizer.__class__.from_config(
                student_optimizer.get_config()
            )
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
        super().compile(optimizer=student_optimizer, metrics=metrics,
                        **kwargs)
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
        self.optimizer.build(self.trainable_variables_for_step())
        self.discriminator_optimizer.build(
            self.discriminator.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.discriminator_optimizer is not None:
            config["discriminator_optimizer"] = (
                keras.saving.serialize_keras_object(
                    self.discriminator_optimizer)
            )
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    # ------------------------------------------------------------------
    # Forward passes and loss terms.

    def trainable_variables_for_step(self):
        """The student's trainable variables (regressor and teacher frozen;
        the discriminator has its own optimizer)."""
        return list(self.student.trainable_variables)

    def _owned_layers(self):
        return []

    def teacher_forward(self, x):
        """Runs the frozen teacher and regressor: `(logits, [R(m_t)])`.

        `tfkd.data.cache_teacher_outputs` caches these outputs, i.e. the
        regressed map: build the cache after `pretrain_regressor`.
        """
        logits, features = super().teacher_forward(x)
        target = self.regressor(features[0], training=False)
        return logits, [tf.stop_gradient(target)]

    def _d_logits(self, feature_map):
        feature_map = tf.cast(feature_map, self.discriminator.compute_dtype)
        return self._discriminator_logits(feature_map, training=True)

    def _discriminator_terms(self, real, fake):
        """Discriminator logits on real and fake maps, in one forward pass."""
        dtype = self.discriminator.compute_dtype
        both = tf.concat([tf.cast(real, dtype), tf.cast(fake, dtype)], 0)
        logits = self._discriminator_logits(both, training=True)
        real_logits, fake_logits = tf.split(logits, 2, axis=0)
        return (ktan_losses.discriminator_loss(real_logits, fake_logits),
                ktan_losses.discriminator_accuracy(real_logits, fake_logits))

    def _student_terms(self, y, teacher_logits, student_logits, target,
                       student_map):
        fake_logits = self._d_logits(student_map)
        return {
            "class_loss": kd_losses.cross_entropy(y, student_logits),
            "mse_loss": ktan_losses.ktan_mse_loss(target, student_map),
            "adv_loss": ktan_losses.adversarial_loss(fake_logits),
            "kd_loss": kd_losses.kd_loss(teacher_logits, student_logits,
                                         self.temperature),
        }

    def compute_loss_terms(self, y, teacher_logits, student_logits,
                           teacher_features, student_features):
        """All terms for evaluation: the student's and the discriminator's.

        `teacher_features` holds the regressed teacher map `R(m_t)`.
        """
        terms = self._student_terms(y, teacher_logits, student_logits,
                                    teacher_features[0], student_features[0])
        d_loss, d_accuracy = self._discriminator_terms(
            teacher_features[0], student_features[0])
        terms.update({"d_loss": d_loss, "d_accuracy": d_accuracy})
        return terms

    def adversarial_phase(self):
        """Boolean tensor: whether the next step is a phase-2 step."""
        return self.step_counter >= self.pretrain_steps

    def loss_weights(self):
        """The student's objective; the adversarial weight is 0 in phase 1."""
        phase = tf.cast(self.adversarial_phase(), tf.float32)
        return {
            "class_loss": 1.0,
            "mse_loss": self.beta,
            "adv_loss": self.alpha * phase,
            "kd_loss": self.kd_weight,
        }

    # ------------------------------------------------------------------
    # The step.

    def _discriminator_gradients(self, real, fake, sample_weight):
        """One discriminator loss and its (scaled) gradients, no update."""
        variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            per_example, accuracy = self._discriminator_terms(real, fake)
            d_loss = reduce_term(per_example, sample_weight)
            total = d_loss
            if self.discriminator.losses:
                total += tf.add_n([tf.cast(r, tf.float32)
                                   for r in self.discriminator.losses])
            replicas = num_replicas()
            loss = total / replicas if replicas > 1 else total
            scaled = self.discriminator_optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        gradients = [tf.zeros_like(v) if g is None else g
                     for g, v in zip(gradients, variables)]
        return d_loss, reduce_term(accuracy, sample_weight), gradients

    def _discriminator_step(self, adversarial, real, fake, sample_weight):
        """The phase-2 discriminator step; a no-op while `adversarial` is
        False (no weight, slot or iteration of its optimizer changes)."""
        variables = self.discriminator.trainable_variables
        d_loss, accuracy, gradients = tf.cond(
            adversarial,
            lambda: self._discriminator_gradients(real, fake, sample_weight),
            lambda: (tf.zeros((), tf.float32), tf.zeros((), tf.float32),
                     [tf.zeros_like(v) for v in variables]),
        )
        optimizer = self.discriminator_optimizer

        def apply(grads):
            optimizer.apply_gradients(zip(grads, variables))

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(adversarial, lambda: apply(gradients), lambda: None)
        else:
            # As keras.optimizers.LossScaleOptimizer does: strategies that
            # synchronise through `merge_call` (MirroredStrategy) forbid it
            # inside a replica-context `cond`, so branch in cross-replica
            # context and apply per replica there.
            def cross_replica(distribution, flag, grads):
                flag = distribution.experimental_local_results(flag)[0]
                tf.cond(
                    flag,
                    lambda: distribution.extended.call_for_each_replica(
                        apply, args=(grads,)),
                    lambda: None,
                )

            tf.distribute.get_replica_context().merge_call(
                cross_replica, args=(adversarial, gradients))
        return d_loss, accuracy

    def train_step(self, data):
        if self.discriminator_optimizer is None:
            raise ValueError(
                "Compile the distiller with "
                "`compile(optimizer=..., discriminator_optimizer=...)` "
                "before training."
            )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, cached = split_cached_inputs(x)
        adversarial = self.adversarial_phase()
        phase = tf.cast(adversarial, tf.float32)
        weights = self.loss_weights()
        if cached is None:
            teacher_logits, (target,) = self.teacher_forward(x)
        else:
            teacher_logits, (target,) = self._check_cached(cached)
        variables = self.trainable_variables_for_step()
        with tf.GradientTape() as tape:
            student_logits, (student_map,) = self.student_forward(
                x, training=True)
            y = self._check_labels(y, student_logits)
            # Phase 2: the discriminator steps first, on the current m_s.
            with tape.stop_recording():
                d_loss, d_accuracy = self._discriminator_step(
                    adversarial, target, tf.stop_gradient(student_map),
                    sample_weight)
            terms = self._student_terms(y, teacher_logits, student_logits,
                                        target, student_map)
            reduced = {n: reduce_term(v, sample_weight)
                       for n, v in terms.items()}
            total = tf.add_n([tf.cast(weights[n], tf.float32) * v
                              for n, v in reduced.items()])
            if self.student.losses:
                total += tf.add_n([tf.cast(r, tf.float32)
                                   for r in self.student.losses])
            replicas = num_replicas()
            loss = total / replicas if replicas > 1 else total
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.step_counter.assign_add(1)
        reduced.update({"d_loss": d_loss, "d_accuracy": d_accuracy})
        self._track(total, reduced, x, phase)
        return self.compute_metrics(x, y, student_logits, sample_weight)

    def _track(self, total, reduced, x, phase):
        batch = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)
        self._loss_tracker.update_state(total, sample_weight=batch)
        for tracker in self._term_trackers:
            weight = batch * phase if tracker.name in \
                self._adversarial_terms else batch
            tracker.update_state(reduced[tracker.name], sample_weight=weight)

    # ------------------------------------------------------------------
    # Serialisation.

    def get_config(self):
        config = super().get_config()
        config.pop("teacher_layer")
        config.pop("student_layer")
        config.update({
            "teacher_layer": self.teacher_layer[0],
            "student_layer": self.student_layer[0],
            "beta": self.beta,
            "pretrain_steps": self.pretrain_steps,
            "kd_weight": self.kd_weight,
            "regressor": keras.saving.serialize_keras_object(self.regressor),
            "discriminator_width": self.discriminator_width,
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = copy.deepcopy(config)
        if isinstance(config.get("regressor"), dict):
            config["regressor"] = keras.saving.deserialize_keras_object(
                config["regressor"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
