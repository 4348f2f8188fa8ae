"""Hinton knowledge distillation (KD): the KD loss and terms, the soft-target
cross entropy and the class loss.

One module holds the method whole: its pure function(s), its knowledge
term(s) and the term's `method` record (see `tfkd.methods`).
"""

import keras
import tensorflow as tf

from tfkd.losses._utils import check_bool
from tfkd.losses._utils import check_live
from tfkd.losses._utils import check_min_size
from tfkd.losses._utils import check_positive
from tfkd.losses._utils import check_rank
from tfkd.losses._utils import check_same_shape
from tfkd.losses._utils import check_unit_interval
from tfkd.losses._utils import safe_l2_norm
from tfkd.losses._utils import to_float32
from tfkd import hyperparameters as hp
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


def standardize_logits(logits):
    """Z-scores each logit vector: `(z − mean(z)) / (std(z) + 1e-7)`.

    The pre-process of logit-standardised KD (Sun et al., CVPR 2024), as the
    authors' code computes it: the mean and the standard deviation are
    taken over the classes of each example, the standard deviation with
    Bessel's correction (`K − 1` in the denominator, PyTorch's default
    `std`), and `1e-7` is added to it, so a constant logit vector becomes
    all zeros. Read as the population standard deviation (`1/K`), the
    paper's `σ` would differ from the code's by the constant factor
    `sqrt(K / (K − 1))`, which acts like a slightly different temperature;
    tfkd follows the code.

    Args:
        logits: Tensor of shape `(batch, num_classes)`, `num_classes >= 2`.

    Returns:
        Tensor of the same shape, float32.

    Example:

    >>> z = standardize_logits([[1.0, 2.0, 3.0]])
    >>> [round(float(v), 4) for v in z[0]]
    [-1.0, 0.0, 1.0]

    Reference:
        Sun, Ren, Li, Wang, Cao, "Logit Standardization in Knowledge
        Distillation", CVPR 2024; code:
        https://github.com/sunshangquan/logit-standardization-KD
        (`mdistiller/distillers/KD.py`, `normalize`).
    """
    z = to_float32(logits, "logits")
    check_rank(z, "logits", min_rank=1, layout="(..., num_classes)")
    return _standardize(z, "logits")


def _standardize(z, name):
    """Float32 `z` -> per-row z-scores (see `standardize_logits`)."""
    check_min_size(
        z, name, -1, 2, "classes",
        "A standard deviation needs at least two logits per example.")
    num_classes = tf.cast(tf.shape(z)[-1], tf.float32)
    centered = z - tf.reduce_mean(z, axis=-1, keepdims=True)
    # safe_l2_norm: a constant row has std 0, whose sqrt would give a NaN
    # gradient; the norm's gradient there is 0 instead.
    std = safe_l2_norm(centered, axis=-1) / tf.sqrt(
        tf.maximum(num_classes - 1.0, 1.0))
    return centered / (std[..., None] + _STANDARDIZE_EPSILON)


_STANDARDIZE_EPSILON = 1e-7


def kd_loss(teacher_logits, student_logits, temperature=4.0, *,
            standardize_logits=False):
    """Hinton knowledge-distillation loss, per example.

    Computes `T² · KL(softmax(t / T) ‖ softmax(s / T))` for each example.
    The `T²` factor keeps the gradient magnitude independent of `T`. KL and
    soft-target cross entropy differ only by the teacher's entropy, a
    constant for the student; KL is reported because it is 0 at a perfect
    match.

    With `standardize_logits=True` (Sun et al., CVPR 2024) each logit
    vector of the teacher and of the student is first z-scored, `(z −
    mean(z)) / (std(z) + 1e-7)` over its classes (see
    `tfkd.losses.standardize_logits`), so the student matches the teacher's
    logit *relations* rather than their scale; `T` then acts as a base
    temperature (the paper's CIFAR-100 runs use 2) and the `T²` factor is
    kept, as the authors' code does.

    Args:
        teacher_logits: Tensor of shape `(batch, num_classes)`.
        student_logits: Tensor of the same shape.
        temperature: Softening temperature `T > 0`.
        standardize_logits: Whether to z-score both logit vectors first
            (needs `num_classes >= 2`).

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = [[2.0, 0.0, -1.0]]
    >>> s = [[2.0, 0.0, -1.0]]
    >>> float(kd_loss(t, s, temperature=4.0)[0])
    0.0

    A student whose logits are the teacher's, scaled and shifted, has a KD
    loss but no standardised KD loss:

    >>> s = [[5.0, 1.0, -1.0]]
    >>> round(float(kd_loss(t, s, temperature=1.0)[0]), 4)
    0.2052
    >>> round(float(kd_loss(t, s, temperature=1.0,
    ...                     standardize_logits=True)[0]), 4)
    0.0

    Reference:
        Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural
        Network", 2015. Sun, Ren, Li, Wang, Cao, "Logit Standardization in
        Knowledge Distillation", CVPR 2024.
    """
    temperature = check_live(check_positive, temperature, "temperature")
    standardize = check_bool(standardize_logits, "standardize_logits")
    t = to_float32(teacher_logits, "teacher_logits")
    s = to_float32(student_logits, "student_logits")
    check_same_shape(t, s, "teacher_logits", "student_logits")
    return _kd_loss(t, s, temperature, standardize)


