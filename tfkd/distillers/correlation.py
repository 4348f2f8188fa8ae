"""`CorrelationDistiller`: correlation-based learning (channel/spatial Grams)."""

import keras

from tfkd.distillers.feature import FeatureDistiller
from tfkd.distillers.feature import require_layers
from tfkd.methods.correlation import DEFAULT_MAX_SPATIAL_POSITIONS
from tfkd.methods.correlation import CorrelationDistillation
from tfkd.terms.base import layer_name_arguments
from tfkd.distillers.feature import PRESET_KD_TEMPERATURE


@keras.saving.register_keras_serializable(package="tfkd")
class CorrelationDistiller(FeatureDistiller):
    """Correlation-based learning: match channel and/or spatial Gram matrices.

    A preset of the correlation paper: a `tfkd.losses.CorrelationDistillation`
    term (the student's guided layer learns the teacher layer's channel
    Gram `C = Fᵀ F`, spatial Gram `S = F Fᵀ` or both, standardised per
    example, compared with the non-squared L2 norm) in the paper's
    objective (eq. 6) `L = L_Know + beta · (alpha · CE + (1 − alpha) · KD)`,
    single- or two-stage (see `FeatureDistiller`). With several tapped
    pairs `L_Know` is their sum. The paper's "+KD" settings are
    `alpha=0.3`. In the engine's convention the total is `L / (1 + beta)`
    (see `FeatureDistiller`). `stage` defaults to `"both"`: `fit(epochs=n)`
    trains the two stages, splitting the `n >= 2` epochs (as the paper
    prefers: single-stage at `beta = 0.1` swamped the labels on the
    digits, see `docs/methods/correlation.md`); `stage=None` is
    single-stage training.

    `mode="channel"` needs equal channel counts, `"spatial"` equal
    `(H, W)`, `"both"` both; on a mismatch `adapter=True` inserts a
    trainable 1×1 conv and/or bilinear resize on the student side,
    otherwise construction raises a `ValueError` naming both shapes. A
    `SelfTaughtConv2D` guided layer has only its guided channels compared
    (self-guided learning, §3.2). Maps larger than `max_spatial_positions`
    positions are refused for the spatial Gram: pass `pool_to=(h, w)` to
    average-pool both maps first, or use `mode="channel"`.

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` outputting logits.
        teacher_layer_name: Name (or list of names) of the teacher layer(s).
        student_layer_name: Name (or list of names) of the guided student
            layer(s), paired in order.
        mode: `"channel"`, `"spatial"` or `"both"` (the average of the two).
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`
            (1: no KD; the paper's "+KD" is 0.3).
        beta: Weight of `L_Class` in single-stage training (paper: 0.1).
        temperature: KD temperature, `> 0` (default 1, the
            feature presets' `PRESET_KD_TEMPERATURE`, not Hinton KD's 4).
        adapter: Insert trainable student-side adapters on a shape
            mismatch.
        stage: `"both"` (default: `fit` trains both stages), `None`
            (single-stage), `1` or `2`.
        guided_channels: `None`, an int, or one int/`None` per pair (see
            `tfkd.terms.DistillationTerm`).
        pool_to: Optional int or `(h, w)`: average-pool both feature maps to
            this size before the spatial Gram.
        max_spatial_positions: Largest `H · W` the spatial Gram accepts.
        **kwargs: Passed to `keras.Model`.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = CorrelationDistiller(
    ...     teacher, student, teacher_layer_name="conv2",
    ...     student_layer_name="conv2",
    ...     mode="both", alpha=0.3, adapter=True)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = testing.random_images(32)
    >>> history = distiller.fit(x, y, epochs=2, verbose=0)  # both stages
    >>> sorted(history.history)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'correlation_loss', 'distillation_loss', 'kd_loss', 'loss',
     'student_loss', 'total_loss']
    >>> history.epoch
    [0, 1]

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, §3.1, eqs. 1–6.
    """

    def __init__(self, teacher, student, *, teacher_layer_name=None,
                 student_layer_name=None, mode="both", alpha=0.3, beta=0.1,
                 temperature=PRESET_KD_TEMPERATURE, adapter=False,
                 stage="both",
                 guided_channels=None, pool_to=None,
                 max_spatial_positions=DEFAULT_MAX_SPATIAL_POSITIONS,
                 **kwargs):
        teacher_layer, student_layer = layer_name_arguments(
            type(self).__name__, teacher_layer_name, student_layer_name,
            kwargs)
        kwargs.pop("knowledge", None)
        require_layers(type(self).__name__, teacher_layer, student_layer)
        knowledge = CorrelationDistillation(
            mode, max_spatial_positions, teacher_layer, student_layer,
            adapter=adapter, pool_to=pool_to,
            guided_channels=guided_channels, name="correlation")
        super().__init__(teacher, student, knowledge=knowledge, alpha=alpha,
                         beta=beta, temperature=temperature, stage=stage,
                         **kwargs)
