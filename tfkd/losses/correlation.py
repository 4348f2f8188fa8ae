"""Correlation-based knowledge: channel and spatial Gram matrices.

The correlation paper transfers the *correlations* inside a feature map, not
the activations: the channel Gram `C = Fᵀ F` (`N × N`) and the spatial Gram
`S = F Fᵀ` (`M × M`, `M = H · W`), each standardised per example before the
teacher's and the student's are compared with a (non-squared) L2 norm.
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_option
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_positive_int
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import flatten_per_example
from tfkd.losses._utils import safe_l2_norm
from tfkd.losses._utils import to_float32

CORRELATION_MODES = ("channel", "spatial", "both")

# 4096 positions = a 64 × 64 map: the spatial Gram then holds 4096² floats,
# 64 MiB per example (and as much again for the student and the gradient).
DEFAULT_MAX_SPATIAL_POSITIONS = 4096

_FEATURES_LAYOUT = "(batch, H, W, C)"


def _flatten_features(f):
    """Float32 `(batch, H, W, N)` -> `(batch, M, N)` with `M = H · W`."""
    shape = tf.shape(f)
    return tf.reshape(f, [shape[0], shape[1] * shape[2], shape[3]])


def _check_spatial_positions(shape, name, max_spatial_positions):
    """Refuses spatial Grams that would not fit in memory."""
    height, width = shape[1], shape[2]
    if height is None or width is None:
        return  # Unknown statically: the caller knows its input sizes.
    positions = height * width
    if positions > max_spatial_positions:
        mib = positions * positions * 4 / 2**20
        raise ValueError(
            f"The spatial Gram matrix of `{name}` would be {positions} × "
            f"{positions} ({mib:,.0f} MiB of float32 per example), more than "
            f"`max_spatial_positions={max_spatial_positions}` positions "
            f"allow. Received: {name}.shape={tuple(shape)}. Pool the feature "
            f"map first (e.g. `keras.layers.AveragePooling2D`), use "
            f"`mode='channel'`, or raise `max_spatial_positions`."
        )


def channel_gram(features):
    """Channel Gram matrix `C = Fᵀ F` of a feature map, per example.

    For one example the `(H, W, N)` map is reshaped to `F ∈ R^{M×N}`,
    `M = H · W`, and `C_ij = Σ_k F_ki F_kj`: how strongly channels `i` and
    `j` fire together, whatever the position.

    Args:
        features: Tensor of shape `(batch, H, W, N)`.

    Returns:
        Tensor of shape `(batch, N, N)`, float32.

    Example:

    >>> f = tf.ones((2, 3, 3, 4))
    >>> c = channel_gram(f)
    >>> tuple(c.shape), float(c[0, 0, 1])
    ((2, 4, 4), 9.0)

    Reference:
        Wang, Xu, Xu, Yu, Wang, "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, eq. 1.
    """
    f = to_float32(features, "features")
    check_rank(f, "features", rank=4, layout=_FEATURES_LAYOUT)
    f = _flatten_features(f)
    return tf.matmul(f, f, transpose_a=True)


def spatial_gram(features,
                 max_spatial_positions=DEFAULT_MAX_SPATIAL_POSITIONS):
    """Spatial Gram matrix `S = F Fᵀ` of a feature map, per example.

    `S_ij` is the inner product of the channel vectors at positions `i` and
    `j` (positions in row-major `(H, W)` order). Memory grows with the
    square of `M = H · W`: a 64 × 64 map already needs 64 MiB per example,
    so larger maps are refused; pool them first.

    Args:
        features: Tensor of shape `(batch, H, W, N)`.
        max_spatial_positions: Largest `H · W` accepted (default 4096).

    Returns:
        Tensor of shape `(batch, H · W, H · W)`, float32.

    Example:

    >>> f = tf.ones((2, 3, 3, 4))
    >>> s = spatial_gram(f)
    >>> tuple(s.shape), float(s[0, 0, 8])
    ((2, 9, 9), 4.0)

    Reference:
        Wang, Xu, Xu, Yu, Wang, "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, eq. 3.
    """
    max_spatial_positions = check_positive_int(
        max_spatial_positions, "max_spatial_positions"
    )
    f = to_float32(features, "features")
    check_rank(f, "features", rank=4, layout=_FEATURES_LAYOUT)
    _check_spatial_positions(f.shape, "features", max_spatial_positions)
    f = _flatten_features(f)
    return tf.matmul(f, f, transpose_b=True)


def standardize(x, epsilon=1e-6):
    """Per-example standardisation over all non-batch elements.

    Subtracts the mean of all elements of each example and divides by their
    population standard deviation: the `norm(·)` of the correlation paper.
    The divisor is `sqrt(var + (epsilon · rms)² + 1e-30)` with `rms` the
    root mean square of the example: a scale-free guard whose relative
    effect is below `1e-6` whenever `|mean| ≤ 1000 · std`, and which turns a
    constant input (all-zero feature maps, constant Grams) into zeros
    instead of NaN. The mean is taken after shifting by the first element
    so that a constant input centres to exactly 0.

    Args:
        x: Tensor of shape `(batch, ...)`.
        epsilon: Relative guard of the divisor, `> 0`.

    Returns:
        Float32 tensor of the shape of `x`; each example has mean 0 and
        standard deviation 1 (or is all 0 if it was constant).

    Example:

    >>> z = standardize([[1.0, 2.0, 3.0, 4.0]])
    >>> [round(float(v), 4) for v in z[0]]
    [-1.3416, -0.4472, 0.4472, 1.3416]
    >>> [float(v) for v in standardize([[5.0, 5.0, 5.0]])[0]]
    [0.0, 0.0, 0.0]
    """
    epsilon = check_positive(epsilon, "epsilon")
    x = to_float32(x, "x")
    check_rank(x, "x", min_rank=2, layout="(batch, ...)")
    flat = flatten_per_example(x)
    # Variance is shift invariant; shifting by one element makes a constant
    # example exactly zero (a plain mean would leave round-off noise that
    # the division would blow up).
    shifted = flat - tf.stop_gradient(flat[:, :1])
    centered = shifted - tf.reduce_mean(shifted, axis=1, keepdims=True)
    var = tf.reduce_mean(tf.square(centered), axis=1, keepdims=True)
    mean_square = tf.reduce_mean(tf.square(flat), axis=1, keepdims=True)
    denom = tf.sqrt(var + epsilon**2 * mean_square + 1e-30)
    return tf.reshape(centered / denom, tf.shape(x))


def _check_correlation_shapes(teacher_shape, student_shape, mode):
    """Static shape checks shared by the loss and the Keras wrappers."""
    t, s = tuple(teacher_shape), tuple(student_shape)
    hint = (
        "pass adapter=True to the distiller to insert a trainable "
        "{} adapter on the student side."
    )
    if t[0] is not None and s[0] is not None and t[0] != s[0]:
        raise ValueError(
            "`teacher_features` and `student_features` must have the same "
            f"batch size. Received: teacher_features.shape={t}, "
            f"student_features.shape={s}."
        )
    if mode in ("channel", "both") and None not in (t[3], s[3]) \
            and t[3] != s[3]:
        raise ValueError(
            f"mode={mode!r} compares channel Grams, which needs equal channel "
            f"counts. Received: teacher_features.shape={t}, "
            f"student_features.shape={s}. Either "
            + hint.format("1×1-conv")
            + " Or use mode='spatial'."
        )
    if mode in ("spatial", "both") and any(
        a is not None and b is not None and a != b
        for a, b in zip(t[1:3], s[1:3])
    ):
        raise ValueError(
            f"mode={mode!r} compares spatial Grams, which needs equal spatial "
            f"sizes (H, W). Received: teacher_features.shape={t}, "
            f"student_features.shape={s}. Either "
            + hint.format("resize")
            + " Or use mode='channel'."
        )


def correlation_loss(teacher_features, student_features, mode="both",
                     max_spatial_positions=DEFAULT_MAX_SPATIAL_POSITIONS):
    """Correlation-based knowledge loss, per example.

    `channel`: `‖vec(norm(C_S)) − vec(norm(C_T))‖₂` with `C = Fᵀ F` the
    channel Gram and `norm` the per-example standardisation (see
    `standardize`). The norm is the Euclidean norm itself, NOT its square,
    as in the paper's eq. 2. `spatial`: the same with the spatial Gram
    `S = F Fᵀ`. `both`: `½ (L_channel + L_spatial)`. The norm is made safe
    at 0, so identical teacher and student features give loss 0 and a zero
    (not NaN) gradient.

    Args:
        teacher_features: Tensor of shape `(batch, H_T, W_T, N_T)`.
        student_features: Tensor of shape `(batch, H_S, W_S, N_S)`.
            `"channel"` needs `N_S == N_T`, `"spatial"` needs equal `H, W`,
            `"both"` needs both; a distiller built with `adapter=True`
            inserts the adapter that makes them equal.
        mode: `"channel"`, `"spatial"` or `"both"`.
        max_spatial_positions: Largest `H · W` accepted by the spatial Gram,
            which costs `(H · W)²` floats per example (4096 positions =
            64 MiB). Pool larger maps first.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = tf.random.stateless_normal((2, 4, 4, 3), seed=(1, 2))
    >>> [float(v) for v in correlation_loss(t, t)]
    [0.0, 0.0]
    >>> tuple(correlation_loss(t, 2.0 * t + 1.0, mode="channel").shape)
    (2,)

    Reference:
        Wang, Xu, Xu, Yu, Wang, "Student-Centric Network Learning for
        Improved Knowledge Transfer", 2019, eqs. 1–4.
    """
    mode = check_option(mode, "mode", CORRELATION_MODES)
    max_spatial_positions = check_positive_int(
        max_spatial_positions, "max_spatial_positions"
    )
    t = to_float32(teacher_features, "teacher_features")
    s = to_float32(student_features, "student_features")
    check_rank(t, "teacher_features", rank=4, layout=_FEATURES_LAYOUT)
    check_rank(s, "student_features", rank=4, layout=_FEATURES_LAYOUT)
    _check_correlation_shapes(t.shape, s.shape, mode)

    def distance(gram_t, gram_s):
        diff = flatten_per_example(standardize(gram_s)) - flatten_per_example(
            standardize(gram_t)
        )
        return safe_l2_norm(diff, axis=1)

    losses = []
    if mode in ("channel", "both"):
        losses.append(distance(channel_gram(t), channel_gram(s)))
    if mode in ("spatial", "both"):
        _check_spatial_positions(t.shape, "teacher_features",
                                 max_spatial_positions)
        _check_spatial_positions(s.shape, "student_features",
                                 max_spatial_positions)
        losses.append(distance(spatial_gram(t, max_spatial_positions),
                               spatial_gram(s, max_spatial_positions)))
    if mode == "both":
        return 0.5 * (losses[0] + losses[1])
    return losses[0]


@keras.saving.register_keras_serializable(package="tfkd")
class CorrelationLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `correlation_loss`.

    `y_true` are the teacher's feature maps and `y_pred` the student's.

    Args:
        mode: `"channel"`, `"spatial"` or `"both"`.
        max_spatial_positions: Largest `H · W` for the spatial Gram.
        reduction: Keras reduction, `"sum_over_batch_size"` by default.
        name: Name of the loss.

    Example:

    >>> loss = CorrelationLoss(mode="channel")
    >>> f = tf.random.stateless_normal((2, 4, 4, 3), seed=(1, 2))
    >>> float(loss(f, f))
    0.0
    """

    def __init__(self, mode="both",
                 max_spatial_positions=DEFAULT_MAX_SPATIAL_POSITIONS,
                 reduction="sum_over_batch_size", name="correlation_loss",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.mode = check_option(mode, "mode", CORRELATION_MODES)
        self.max_spatial_positions = check_positive_int(
            max_spatial_positions, "max_spatial_positions"
        )

    def call(self, y_true, y_pred):
        return correlation_loss(
            y_true, y_pred, mode=self.mode,
            max_spatial_positions=self.max_spatial_positions,
        )

    def get_config(self):
        config = super().get_config()
        config.update({
            "mode": self.mode,
            "max_spatial_positions": self.max_spatial_positions,
        })
        return config
