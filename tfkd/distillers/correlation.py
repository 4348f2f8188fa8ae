"""`CorrelationDistiller`: correlation-based learning (channel/spatial Grams)."""

import keras
import tensorflow as tf

from tfkd.distillers.feature import FeatureDistiller
from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive_int
from tfkd.losses.correlation import CORRELATION_MODES
from tfkd.losses.correlation import DEFAULT_MAX_SPATIAL_POSITIONS
from tfkd.losses.correlation import correlation_loss


def _check_pool_to(value):
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else value
    try:
        pair = tuple(pair)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for v in pair
    ):
        raise ValueError(
            "`pool_to` must be None, a positive int or a pair of positive "
            f"ints (H, W). Received: pool_to={value!r}."
        )
    return pair


@keras.saving.register_keras_serializable(package="tfkd")
class CorrelationDistiller(FeatureDistiller):
    """Correlation-based learning: match channel and/or spatial Gram matrices.

    The student's guided layer learns the teacher layer's *correlations*
    rather than its activations: the channel Gram `C = Fᵀ F` (`N × N`), the
    spatial Gram `S = F Fᵀ` (`M × M`, `M = H · W`) or both, each
    standardised per example and compared with the (non-squared) L2 norm
    (`tfkd.losses.correlation_loss`). Single-stage objective (eq. 6):
    `L = L_Know + beta · (alpha · CE + (1 − alpha) · KD)`; two-stage
    training trains the student up to the guided layer with `L_Know`, then
    the whole student with `L_Class` (see `FeatureDistiller`, `stage`,
    `fit_two_stage`). With several tapped pairs, `L_Know` is the sum over
    pairs. The paper's "+KD" settings are `alpha=0.3`.

    `mode="channel"` needs equal channel counts, `"spatial"` equal `(H, W)`,
    `"both"` both; on a mismatch `adapter=True` inserts a trainable 1×1 conv
    and/or bilinear resize on the student side, otherwise construction
    raises a `ValueError` naming both shapes. A `SelfTaughtConv2D` guided
    layer has only its guided channels compared (self-guided learning,
    §3.2).

    **Memory of the spatial Gram.** `S` has `(H · W)²` entries per example
    and pair, for the teacher and for the student, plus as much again for
    the gradient: a 32 × 32 map is 4 MiB of float32 per example and Gram, a
    64 × 64 map 64 MiB. Maps with more than `max_spatial_positions`
    positions (4096 by default) are refused at construction; pass
    `pool_to=(h, w)` to average-pool both maps to `h × w` before the
    spatial Gram (the channel Gram always uses the full maps), use
    `mode="channel"`, or raise `max_spatial_positions`.

    Args:
        teacher: Trained `keras.Model` outputting logits; frozen.
        student: Functional `keras.Model` outputting logits.
        teacher_layer: Name (or list of names) of the teacher layer(s).
        student_layer: Name (or list of names) of the guided student
            layer(s), paired in order.
        mode: `"channel"`, `"spatial"` or `"both"` (the average of the two).
        alpha: Weight of the cross entropy in `L_Class`, in `[0, 1]`
            (1: no KD; the paper's "+KD" is 0.3).
        beta: Weight of `L_Class` in single-stage training (paper: 0.1).
        temperature: KD temperature, `> 0`.
        adapter: Insert trainable student-side adapters on a shape
            mismatch.
        stage: `None` (single-stage), `1` or `2`.
        guided_channels: `None`, an int, or one int/`None` per pair (see
            `FeatureDistiller`).
        pool_to: Optional int or `(h, w)`: average-pool both feature maps to
            this size before the spatial Gram. `H` and `W` must be
            multiples of it.
        max_spatial_positions: Largest `H · W` the spatial Gram accepts.
        **kwargs: Passed to `keras.Model`.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> distiller = CorrelationDistiller(
    ...     teacher, student, teacher_layer="conv2", student_layer="conv2",
    ...     mode="both", alpha=0.3, adapter=True)
    >>> distiller.compile(optimizer="adam", metrics=["accuracy"])
    >>> x, y = testing.random_images(32)
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'class_loss', 'kd_loss', 'knowledge_loss', 'loss']

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, §3.1, eqs. 1–6.
    """

    def __init__(self, teacher, student, *, teacher_layer=None,
                 student_layer=None, mode="both", alpha=1.0, beta=0.1,
                 temperature=4.0, adapter=False, stage=None,
                 guided_channels=None, pool_to=None,
                 max_spatial_positions=DEFAULT_MAX_SPATIAL_POSITIONS,
                 **kwargs):
        # Set before the base constructor: it checks shapes per mode.
        self.mode = check_option(mode, "mode", CORRELATION_MODES)
        self.pool_to = _check_pool_to(pool_to)
        self.max_spatial_positions = check_positive_int(
            max_spatial_positions, "max_spatial_positions"
        )
        super().__init__(
            teacher, student, teacher_layer=teacher_layer,
            student_layer=student_layer, alpha=alpha, beta=beta,
            temperature=temperature, adapter=adapter, stage=stage,
            guided_channels=guided_channels, **kwargs,
        )
        if self.mode != "channel":
            for i, name in enumerate(self.teacher_layer):
                self._check_spatial_size(name, self._pair_shapes(i)[0])

    def _check_spatial_size(self, name, shape):
        height, width = shape[1], shape[2]
        if self.pool_to is not None:
            ph, pw = self.pool_to
            if height % ph or width % pw:
                raise ValueError(
                    f"`pool_to`={self.pool_to} must divide the spatial size "
                    f"of the tapped features. Received: layer {name!r} with "
                    f"feature shape {shape}."
                )
            height, width = ph, pw
        positions = height * width
        if positions > self.max_spatial_positions:
            mib = positions * positions * 4 / 2**20
            raise ValueError(
                f"The spatial Gram of layer {name!r} (feature shape {shape}"
                f"{', pooled to ' + str(self.pool_to) if self.pool_to else ''}"
                f") would be {positions} × {positions} ({mib:,.0f} MiB of "
                "float32 per example), more than max_spatial_positions="
                f"{self.max_spatial_positions} allows. Pass pool_to=(h, w) "
                "to average-pool the maps first, use mode='channel', or "
                "raise max_spatial_positions."
            )

    def feature_requirements(self):
        return {
            "channel": ("channels",),
            "spatial": ("spatial",),
            "both": ("spatial", "channels"),
        }[self.mode]

    def _pool(self, features):
        height, width = features.shape[1], features.shape[2]
        size = (height // self.pool_to[0], width // self.pool_to[1])
        if size == (1, 1):
            return features
        return tf.nn.avg_pool2d(features, ksize=size, strides=size,
                                padding="VALID")

    def knowledge_loss(self, teacher_feature, student_feature):
        if self.pool_to is None:
            return correlation_loss(
                teacher_feature, student_feature, mode=self.mode,
                max_spatial_positions=self.max_spatial_positions,
            )
        losses = []
        if self.mode in ("channel", "both"):
            losses.append(correlation_loss(teacher_feature, student_feature,
                                           mode="channel"))
        if self.mode in ("spatial", "both"):
            losses.append(correlation_loss(
                self._pool(teacher_feature), self._pool(student_feature),
                mode="spatial",
                max_spatial_positions=self.max_spatial_positions,
            ))
        if len(losses) == 2:
            return 0.5 * (losses[0] + losses[1])
        return losses[0]

    def get_config(self):
        config = super().get_config()
        config.update({
            "mode": self.mode,
            "pool_to": list(self.pool_to) if self.pool_to else None,
            "max_spatial_positions": self.max_spatial_positions,
        })
        return config
