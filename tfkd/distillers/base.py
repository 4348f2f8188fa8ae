"""The base `Distiller`: frozen teacher, layer taps, one forward pass each.

Every tfkd distiller extends `Distiller`. The base class owns what all
methods share:

- it freezes the teacher and always calls it with `training=False`;
- it taps intermediate layers by name through one fused extractor per
  network (a functional model whose outputs are the logits plus every tapped
  layer), so teacher and student each run forward exactly once per step;
- it reduces each loss term over the batch (honouring sample weights),
  reports each term as its own metric, scales the total for
  `tf.distribute` and mixed precision exactly as Keras's own trainer does,
  and applies gradients to the student plus any distiller-owned parts
  (adapters, regressors) — never to the teacher.

A method only states its loss terms (`compute_loss_terms`) and their weights
(`loss_weights`); the base class `Distiller` itself is Hinton KD.
"""

import copy

import keras
import numpy as np
import tensorflow as tf

from tfkd.layers.self_taught_conv2d import find_guided_channels
from tfkd.losses import kd as kd_losses
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_unit_interval


def _as_name_list(value, name):
    """Normalises `None | str | list[str]` to a list of layer names."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, str) for v in value
    ):
        return list(value)
    raise TypeError(
        f"`{name}` must be a layer name (str) or a list of layer names. "
        f"Received: {name}={value!r}."
    )


def _is_functional(model):
    """True for functional and Sequential models with symbolic inputs."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def _resolve_layer(model, layer_name, role):
    """Returns the layer named `layer_name` or raises a helpful error."""
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(
            f"`{role}_layer`={layer_name!r} is not a layer of the {role} "
            f"model {model.name!r}. Existing layers: {names}."
        )
    return model.get_layer(layer_name)


def _layer_output(layer, role):
    try:
        return layer.output
    except (AttributeError, ValueError) as e:
        raise ValueError(
            f"Cannot tap {role} layer {layer.name!r}: it is called more than "
            f"once in the model (shared layer) or was never called, so its "
            f"output is ambiguous. Tap a layer that is used exactly once "
            f"(e.g. the activation after it). Details: {e}"
        ) from e


#: Keys of the input dict of a batch that carries cached teacher outputs
#: (see `tfkd.data.cache_teacher_outputs`).
IMAGES_KEY = "images"
TEACHER_LOGITS_KEY = "teacher_logits"
TEACHER_FEATURES_KEY = "teacher_features"


def split_cached_inputs(x):
    """Splits a batch into `(images, cached teacher outputs or None)`.

    A batch from `tfkd.data.cache_teacher_outputs` is a dict with the images
    and the teacher's logits and tapped features; any other input is
    returned unchanged with `None`.
    """
    if isinstance(x, dict) and TEACHER_LOGITS_KEY in x:
        features = x.get(TEACHER_FEATURES_KEY, ())
        return x[IMAGES_KEY], (x[TEACHER_LOGITS_KEY], list(features))
    return x, None


def num_replicas():
    """Replicas of the current `tf.distribute` strategy (1 by default)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def _multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` over workers."""
    return isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ) and strategy.extended._in_multi_worker_mode()


def _batch_size(x):
    first = tf.nest.flatten(split_cached_inputs(x)[0])[0]
    return tf.shape(first)[0]


