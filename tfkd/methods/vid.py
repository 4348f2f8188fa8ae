"""Variational information distillation (VID): Gaussian likelihood of the
teacher's features under the student's prediction.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import math

import keras
import tensorflow as tf

from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import to_float32
from tfkd.losses._utils import check_positive_int
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


# Added to the softplus of `log_scale`, as the authors' code (`eps`): the
# variance never goes below it.
VID_MIN_VARIANCE = 1e-5


def vid_log_scale_for_variance(variance):
    """The `log_scale` whose VID variance is `variance`.

    The inverse of `softplus(log_scale) + 1e-5`; the authors' code
    initialises every channel's `log_scale` with it at `variance = 5.0`.

    Args:
        variance: A number `> 1e-5`.

    Returns:
        A Python float.

    Example:

    >>> round(vid_log_scale_for_variance(5.0), 4)
    4.9932
    """
    variance = check_positive(variance, "variance")
    if variance <= VID_MIN_VARIANCE:
        raise ValueError(
            f"`variance` must be > {VID_MIN_VARIANCE}, the variance floor. "
            f"Received: variance={variance}."
        )
    return math.log(math.expm1(variance - VID_MIN_VARIANCE))


def vid_loss(teacher_features, predicted_mean, log_scale):
    """Variational information distillation loss, per example.

    VID maximises a variational lower bound of the mutual information
    between the teacher's and the student's features: the teacher's
    features `t` are modelled as Gaussian, with a mean `μ` regressed from
    the student's features and one trainable variance per channel,
    `σ²_c = softplus(log_scale_c) + 1e-5`. The loss is the negative log
    likelihood (without the constant `½ log 2π`), averaged over the
    positions and channels of each example:

    `L = mean_{h,w,c} ½ · ((μ − t)² / σ²_c + log σ²_c)`.

    The mean regressor (in the authors' code three 1×1 convolutions with
    ReLUs between them) and `log_scale` belong to the knowledge term, which
    passes the regressed mean here; the authors initialise `log_scale` to
    `vid_log_scale_for_variance(5.0)`. The paper sums the negative log
    likelihood over positions and channels; the authors' code averages it,
    which tfkd follows (the code's weight, 1 on CIFAR-100, is tuned for
    the mean).

    Args:
        teacher_features: Tensor of shape `(batch, ..., C)` (typically
            `(batch, H, W, C)`; channels last).
        predicted_mean: Tensor of the same shape: the student's prediction
            `μ` of the teacher's features.
        log_scale: Tensor of shape `(C,)`: the per-channel variance
            parameter.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = tf.zeros((2, 4, 4, 3))
    >>> log_scale = tf.fill([3], vid_log_scale_for_variance(1.0))
    >>> [round(float(v), 4) for v in vid_loss(t, t + 1.0, log_scale)]
    [0.5, 0.5]

    Reference:
        Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information
        Distillation for Knowledge Transfer", CVPR 2019, eqs. 2–5. Code:
        https://github.com/HobbitLong/RepDistiller (`distiller_zoo/VID.py`,
        "code from author").
    """
    t = to_float32(teacher_features, "teacher_features")
    mu = to_float32(predicted_mean, "predicted_mean")
    log_scale = to_float32(log_scale, "log_scale")
    check_rank(t, "teacher_features", min_rank=2, layout="(batch, ..., C)")
    check_same_shape(t, mu, "teacher_features", "predicted_mean")
    check_rank(log_scale, "log_scale", rank=1, layout="(C,)")
    if not log_scale.shape.is_compatible_with(t.shape[-1:]):
        raise ValueError(
            "`log_scale` must have one entry per channel of "
            "`teacher_features` (its last axis). Received: "
            f"log_scale.shape={tuple(log_scale.shape)}, "
            f"teacher_features.shape={tuple(t.shape)}."
        )
    variance = tf.nn.softplus(log_scale) + VID_MIN_VARIANCE
    nll = 0.5 * (tf.square(mu - t) / variance + tf.math.log(variance))
    return tf.reduce_mean(tf.reshape(nll, [tf.shape(nll)[0], -1]), axis=1)


def _ratio(large, small):
    """`large / small` per spatial dim if both divide exactly, else None."""
    if large[0] % small[0] or large[1] % small[1]:
        return None
    return large[0] // small[0], large[1] // small[1]


@keras.saving.register_keras_serializable(package="tfkd")
class VariationalInformationDistillation(DistillationTerm):
    """Variational information distillation: the student's features
    predict the teacher's under a Gaussian with a learned variance.

    For each tapped pair the term owns a mean regressor `μ(·)` (the
    authors': three 1×1 convolutions without bias, ReLUs between them, to
    the teacher's channel count) and a per-channel `log_scale`; the
    teacher's features `t` are modelled as `N(μ(s), σ²)`,
    `σ²_c = softplus(log_scale_c) + 1e-5`, and the term is the negative
    log-likelihood averaged over positions and channels, per example
    (`tfkd.losses.vid_loss`):

    `L = mean_{h,w,c} ½ · ((μ(s) − t)² / σ²_c + log σ²_c)`.

    `log_scale` starts at `vid_log_scale_for_variance(init_variance)`
    (variance 5, as the authors' code). Regressor and `log_scale` are the
    term's trainable weights: trained with the student, saved with the
    distiller, never part of `distiller.student`. When the spatial sizes
    differ, the larger map is average-pooled to the smaller (as the
    authors' code); the ratio must be a whole number. Channel counts may
    differ.

    The authors' objective is `CE + λ · Σ L_VID` with `λ = 1` on CIFAR
    (RepDistiller, "code from author"): the method `vid` builds
    `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[1.0], student_loss_weight=0.5)`, i.e.
    that objective divided by 2.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        hidden_channels: Width of the regressor's two hidden 1×1
            convolutions; `None` (default) uses the teacher's channel
            count, as the authors' code.
        init_variance: Initial variance `σ²` of every channel, `> 1e-5`
            (code: 5).
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"vid"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> teacher = testing.tiny_conv_model("teacher", width=8)
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> term = VariationalInformationDistillation("conv2", "conv2")
    >>> distiller = tfkd.Distiller(teacher, student, [term])
    >>> [tuple(w.shape) for w in term.regressors[0].weights]
    [(1, 1, 4, 8), (1, 1, 8, 8), (1, 1, 8, 8)]
    >>> tuple(term.log_scales[0].shape)
    (8,)
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'student_loss', 'total_loss', 'vid_loss']

    Reference:
        Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information
        Distillation for Knowledge Transfer", CVPR 2019, eqs. 2-5; code:
        github.com/HobbitLong/RepDistiller (`distiller_zoo/VID.py`).
    """

    method = Method(
        name="vid",
        description="variational information distillation: Gaussian "
                    "likelihood of the teacher's features under a "
                    "term-owned regressor",
        paper="Ahn et al., CVPR 2019",
        weight=1.0,
        student_loss_weight=0.5,
        soft_targets=True,
        search_space={
            "weight": {"type": "float", "min_value": 0.1, "max_value": 10.0,
                       "sampling": "log"},
            "init_variance": {"type": "float", "min_value": 0.5,
                              "max_value": 10.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 hidden_channels=None, init_variance=5.0,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "vid")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.hidden_channels = None if hidden_channels is None else \
            check_positive_int(hidden_channels, "hidden_channels")
        # Checked (and converted) once, here.
        self._initial_log_scale = vid_log_scale_for_variance(init_variance)
        self.init_variance = float(init_variance)
        self.regressors = []
        self.log_scales = []
        self._teacher_pools = []

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        regressors, log_scales, pools = [], [], []
        for i, (t, s) in enumerate(zip(teacher_shapes, student_shapes)):
            if t is None or s is None:
                raise ValueError(
                    "VariationalInformationDistillation sizes its regressor "
                    "from the tapped shapes, which are unknown for the pair "
                    f"{self.teacher_taps[i]!r} -> {self.student_taps[i]!r}. "
                    "Use functional models (or subclassed models built on "
                    "a known input shape)."
                )
            self._check_map(t, self.teacher_taps[i], "teacher")
            self._check_map(s, self.student_taps[i], "student")
            student_pool = teacher_pool = None
            if s[1] > t[1] or s[2] > t[2]:
                student_pool = _ratio(s[1:3], t[1:3])
            elif s[1:3] != t[1:3]:
                teacher_pool = _ratio(t[1:3], s[1:3])
            if s[1:3] != t[1:3] and student_pool is None and (
                    teacher_pool is None):
                raise ValueError(
                    "VariationalInformationDistillation average-pools the "
                    "larger feature map to the smaller one's spatial size, "
                    "which must divide it exactly. Received: teacher "
                    f"feature shape {t} ({self.teacher_taps[i]!r}), student "
                    f"feature shape {s} ({self.student_taps[i]!r}). Tap "
                    "layers whose sizes are equal or whole multiples."
                )
            regressors.append(self._regressor(i, s, t[3], student_pool,
                                              student.dtype_policy))
            log_scales.append(self.add_weight(
                name=f"log_scale_{i}", shape=(t[3],), dtype="float32",
                initializer=keras.initializers.Constant(
                    self._initial_log_scale),
                trainable=True))
            pools.append(teacher_pool)
        self.regressors = regressors
        self.log_scales = log_scales
        self._teacher_pools = pools

    def _regressor(self, index, student_shape, channels, pool, dtype):
        name = f"{self.name}_regressor_{index}"
        hidden = self.hidden_channels or channels
        layers = []
        if pool is not None:
            layers.append(keras.layers.AveragePooling2D(
                pool, dtype=dtype, name=f"{name}_pool"))
        for j, width in enumerate((hidden, hidden, channels), 1):
            layers.append(keras.layers.Conv2D(
                width, 1, use_bias=False, dtype=dtype,
                name=f"{name}_conv{j}"))
            if j < 3:
                layers.append(keras.layers.ReLU(dtype=dtype,
                                                name=f"{name}_relu{j}"))
        regressor = keras.Sequential(layers, name=name)
        regressor.build((None,) + tuple(student_shape[1:]))
        return regressor

    def predicted_mean(self, index, student_feature, training=False):
        """The regressed mean `μ(s)` of pair `index` (student side)."""
        if not self.regressors:
            raise ValueError(
                "VariationalInformationDistillation builds its regressor "
                "from the tapped shapes when it joins a distiller; this "
                "term has not been bound yet. Pass it to `tfkd.Distiller("
                "teacher, student, [term])` (or Keras's Distiller) first."
            )
        return self.regressors[index](self.student_feature(
            index, student_feature), training=training)

    def teacher_target(self, index, teacher_feature):
        """The teacher feature of pair `index`, pooled to the student's
        spatial size when it is larger."""
        pool = self._teacher_pools[index]
        if pool is None:
            return teacher_feature
        return tf.nn.avg_pool2d(teacher_feature, ksize=pool, strides=pool,
                                padding="VALID")

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        teachers = teacher_outputs if self._several else [teacher_outputs]
        students = student_outputs if self._several else [student_outputs]
        total = None
        for i, (t, s) in enumerate(zip(teachers, students)):
            mean = self.predicted_mean(i, s, training)
            value = vid_loss(self.teacher_target(i, t), mean,
                             self.log_scales[i])
            total = value if total is None else total + value
        return total

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_channels": self.hidden_channels,
                       "init_variance": self.init_variance})
        return config
