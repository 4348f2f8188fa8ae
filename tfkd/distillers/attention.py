"""`AttentionDistiller`: attention transfer (Zagoruyko & Komodakis)."""

import keras

from tfkd.distillers.feature import FeatureDistiller
from tfkd.distillers.feature import require_layers
from tfkd.methods.attention import AttentionDistillation
from tfkd.terms.base import layer_name_arguments
from tfkd.distillers.feature import PRESET_KD_TEMPERATURE


@keras.saving.register_keras_serializable(package="tfkd")
class AttentionDistiller(FeatureDistiller):
    """Attention transfer: match the spatial attention maps of tapped layers.

    A preset over `tfkd.losses.AttentionDistillation`: each tapped pair
    contributes `attention_transfer_loss(t, s, p, mode)`, the attention map
    `Σ_c |F_c|^p`, flattened and L2-normalised, of the student against the
    teacher's. Channel counts may differ; spatial sizes must match
    (`adapter=True` resizes the student's map bilinearly).

    Objective, as in the attention-transfer paper (its `β/2 · Σ_j` term):
    `L = L_Class + beta · Σ_pairs L_AT`, with
    `L_Class = alpha · CE + (1 − alpha) · KD` and `beta = 50` per pair by
    default, a tenth of the authors' `1000 / 2` for the default
    `mode="code"` (pass `beta=500.0` for theirs): with few labels and many
    unlabelled images the attention loss at 500 outweighs the class loss
    (digits, 6 labels a class, `docs/results_transfer_digits.md`). `mode="paper"`
    is the paper's `‖q_S − q_T‖₂`, on a different scale: choose `beta` again
    for it. Here `beta` weighs the knowledge loss (as in its paper), where
    `CorrelationDistiller`'s `beta` weighs `L_Class` (as in its paper). In
    the engine's convention the total is `L / 2`. Two-stage training works
    as in `FeatureDistiller` (stage 1: `beta · Σ L_AT`).

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` outputting logits.
        teacher_layer_name: Name (or list of names) of the teacher layer(s).
        student_layer_name: Name (or list of names) of the student layer(s).
        beta: Weight of each pair's attention loss, `>= 0` (default 50;
            the authors' code: 500).
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`.
        temperature: KD temperature, `> 0` (default 1, the
            feature presets' `PRESET_KD_TEMPERATURE`, not Hinton KD's 4).
        p: Exponent of the attention map, `> 0` (default 2).
        mode: `"code"` (default) or `"paper"`.
        adapter: If `True`, resize a student map whose spatial size differs.
        stage: `None` (single-stage), `1` or `2`.
        guided_channels: `None`, an int, or one int/`None` per pair.
        **kwargs: Passed to `keras.Model`.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = AttentionDistiller(
    ...     teacher, student, teacher_layer_name=["conv1", "conv2"],
    ...     student_layer_name=["conv1", "conv2"])
    >>> distiller.compile(optimizer="sgd")
    >>> x, y = testing.random_images(32)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['attention_loss', 'distillation_loss', 'kd_loss', 'loss', 'student_loss',
     'total_loss']

    Reference:
        Zagoruyko & Komodakis. "Paying More Attention to Attention:
        Improving the Performance of Convolutional Neural Networks via
        Attention Transfer", ICLR 2017, eq. 2; code:
        github.com/szagoruyko/attention-transfer.
    """

    def __init__(self, teacher, student, *, teacher_layer_name=None,
                 student_layer_name=None, beta=50.0, alpha=0.3,
                 temperature=PRESET_KD_TEMPERATURE,
                 p=2, mode="code", adapter=False, stage=None,
                 guided_channels=None, **kwargs):
        teacher_layer, student_layer = layer_name_arguments(
            type(self).__name__, teacher_layer_name, student_layer_name,
            kwargs)
        kwargs.pop("knowledge", None)
        require_layers(type(self).__name__, teacher_layer, student_layer)
        knowledge = AttentionDistillation(
            p, mode, teacher_layer, student_layer, adapter=adapter,
            guided_channels=guided_channels, name="attention")
        super().__init__(teacher, student, knowledge=knowledge, alpha=alpha,
                         beta=beta, temperature=temperature, stage=stage,
                         **kwargs)

    @property
    def knowledge_weight(self):
        return self.beta

    @property
    def class_weight(self):
        return 1.0

    def weight_hint(self, term_name):
        if term_name == self._term_names[0]:
            return "lower `beta` (the attention loss's weight)"
        return super().weight_hint(term_name)
