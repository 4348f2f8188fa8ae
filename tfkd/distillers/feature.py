"""`FeatureDistiller`: the base of feature-based (hint) distillation methods.

Feature-based methods supervise one or more intermediate student layers
with knowledge taken from paired teacher layers (FitNets hints, attention
maps, correlation Gram matrices). `FeatureDistiller` owns what they share:

- pairs of tapped layers (`teacher_layer`, `student_layer`, str or lists
  paired in order), each network running forward once per step;
- guided channels: only the first `guided_channels` channels of a student
  feature are supervised (read from a `tfkd.layers.SelfTaughtConv2D`,
  also through channel-wise layers after it, or given explicitly);
- optional trainable student-side adapters when shapes do not match
  (`FeatureAdapter`: a 1×1 convolution for channels, a bilinear resize for
  the spatial size), owned by the distiller and never part of the student;
- the objective of the correlation paper (eq. 6),
  `L = L_Know + beta · L_Class`, `L_Class = alpha · CE + (1 − alpha) · KD`;
- single-stage or two-stage training (`stage=None | 1 | 2`,
  `set_stage`, `fit_two_stage`).

A method only implements `knowledge_loss(teacher_feature, student_feature)`
(and, when it needs only some dimensions to match, `feature_requirements`).
"""

import contextlib

import keras
import tensorflow as tf
from keras import ops

from tfkd.distillers.base import Distiller
from tfkd.layers.self_taught_conv2d import find_guided_channels
from tfkd.losses import kd as kd_losses
from tfkd.losses._utils import check_non_negative

#: Valid values of `stage`: single-stage, stage 1 (knowledge only, up to the
#: guided layers), stage 2 (class loss only, whole student).
STAGES = (None, 1, 2)

_DIMENSIONS = ("spatial", "channels")


def check_stage(stage):
    """Returns `stage` if it is `None`, `1` or `2`, else raises."""
    if stage is None or (
        isinstance(stage, int) and not isinstance(stage, bool)
        and stage in (1, 2)
    ):
        return stage
    raise ValueError(
        "`stage` must be None (single-stage training), 1 (train the student "
        "up to the guided layer(s) with the knowledge loss) or 2 (train the "
        f"whole student with the class loss). Received: stage={stage!r}."
    )


def _check_guided_channels(value, num_pairs):
    """Normalises `None | int | list[int | None]` to one entry per pair."""
    def valid(v):
        return v is None or (
            isinstance(v, int) and not isinstance(v, bool) and v >= 1
        )

    if value is None:
        return [None] * num_pairs
    if valid(value):
        return [value] * num_pairs
    if isinstance(value, (list, tuple)) and all(valid(v) for v in value):
        if len(value) != num_pairs:
            raise ValueError(
                "`guided_channels` must have one entry per tapped pair "
                f"({num_pairs}). Received: guided_channels={list(value)}."
            )
        return list(value)
    raise ValueError(
        "`guided_channels` must be None, a positive int (for every pair) or "
        "a list with one positive int (or None, for all channels) per "
        f"tapped pair. Received: guided_channels={value!r}."
    )


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be True or False. Received: {name}={value!r} of "
            f"type {type(value).__name__}."
        )
    return value


def _check_epochs(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be an integer >= 1. Received: {name}={value!r}."
        )
    return value


@contextlib.contextmanager
def _frozen(layers):
    """Temporarily sets `trainable = False` on `layers` (and restores it).

    A frozen layer is excluded from `trainable_weights`, and a frozen
    `BatchNormalization` runs in inference mode, so its moving statistics
    stay unchanged.
    """
    saved = [
        (sub, sub.trainable)
        for layer in layers
        for sub in layer._flatten_layers(include_self=True, recursive=True)
    ]
    try:
        for layer in layers:
            layer.trainable = False
        yield
    finally:
        # Parents come before their sub-layers, so a sub-layer's own flag
        # wins over the recursive setter of its parent.
        for sub, trainable in saved:
            sub.trainable = trainable


