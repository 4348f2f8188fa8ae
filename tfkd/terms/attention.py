"""Attention transfer (Zagoruyko & Komodakis) as a knowledge term."""

import keras

from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive
from tfkd.losses.attention import ATTENTION_MODES
from tfkd.losses.attention import attention_transfer_loss
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionDistillation(DistillationTerm):
    """Attention transfer: match the spatial attention maps of tapped layers.

    Each tapped pair contributes `attention_transfer_loss(t, s, p, mode)`:
    the attention map `Σ_c |F_c|^p`, flattened and L2-normalised, of the
    student against the teacher's; pairs are summed. Channel counts may
    differ; spatial sizes must match (`adapter=True` resizes the student's
    map bilinearly). With the default `mode="code"` (the authors' code: the
    mean over positions of `(q_S − q_T)²`) the authors weight each pair by
    `1000 / 2`: give the term that weight (`distillation_loss_weights`), as
    `tfkd.AttentionDistiller` does with its `beta`.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        p: Exponent `p > 0` of the attention map.
        mode: `"code"` (default) or `"paper"` (`‖q_S − q_T‖₂`).
        adapter: Resize a student map whose spatial size differs.
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"attention"`).

    Example:

    >>> import tensorflow as tf
    >>> loss = AttentionDistillation()
    >>> f = tf.ones((2, 3, 3, 4))
    >>> float(loss.compute_loss(f, f[..., :2]))
    0.0

    Reference:
        Zagoruyko & Komodakis, "Paying More Attention to Attention:
        Improving the Performance of Convolutional Neural Networks via
        Attention Transfer", ICLR 2017, eq. 2; code:
        github.com/szagoruyko/attention-transfer.
    """

    method = Method(
        name="attention",
        description="attention transfer (AT): match spatial attention maps",
        paper="Zagoruyko & Komodakis, ICLR 2017",
        preset="tfkd.distillers.attention:AttentionDistiller",
        build_defaults={"adapter": True},
        search_space={
            # The authors' beta = 1000 / 2 per pair with the code form.
            "beta": {"type": "float", "min_value": 50.0,
                     "max_value": 5000.0, "sampling": "log"},
            "alpha": {"type": "float", "min_value": 0.3, "max_value": 1.0},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 10.0},
        },
    )
    feature_requirements = (SPATIAL,)

    def __init__(self, p=2, mode="code", teacher_layer_name=None,
                 student_layer_name=None, *, adapter=False,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "attention")
        super().__init__(teacher_layer_name, student_layer_name,
                         adapter=adapter, guided_channels=guided_channels,
                         **kwargs)
        self.p = check_positive(p, "p")
        self.mode = check_option(mode, "mode", ATTENTION_MODES)

    def pair_loss(self, teacher_feature, student_feature):
        return attention_transfer_loss(teacher_feature, student_feature,
                                       p=self.p, mode=self.mode)

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "mode": self.mode})
        return config
