"""`FitNetDistiller`: FitNets hints through a convolutional regressor."""

import keras

from tfkd.distillers.feature import FeatureAdapter
from tfkd.distillers.feature import FeatureDistiller
from tfkd.losses.hint import hint_loss


@keras.saving.register_keras_serializable(package="tfkd")
class FitNetDistiller(FeatureDistiller):
    """FitNets: the student's guided layer regresses the teacher's hint layer.

    A convolutional regressor `r`, owned by the distiller (trained with the
    student, saved with the distiller, never exported with the student),
    maps the guided layer's output to the shape of the teacher's hint layer,
    and the knowledge loss is the hint loss `½ ‖r(f_S) − f_T‖²` summed over
    elements (`tfkd.losses.hint_loss`), summed over tapped pairs.

    The regressor follows FitNets (§3.3): a convolution with the teacher's
    channel count and `'valid'` padding whose kernel is
    `(H_S − H_T + 1) × (W_S − W_T + 1)`, so its output has the hint's
    spatial size (a 1×1 convolution when the sizes are equal). If the
    guided map is smaller than the hint, it is a 1×1 convolution followed
    by a bilinear upsampling. FitNets gives the regressor the hint layer's
    non-linearity: pass `regressor_activation="relu"` when the hint is a
    ReLU output. With `regressor=False` there is no regressor and the
    shapes must match exactly.

    Training follows FitNets and the correlation paper's framework:
    `stage=1` is the hint stage (the student up to the guided layer, plus
    the regressor, trained with the hint loss), `stage=2` the KD stage (the
    whole student trained with `L_Class = alpha · CE + (1 − alpha) · KD`;
    FitNets' own KD stage is `alpha < 1`); run both with `fit_two_stage`.
    Single-stage training (`stage=None`) minimises
    `L_hint + beta · L_Class`, the "Activation" baseline of the correlation
    paper's Table 3. Note that the hint loss is a sum over all elements of
    the map, so its scale grows with the map's size.

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` outputting logits.
        teacher_layer: Name (or list of names) of the hint layer(s).
        student_layer: Name (or list of names) of the guided layer(s).
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`.
        beta: Weight of `L_Class` in single-stage training.
        temperature: KD temperature, `> 0`.
        regressor: If `True` (default), put each guided feature through a
            trainable convolutional regressor.
        regressor_activation: Activation of the regressor (default linear).
        stage: `None` (single-stage), `1` (hint stage) or `2` (KD stage).
        guided_channels: `None`, an int, or one int/`None` per pair (see
            `FeatureDistiller`).
        **kwargs: Passed to `keras.Model`.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = FitNetDistiller(teacher, student, teacher_layer="conv1",
    ...                             student_layer="conv1", alpha=0.3)
    >>> [tuple(w.shape) for w in distiller.regressors[0].trainable_weights]
    [(1, 1, 4, 8), (8,)]
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(32)
    >>> hint, kd = distiller.fit_two_stage(x, y, stage1_epochs=1,
    ...                                    stage2_epochs=1, verbose=0)

    Reference:
        Romero, Ballas, Kahou, Chassang, Gatta, Bengio. "FitNets: Hints for
        Thin Deep Nets", ICLR 2015, §2.2 and eq. 3.
    """

    _adapter_option = "regressor"

    def __init__(self, teacher, student, *, teacher_layer=None,
                 student_layer=None, alpha=1.0, beta=0.1, temperature=4.0,
                 regressor=True, regressor_activation=None, stage=None,
                 guided_channels=None, **kwargs):
        self.regressor_activation = keras.activations.serialize(
            keras.activations.get(regressor_activation)
        )
        super().__init__(
            teacher, student, teacher_layer=teacher_layer,
            student_layer=student_layer, alpha=alpha, beta=beta,
            temperature=temperature, adapter=regressor, stage=stage,
            guided_channels=guided_channels, **kwargs,
        )

    @property
    def regressors(self):
        """The distiller-owned regressors, one per tapped pair."""
        return list(self.adapters)

    def _needs_adapter(self, index, t, s):
        # FitNets always regresses; without a regressor shapes must match.
        return self.adapter or bool(self._mismatched(t, s))

    def _make_adapter(self, index, t, s):
        if s[1] >= t[1] and s[2] >= t[2]:
            kernel, target = (s[1] - t[1] + 1, s[2] - t[2] + 1), None
        else:
            kernel, target = 1, t[1:3]
        return FeatureAdapter(
            filters=t[3], kernel_size=kernel, target_size=target,
            activation=self.regressor_activation,
            dtype=self.student.dtype_policy, name=f"regressor_{index}",
        )

    def knowledge_loss(self, teacher_feature, student_feature):
        return hint_loss(teacher_feature, student_feature)

    def get_config(self):
        config = super().get_config()
        config["regressor_activation"] = self.regressor_activation
        return config