@keras.saving.register_keras_serializable(package="tfkd")
class FeatureAdapter(keras.layers.Layer):
    """Trainable student-side adapter: a convolution, then a resize.

    Maps a student feature map to the shape a knowledge loss needs. With
    `filters`, a convolution (`'valid'` padding, so a 1×1 kernel keeps the
    size and a `k × k` kernel shrinks it by `k − 1`) maps the channels; with
    `target_size`, a bilinear resize then brings the map to `(H, W)` if it
    is not that size already. Used by tfkd distillers as adapters and as
    the FitNets regressor; it belongs to the distiller, never to the
    exported student.

    Args:
        filters: Output channels of the convolution, or `None` for no
            convolution.
        kernel_size: Int or pair, the convolution kernel (default 1).
        target_size: `(H, W)` to resize to, or `None` for no resize.
        activation: Optional activation of the convolution.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Input shape:
        `(batch, H_S, W_S, C_S)`.

    Output shape:
        `(batch, H, W, filters)` (`C_S` without `filters`; the
        convolution's output size without `target_size`).

    Example:

    >>> adapter = FeatureAdapter(filters=8, target_size=(2, 2))
    >>> tuple(adapter(keras.ops.ones((1, 4, 4, 3))).shape)
    (1, 2, 2, 8)
    """

    def __init__(self, filters=None, kernel_size=1, target_size=None,
                 activation=None, **kwargs):
        super().__init__(**kwargs)
        if filters is not None and (
            isinstance(filters, bool) or not isinstance(filters, int)
            or filters < 1
        ):
            raise ValueError(
                "`filters` must be None or a positive int. Received: "
                f"filters={filters!r}."
            )
        if target_size is not None:
            target_size = tuple(target_size)
            if len(target_size) != 2 or not all(
                isinstance(v, int) and v >= 1 for v in target_size
            ):
                raise ValueError(
                    "`target_size` must be None or a pair of positive ints "
                    f"(H, W). Received: target_size={target_size!r}."
                )
        if filters is None and target_size is None:
            raise ValueError(
                "A `FeatureAdapter` needs `filters` (a convolution), "
                "`target_size` (a resize) or both. Received neither."
            )
        self.filters = filters
        self.kernel_size = kernel_size
        self.target_size = target_size
        self.activation = keras.activations.get(activation)
        self.conv = None
        if filters is not None:
            self.conv = keras.layers.Conv2D(
                filters, kernel_size, padding="valid", activation=activation,
                dtype=self.dtype_policy, name="conv",
            )

    def build(self, input_shape):
        if self.conv is not None:
            self.conv.build(input_shape)

    def call(self, inputs):
        x = inputs if self.conv is None else self.conv(inputs)
        if self.target_size is not None and (
            tuple(x.shape[1:3]) != self.target_size
        ):
            x = ops.image.resize(x, self.target_size,
                                 interpolation="bilinear")
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.conv is not None:
            shape = tuple(self.conv.compute_output_shape(shape))
        if self.target_size is not None:
            shape = (shape[0], *self.target_size, shape[3])
        return shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "target_size": self.target_size,
            "activation": keras.activations.serialize(self.activation),
        })
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class FeatureDistiller(Distiller):
    """Base of feature-based distillers: knowledge from intermediate layers.

    The student's guided layer(s) learn from paired teacher layer(s) through
    a knowledge loss that a subclass defines (`knowledge_loss`), and its
    logits from the labels and, optionally, the teacher's logits. Objective
    of the correlation paper (eq. 6), summed over the tapped pairs:

    `L = kw · Σ_pairs knowledge_loss(t_i, s_i) + cw · L_Class`,
    `L_Class = alpha · CE(y, s) + (1 − alpha) · kd_loss(t, s, T)`

    with `kw = 1, cw = beta` here (a subclass may swap the roles, as
    `AttentionDistiller` does). `alpha = 1` means no KD term; the paper's
    "+KD" rows use `alpha = 0.3`.

    **Two-stage training** (as FitNets): `stage=1` trains only the student's
    layers from the input up to and including the guided layer(s), plus the
    adapters, with `kw · L_Know`; the later student layers are frozen for the
    step (a later `BatchNormalization` runs in inference mode), so after
    stage 1 they are bit-for-bit unchanged. `stage=2` trains the whole
    student (not the adapters) with `L_Class` alone. `stage=None` (default)
    is single-stage training with the full objective. Run both stages with
    `fit_two_stage`, or switch by hand with `set_stage(n)` (or
    `distiller.stage = n`) between `fit` calls; the stage is part of
    `get_config`, so it survives save/load. One optimizer serves both
    stages (it is built on every trainable variable); to give stage 2 a
    fresh optimizer, `compile` again after `set_stage(2)`.

    Metrics: `loss` (the weighted total of the current stage),
    `knowledge_loss` (the unweighted sum over pairs), `class_loss` (the
    cross entropy with the labels) and `kd_loss`, each also as `val_...`.
    All are reported in every stage, whether or not the stage trains on it.

    **Guided channels.** When a tapped student layer is (or follows, through
    channel-wise layers such as batch norm and ReLU) a
    `tfkd.layers.SelfTaughtConv2D`, only its guided channels reach the
    knowledge loss, so the self-taught neurons get exactly zero gradient
    from it. `guided_channels=` overrides this per pair.

    **Shapes and adapters.** Each method states which dimensions of a pair
    must match (`feature_requirements`: the spatial size `(H, W)`, the
    channel count, or both). On a mismatch, `adapter=True` inserts a
    trainable `FeatureAdapter` on the student side (a 1×1 convolution to the
    teacher's channel count, a bilinear resize to the teacher's spatial
    size); otherwise construction raises a `ValueError`. Adapters are built
    in the constructor, trained with the student, saved with the
    distiller, and never part of `distiller.student`.

    Subclassing: implement `knowledge_loss(teacher_feature,
    student_feature) -> (batch,)`; override `feature_requirements` if not
    every dimension must match, and add your arguments to `get_config`.

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` to train, outputting logits.
        teacher_layer: Name (or list of names) of the teacher layers giving
            knowledge.
        student_layer: Name (or list of names) of the guided student layers,
            paired with `teacher_layer` in order. Each must come before the
            student's logits layer.
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`;
            `1 − alpha` weighs KD.
        beta: Weight of `L_Class` in the single-stage objective, `>= 0`
            (paper: 0.1).
        temperature: KD temperature, `> 0`.
        adapter: If `True`, insert trainable student-side adapters where a
            pair's shapes do not match.
        stage: `None` (single-stage), `1` or `2` (see above).
        guided_channels: `None` (read from the student's layers), an int
            for every pair, or a list with an int or `None` per pair: the
            number of leading channels of the student feature supervised.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> class HintDistiller(FeatureDistiller):
    ...     def knowledge_loss(self, teacher_feature, student_feature):
    ...         return tfkd.losses.hint_loss(teacher_feature, student_feature)
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = HintDistiller(teacher, student, teacher_layer="conv1",
    ...                           student_layer="conv1", adapter=True)
    >>> distiller.compile(optimizer="sgd")
    >>> x, y = testing.random_images(32)
    >>> stage1, stage2 = distiller.fit_two_stage(
    ...     x, y, stage1_epochs=1, stage2_epochs=1, verbose=0)
    >>> sorted(stage1.history)
    ['class_loss', 'kd_loss', 'knowledge_loss', 'loss']

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, §3.1 (eqs. 5–6, two-stage
        training); Romero et al. "FitNets: Hints for Thin Deep Nets",
        ICLR 2015 (two-stage training).
    """

    loss_term_names = ("knowledge_loss", "class_loss", "kd_loss")

    #: The name of the constructor option that inserts adapters, quoted in
    #: shape-mismatch errors.
    _adapter_option = "adapter"

    def __init__(self, teacher, student, *, teacher_layer=None,
                 student_layer=None, alpha=1.0, beta=0.1, temperature=4.0,
                 adapter=False, stage=None, guided_channels=None, **kwargs):
        cls = type(self).__name__
        if not teacher_layer or not student_layer:
            raise ValueError(
                f"{cls} needs the layers to distil: pass "
                "`teacher_layer=` and `student_layer=` (a layer name each, "
                "or lists of names paired in order). Received: "
                f"teacher_layer={teacher_layer!r}, "
                f"student_layer={student_layer!r}."
            )
        beta = check_non_negative(beta, "beta")
        adapter = _check_bool(adapter, self._adapter_option)
        stage = check_stage(stage)
        super().__init__(
            teacher, student, alpha=alpha, temperature=temperature,
            teacher_layer=teacher_layer, student_layer=student_layer,
            **kwargs,
        )
        self.beta = beta
        self.adapter = adapter
        self._stage = stage
        self._explicit_guided = guided_channels
        guided = _check_guided_channels(guided_channels,
                                        len(self.student_layer))
        self._guided = [
            g if g is not None else find_guided_channels(self.student, name)
            for g, name in zip(guided, self.student_layer)
        ]
        self._build_front()
        self._build_adapters()

    # ------------------------------------------------------------------
    # Construction.

    def _build_front(self):
        """The student's sub-graph from its inputs to the tapped layers."""
        tapped = self._student_extractor.outputs[1:]
        front = keras.Model(self.student.inputs, tapped,
                            name=f"{self.student.name}_front")
        output_layer = self.student.outputs[0]._keras_history[0]
        front_ids = {id(layer) for layer in front.layers}
        if id(output_layer) in front_ids:
            bad = [
                name for name, t in zip(self.student_layer, tapped)
                if id(output_layer) in {
                    id(layer) for layer in keras.Model(
                        self.student.inputs, t).layers
                }
            ]
            raise ValueError(
                f"`student_layer`={bad} is the student's logits layer "
                f"{output_layer.name!r} or comes after it. Feature "
                "distillers supervise intermediate layers before the "
                "logits (two-stage training trains the student up to the "
                "guided layer); to distil the logits use `tfkd.Distiller`."
            )
        # Not tracked: it shares every layer with the student.
        object.__setattr__(self, "_front", front)
        object.__setattr__(self, "_later_layers", [
            layer for layer in self.student.layers
            if id(layer) not in front_ids
        ])

    def feature_requirements(self):
        """Dimensions that must match within a pair: a subset of
        `("spatial", "channels")`. Both by default."""
        return _DIMENSIONS

    def _pair_shapes(self, index):
        """Static `(teacher_shape, student_shape)` of pair `index`, after
        slicing the student feature to its guided channels."""
        t = tuple(self._teacher_extractor.outputs[1 + index].shape)
        s = tuple(self._student_extractor.outputs[1 + index].shape)
        g = self._guided[index]
        if g is not None:
            if s[-1] is not None and g > s[-1]:
                raise ValueError(
                    f"`guided_channels`={g} for student layer "
                    f"{self.student_layer[index]!r} exceeds its "
                    f"{s[-1]} output channels. Received student feature "
                    f"shape {s}."
                )
            s = s[:-1] + (g,)
        return t, s

    def _mismatched(self, t, s):
        """Required dimensions in which the two shapes differ."""
        required = self.feature_requirements()
        bad = []
        if "spatial" in required and t[1:3] != s[1:3]:
            bad.append("spatial")
        if "channels" in required and t[3] != s[3]:
            bad.append("channels")
        return bad

    def _needs_adapter(self, index, t, s):
        return bool(self._mismatched(t, s))

    def _make_adapter(self, index, t, s):
        """A `FeatureAdapter` mapping student shape `s` to teacher `t`."""
        bad = self._mismatched(t, s)
        return FeatureAdapter(
            filters=t[3] if "channels" in bad else None,
            target_size=t[1:3] if "spatial" in bad else None,
            dtype=self.student.dtype_policy,
            name=f"adapter_{index}",
        )

    def _build_adapters(self):
        cls = type(self).__name__
        adapters, slots = [], []
        for i, (t_name, s_name) in enumerate(
            zip(self.teacher_layer, self.student_layer)
        ):
            t, s = self._pair_shapes(i)
            for role, shape, name in (("teacher", t, t_name),
                                      ("student", s, s_name)):
                if len(shape) != 4 or None in shape[1:]:
                    raise ValueError(
                        f"{cls} needs 4D feature maps (batch, H, W, C) of "
                        f"known size. The {role} layer {name!r} outputs "
                        f"shape {shape}. Tap a convolutional layer (or its "
                        "activation) instead."
                    )
            if not self._needs_adapter(i, t, s):
                slots.append(None)
                continue
            if not self.adapter:
                bad = self._mismatched(t, s)
                what = {
                    "spatial": "spatial sizes (H, W)",
                    "channels": "channel counts",
                }
                guided = (
                    f" (the first {self._guided[i]} guided channels)"
                    if self._guided[i] is not None else ""
                )
                raise ValueError(
                    f"{cls} needs equal {' and '.join(what[b] for b in bad)}"
                    f" for the tapped pair {t_name!r} -> {s_name!r}. "
                    f"Received: teacher feature shape {t}, student feature "
                    f"shape {s}{guided}. Pass {self._adapter_option}=True "
                    "to insert a trainable student-side adapter (1×1 conv "
                    "for channels, resize for the spatial size), or tap "
                    "layers whose shapes match."
                )
            adapter = self._make_adapter(i, t, s)
            adapter.build((None,) + tuple(s[1:]))
            out = tuple(adapter.compute_output_shape((None,) + s[1:]))
            if self._mismatched(t, out):
                raise ValueError(
                    f"The adapter of pair {t_name!r} -> {s_name!r} maps the "
                    f"student shape {s} to {out}, which still does not match "
                    f"the teacher shape {t}."
                )
            slots.append(len(adapters))
            adapters.append(adapter)
        self.adapters = adapters
        self._adapter_slots = tuple(slots)

    def _owned_layers(self):
        return list(self.adapters)

    # ------------------------------------------------------------------
    # Stages.

    @property
    def stage(self):
        """`None` (single-stage), `1` or `2`; settable (see `set_stage`)."""
        return self._stage

    @stage.setter
    def stage(self, value):
        self.set_stage(value)

    def set_stage(self, stage):
        """Switches the training stage for the next `fit`.

        Resets the compiled train and test functions, so the change takes
        effect at the next `fit`/`evaluate` even after earlier calls.

        Args:
            stage: `None` (single-stage: `kw · L_Know + cw · L_Class`),
                `1` (`kw · L_Know`, training the student up to the guided
                layers and the adapters) or `2` (`L_Class`, training the
                whole student).

        Returns:
            The distiller, for chaining.

        Example:

        >>> import tfkd
        >>> from tfkd import testing
        >>> teacher = testing.tiny_conv_model("teacher", width=8)
        >>> student = testing.tiny_conv_model("student", width=8)
        >>> distiller = tfkd.distillers.CorrelationDistiller(
        ...     teacher, student, teacher_layer="conv1",
        ...     student_layer="conv1")
        >>> distiller.set_stage(1).stage
        1
        """
        self._stage = check_stage(stage)
        # Stage decides loss weights and variables when a step is traced.
        self.train_function = None
        self.test_function = None
        return self

    def fit_two_stage(self, x=None, y=None, *, stage1_epochs, stage2_epochs,
                      **fit_kwargs):
        """Two-stage training: `stage1_epochs` of stage 1, then stage 2.

        Stage 1 trains the student up to the guided layer(s) (and the
        adapters) with the knowledge loss; stage 2 trains the whole student
        with `L_Class`. Both use the compiled optimizer and metrics; epochs
        are numbered on from stage 1 (stage 2 starts at epoch
        `stage1_epochs`), so callbacks and logs see one run. The distiller
        is left in stage 2.

        Args:
            x: Training data, as for `fit` (arrays or a re-iterable
                `tf.data.Dataset`; it is iterated in both stages).
            y: Labels, as for `fit`.
            stage1_epochs: Int `>= 1`, epochs of stage 1.
            stage2_epochs: Int `>= 1`, epochs of stage 2.
            **fit_kwargs: Other `fit` arguments (`batch_size`,
                `validation_data`, `callbacks`, `verbose`, ...), used for
                both stages. Not `epochs` / `initial_epoch`.

        Returns:
            A tuple `(history_stage1, history_stage2)` of
            `keras.callbacks.History`.

        Example:

        >>> import tfkd
        >>> from tfkd import testing
        >>> teacher = testing.tiny_conv_model("teacher", width=8)
        >>> student = testing.tiny_conv_model("student", width=8)
        >>> distiller = tfkd.distillers.CorrelationDistiller(
        ...     teacher, student, teacher_layer="conv1",
        ...     student_layer="conv1")
        >>> distiller.compile(optimizer="adam")
        >>> x, y = testing.random_images(32)
        >>> h1, h2 = distiller.fit_two_stage(x, y, stage1_epochs=1,
        ...                                  stage2_epochs=1, verbose=0)
        >>> distiller.stage, h2.epoch
        (2, [1])
        """
        for key in ("epochs", "initial_epoch"):
            if key in fit_kwargs:
                raise TypeError(
                    f"`fit_two_stage` sets `{key}` itself; pass "
                    "`stage1_epochs=` and `stage2_epochs=` instead. "
                    f"Received: {key}={fit_kwargs[key]!r}."
                )
        stage1_epochs = _check_epochs(stage1_epochs, "stage1_epochs")
        stage2_epochs = _check_epochs(stage2_epochs, "stage2_epochs")
        # `keras.callbacks.BackupAndRestore` deletes its backup at the end
        # of a `fit`: keep it through stage 1, so that a run killed in
        # either stage resumes where it stopped (its epoch tells the stage).
        backups = [
            c for c in fit_kwargs.get("callbacks") or ()
            if isinstance(c, keras.callbacks.BackupAndRestore)
        ]
        deletes = [c.delete_checkpoint for c in backups]
        self.set_stage(1)
        try:
            for c in backups:
                c.delete_checkpoint = False
            first = self.fit(x, y, epochs=stage1_epochs, **fit_kwargs)
        finally:
            for c, delete in zip(backups, deletes):
                c.delete_checkpoint = delete
        self.set_stage(2)
        # Keras keeps an epoch restored by `BackupAndRestore` for every
        # later `fit` (`_initial_epoch`); stage 2 starts at `stage1_epochs`
        # unless its own restored backup says otherwise.
        self._initial_epoch = None
        second = self.fit(
            x, y, initial_epoch=stage1_epochs,
            epochs=stage1_epochs + stage2_epochs, **fit_kwargs,
        )
        return first, second

    # ------------------------------------------------------------------
    # Loss.

    def knowledge_loss(self, teacher_feature, student_feature):
        """Per-example knowledge loss `(batch,)` of one tapped pair.

        `student_feature` is already sliced to the guided channels and put
        through the pair's adapter, if any. Subclasses must implement it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement `knowledge_loss("
            "teacher_feature, student_feature)` returning per-example "
            "values of shape (batch,)."
        )

    @property
    def knowledge_weight(self):
        """Weight `kw` of the knowledge loss (1 for the correlation paper)."""
        return 1.0

    @property
    def class_weight(self):
        """Weight `cw` of `L_Class` in single-stage training (`beta`)."""
        return self.beta

    def compute_loss_terms(self, y, teacher_logits, student_logits,
                           teacher_features, student_features):
        knowledge = None
        for i, (t, s) in enumerate(zip(teacher_features, student_features)):
            slot = self._adapter_slots[i]
            if slot is not None:
                s = self.adapters[slot](s)
            value = tf.cast(self.knowledge_loss(t, s), tf.float32)
            knowledge = value if knowledge is None else knowledge + value
        return {
            "knowledge_loss": knowledge,
            "class_loss": kd_losses.cross_entropy(y, student_logits),
            "kd_loss": kd_losses.kd_loss(
                teacher_logits, student_logits, self.temperature
            ),
        }

    def loss_weights(self):
        class_terms = {"class_loss": self.alpha, "kd_loss": 1.0 - self.alpha}
        if self._stage == 1:
            return {"knowledge_loss": self.knowledge_weight}
        if self._stage == 2:
            return class_terms
        weights = {k: self.class_weight * v for k, v in class_terms.items()}
        weights["knowledge_loss"] = self.knowledge_weight
        return weights

    # ------------------------------------------------------------------
    # Steps.

    def _all_trainable_variables(self):
        return Distiller.trainable_variables_for_step(self)

    def stage_variables(self, stage=None):
        """Trainable variables a stage updates (default: current stage).

        Stage 1: the student's sub-graph from its inputs to the guided
        layers plus the adapters; stage 2: the student; single-stage: the
        student plus the adapters.
        """
        stage = self._stage if stage is None else check_stage(stage)
        if stage == 1:
            variables = list(self._front.trainable_weights) + [
                v for layer in self._owned_layers()
                for v in layer.trainable_weights
            ]
        elif stage == 2:
            variables = list(self.student.trainable_weights)
        else:
            return self._all_trainable_variables()
        seen, unique = set(), []
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                unique.append(v)
        return unique

    def trainable_variables_for_step(self):
        return self.stage_variables()

    def train_step(self, data):
        if not self.optimizer.built:
            # Build on every variable any stage may train: Keras optimizers
            # refuse variables they were not built with, and `.keras`
            # loading rebuilds them on `trainable_variables` in this order.
            with keras.name_scope(self.optimizer.name):
                self.optimizer.build(self._all_trainable_variables())
        if self._stage != 1:
            return super().train_step(data)
        # Stage 1 runs the whole student once (the logits feed the reported
        # class metrics) but freezes the layers after the guided ones, so
        # their weights and batch-norm statistics stay unchanged.
        with _frozen(self._later_layers):
            return super().train_step(data)

    # ------------------------------------------------------------------
    # Serialisation.

    def get_config(self):
        config = super().get_config()
        guided = self._explicit_guided
        config.update({
            "beta": self.beta,
            self._adapter_option: self.adapter,
            "stage": self._stage,
            "guided_channels": (
                list(guided) if isinstance(guided, (list, tuple)) else guided
            ),
        })
        return config
