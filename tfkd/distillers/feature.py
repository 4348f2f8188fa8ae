"""`FeatureDistiller`: the correlation paper's framework for feature terms.

Feature-based methods supervise intermediate student layers with knowledge
from paired teacher layers (FitNets hints, attention maps, correlation Gram
matrices). `FeatureDistiller` is the preset that puts any such knowledge
term into the correlation paper's objective (eq. 6),

    L = kw · L_Know + cw · L_Class,  L_Class = α · CE + (1 − α) · KD,

and trains it in one stage or two (FitNets' hint stage, then the class
stage). The method presets (`CorrelationDistiller`, `FitNetDistiller`,
`AttentionDistiller`) only build their term and fix `kw`, `cw`.
"""

import contextlib
import fractions
import math
import shutil
import types

import keras
import numpy as np
import tensorflow as tf

from tfkd import _compat
from tfkd import hyperparameters as hp
from tfkd.distillers.base import Distiller
from tfkd.saving import PresetSaving
from tfkd.terms.base import DistillationTerm
from tfkd.methods.kd import KDDistillation

#: The temperature of the KD term the feature presets add to their feature
#: loss (`FeatureDistiller`, attention, correlation, FitNets' class stage,
#: STC's extra KD term, KTAN / DLN): 1, not Hinton KD's 4 (the `kd`
#: method's, `KDDistillation`'s default). With the tiny digits student the
#: feature presets learn their classes from the teacher's sharp targets,
#: not its dark knowledge: T = 1 gave each of attention, correlation, STC,
#: DLN and KTAN as much or more than T = 4 on the few-label digits (6 / 20
#: labels a class), with every digits label, and on few-label
#: Fashion-MNIST, where T = 4 lost 4-11 points to the student alone at
#: every budget (3 seeds each; docs/methods/kd.md has the table).
PRESET_KD_TEMPERATURE = 1.0

#: Valid values of `stage`: single-stage, stage 1 (knowledge only, up to the
#: guided layers), stage 2 (class loss only, whole student), and `"both"`
#: (every `fit` runs stage 1 then stage 2, splitting its epochs).
STAGES = (None, 1, 2, "both")

#: The `stage` value of the two-stage schedule.
BOTH = "both"


def check_stage(stage, *, allow_both=True):
    """Returns `stage` if it is `None`, `1`, `2` or `"both"`, else raises."""
    if stage is None or (
        isinstance(stage, int) and not isinstance(stage, bool)
        and stage in (1, 2)
    ) or (allow_both and stage == BOTH):
        return stage
    both = ', or "both" (each `fit` trains stage 1, then stage 2)' \
        if allow_both else ""
    raise ValueError(
        "`stage` must be None (single-stage training), 1 (train the student "
        "up to the guided layer(s) with the knowledge loss), 2 (train the "
        f"whole student with the class loss){both}. Received: "
        f"stage={stage!r}."
    )


def _check_reiterable(data, name):
    """Refuses data that can be read only once (a Python generator or
    iterator, a `tf.data` iterator): stage 1 would use it up and leave
    stage 2 nothing."""
    if data is None or isinstance(data, (tf.data.Dataset, np.ndarray,
                                         tuple, list, dict)):
        return
    one_shot = isinstance(data, (types.GeneratorType, tf.data.Iterator)) or (
        hasattr(data, "__next__") and iter(data) is data)
    if one_shot:
        raise ValueError(
            f"Two-stage training reads `{name}` once per stage, but "
            f"{name}={type(data).__name__} can be read only once: stage 1 "
            "would use it up and stage 2 would get no data. Pass data that "
            "can be iterated again: arrays, a `tf.data.Dataset` (e.g. "
            "`tf.data.Dataset.from_generator(make_generator, "
            "output_signature=...)`, which calls `make_generator` anew each "
            "pass) or a `keras.utils.PyDataset`."
        )


def _check_epochs(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be an integer >= 1. Received: {name}={value!r}."
        )
    return value


