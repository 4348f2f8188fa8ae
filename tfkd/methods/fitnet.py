"""FitNets hint loss: match the student's (regressed) features to a hint.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import to_float32
from tfkd.layers.feature_adapter import FeatureAdapter
from tfkd.terms.base import CHANNELS
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


def hint_loss(teacher_features, student_features):
    """FitNets hint loss `½ ‖f_S − f_T‖²`, summed over elements per example.

    In FitNets the student side is `r(f_S)`, the student's guided layer put
    through a trainable convolutional regressor so that its shape matches
    the teacher's hint layer. The regressor is a weight of the distiller
    (never exported with the student), so this function only sees the two
    tensors, which must have the same shape.

    Args:
        teacher_features: Tensor of shape `(batch, ...)`: the hint.
        student_features: Tensor of the same shape: the (regressed) guided
            layer's output.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = [[[1.0, 2.0], [3.0, 4.0]]]
    >>> s = [[[1.0, 2.0], [3.0, 6.0]]]
    >>> float(hint_loss(t, s)[0])
    2.0

    Reference:
        Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, eq. 3.
    """
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", min_rank=1, layout="(batch, ...)")
    check_same_shape(
        t, s, "teacher_features", "student_features",
        what=" (put the student's features through a regressor first, "
        "e.g. pass adapter=True to the distiller)",
    )
    diff = flatten_per_example(s - t)
    return 0.5 * tf.reduce_sum(tf.square(diff), axis=1)


@keras.saving.register_keras_serializable(package="tfkd")
class HintLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `hint_loss`.

    `y_true` is the teacher's hint and `y_pred` the student's (regressed)
    features.

    Args:
        reduction: Keras reduction, `"sum_over_batch_size"` by default.
        name: Name of the loss.

    Example:

    >>> loss = HintLoss()
    >>> float(loss([[0.0, 0.0]], [[1.0, 1.0]]))
    1.0
    """

    def __init__(self, reduction="sum_over_batch_size", name="hint_loss",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return hint_loss(y_true, y_pred)


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
        # (docs/methods/fitnet.md); it stays reachable with `stage=None`.
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
