"""`FitNetDistiller`: FitNets hints through a convolutional regressor."""

import fractions

import keras

from tfkd.distillers.feature import FeatureDistiller
from tfkd.distillers.feature import PRESET_KD_TEMPERATURE
from tfkd.distillers.feature import require_layers
from tfkd.methods.fitnet import HintDistillation
from tfkd.terms.base import layer_name_arguments

#: The KD stage's temperature: the feature presets' T = 1, where FitNets
#: measured it first. On the few-label
#: digits benchmark (6 / 20 labels a class + the rest unlabelled, 3 seeds,
#: points against the student alone) T = 4 gave +0.6 / -5.2 and T = 1
#: +1.8 / -0.9 (docs/methods/fitnet.md): after the hint stage a small
#: student learns from the teacher's sharp targets, not its dark knowledge.
KD_STAGE_TEMPERATURE = PRESET_KD_TEMPERATURE

#: The hint stage's share of a `fit`'s epochs: one sixth (5 of 30), not
#: half. With the T = 1 class stage, a probe on the few-label digits (same
#: budget, 3 seeds) measured +2.0 / +1.0 points against the student alone
#: with 15 hint epochs of 30, +3.7 / +0.7 with 10 and +3.6 / +2.6 with 5
#: (docs/methods/fitnet.md): the hint only has to place the guided layer.
HINT_STAGE_SHARE = fractions.Fraction(1, 6)


@keras.saving.register_keras_serializable(package="tfkd")
class FitNetDistiller(FeatureDistiller):
    """FitNets: the student's guided layer regresses the teacher's hint layer.

    A preset over `tfkd.losses.HintDistillation`: a convolutional regressor
    `r` owned by the term (trained with the student, saved with the
    distiller, never exported with the student) maps the guided layer's
    output to the hint's shape, and the knowledge loss is
    `½ ‖r(f_S) − f_T‖²` summed over elements and tapped pairs. FitNets gives
    the regressor the hint layer's non-linearity: pass
    `regressor_activation="relu"` when the hint is a ReLU output. With
    `regressor=False` the shapes must match exactly.

    Training follows FitNets and the correlation paper's framework (see
    `FeatureDistiller`): `stage=1` is the hint stage, `stage=2` the KD stage
    (`L_Class = alpha · CE + (1 − alpha) · KD`; FitNets' own KD stage is
    `alpha < 1`). The default `stage="both"` runs both in one
    `fit(epochs=n)`: a sixth of the `n >= 2` epochs (rounded down, at least
    one) for the hint stage, the rest for the class stage (or use
    `fit_two_stage`); `stage=None` is single-stage training, which
    minimises `L_hint + beta · L_Class` (divided by `1 + beta` in the
    engine's convention), the "Activation" baseline of the correlation
    paper's Table 3. The hint loss is a sum over all elements of the map,
    so its scale grows with the map's size.

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` outputting logits.
        teacher_layer_name: Name (or list of names) of the hint layer(s).
        student_layer_name: Name (or list of names) of the guided layer(s).
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`.
        beta: Weight of `L_Class` in single-stage training.
        temperature: KD temperature of the class stage, `> 0` (default 1,
            not the KD term's 4: measured, see the method's page).
        regressor: If `True` (default), put each guided feature through a
            trainable convolutional regressor.
        regressor_activation: Activation of the regressor (default linear).
        stage: `"both"` (default: `fit` trains both stages), `None`
            (single-stage), `1` (hint stage) or `2` (KD stage).
        guided_channels: `None`, an int, or one int/`None` per pair.
        **kwargs: Passed to `keras.Model`.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = FitNetDistiller(teacher, student,
    ...                             teacher_layer_name="conv1",
    ...                             student_layer_name="conv1", alpha=0.3)
    >>> regressor = distiller.knowledge.regressors[0]
    >>> [tuple(w.shape) for w in regressor.trainable_weights]
    [(1, 1, 4, 8), (8,)]
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(32)
    >>> hint, kd = distiller.fit_two_stage(x, y, stage1_epochs=1,
    ...                                    stage2_epochs=1, verbose=0)

    Reference:
        Romero, Ballas, Kahou, Chassang, Gatta, Bengio. "FitNets: Hints for
        Thin Deep Nets", ICLR 2015, §2.2 and eq. 3.
    """

    stage1_share = HINT_STAGE_SHARE

    def __init__(self, teacher, student, *, teacher_layer_name=None,
                 student_layer_name=None, alpha=0.3, beta=0.1,
                 temperature=KD_STAGE_TEMPERATURE,
                 regressor=True, regressor_activation=None, stage="both",
                 guided_channels=None, **kwargs):
        teacher_layer, student_layer = layer_name_arguments(
            type(self).__name__, teacher_layer_name, student_layer_name,
            kwargs)
        kwargs.pop("knowledge", None)
        require_layers(type(self).__name__, teacher_layer, student_layer)
        knowledge = HintDistillation(
            teacher_layer, student_layer, regressor=regressor,
            regressor_activation=regressor_activation,
            guided_channels=guided_channels, name="hint")
        super().__init__(teacher, student, knowledge=knowledge, alpha=alpha,
                         beta=beta, temperature=temperature, stage=stage,
                         **kwargs)