def reduce_term(value, sample_weight=None):
    """Reduces a loss term to a scalar the way Keras does.

    Per-example terms of shape `(batch,)` (or more dims, averaged first) are
    reduced as `sum(value * sample_weight) / batch_size`, Keras's
    `"sum_over_batch_size"`; scalars (batch-level losses such as LP) pass
    through unchanged.
    """
    value = tf.cast(value, tf.float32)
    if value.shape.rank == 0:
        return value
    if value.shape.rank > 1:
        value = tf.reduce_mean(value, axis=list(range(1, value.shape.rank)))
    if sample_weight is not None:
        sample_weight = tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        value = value * sample_weight
    count = tf.cast(tf.shape(value)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(value), count)


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(keras.Model):
    """Hinton knowledge distillation, and the base of every tfkd distiller.

    The student learns from the labels and from the frozen teacher's
    temperature-softened logits:
    `loss = alpha · CE(y, s) + (1 − alpha) · kd_loss(t, s, temperature)`.

    Use it like any Keras model: `compile(optimizer=..., metrics=[...])`,
    then `fit`, `evaluate`, `predict` (which runs the student alone).
    Training and validation report each term as its own metric: `loss` (the
    total), `class_loss` (cross entropy of the student against the labels)
    and `kd_loss`, plus any compiled metrics (computed on the student's
    logits). Labels may be integer class ids or one-hot.

    The teacher is frozen (`teacher.trainable = False`) and always called
    with `training=False`. Intermediate layers can be tapped by name with
    `teacher_layer=` / `student_layer=` (one name or a list of names, paired
    in order): each network then runs through one fused extractor, so it
    runs forward exactly once per step (Keras's own
    `keras.distillation.Distiller` runs the student a second time to get
    features). Subclasses receive the tapped features in
    `compute_loss_terms`.

    Subclassing: override `compute_loss_terms` (return a dict of named loss
    terms, each of shape `(batch,)` or a batch-level scalar) and
    `loss_weights` (a dict of the same names to weights); list the names in
    `loss_term_names` so they are reported as metrics. Trainable parts a
    method needs (adapters, regressors) are created by the distiller and
    trained with the student; they are never part of `distiller.student`.

    Args:
        teacher: A trained `keras.Model` that outputs logits. It is frozen.
        student: The `keras.Model` to train; outputs logits of the teacher's
            shape.
        alpha: Weight of the cross entropy with the labels, in `[0, 1]`;
            `1 − alpha` weighs the KD term. `alpha = 1` is training from
            labels only.
        temperature: KD softening temperature, `> 0`.
        teacher_layer: Optional name (or list of names) of teacher layers
            whose outputs are tapped.
        student_layer: Optional name (or list of names) of student layers
            paired with `teacher_layer`, in order.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import keras
    >>> teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(teacher, student, alpha=0.5, temperature=4.0)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x = keras.random.normal((16, 8), seed=1)
    >>> y = keras.ops.zeros((16,), dtype="int32")
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'class_loss', 'kd_loss', 'loss']

    Reference:
        Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural
        Network", NIPS Deep Learning Workshop 2015.
    """

    #: Names of the loss terms reported as metrics, besides `loss`.
    loss_term_names = ("class_loss", "kd_loss")

    def __init__(self, teacher, student, *, alpha=0.5, temperature=4.0,
                 teacher_layer=None, student_layer=None, **kwargs):
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise TypeError(
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
        if "dtype" not in kwargs and student.dtype_policy.name.startswith(
            "mixed"
        ):
            # compile() wraps the optimizer in a LossScaleOptimizer when the
            # model's own policy is mixed_float16, as Keras's trainer does.
            kwargs["dtype"] = student.dtype_policy
        super().__init__(**kwargs)
        self.alpha = check_unit_interval(alpha, "alpha")
        self.temperature = check_positive(temperature, "temperature")
        self.teacher = teacher
        self.student = student
        self.teacher.trainable = False
        self.teacher_layer = _as_name_list(teacher_layer, "teacher_layer")
        self.student_layer = _as_name_list(student_layer, "student_layer")
        if len(self.teacher_layer) != len(self.student_layer):
            raise ValueError(
                "`teacher_layer` and `student_layer` are paired in order and "
                "must have the same length. Received: "
                f"teacher_layer={self.teacher_layer}, "
                f"student_layer={self.student_layer}."
            )
        self._check_compatible()
        self._build_extractors()
        self._term_trackers = [
            keras.metrics.Mean(name=name) for name in self.loss_term_names
        ]
        # Teacher and student arrive built; marking the distiller built lets
        # `.keras` loading restore optimizer state after compile.
        self.built = True

    # ------------------------------------------------------------------
    # Construction helpers.

    def _check_compatible(self):
        """Checks input and logit shapes of teacher and student agree."""
        if not (_is_functional(self.teacher) and _is_functional(self.student)):
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
        if self.requires_matching_logits:
            t_out = tuple(self.teacher.outputs[0].shape[1:])
            s_out = tuple(self.student.outputs[0].shape[1:])
            if t_out != s_out:
                raise ValueError(
                    "The teacher's and student's logits must have the same "
                    f"shape. Received: teacher output shape {t_out}, student "
                    f"output shape {s_out}. Give the student a final layer "
                    f"with as many units as the teacher has classes."
                )

    #: Whether teacher and student logits must match in shape (KD needs it).
    requires_matching_logits = True

    def _extractor(self, model, layer_names, role):
        if not layer_names:
            return None
        if not _is_functional(model):
            raise ValueError(
                f"Cannot tap layers {layer_names} of the {role} "
                f"{model.name!r}: it is a subclassed model, whose "
                f"intermediate outputs Keras cannot reach by name. Build the "
                f"{role} with the functional API or `keras.Sequential` (with "
                f"a `keras.Input`), or return the features from its `call` "
                f"and distil only the logits."
            )
        layers = [_resolve_layer(model, n, role) for n in layer_names]
        outputs = [_layer_output(layer, role) for layer in layers]
        if len(model.outputs) != 1:
            raise ValueError(
                f"The {role} {model.name!r} has {len(model.outputs)} outputs; "
                f"tfkd distillers expect one logits output. Build a model "
                f"view with `keras.Model(inputs, logits)` first."
            )
        # A single input is passed as a tensor, not a one-element list, so
        # calling the extractor on a batch matches its input structure.
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return keras.Model(
            inputs, [model.outputs[0]] + outputs, name=f"{model.name}_taps",
        )

    def _build_extractors(self):
        # Kept out of Keras's attribute tracking: they share every layer with
        # teacher/student, which already own (and save) those weights.
        object.__setattr__(
            self, "_teacher_extractor",
            self._extractor(self.teacher, self.teacher_layer, "teacher"),
        )
        object.__setattr__(
            self, "_student_extractor",
            self._extractor(self.student, self.student_layer, "student"),
        )
        # A tap after a SelfTaughtConv2D (its batch norm or ReLU) still
        # carries guided channels first; find them through per-channel layers.
        self._guided = [
            find_guided_channels(self.student, n) for n in self.student_layer
        ]

    # ------------------------------------------------------------------
    # Forward passes: each network once per step.

    def call(self, inputs, training=False):
        inputs, _ = split_cached_inputs(inputs)
        return self.student(inputs, training=training)

    def teacher_forward(self, x):
        """Runs the frozen teacher once: `(logits, [tapped features])`."""
        if self._teacher_extractor is None:
            outputs = [self.teacher(x, training=False)]
        else:
            outputs = self._teacher_extractor(x, training=False)
        outputs = [tf.stop_gradient(o) for o in outputs]
        return outputs[0], outputs[1:]

    def student_forward(self, x, training):
        """Runs the student once: `(logits, [tapped features])`.

        Features of layers with guided channels (see `SelfTaughtConv2D`) are
        sliced to the guided channels, so knowledge losses never reach the
        self-taught ones.
        """
        if self._student_extractor is None:
            return self.student(x, training=training), []
        outputs = self._student_extractor(x, training=training)
        features = [
            f if g is None else f[..., :g]
            for f, g in zip(outputs[1:], self._guided)
        ]
        return outputs[0], features

    # ------------------------------------------------------------------
    # What a method defines.

    def compute_loss_terms(self, y, teacher_logits, student_logits,
                           teacher_features, student_features):
        """Returns `{term name: per-example (batch,) or scalar tensor}`."""
        return {
            "class_loss": kd_losses.cross_entropy(y, student_logits),
            "kd_loss": kd_losses.kd_loss(
                teacher_logits, student_logits, self.temperature
            ),
        }

    def loss_weights(self):
        """Returns `{term name: weight}`; the total is the weighted sum."""
        return {"class_loss": self.alpha, "kd_loss": 1.0 - self.alpha}

    def trainable_variables_for_step(self):
        """Variables the optimizer updates: the student plus owned parts."""
        seen, variables = set(), []
        for v in self.trainable_weights:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
        return variables

    # ------------------------------------------------------------------
    # Steps.

    def _check_labels(self, y, logits):
        if y is None:
            raise ValueError(
                "Distillers need labels: call `fit(x, y)` or pass a dataset "
                "of `(images, labels)` pairs. Received: y=None."
            )
        y = tf.convert_to_tensor(y)
        if y.dtype.is_integer or (
            y.shape.rank is not None and logits.shape.rank is not None
            and (y.shape.rank < logits.shape.rank or y.shape[-1] == 1)
        ):
            num_classes = tf.cast(tf.shape(logits)[-1], tf.int64)
            labels = tf.cast(y, tf.int64)
            checks = [
                tf.debugging.assert_non_negative(
                    labels, message="Labels `y` must be >= 0."),
                tf.debugging.assert_less(
                    labels, num_classes,
                    message=("Labels `y` must be class ids in [0, "
                             "num_classes) of the student's logits; a label "
                             "is out of range. Check the number of classes "
                             "of your models against your data."),
                ),
            ]
            with tf.control_dependencies(checks):
                return tf.identity(y)
        return y

    def _loss_and_terms(self, x, y, sample_weight, training):
        x, cached = split_cached_inputs(x)
        if cached is None:
            teacher_logits, teacher_features = self.teacher_forward(x)
        else:
            # Teacher outputs streamed with the data: the step runs only
            # the student.
            teacher_logits, teacher_features = self._check_cached(cached)
        student_logits, student_features = self.student_forward(
            x, training=training
        )
        y = self._check_labels(y, student_logits)
        terms = self.compute_loss_terms(
            y, teacher_logits, student_logits,
            teacher_features, student_features,
        )
        weights = self.loss_weights()
        reduced = {n: reduce_term(v, sample_weight) for n, v in terms.items()}
        total = tf.add_n([
            tf.cast(weights[name], tf.float32) * value
            for name, value in reduced.items() if name in weights
        ])
        if training:
            regularization = self.student.losses + [
                loss for layer in self._owned_layers() for loss in layer.losses
            ]
            if regularization:
                total += tf.add_n(
                    [tf.cast(r, tf.float32) for r in regularization]
                )
        return total, reduced, student_logits

    def _check_cached(self, cached):
        logits, features = cached
        if len(features) != len(self.teacher_layer):
            raise ValueError(
                f"The cached teacher outputs hold {len(features)} tapped "
                f"feature(s) but this distiller taps {len(self.teacher_layer)}"
                f" teacher layer(s) ({self.teacher_layer}). Rebuild the cache "
                f"with `tfkd.data.cache_teacher_outputs(distiller, ...)` for "
                f"this distiller."
            )
        return (tf.stop_gradient(logits),
                [tf.stop_gradient(f) for f in features])

    def _owned_layers(self):
        """Distiller-owned trainable parts (adapters, regressors, ...)."""
        return []

    def _update_trackers(self, total, reduced, x):
        batch = _batch_size(x)
        self._loss_tracker.update_state(total, sample_weight=batch)
        for tracker in self._term_trackers:
            if tracker.name in reduced:
                tracker.update_state(reduced[tracker.name],
                                     sample_weight=batch)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables_for_step()
        with tf.GradientTape() as tape:
            total, reduced, student_logits = self._loss_and_terms(
                x, y, sample_weight, training=True
            )
            # Per-replica mean -> global mean under tf.distribute, as
            # keras.src.losses.loss.scale_loss_for_distribution does.
            replicas = num_replicas()
            loss = total / replicas if replicas > 1 else total
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self._update_trackers(total, reduced, x)
        return self.compute_metrics(x, y, student_logits, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        total, reduced, student_logits = self._loss_and_terms(
            x, y, sample_weight, training=False
        )
        self._update_trackers(total, reduced, x)
        return self.compute_metrics(x, y, student_logits, sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # The compiled metrics see the student's logits only; the loss
        # trackers were updated by the step itself.
        if self._compile_metrics is not None:
            self._compile_metrics.update_state(y, y_pred, sample_weight)
        results = self.get_metrics_result()
        if _multi_worker(tf.distribute.get_strategy()):
            # Keras reduces step outputs across workers with
            # `strategy.reduce("MEAN", v, axis=0)`, which rejects scalars
            # (keras-team/keras#20585); the results are global already.
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras takes the first batch's shapes by `strategy.reduce`-ing it
        # across replicas, which fails with several workers
        # (keras-team/keras#20585). The shapes of this worker's first
        # replica batch are all it needs.
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None and _multi_worker(
            strategy
        ):
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    next(batches),
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator,
                                             data_batch=data_batch)

    # ------------------------------------------------------------------
    # Data checks and serialisation.

    def fit(self, x=None, y=None, *args, **kwargs):
        _check_not_empty(x, "x")
        _check_arrays(x, y, self._num_classes(), "x", "y")
        validation = kwargs.get("validation_data")
        if validation is not None:
            _check_not_empty(validation, "validation_data")
            if isinstance(validation, (tuple, list)) and len(validation) >= 2:
                _check_arrays(validation[0], validation[1],
                              self._num_classes(), "validation_data[0]",
                              "validation_data[1]")
        return super().fit(x, y, *args, **kwargs)

    def _num_classes(self):
        try:
            return int(self.student.outputs[0].shape[-1])
        except (AttributeError, TypeError, ValueError, IndexError):
            return None

    def get_config(self):
        config = super().get_config()
        config.update({
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "alpha": self.alpha,
            "temperature": self.temperature,
            "teacher_layer": list(self.teacher_layer) or None,
            "student_layer": list(self.student_layer) or None,
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's deserialisation consumes nested dicts; keep the caller's.
        config = copy.deepcopy(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        return cls(**config)


def _check_arrays(x, y, num_classes, x_name, y_name):
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
    if (
        isinstance(y, np.ndarray) and num_classes is not None
        and np.issubdtype(y.dtype, np.integer) and y.size
    ):
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"`{y_name}` must hold class ids in [0, {num_classes}) for "
                f"a student with {num_classes} logits. Received labels in "
                f"[{low}, {high}]. Check the data's number of classes "
                f"against the models'."
            )


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
