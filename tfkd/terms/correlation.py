"""Correlation-based learning (channel / spatial Gram matrices) as a term."""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive_int
from tfkd.losses.correlation import CORRELATION_MODES
from tfkd.losses.correlation import DEFAULT_MAX_SPATIAL_POSITIONS
from tfkd.losses.correlation import _gram_form
from tfkd.losses.correlation import correlation_loss
from tfkd.terms.base import CHANNELS
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method

_REQUIREMENTS = {
    "channel": (CHANNELS,),
    "spatial": (SPATIAL,),
    "both": (SPATIAL, CHANNELS),
}


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
class CorrelationDistillation(DistillationTerm):
    """Correlation-based learning: match channel and/or spatial Gram matrices.

    The student's guided layer learns the teacher layer's *correlations*:
    the channel Gram `C = Fᵀ F` (`N × N`), the spatial Gram `S = F Fᵀ`
    (`M × M`, `M = H · W`) or both, each standardised per example and
    compared with the (non-squared) L2 norm
    (`tfkd.losses.correlation_loss`), per example and summed over pairs.
    `"channel"` needs equal channel counts, `"spatial"` equal `(H, W)`,
    `"both"` both; on a mismatch `adapter=True` inserts a trainable 1×1
    conv and/or bilinear resize on the student side (owned by the term),
    otherwise binding raises a `ValueError` naming both shapes. A
    `SelfTaughtConv2D` guided layer has only its guided channels compared
    (self-guided learning, §3.2).

    `CorrelationDistiller` (and so the `correlation` method) trains the
    paper's two stages by default (`stage="both"`: each `fit` runs both):
    single-stage eq. 6 at `beta = 0.1` let this term swamp the labels and
    collapsed the digits student (see `docs/methods/correlation.md`).
    Pass `stage=None` for single-stage.

    Args:
        mode: `"channel"`, `"spatial"` or `"both"` (the average of the two).
        max_spatial_positions: Largest `H · W` whose spatial Gram may be
            built (see `tfkd.losses.correlation_loss`).
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Guided student layer(s), paired in order.
        adapter: Insert trainable student-side adapters on a mismatch.
        pool_to: Optional int or `(h, w)`: average-pool both maps to this
            size before the spatial Gram (the channel Gram uses the full
            maps). `H` and `W` must be multiples of it. Only needed for maps
            with more than `max_spatial_positions` positions AND more
            channels than positions' worth of work: with few channels the
            loss computes the spatial term through `C × C` products and
            never builds the `M × M` Gram, so no map is refused then.
        guided_channels: See `DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"correlation"`).

    Example:

    >>> import tensorflow as tf
    >>> loss = CorrelationDistillation(mode="channel")
    >>> f = tf.random.stateless_normal((2, 4, 4, 3), seed=(1, 2))
    >>> float(loss.compute_loss(f, f))
    0.0

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, §3.1, eqs. 1–4.
    """

    method = Method(
        name="correlation",
        description=("correlation-based learning (channel + spatial Gram "
                     "matrices)"),
        paper="Wang et al., student-centric correlation, 2019",
        preset="tfkd.distillers.correlation:CorrelationDistiller",
        # The paper's two-stage training (Table 3: "two-stage training
        # consistently performs better"): the preset's `stage="both"`
        # splits each `fit`'s epochs between the stages. Single-stage eq. 6 at beta = 0.1
        # lets the correlation term's gradient (~400x the weighted class
        # loss's in the shared conv layers, and not fading: its floor is
        # far from 0) swamp the labels and collapsed the digits student
        # (docs/methods/correlation.md); it stays reachable with
        # `stage=None`.
        build_defaults={"adapter": True},
        # Two stages leave `beta` unused (each stage minimises one loss):
        # not searched. "+KD" rows use alpha = 0.3 in L_Class (alpha = 1:
        # no KD term).
        search_space={
            "alpha": {"type": "float", "min_value": 0.3, "max_value": 1.0},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 10.0},
        },
    )

    def __init__(self, mode="both",
                 max_spatial_positions=DEFAULT_MAX_SPATIAL_POSITIONS,
                 teacher_layer_name=None, student_layer_name=None, *,
                 adapter=False, pool_to=None, guided_channels=None,
                 **kwargs):
        kwargs.setdefault("name", "correlation")
        mode = check_option(mode, "mode", CORRELATION_MODES)
        super().__init__(teacher_layer_name, student_layer_name,
                         adapter=adapter, guided_channels=guided_channels,
                         **kwargs)
        self.mode = mode
        self.max_spatial_positions = check_positive_int(
            max_spatial_positions, "max_spatial_positions")
        self.pool_to = _check_pool_to(pool_to)

    @property
    def feature_requirements(self):
        return _REQUIREMENTS[self.mode]

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        super().build_parts(teacher, student, teacher_shapes, student_shapes)
        if self.mode == "channel":
            return
        for name, t, s in zip(self.teacher_taps, teacher_shapes,
                              student_shapes):
            if t is not None and s is not None:
                channels = t[3] if CHANNELS in self.feature_requirements \
                    else s[3]
                self._check_spatial_size(name, t, channels)

    def _check_spatial_size(self, name, shape, student_channels):
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
        # With few channels the loss never builds the M × M Gram (its
        # position-kernel form): only a map it would build is refused.
        direct = _gram_form((None, height, width, shape[3]),
                            (None, height, width, student_channels),
                            "spatial") == "direct"
        if positions > self.max_spatial_positions and direct:
            mib = positions * positions * 4 / 2**20
            pooled = f", pooled to {self.pool_to}" if self.pool_to else ""
            raise ValueError(
                f"The spatial Gram of layer {name!r} (feature shape {shape}"
                f"{pooled}) would be {positions} × {positions} ({mib:,.0f} "
                "MiB of float32 per example), more than "
                f"max_spatial_positions={self.max_spatial_positions} allows. "
                "Pass pool_to=(h, w) to average-pool the maps first, use "
                "mode='channel', or raise max_spatial_positions."
            )

    def _pool(self, features):
        height, width = features.shape[1], features.shape[2]
        size = (height // self.pool_to[0], width // self.pool_to[1])
        if size == (1, 1):
            return features
        return tf.nn.avg_pool2d(features, ksize=size, strides=size,
                                padding="VALID")

    def pair_loss(self, teacher_feature, student_feature):
        if self.pool_to is None:
            return correlation_loss(
                teacher_feature, student_feature, mode=self.mode,
                max_spatial_positions=self.max_spatial_positions)
        losses = []
        if self.mode in ("channel", "both"):
            losses.append(correlation_loss(teacher_feature, student_feature,
                                           mode="channel"))
        if self.mode in ("spatial", "both"):
            losses.append(correlation_loss(
                self._pool(teacher_feature), self._pool(student_feature),
                mode="spatial",
                max_spatial_positions=self.max_spatial_positions))
        if len(losses) == 2:
            return 0.5 * (losses[0] + losses[1])
        return losses[0]

    def get_config(self):
        config = super().get_config()
        config.update({
            "mode": self.mode,
            "max_spatial_positions": self.max_spatial_positions,
            "pool_to": list(self.pool_to) if self.pool_to else None,
        })
        return config