def _kd_loss(t, s, temperature, standardize):
    """`kd_loss` of float32 logits whose arguments are checked."""
    if standardize:
        t = _standardize(t, "teacher_logits")
        s = _standardize(s, "student_logits")
    log_p_t = tf.nn.log_softmax(t / temperature, axis=-1)
    log_p_s = tf.nn.log_softmax(s / temperature, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    # KL >= 0 mathematically; clip the float round-off below zero.
    return temperature**2 * tf.maximum(kl, 0.0)


def soft_cross_entropy(teacher_logits, student_logits, temperature=1.0):
    """Cross entropy `H(softmax(t / T), softmax(s / T))`, per example.

    The soft-target loss used by the LP (eq. 8) and STC (eq. 4) papers, with
    no `T²` factor (the papers use none).

    Args:
        teacher_logits: Tensor of shape `(batch, num_classes)`: the target.
        student_logits: Tensor of the same shape: the prediction.
        temperature: Softening temperature `T > 0`.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> t = [[0.0, 0.0]]
    >>> round(float(soft_cross_entropy(t, t)[0]), 4)  # log(2)
    0.6931
    """
    temperature = check_live(check_positive, temperature, "temperature")
    t = to_float32(teacher_logits, "teacher_logits")
    s = to_float32(student_logits, "student_logits")
    check_same_shape(t, s, "teacher_logits", "student_logits")
    p_t = tf.nn.softmax(t / temperature, axis=-1)
    return -tf.reduce_sum(p_t * tf.nn.log_softmax(s / temperature, axis=-1), -1)


def cross_entropy(labels, logits):
    """Cross entropy of logits against integer or one-hot labels, per example.

    Args:
        labels: Integer class ids of shape `(batch,)` or `(batch, 1)`, or
            one-hot / probability targets of shape `(batch, num_classes)`.
        logits: Tensor of shape `(batch, num_classes)`.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> round(float(cross_entropy([0], [[0.0, 0.0]])[0]), 4)
    0.6931
    """
    logits = to_float32(logits, "logits")
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == logits.shape.rank and labels.shape[-1] not in (1,):
        return tf.nn.softmax_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.float32), logits=logits
        )
    if labels.shape.rank == logits.shape.rank:
        labels = tf.squeeze(labels, axis=-1)
    if labels.dtype.is_floating:
        labels = tf.cast(labels, tf.int64)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits
    )


def class_loss(labels, teacher_logits, student_logits, alpha=0.3,
               temperature=4.0):
    """The correlation paper's class loss (eq. 5), per example.

    `alpha · CE(y, s) + (1 − alpha) · kd_loss(t, s, T)`. `alpha = 1` is the
    plain cross entropy (no KD term); the paper's "+KD" rows use 0.3.

    Args:
        labels: Integer labels `(batch,)` or one-hot `(batch, num_classes)`.
        teacher_logits: Tensor of shape `(batch, num_classes)`.
        student_logits: Tensor of the same shape.
        alpha: Weight of the cross entropy, in `[0, 1]`.
        temperature: KD temperature `T > 0`.

    Returns:
        Tensor of shape `(batch,)`, float32.

    Example:

    >>> y = [1]
    >>> t = [[0.0, 3.0]]
    >>> s = [[0.0, 3.0]]
    >>> round(float(class_loss(y, t, s, alpha=1.0)[0]), 4)
    0.0486

    Reference:
        Wang, Xu, Xu, Yu, Wang. "Student-Centric Network Learning for
        Improved Knowledge Transfer" (correlation-based learning), 2019,
        eq. 5.
    """
    alpha = check_unit_interval(alpha, "alpha")
    ce = cross_entropy(labels, student_logits)
    if alpha == 1.0:
        return ce
    kd = kd_loss(teacher_logits, student_logits, temperature=temperature)
    return alpha * ce + (1.0 - alpha) * kd


