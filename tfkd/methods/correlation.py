"""Correlation-based knowledge: channel and spatial Gram matrices.

The correlation paper transfers the *correlations* inside a feature map, not
the activations: the channel Gram `C = Fᵀ F` (`N × N`) and the spatial Gram
`S = F Fᵀ` (`M × M`, `M = H · W`), each standardised per example before the
teacher's and the student's are compared with a (non-squared) L2 norm.

`correlation_loss` computes that distance without building a Gram that is
larger than the feature map needs. Write either Gram as `X = A Aᵀ` with
`A ∈ R^{P×Q}` (`A = F` for the spatial Gram, `A = Fᵀ` for the channel one),
`Ã = A − 1 āᵀ` with `ā` the mean row of `A`, and `g = Ã ā`. Then
`mean(X) = ‖ā‖²` and, because `Ãᵀ 1 = 0` makes every cross term vanish,

- `P² · var(X) = ‖Ãᵀ Ã‖²_F + 2P ‖g‖²`,
- `P² · cov(X_S, X_T) = ‖Ã_Sᵀ Ã_T‖²_F + 2P ⟨g_S, g_T⟩`,

sums of `Q × Q` products with no mean-over-variance cancellation. With
`w = var / d²` and `d` the divisor of `standardize`,
`‖norm(X_S) − norm(X_T)‖² = P² (w_S + w_T − 2 cov / (d_S d_T))`, the
formula of `docs/methods/correlation.md` up to float rounding. This "kernel" form costs `O(P Q²)` instead of
`O(P² Q)` and needs `Q × Q` memory, so it is used when `Q` (positions for
the channel Gram, channels for the spatial one) is the smaller side.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
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
from tfkd.terms.base import CHANNELS
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


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


# The divisor guard of `standardize` (its default `epsilon`).
_EPSILON = 1e-6

# The kernel form computes `q = D² / P² = w_S + w_T − 2c` as a difference of
# terms near 1, so its float32 rounding (measured: |error| ≤ ~5e-7 · (w_S +
# w_T)) is large relative to `q` when the standardised Grams nearly agree.
# Below this fraction of `w_S + w_T` (relative error of `q` then ≲ 3e-5) the
# batch is recomputed in float64.
_NEAR_FRACTION = 1.0 / 64


def _gram_sides(teacher_shape, student_shape, gram):
    """Static `(P, Q_T, Q_S)` of `X = A Aᵀ`, `A ∈ R^{P×Q}`; `None` if any
    is unknown. The Gram is `P × P`; the kernel products are `Q × Q`."""
    def positions(shape):
        h, w = shape[1], shape[2]
        return None if h is None or w is None else h * w

    if gram == "channel":
        return (teacher_shape[3], positions(teacher_shape),
                positions(student_shape))
    return (positions(teacher_shape), teacher_shape[3], student_shape[3])


def _gram_form(teacher_shape, student_shape, gram):
    """`"kernel"` when its `Q × Q` products cost fewer multiply-adds than
    the two `P × P` Grams of the direct form, else `"direct"` (also when a
    size is unknown statically: the direct form needs no shape decision)."""
    p, q_t, q_s = _gram_sides(teacher_shape, student_shape, gram)
    if None in (p, q_t, q_s):
        return "direct"
    kernel_cost = p * (q_t * q_t + q_s * q_s + q_t * q_s)
    direct_cost = p * p * (q_t + q_s)
    return "kernel" if kernel_cost < direct_cost else "direct"


def _kernel_factors(f, gram, dtype):
    """Centred factor `Ã`, `g = Ã ā`, `‖ā‖²` and the scale of one side.

    `f` is `(batch, M, C)`. The Gram's rows `P` are axis 1 (positions) for
    the spatial Gram and axis 2 (channels) for the channel Gram; `Ã` keeps
    `f`'s layout. `g` and `‖ā‖²` are divided by `scale²`, `scale` being the
    largest magnitude of the example, which the standardised Grams do not
    see (only the `1e-30` guard does, and the caller rescales it).
    """
    f = tf.cast(f, dtype)
    rows = 1 if gram == "spatial" else 2
    scale = tf.reduce_max(tf.abs(f), axis=[1, 2])
    scale = tf.stop_gradient(tf.where(scale > 0, scale, tf.ones_like(scale)))
    # Shifting by the first row first makes a constant map centre to
    # exactly 0 (as in `standardize`), so constant Grams standardise to 0.
    first = tf.stop_gradient(f[:, :1, :] if rows == 1 else f[:, :, :1])
    shifted = f - first
    shift_mean = tf.reduce_mean(shifted, axis=rows, keepdims=True)
    centred = shifted - shift_mean
    mean_row = (first + shift_mean) / scale[:, None, None]  # ā / scale
    g = tf.reduce_sum(centred * mean_row, axis=3 - rows) / scale[:, None]
    mean_gram = tf.reduce_sum(tf.square(mean_row), axis=[1, 2])  # ‖ā‖²/s²
    return centred, g, mean_gram, scale


def _kernel_terms(teacher, student, gram, dtype, epsilon=_EPSILON):
    """`(q, w_T + w_S)` per example, `q = ‖norm(X_S) − norm(X_T)‖² / P²`,
    through `Q × Q` products only, computed in `dtype`.

    Every term is in units of the Grams divided by `scale_T²` or
    `scale_S²` (the sides' largest magnitudes), so large maps do not
    overflow float32 when squared, nor tiny ones underflow.
    """
    rows = 1 if gram == "spatial" else 2
    a_t, g_t, mean_t, scale_t = _kernel_factors(teacher, gram, dtype)
    a_s, g_s, mean_s, scale_s = _kernel_factors(student, gram, dtype)
    p = tf.cast(tf.shape(a_t)[rows], dtype)
    n = p * p

    def frobenius_sq(x, y, scale):  # ‖Ã_xᵀ Ã_y‖²_F / scale², Q_x × Q_y.
        k = (tf.matmul(x, y, transpose_a=True) if rows == 1
             else tf.matmul(x, y, transpose_b=True))
        return tf.reduce_sum(tf.square(k / scale[:, None, None]), [1, 2])

    # P² var_T, P² var_S and P² cov (see the module docstring).
    var_t = (frobenius_sq(a_t, a_t, tf.square(scale_t))
             + 2.0 * p * tf.reduce_sum(g_t * g_t, 1))
    var_s = (frobenius_sq(a_s, a_s, tf.square(scale_s))
             + 2.0 * p * tf.reduce_sum(g_s * g_s, 1))
    cov = (frobenius_sq(a_s, a_t, scale_s * scale_t)
           + 2.0 * p * tf.reduce_sum(g_s * g_t, 1))

    def divisor_sq(var, mean, scale):
        # P² d² of `standardize`: var + ε² · mean square + 1e-30, the last
        # in the units of the unscaled Gram (scale⁴). 1e-15 / scale² is
        # squared rather than 1e-30 / scale⁴ computed, which would
        # underflow; the cap keeps it finite (w is then 0, as it should).
        main = var + epsilon**2 * (var + n * tf.square(mean))
        tiny = tf.minimum(tf.square(1e-15 / tf.square(scale)), 1e20)
        # An all-zero Gram (main = 0) standardises to 0: divide by 1 there
        # so no gradient meets 0 / 1e-60.
        return tf.where(main > 0, main + n * tiny, tf.ones_like(main))

    d_t = divisor_sq(var_t, mean_t, scale_t)
    d_s = divisor_sq(var_s, mean_s, scale_s)
    w_t, w_s = var_t / d_t, var_s / d_s
    c = cov / (tf.sqrt(d_t) * tf.sqrt(d_s))
    return w_t + w_s - 2.0 * c, w_t + w_s


def _safe_sqrt(x):
    """`sqrt(max(x, 0))` with a 0 (not NaN or inf) gradient at `x <= 0`."""
    positive = x > 0.0
    safe = tf.where(positive, x, tf.ones_like(x))
    return tf.where(positive, tf.sqrt(safe), tf.zeros_like(x))


def _kernel_distance(teacher, student, gram):
    """The Gram distance through `Q × Q` products (see module docstring).

    float32 first; if any example of the batch has standardised Grams so
    close that float32 rounding would show (`q < (w_T + w_S) / 64`), the
    batch is recomputed in float64, which the same products make cheap.
    Examples whose teacher and student maps are identical get exactly 0
    (the direct form's value), not the rounding residue of the two
    computations.
    """
    q, w = _kernel_terms(teacher, student, gram, tf.float32)
    if teacher.shape[1:] == student.shape[1:]:
        same = tf.reduce_all(tf.equal(teacher, student), axis=[1, 2])
    else:
        same = tf.zeros_like(q, dtype=tf.bool)
    near = tf.reduce_any((q < _NEAR_FRACTION * w) & ~same)

    def precise():
        q64, _ = _kernel_terms(teacher, student, gram, tf.float64)
        return tf.cast(q64, tf.float32)

    q = tf.cond(near, precise, lambda: q)
    q = tf.where(same, tf.zeros_like(q), q)
    rows = 1 if gram == "spatial" else 2
    p = tf.cast(tf.shape(teacher)[rows], tf.float32)
    return p * _safe_sqrt(q)


def _direct_distance(teacher, student, gram, max_spatial_positions):
    """The formula as written (docs/methods/correlation.md): both `P × P` Grams, standardised."""
    if gram == "channel":
        gram_t, gram_s = channel_gram(teacher), channel_gram(student)
    else:
        gram_t = spatial_gram(teacher, max_spatial_positions)
        gram_s = spatial_gram(student, max_spatial_positions)
    diff = flatten_per_example(standardize(gram_s)) - flatten_per_example(
        standardize(gram_t)
    )
    return safe_l2_norm(diff, axis=1)


def _gram_distance(teacher, student, gram, max_spatial_positions):
    """`‖vec(norm(X_S)) − vec(norm(X_T))‖₂`, kernel or direct by shape."""
    if _gram_form(teacher.shape, student.shape, gram) == "kernel":
        return _kernel_distance(_flatten_features(teacher),
                                _flatten_features(student), gram)
    if gram == "spatial":
        for name, f in (("teacher_features", teacher),
                        ("student_features", student)):
            _check_spatial_positions(f.shape, name, max_spatial_positions)
    return _direct_distance(teacher, student, gram, max_spatial_positions)


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

    Cost. Each distance is computed in the cheaper of two exact forms,
    chosen from the static shapes: the direct form builds both Grams
    (`N × N` or `M × M`); the kernel form (module docstring) needs only
    products of the other side's size — `M × M` for the channel loss,
    `N_T × N_S` for the spatial loss — and is used when those cost fewer
    multiply-adds (roughly `M < 2N/3` for the channel Gram and
    `N < 2M/3` for the spatial one). The kernel form computes in float32
    and, when some example's standardised Grams nearly agree
    (`‖norm(X_S) − norm(X_T)‖²` below `1/64` of `‖norm(X_S)‖² +
    ‖norm(X_T)‖²`, where float32 rounding of its terms would show),
    recomputes the batch in float64. Both forms agree
    with the formula as written up to float rounding, values and gradients.

    Args:
        teacher_features: Tensor of shape `(batch, H_T, W_T, N_T)`.
        student_features: Tensor of shape `(batch, H_S, W_S, N_S)`.
            `"channel"` needs `N_S == N_T`, `"spatial"` needs equal `H, W`,
            `"both"` needs both; a distiller built with `adapter=True`
            inserts the adapter that makes them equal.
        mode: `"channel"`, `"spatial"` or `"both"`.
        max_spatial_positions: Largest `H · W` for which the spatial loss
            may build an `(H · W) × (H · W)` Gram (4096 positions = 64 MiB
            of float32 per example). Only maps whose spatial loss takes the
            direct form are refused: with few channels (`N < 2M/3`) the
            spatial loss needs no `M × M` matrix and any `H · W` is
            accepted. Pool larger maps first or raise the limit.

    Returns:
        Tensor of shape `(batch,)`, float32 (float16 and bfloat16 inputs
        are cast to float32 first).

    Example:

    >>> t = tf.random.stateless_normal((2, 4, 4, 3), seed=(1, 2))
    >>> [float(v) for v in correlation_loss(t, t)]
    [0.0, 0.0]
    >>> tuple(correlation_loss(t, 2.0 * t + 1.0, mode="channel").shape)
    (2,)
    >>> big = tf.random.stateless_normal((1, 128, 128, 4), seed=(3, 4))
    >>> tuple(correlation_loss(big, big + 1.0, mode="spatial").shape)
    (1,)

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

    losses = []
    if mode in ("channel", "both"):
        losses.append(_gram_distance(t, s, "channel", max_spatial_positions))
    if mode in ("spatial", "both"):
        losses.append(_gram_distance(t, s, "spatial", max_spatial_positions))
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
