"""`AttentionDistiller`: attention transfer (Zagoruyko & Komodakis)."""

import keras

from tfkd.distillers.feature import FeatureDistiller
from tfkd.losses._utils import check_non_negative
from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive
from tfkd.losses.attention import ATTENTION_MODES
from tfkd.losses.attention import attention_transfer_loss


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionDistiller(FeatureDistiller):
    """Attention transfer: match the spatial attention maps of tapped layers.

    Each tapped pair contributes `attention_transfer_loss(t, s, p, mode)`
    (`tfkd.losses`): the attention map `Σ_c |F_c|^p`, flattened and
    L2-normalised, of the student against the teacher's. Channel counts may
    differ; spatial sizes must match (`adapter=True` resizes the student's
    map to the teacher's, bilinearly).

    Objective, as in the attention-transfer paper (its `β/2 · Σ_j` term):
    `L = L_Class + beta · Σ_pairs L_AT`, with
    `L_Class = alpha · CE + (1 − alpha) · KD` and `beta = 1000 / 2` per
    pair, the authors' value for the default `mode="code"` (the mean over
    positions of `(q_S − q_T)²`, which their code uses and their tables
    quote). `mode="paper"` is the paper's `‖q_S − q_T‖₂`, on a different
    scale: choose `beta` again for it. Unlike `CorrelationDistiller`, `beta`
    here weighs the knowledge loss, not `L_Class`. Two-stage training
    (`stage=1`: `beta · Σ L_AT` up to the guided layers; `stage=2`:
    `L_Class`) works as in `FeatureDistiller`; the reported
    `knowledge_loss` is the unweighted `Σ_pairs L_AT`.

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` outputting logits.
        teacher_layer: Name (or list of names) of the teacher layer(s).
        student_layer: Name (or list of names) of the student layer(s),
            paired in order.
        beta: Weight of each pair's attention loss, `>= 0` (default 500).
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`
            (1: no KD).
        temperature: KD temperature, `> 0`.
        p: Exponent of the attention map, `> 0` (default 2).
        mode: `"code"` (default) or `"paper"`; see
            `tfkd.losses.attention_transfer_loss`.
        adapter: If `True`, resize a student map whose spatial size differs
            from the teacher's.
        stage: `None` (single-stage), `1` or `2`.
        guided_channels: `None`, an int, or one int/`None` per pair (see
            `FeatureDistiller`).
        **kwargs: Passed to `keras.Model`.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = AttentionDistiller(
    ...     teacher, student, teacher_layer=["conv1", "conv2"],
    ...     student_layer=["conv1", "conv2"])
    >>> distiller.compile(optimizer="sgd")
    >>> x, y = testing.random_images(32)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['class_loss', 'kd_loss', 'knowledge_loss', 'loss']

    Reference:
        Zagoruyko & Komodakis. "Paying More Attention to Attention:
        Improving the Performance of Convolutional Neural Networks via
        Attention Transfer", ICLR 2017, eq. 2; code:
        github.com/szagoruyko/attention-transfer.
    """

    def __init__(self, teacher, student, *, teacher_layer=None,
                 student_layer=None, beta=500.0, alpha=1.0, temperature=4.0,
                 p=2, mode="code", adapter=False, stage=None,
                 guided_channels=None, **kwargs):
        self.p = check_positive(p, "p")
        self.mode = check_option(mode, "mode", ATTENTION_MODES)
        beta = check_non_negative(beta, "beta")
        super().__init__(
            teacher, student, teacher_layer=teacher_layer,
            student_layer=student_layer, alpha=alpha, beta=beta,
            temperature=temperature, adapter=adapter, stage=stage,
            guided_channels=guided_channels, **kwargs,
        )

    @property
    def knowledge_weight(self):
        return self.beta

    @property
    def class_weight(self):
        return 1.0

    def feature_requirements(self):
        return ("spatial",)

    def knowledge_loss(self, teacher_feature, student_feature):
        return attention_transfer_loss(teacher_feature, student_feature,
                                       p=self.p, mode=self.mode)

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "mode": self.mode})
        return config
