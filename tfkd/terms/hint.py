"""FitNets hints through a convolutional regressor, as a knowledge term."""

import keras

from tfkd.layers.feature_adapter import FeatureAdapter
from tfkd.losses.hint import hint_loss
from tfkd.terms.base import CHANNELS
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


@keras.saving.register_keras_serializable(package="tfkd")
class HintDistillation(DistillationTerm):
    """FitNets hint: the guided student layer regresses the teacher's hint.

    Per example `½ ‖r(f_S) − f_T‖²` summed over elements
    (`tfkd.losses.hint_loss`), summed over tapped pairs. The regressor `r`
    follows FitNets (§3.3): a convolution with the teacher's channel count
    and `'valid'` padding whose kernel is `(H_S − H_T + 1) × (W_S − W_T + 1)`,
    so its output has the hint's spatial size (1×1 when the sizes are
    equal); if the guided map is smaller than the hint, a 1×1 convolution
    then a bilinear upsampling. It belongs to the term (trained with the
    student, saved with the distiller, never part of the student). With
    `regressor=False` the shapes must match exactly. The hint loss is a sum
    over the map's elements, so its scale grows with the map's size.

    Args:
        teacher_layer_name: The teacher's hint layer (or a list of them).
        student_layer_name: The student's guided layer(s), paired in order.
        regressor: Whether to put each guided feature through a trainable
            convolutional regressor (FitNets always does).
        regressor_activation: Activation of the regressor (FitNets gives it
            the hint layer's non-linearity: pass `"relu"` for a ReLU hint).
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"hint"`).

    Example:

    >>> from tfkd import testing
    >>> import tfkd
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> term = HintDistillation("conv1", "conv1")
    >>> distiller = tfkd.Distiller(teacher, student, [term])
    >>> [tuple(w.shape) for w in term.regressors[0].trainable_weights]
    [(1, 1, 4, 8), (8,)]

    Reference:
        Romero, Ballas, Kahou, Chassang, Gatta, Bengio. "FitNets: Hints for
        Thin Deep Nets", ICLR 2015, §2.2 and eq. 3.
    """

    method = Method(
        name="fitnet",
        description="FitNets hints through a distiller-owned regressor",
        paper="Romero et al., ICLR 2015",
        preset="tfkd.distillers.fitnet:FitNetDistiller",
        # FitNets trains in two stages (hint, then class): the preset's
        # `stage="both"` splits each `fit`'s epochs between them.
        # Single-stage (the correlation paper's "Activation" row) let the
        # summed hint swamp the labels and collapsed the digits student
        # (docs/methods/fitnets.md); it stays reachable with `stage=None`.
        search_space={
            "alpha": {"type": "float", "min_value": 0.3, "max_value": 1.0},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 10.0},
        },
    )
    feature_requirements = (SPATIAL, CHANNELS)
    adapter_option = "regressor"

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 regressor=True, regressor_activation=None,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "hint")
        if teacher_layer_name is None or student_layer_name is None:
            raise ValueError(
                "HintDistillation needs the layers to compare: pass "
                "`teacher_layer_name=` (the hint) and `student_layer_name=` "
                "(the guided layer). Received: teacher_layer_name="
                f"{teacher_layer_name!r}, student_layer_name="
                f"{student_layer_name!r}."
            )
        super().__init__(teacher_layer_name, student_layer_name,
                         adapter=regressor, guided_channels=guided_channels,
                         **kwargs)
        self.regressor_activation = keras.activations.serialize(
            keras.activations.get(regressor_activation))

    @property
    def regressor(self):
        """Whether the term regresses the student feature."""
        return self.adapter

    @property
    def regressors(self):
        """The term's regressors, one per pair that has one."""
        return list(self.adapters)

    def _needs_adapter(self, t, s):
        # FitNets always regresses; without a regressor shapes must match.
        return self.adapter or bool(self._mismatched(t, s))

    def make_adapter(self, index, t, s, dtype):
        if s[1] >= t[1] and s[2] >= t[2]:
            kernel, target = (s[1] - t[1] + 1, s[2] - t[2] + 1), None
        else:
            kernel, target = 1, t[1:3]
        return FeatureAdapter(
            filters=t[3], kernel_size=kernel, target_size=target,
            activation=self.regressor_activation, dtype=dtype,
            name=f"{self.name}_regressor_{index}",
        )

    def pair_loss(self, teacher_feature, student_feature):
        return hint_loss(teacher_feature, student_feature)

    def get_config(self):
        config = super().get_config()
        config["regressor_activation"] = self.regressor_activation
        return config