@keras.saving.register_keras_serializable(package="tfkd")
class KDLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `kd_loss`.

    `y_true` are the teacher's logits and `y_pred` the student's. Reduction
    and sample weights follow Keras's `Loss` base class.

    Args:
        temperature: Softening temperature `T > 0`.
        standardize_logits: Whether to z-score both logit vectors first
            (logit-standardised KD, see `kd_loss`).
        reduction: Keras reduction, `"sum_over_batch_size"` by default.
        name: Name of the loss.

    Example:

    >>> loss = KDLoss(temperature=2.0)
    >>> float(loss([[1.0, 0.0]], [[1.0, 0.0]]))
    0.0
    """

    def __init__(self, temperature=4.0, reduction="sum_over_batch_size",
                 name="kd_loss", dtype=None, standardize_logits=False):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")
        self.standardize_logits = check_bool(standardize_logits,
                                             "standardize_logits")

    def call(self, y_true, y_pred):
        return kd_loss(y_true, y_pred, temperature=self.temperature,
                       standardize_logits=self.standardize_logits)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature,
                       "standardize_logits": self.standardize_logits})
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class SoftCrossEntropy(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `soft_cross_entropy`.

    Args:
        temperature: Softening temperature `T > 0`.
        reduction: Keras reduction, `"sum_over_batch_size"` by default.
        name: Name of the loss.

    Example:

    >>> loss = SoftCrossEntropy()
    >>> round(float(loss([[0.0, 0.0]], [[0.0, 0.0]])), 4)
    0.6931
    """

    def __init__(self, temperature=1.0, reduction="sum_over_batch_size",
                 name="soft_cross_entropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.temperature = check_positive(temperature, "temperature")

    def call(self, y_true, y_pred):
        return soft_cross_entropy(y_true, y_pred, temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


class _LogitTerm(DistillationTerm):
    """A term on the logits of both networks (no layer taps)."""

    requires_matching_logits = True

    def __init__(self, **kwargs):
        for key in ("teacher_layer_name", "student_layer_name"):
            if kwargs.get(key) is not None:
                raise TypeError(
                    f"{type(self).__name__} compares the logits and taps no "
                    f"layer. Received: {key}={kwargs[key]!r}. Use a feature "
                    "term (e.g. `tfkd.losses.HintDistillation`) to distil "
                    "an intermediate layer."
                )
            kwargs.pop(key, None)
        super().__init__(**kwargs)

    def build_parts(self, teacher, student, teacher_shapes, student_shapes):
        t, s = teacher_shapes[0], student_shapes[0]
        if t is not None and s is not None and tuple(t[1:]) != tuple(s[1:]):
            raise ValueError(
                f"{type(self).__name__}: the teacher's and student's logits "
                f"must have the same shape. Received: teacher output shape "
                f"{tuple(t[1:])}, student output shape {tuple(s[1:])}. Give "
                "the student a final layer with as many units as the teacher "
                "has classes."
            )

    def get_config(self):
        config = super().get_config()
        config.pop("teacher_layer_name", None)
        config.pop("student_layer_name", None)
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class KDDistillation(_LogitTerm):
    """Hinton knowledge distillation on the logits, as a knowledge term.

    Per example, `T² · KL(softmax(t / T) ‖ softmax(s / T))`
    (`tfkd.losses.kd_loss`). `temperature` is a live hyperparameter: assign
    it (`term.temperature = 2.0`) or schedule it with
    `tfkd.callbacks.HyperparameterScheduler` during training.

    With `standardize_logits=True` (logit-standardised KD, Sun et al.,
    CVPR 2024) both logit vectors are z-scored over their classes before
    the softmax (`tfkd.losses.standardize_logits`: Bessel-corrected
    standard deviation plus `1e-7`, as the authors' code), so the student
    matches the teacher's logit relations rather than their scale; `T`
    is then the base temperature (the paper uses 2 on CIFAR-100) and the
    `T²` factor is kept, as in the authors' code.

    Args:
        temperature: Softening temperature `T > 0`.
        standardize_logits: Whether to z-score both logit vectors first
            (needs at least 2 classes).
        **kwargs: Layer arguments; `name` (default `"kd"`) names the term's
            metric (`kd_loss`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher"),
    ...     testing.tiny_conv_model("student"),
    ...     distillation_losses=[KDDistillation(temperature=2.0)],
    ...     student_loss_weight=0.5)
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'kd_loss', 'loss', 'student_loss', 'total_loss']

    A student whose logits are the teacher's, scaled, has no standardised
    KD loss:

    >>> term = KDDistillation(temperature=2.0, standardize_logits=True)
    >>> loss = term.compute_loss([[2.0, 0.0, -1.0]], [[6.0, 0.0, -3.0]])
    >>> round(float(loss), 4)
    0.0

    Reference:
        Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural
        Network", NIPS Deep Learning Workshop 2015. Sun, Ren, Li, Wang,
        Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024.
    """

    method = Method(
        name="kd",
        description="Hinton KD: match the teacher's softened logits",
        paper="Hinton, Vinyals, Dean 2015",
        preset="tfkd.distillers.base:Distiller",
        uses_features=False,
        # Hinton et al.: T in 1-10 (2-20 in their MNIST runs); alpha
        # weighs the cross entropy with the labels. Searched: the ranges
        # where the digits students train well in a few trials -- alpha
        # near 0 (the labels ignored) or 1 (no KD) and T near 10 (soft
        # targets a 1.5K-parameter student cannot follow) waste trials.
        # alpha reaches 0.1 (mdistiller's and RepDistiller's CE weight):
        # with few labels and a short budget, T = 1 with alpha = 0.1 is
        # what gains (docs/methods/kd.md).
        search_space={
            "alpha": {"type": "float", "min_value": 0.1, "max_value": 0.9},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 6.0, "sampling": "log"},
        },
    )

    temperature = hp.Hyperparameter(hp.positive, doc="Softening temperature.")

    def __init__(self, temperature=4.0, standardize_logits=False, **kwargs):
        kwargs.setdefault("name", "kd")
        super().__init__(**kwargs)
        self.temperature = temperature
        self.standardize_logits = check_bool(standardize_logits,
                                             "standardize_logits")

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        if self.shapes_checked:  # Checked once, by `bind`.
            return _kd_loss(tf.cast(teacher_outputs, tf.float32),
                            tf.cast(student_outputs, tf.float32),
                            self.temperature, self.standardize_logits)
        return kd_loss(teacher_outputs, student_outputs,
                                 self.temperature,
                                 standardize_logits=self.standardize_logits)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        config["standardize_logits"] = self.standardize_logits
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class SoftTargetDistillation(_LogitTerm):
    """Soft-target cross entropy `H(softmax(t/T), softmax(s/T))`, per example.

    Unlike `KDDistillation` there is no `T²` factor and the value includes
    the teacher's entropy (`tfkd.losses.soft_cross_entropy`): it is the
    soft term of the LP paper's eq. 8 (its `λ · H(P_T^τ, P_S^τ)`).

    Args:
        temperature: Softening temperature `T > 0` (LP paper: 0.5).
        **kwargs: Layer arguments; `name` defaults to `"soft"` (metric
            `soft_loss`).

    Example:

    >>> term = SoftTargetDistillation(temperature=1.0)
    >>> round(float(term.compute_loss([[0.0, 0.0]], [[0.0, 0.0]])), 4)
    0.6931

    Reference:
        Chen, Wang, Xu, Xu, Tao. "Learning Student Networks via Feature
        Embedding", IEEE TNNLS 2020, eq. 8.
    """

    temperature = hp.Hyperparameter(hp.positive, doc="Softening temperature.")

    def __init__(self, temperature=1.0, **kwargs):
        kwargs.setdefault("name", "soft")
        super().__init__(**kwargs)
        self.temperature = temperature

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        return soft_cross_entropy(teacher_outputs, student_outputs,
                                            self.temperature)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config


#: The teacher's soft targets that the feature-only methods (those whose
#: record has `soft_targets=True`) add to their default objective, as the
#: LP paper's eq. 8 adds them to its LP term: `SoftTargetDistillation` at
#: temperature `τ = 0.5` with weight `λ = 2` in the paper's
#: `CE + λ · H(P_T^τ, P_S^τ) + ...` (LP's own defaults, `lam` and
#: `temperature` of `tfkd.LocalityPreservingDistiller`, read these too).
SOFT_TARGETS = {"temperature": 0.5, "weight": 2.0}
