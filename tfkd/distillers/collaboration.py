"""Student-teacher collaboration (STC): the student's front, the teacher's back.

STC connects the front of the student (up to `student_layer`) to the back of
the frozen teacher (after `teacher_layer`). The collaboration network's
output `O_c = T_back(S_front(x))` is trained to match the teacher's own
output `O_t = T(x)`; the gradient of that loss reaches the student's front
*through* the teacher's frozen back.

Reference:
    - [Knowledge Transfer via Student-Teacher Collaboration](
      https://openreview.net/forum?id=H1ersoRqtm) (STC), §3, eqs. 1-5.
"""

import keras

from tfkd import hyperparameters as hp
from tfkd.distillers.base import Distiller
from tfkd.saving import PresetSaving
from tfkd.methods.stc import CollaborationDistillation
from tfkd.methods.stc import get_loss
from tfkd.methods.kd import KDDistillation

#: Accepted values of `target` (the paper's Table 5 ablation).
from tfkd.methods.stc import TARGETS  # noqa: F401,E402
from tfkd.terms.base import layer_name_arguments
from tfkd.distillers.feature import PRESET_KD_TEMPERATURE


@keras.saving.register_keras_serializable(package="tfkd")
class CollaborationDistiller(PresetSaving, Distiller):
    """Student-teacher collaboration (STC) distillation.

    A preset over `tfkd.losses.CollaborationDistillation` (metric
    `stc_loss`): the teacher is cut after `teacher_layer` and the student
    after `student_layer`; each step runs the teacher once (`O_t = T(x)`)
    and the student once (its logits `S(x)` and its front `S_front(x)`),
    then the front through the teacher's frozen back:
    `O_c = T_back(S_front(x))`. The loss is (eqs. 3-5)
    `alpha · L_STC + (1 − alpha) · CE(y, S(x)) + kd_weight · KD(T(x), S(x))`
    with `L_STC = CE(softmax(O_t / T), O_c / T)` at `temperature` (1 by
    default). The KD term (`kd_loss`, Hinton's at `kd_temperature`) gives
    the paper's "+KD" rows with `kd_weight > 0`; it is reported even at
    `kd_weight = 0`. In the engine's convention the total is
    `L / (1 + kd_weight)`: without KD it is exactly the paper's
    (`student_loss_weight = 1 − alpha`).

    The teacher's back shares the teacher's layers: frozen, in inference
    mode, but differentiable, so `L_STC` trains the student's front and only
    the front. Targets (Table 5), `target=`: `"teacher"` (default),
    `"soft"` (`kd_temperature² · CE(softmax(O_t/τ), softmax(O_c/τ))`,
    `τ = kd_temperature`) or `"labels"` (`CE(y, O_c)`).

    Other heads (§3.3): `collaboration_loss` replaces `L_STC`'s cross
    entropy (e.g. `keras.losses.Huber(reduction=None)`), and
    `student_loss` replaces `CE(y, S(x))` (then labels may be of the head's
    kind, and the KD term is left out unless `kd_weight > 0`); the student
    loss can equally be given as `compile(loss=...)`.

    Args:
        teacher: A trained functional `keras.Model`; frozen.
        student: The functional `keras.Model` to train.
        teacher_layer_name: Teacher layer after which to cut (one tensor may
            cross the cut: `tfkd.models.cut_points`).
        student_layer_name: Student layer whose output is the front.
        alpha: Weight of `L_STC` in `[0, 1]`; `1 − alpha` weighs the class
            loss (paper: 0.3 on CIFAR-10, 0.5 on CIFAR-100 and ImageNet).
        temperature: Temperature `T > 0` of `L_STC` (target `"teacher"`).
        kd_weight: Weight `>= 0` of the extra KD term ("+KD" rows);
            default 1.0 with the default student loss (the class cross
            entropy), 0 with a custom `student_loss`.
        kd_temperature: Temperature `> 0` of the KD term and of the
            `"soft"` target (default 1, the feature presets'
            `PRESET_KD_TEMPERATURE`, not Hinton KD's 4).
        target: `"teacher"`, `"soft"` or `"labels"`.
        adapter: Bridge a front/back shape mismatch with a trainable
            adapter.
        collaboration_loss: Optional per-example loss replacing `L_STC`.
        student_loss: Optional per-example loss replacing `CE(y, S(x))`.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Example:

    >>> from tfkd.testing import random_images, tiny_conv_model
    >>> teacher = tiny_conv_model("teacher", width=8)
    >>> student = tiny_conv_model("student", width=4)
    >>> distiller = CollaborationDistiller(
    ...     teacher, student, teacher_layer_name="conv1",
    ...     student_layer_name="conv1",
    ...     alpha=0.3, adapter=True)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = random_images(16)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'distillation_loss', 'kd_loss', 'loss', 'stc_loss',
     'student_loss', 'total_loss']

    Reference:
        - [Knowledge Transfer via Student-Teacher Collaboration](
          https://openreview.net/forum?id=H1ersoRqtm) (STC), eqs. 1-5,
          Tables 1, 2 and 5.
    """

    alpha = hp.Hyperparameter(hp.unit_interval, doc="Weight of L_STC.")
    _kd_weight = hp.Hyperparameter(hp.non_negative, name="kd_weight",
                                   doc="Weight of the extra KD term.")

    #: `kd_weight=None` resolves to this with the class cross entropy.
    preset_defaults = {**Distiller.preset_defaults, "kd_weight": 1.0}

    def __init__(self, teacher, student, *, teacher_layer_name=None,
                 student_layer_name=None, alpha=0.5, temperature=1.0,
                 kd_weight=None, kd_temperature=PRESET_KD_TEMPERATURE,
                 target="teacher",
                 adapter=False, collaboration_loss=None, student_loss=None,
                 **kwargs):
        teacher_layer, student_layer = layer_name_arguments(
            type(self).__name__, teacher_layer_name, student_layer_name,
            kwargs)
        alpha = hp.unit_interval(alpha, "alpha")
        if kd_weight is None:
            # KD by default for class logits (the teacher's soft targets
            # are what few labels need); never on a custom head's outputs.
            kd_weight = self.preset_defaults["kd_weight"] \
                if student_loss is None else 0.0
        kd_weight = hp.non_negative(kd_weight, "kd_weight")
        hp.positive(kd_temperature, "kd_temperature")
        student_loss = get_loss(student_loss, "student_loss")
        term = CollaborationDistillation(
            teacher_layer, student_layer,
            temperature=kd_temperature if target == "soft" else temperature,
            target=target, adapter=adapter,
            collaboration_loss=collaboration_loss, name="stc")
        terms = [term]
        if student_loss is None or kd_weight > 0:
            terms.append(KDDistillation(temperature=kd_temperature,
                                        name="kd"))
        super().__init__(teacher, student, distillation_losses=terms,
                         **kwargs)
        self._own_student_loss = student_loss
        self._stc_temperature = float(temperature)
        self._kd_temperature = float(kd_temperature)
        self.alpha = alpha
        self._kd_weight = kd_weight

    @property
    def kd_weight(self):
        """Weight of the extra KD term (live, assignable)."""
        return self._kd_weight

    @kd_weight.setter
    def kd_weight(self, value):
        value = hp.non_negative(value, "kd_weight")
        if len(self._terms) == 1 and value > 0:
            raise ValueError(
                "This STC distiller has no KD term (it was built with a "
                "custom `student_loss` and kd_weight=0). Received: "
                f"kd_weight={value}. Build it with kd_weight > 0 to use KD."
            )
        self._kd_weight = value

    def _own_hyperparameters(self):
        return ["alpha", "kd_weight"]

    def _unique_names(self):
        return ["stc", "kd"][:len(self._terms)]

    @property
    def stc(self):
        """The STC term (its teacher's back `teacher_back`, its adapter
        `adapter_layer`, its `target`, ...)."""
        return self._terms[0]

    def paper_weights(self):
        alpha = self.alpha
        if len(self._terms) == 1:
            return 1.0 - alpha, [alpha], 1.0
        kd = self.kd_weight
        return 1.0 - alpha, [alpha, kd], 1.0 + kd

    def weight_hint(self, term_name):
        return {"stc": "lower `alpha`", "kd": "lower `kd_weight`"}[term_name]

    def _default_student_loss(self):
        return self._own_student_loss

    def compile(self, optimizer="rmsprop", loss=None, metrics=None,
                **kwargs):
        if loss is not None and self._own_student_loss is not None:
            raise ValueError(
                "The student loss is set twice: `student_loss=` at "
                "construction and `compile(loss=...)`. Received: loss="
                f"{loss!r}. Keep one of them."
            )
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics,
                        **kwargs)

    @property
    def temperature(self):
        """Temperature of `L_STC` (live, assignable)."""
        if self.stc.target == "soft":
            return self._stc_temperature
        return self.stc.temperature

    @temperature.setter
    def temperature(self, value):
        value = hp.positive(value, "temperature")
        if self.stc.target == "soft":
            raise ValueError(
                "With target='soft' the STC term uses `kd_temperature`; "
                f"assign that instead. Received: temperature={value}."
            )
        self.stc.temperature = value

    @property
    def kd_temperature(self):
        """Temperature of the KD term (and of the `"soft"` target)."""
        if self.stc.target == "soft":
            return self.stc.temperature
        if len(self._terms) > 1:
            return self._terms[1].temperature
        return self._kd_temperature

    @kd_temperature.setter
    def kd_temperature(self, value):
        if self.stc.target != "soft" and len(self._terms) == 1:
            raise ValueError(
                "This STC distiller has no KD term and its target is not "
                "'soft', so `kd_temperature` has no effect. Received: "
                f"kd_temperature={value!r}."
            )
        if self.stc.target == "soft":
            self.stc.temperature = value
        if len(self._terms) > 1:
            self._terms[1].temperature = value

    def _aliases(self):
        return ("temperature", "kd_temperature")

    @property
    def student_loss(self):
        """The custom student loss (`None`: the class cross entropy)."""
        return self._own_student_loss

    # `get_config` is `PresetSaving`'s. `temperature` is the distiller's:
    # with `target="soft"` the STC term's runs at `kd_temperature`.
    config_sources = {"temperature": "temperature"}
