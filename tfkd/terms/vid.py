"""Variational information distillation (VID) as a knowledge term."""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_positive_int
from tfkd.losses.variational import vid_log_scale_for_variance
from tfkd.losses.variational import vid_loss
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


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