def split_epochs(epochs, stage1_share=fractions.Fraction(1, 2)):
    """`(stage1_epochs, stage2_epochs)` of a two-stage run of `epochs`.

    Stage 1 gets `stage1_share` of the epochs (rounded down, at least one),
    stage 2 the rest (at least one): how `fit` of a `stage="both"`
    distiller gives a two-stage method the same budget as a single-stage
    one. Each method sets its share (`FeatureDistiller.stage1_share`).

    Args:
        epochs: Total epochs, an int `>= 2` (one per stage at least).
        stage1_share: Share of the epochs for stage 1, a number in
            `(0, 1)` (default one half).

    Returns:
        A pair of ints summing to `epochs`.

    Example:

    >>> split_epochs(30), split_epochs(5)
    ((15, 15), (2, 3))
    >>> from fractions import Fraction
    >>> split_epochs(30, Fraction(1, 6)), split_epochs(2, Fraction(1, 6))
    ((5, 25), (1, 1))
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 2:
        raise ValueError(
            "Two-stage training needs `epochs >= 2` (one per stage). "
            f"Received: epochs={epochs!r}. Pass `epochs=2` or more, or "
            "build the distiller with `stage=None` for single-stage "
            "training."
        )
    if isinstance(stage1_share, bool) or not (
        isinstance(stage1_share, (int, float, fractions.Fraction))
        and 0 < stage1_share < 1
    ):
        raise ValueError(
            "`stage1_share` must be a number strictly between 0 and 1 (the "
            "share of the epochs that goes to stage 1). Received: "
            f"stage1_share={stage1_share!r}."
        )
    # A `Fraction` share splits exactly (no float rounding down).
    stage1 = math.floor(epochs * fractions.Fraction(stage1_share))
    stage1 = min(max(stage1, 1), epochs - 1)
    return stage1, epochs - stage1


def require_layers(cls_name, teacher_layer, student_layer):
    """Raises unless both layer arguments name at least one layer."""
    for value in (teacher_layer, student_layer):
        if not value:
            raise ValueError(
                f"{cls_name} needs the layers to distil: pass "
                "`teacher_layer_name=` and `student_layer_name=` (a layer "
                "name each, or lists of names paired in order). Received: "
                f"teacher_layer_name={teacher_layer!r}, "
                f"student_layer_name={student_layer!r}."
            )


@contextlib.contextmanager
def _frozen(layers):
    """Temporarily sets `trainable = False` on `layers` (and restores it).

    A frozen layer is excluded from `trainable_weights`, and a frozen
    `BatchNormalization` runs in inference mode, so its moving statistics
    stay unchanged.
    """
    saved = [(sub, sub.trainable) for layer in layers
             for sub in _compat.flatten_layers(layer)]
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
class FeatureDistiller(PresetSaving, Distiller):
    """The correlation paper's objective and two-stage training, for any
    feature term.

    Objective (eq. 6), summed over the term's tapped pairs:

    `L = kw · L_Know + cw · L_Class`,
    `L_Class = alpha · CE(y, s) + (1 − alpha) · kd_loss(t, s, T)`,

    with `kw = 1, cw = beta` here (`AttentionDistiller` swaps the roles, as
    its paper does). `alpha = 1` means no KD term; the paper's "+KD" rows
    use `alpha = 0.3`. In the engine's convention the terms are the
    knowledge term (reported under its own name, as everywhere: `hint_loss`
    for `HintDistillation`) and `KDDistillation` (`kd`),
    and the total is `L / (1 + cw)`: `student_loss_weight =
    cw · alpha / (1 + cw)`, the knowledge and KD weights follow (both
    derived live from `alpha`, `beta` and the stage).

    **Two-stage training** (FitNets): `stage=1` trains only the student's
    layers from the input up to and including the guided layer(s), plus the
    term's adapters, with `kw · L_Know`; the later student layers are frozen
    for the step (a later `BatchNormalization` runs in inference mode), so
    after stage 1 they are bit-for-bit unchanged. `stage=2` trains the whole
    student (not the adapters) with `L_Class` alone (exactly Hinton's
    form). `stage=None` (default) is single-stage training. `stage="both"`
    makes every `fit(..., epochs=n)` run both stages within its `n` epochs
    (`split_epochs`: the class attribute `stage1_share` of them for stage 1,
    half by default, the rest for stage 2, stage 2 with a fresh optimizer) and return one history of `n` epochs: the method's
    schedule, the same whichever way the distiller was built
    (class, `tfkd.distillers.registry.build`, the tuner). Run the stages
    by hand with `fit_two_stage`, or switch with `set_stage(n)` between
    `fit` calls; the stage is part of `get_config`.

    Metrics: `loss`, `<term>_loss` (the knowledge term's own name, e.g.
    `hint_loss`; the unweighted sum over pairs),
    `student_loss` (cross entropy with the labels) and `kd_loss`, each also
    as `val_...`, in every stage.

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` to train, outputting logits.
        knowledge: The knowledge term (a `tfkd.terms.DistillationTerm`
            tapping intermediate layers, e.g. `tfkd.losses.HintDistillation`).
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`;
            `1 − alpha` weighs KD.
        beta: Weight of `L_Class` in the single-stage objective, `>= 0`
            (paper: 0.1).
        temperature: KD temperature, `> 0` (default 1, the
            feature presets' `PRESET_KD_TEMPERATURE`, not Hinton KD's 4).
        stage: `None` (single-stage), `1`, `2` or `"both"` (each `fit`
            trains both stages).
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = FeatureDistiller(
    ...     teacher, student,
    ...     knowledge=tfkd.losses.HintDistillation("conv1", "conv1"))
    >>> distiller.compile(optimizer="sgd")
    >>> x, y = testing.random_images(32)
    >>> stage1, stage2 = distiller.fit_two_stage(
    ...     x, y, stage1_epochs=1, stage2_epochs=1, verbose=0)
    >>> sorted(stage1.history)
    ['distillation_loss', 'hint_loss', 'kd_loss', 'loss', 'student_loss',
     'total_loss']

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, §3.1 (eqs. 5–6, two-stage
        training); Romero et al. "FitNets: Hints for Thin Deep Nets",
        ICLR 2015 (two-stage training).
    """

    alpha = hp.Hyperparameter(
        hp.unit_interval, doc="Weight of the cross entropy in L_Class.")
    beta = hp.Hyperparameter(
        hp.non_negative, doc="Weight of L_Class (correlation paper eq. 6).")

    #: Share of a `stage="both"` `fit`'s epochs that goes to stage 1 (the
    #: method's schedule: a subclass sets its own).
    stage1_share = fractions.Fraction(1, 2)

    def __init__(self, teacher, student, *, knowledge=None, alpha=1.0,
                 beta=0.1, temperature=PRESET_KD_TEMPERATURE, stage=None,
                 **kwargs):
        if not isinstance(knowledge, DistillationTerm):
            raise TypeError(
                "`knowledge` must be a tfkd knowledge term that taps "
                "intermediate layers (e.g. `tfkd.losses.HintDistillation("
                "'conv1', 'conv1')`). Received: knowledge="
                f"{knowledge!r} of type {type(knowledge).__name__}."
            )
        alpha = hp.unit_interval(alpha, "alpha")
        beta = hp.non_negative(beta, "beta")
        stage = check_stage(stage)
        super().__init__(
            teacher, student,
            distillation_losses=[
                knowledge,
                KDDistillation(temperature=temperature, name="kd"),
            ],
            **kwargs,
        )
        self.alpha = alpha
        self.beta = beta
        self._schedule = stage == BOTH
        self._stage = 1 if self._schedule else stage
        self._in_schedule = False
        self._build_front()

    # ------------------------------------------------------------------
    # Construction.

    @property
    def knowledge(self):
        """The knowledge term (its metric is `<its name>_loss`)."""
        return self._terms[0]

    def _build_front(self):
        """The student's sub-graph from its inputs to the tapped layers."""
        taps = [n for n in self.knowledge.student_taps if n is not None]
        tapped = [self.student.get_layer(n).output for n in taps]
        front = keras.Model(self.student.inputs, tapped,
                            name=f"{self.student.name}_front")
        output_layer, _ = _compat.producer(self.student.outputs[0])
        front_ids = {id(layer) for layer in front.layers}
        if id(output_layer) in front_ids:
            bad = [
                name for name, t in zip(taps, tapped)
                if id(output_layer) in {
                    id(layer) for layer in keras.Model(
                        self.student.inputs, t).layers
                }
            ]
            raise ValueError(
                f"`student_layer_name`={bad} is the student's logits layer "
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

    # ------------------------------------------------------------------
    # Weights.

    @property
    def knowledge_weight(self):
        """Weight `kw` of the knowledge loss (1 for the correlation paper)."""
        return 1.0

    @property
    def class_weight(self):
        """Weight `cw` of `L_Class` in single-stage training (`beta`)."""
        return self.beta

    def weight_hint(self, term_name):
        if term_name == self._term_names[0]:
            # A larger beta did not save the single-stage digits runs of
            # FitNets or correlation; their own two stages did.
            return ("raise `beta` (the weight of L_Class), or train two "
                    "stages (`stage=\"both\"`, or `fit_two_stage`)")
        return "raise `alpha` (the cross entropy's share of L_Class)"

    def paper_weights(self):
        alpha = self.alpha
        if self._stage == 1:
            return 0.0, [self.knowledge_weight, 0.0], 1.0
        if self._stage == 2:
            return alpha, [0.0, 1.0 - alpha], 1.0
        cw = self.class_weight
        return (cw * alpha, [self.knowledge_weight, cw * (1.0 - alpha)],
                1.0 + cw)

    @property
    def temperature(self):
        """The KD temperature (the `kd` term's; live, assignable)."""
        return self._terms[1].temperature

    @temperature.setter
    def temperature(self, value):
        self._terms[1].temperature = value

    def _aliases(self):
        return ("temperature",)

    # ------------------------------------------------------------------
    # Stages.

    @property
    def stage(self):
        """The stage the next step trains: `None` (single-stage), `1` or
        `2`; settable (see `set_stage`)."""
        return self._stage

    @property
    def two_stage(self):
        """Whether every `fit` runs both stages (`stage="both"`)."""
        return self._schedule

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
                layers and the adapters), `2` (`L_Class`, training the
                whole student) or `"both"` (each `fit` runs stage 1, then
                stage 2).

        Returns:
            The distiller, for chaining.

        Example:

        >>> import tfkd
        >>> from tfkd import testing
        >>> teacher = testing.tiny_conv_model("teacher", width=8)
        >>> student = testing.tiny_conv_model("student", width=8)
        >>> distiller = tfkd.distillers.CorrelationDistiller(
        ...     teacher, student, teacher_layer_name="conv1",
        ...     student_layer_name="conv1")
        >>> distiller.set_stage(1).stage
        1
        """
        stage = check_stage(stage)
        self._schedule = stage == BOTH
        return self._switch(1 if self._schedule else stage)

    def _switch(self, stage):
        """Makes `stage` (None, 1 or 2) the one the next step trains,
        keeping the schedule."""
        self._stage = stage
        # Stage decides the trained variables when a step is traced.
        self.train_function = None
        self.test_function = None
        return self

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`; with `stage="both"`, both stages.

        A `stage="both"` distiller trains `epochs` split by
        `split_epochs` (stage 1, then stage 2 with a fresh optimizer, as
        `fit_two_stage`) and returns one `keras.callbacks.History` of all
        `epochs`, numbered from 0 as a single-stage `fit`'s. Arguments go
        by keyword then, and `initial_epoch` is refused (a run resumes
        through `keras.callbacks.BackupAndRestore`, which knows the stage
        from its epoch).
        """
        if not self._schedule or self._in_schedule:
            return super().fit(x, y, *args, **kwargs)
        if args:
            raise TypeError(
                'A `stage="both"` distiller takes `fit` arguments after '
                "`x, y` by keyword (e.g. `epochs=10`). Received "
                f"{len(args)} more positional argument(s)."
            )
        if kwargs.get("initial_epoch"):
            raise TypeError(
                'A `stage="both"` distiller cannot start at '
                "`initial_epoch` (which stage?); resume with "
                "`keras.callbacks.BackupAndRestore`, or call "
                "`fit_two_stage`. Received: "
                f"initial_epoch={kwargs['initial_epoch']!r}."
            )
        kwargs.pop("initial_epoch", None)
        stage1, stage2 = split_epochs(kwargs.pop("epochs", 1),
                                      self.stage1_share)
        first, second = self.fit_two_stage(
            x, y, stage1_epochs=stage1, stage2_epochs=stage2, **kwargs)
        from tfkd.callbacks import merge_histories

        # One history for the whole run, as a single-stage `fit` returns.
        second.history = merge_histories(first, second)
        second.epoch = list(first.epoch) + list(second.epoch)
        return second

    def fit_two_stage(self, x=None, y=None, *, stage1_epochs, stage2_epochs,
                      stage2_optimizer="fresh", **fit_kwargs):
        """Two-stage training: `stage1_epochs` of stage 1, then stage 2.

        Stage 1 trains the student up to the guided layer(s) (and the
        adapters) with the knowledge loss; stage 2 trains the whole student
        with `L_Class`. Epochs are numbered on from stage 1 (stage 2 starts
        at epoch `stage1_epochs`), so callbacks and logs see one run. By
        default stage 2 starts with a fresh copy of the compiled optimizer
        (same configuration, no state): Adam's moments from the hint stage
        slow the class stage (the correlation recipe's tables measure it).
        The distiller is left in stage 2.

        Args:
            x: Training data, as for `fit` (arrays or a re-iterable
                `tf.data.Dataset`; it is iterated in both stages).
            y: Labels, as for `fit`.
            stage1_epochs: Int `>= 1`, epochs of stage 1.
            stage2_epochs: Int `>= 1`, epochs of stage 2.
            stage2_optimizer: `"fresh"` (default): a fresh copy of the
                compiled optimizer; `"shared"`: keep the stage-1 optimizer
                and its state; or an optimizer for stage 2 (e.g. with its
                own learning-rate schedule).
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
        ...     teacher, student, teacher_layer_name="conv1",
        ...     student_layer_name="conv1")
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
        _check_reiterable(x, "x")
        _check_reiterable(fit_kwargs.get("validation_data"),
                          "validation_data")
        if not (stage2_optimizer in ("fresh", "shared") or isinstance(
            stage2_optimizer, keras.optimizers.Optimizer
        )):
            raise ValueError(
                "`stage2_optimizer` must be 'fresh', 'shared' or a "
                "`keras.optimizers.Optimizer`. Received: stage2_optimizer="
                f"{stage2_optimizer!r}."
            )
        if not self.compiled:
            raise ValueError(
                "Compile the distiller before `fit_two_stage` (e.g. "
                "`distiller.compile(optimizer='adam')`)."
            )
        # `keras.callbacks.BackupAndRestore` deletes its backup at the end
        # of a `fit`: keep it through stage 1, so that a run killed in
        # either stage resumes where it stopped (its epoch tells the stage).
        backups = [
            c for c in fit_kwargs.get("callbacks") or ()
            if isinstance(c, keras.callbacks.BackupAndRestore)
        ]
        deletes = [c.delete_checkpoint for c in backups]
        self._switch(1)
        self._in_schedule = True
        try:
            for c in backups:
                c.delete_checkpoint = False
            first = self.fit(x, y, epochs=stage1_epochs, **fit_kwargs)
        finally:
            self._in_schedule = False
            for c, delete in zip(backups, deletes):
                c.delete_checkpoint = delete
        self._switch(2)
        if stage2_optimizer != "shared":
            if first.epoch:
                # Stage 1 trained in this run, so the backup holds the
                # stage-1 optimizer's state, which stage 2's restore would
                # load into the new optimizer. (When stage 1 trained nothing,
                # the backup is a stage-2 one: keep it.)
                for c in backups:
                    shutil.rmtree(c.backup_dir, ignore_errors=True)
            # The compile config holds the optimizer's configuration, not
            # its state: compiling from it gives stage 2 a fresh one.
            config = keras.saving.deserialize_keras_object(
                self.get_compile_config())
            if stage2_optimizer != "fresh":
                config["optimizer"] = stage2_optimizer
            self.compile(**config)
        # Keras keeps an epoch restored by `BackupAndRestore` for every
        # later `fit`; stage 2 starts at `stage1_epochs` unless its own
        # restored backup says otherwise.
        _compat.reset_initial_epoch(self)
        self._in_schedule = True
        try:
            second = self.fit(
                x, y, initial_epoch=stage1_epochs,
                epochs=stage1_epochs + stage2_epochs, **fit_kwargs,
            )
        finally:
            self._in_schedule = False
        return first, second

    # ------------------------------------------------------------------
    # Steps.

    def optimizer_variables(self):
        # Every variable any stage may train: Keras optimizers refuse
        # variables they were not built with.
        return super().step_variables()

    def step_variables(self):
        """Trainable variables of the current stage (`stage_variables`)."""
        return self.stage_variables()

    def stage_variables(self, stage=None):
        """Trainable variables a stage updates (default: current stage).

        Stage 1: the student's sub-graph from its inputs to the guided
        layers plus the term's adapters; stage 2: the student;
        single-stage: the student plus the adapters.
        """
        stage = self._stage if stage is None else check_stage(
            stage, allow_both=False)
        if stage == 1:
            variables = list(self._front.trainable_weights) + list(
                self.knowledge.trainable_weights)
        elif stage == 2:
            variables = list(self.student.trainable_weights)
        else:
            return super().step_variables()
        seen, unique = set(), []
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                unique.append(v)
        return unique

    def train_step(self, data):
        if self._stage != 1:
            return super().train_step(data)
        # Stage 1 runs the whole student once (the logits feed the reported
        # class metrics) but freezes the layers after the guided ones, so
        # their weights and batch-norm statistics stay unchanged.
        with _frozen(self._later_layers):
            return super().train_step(data)

    # ------------------------------------------------------------------
    # Serialisation.

    # `get_config` is `PresetSaving`'s: the arguments of `__init__`, read
    # from the terms (a preset's layer names, `p`, `mode`, ...) and from the
    # distiller (`alpha`, `beta`, `knowledge`).

    #: `temperature` is the KD term's (a knowledge term may have its own),
    #: `stage` may be `"both"` (the `stage` attribute is the current one).
    config_sources = {"temperature": "temperature",
                      "stage": "_stage_argument"}

    @property
    def _stage_argument(self):
        """The `stage` argument that rebuilds this distiller."""
        return BOTH if self._schedule else self._stage

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("knowledge"), dict):
            config["knowledge"] = keras.saving.deserialize_keras_object(
                config["knowledge"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
