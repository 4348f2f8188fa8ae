"""Logit terms: Hinton KD and the soft-target cross entropy."""

import keras

from tfkd import hyperparameters as hp
from tfkd.terms.base import check_bool
from tfkd.losses import kd as kd_losses
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


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
        search_space={
            "alpha": {"type": "float", "min_value": 0.3, "max_value": 0.9},
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
        return kd_losses.kd_loss(teacher_outputs, student_outputs,
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
        return kd_losses.soft_cross_entropy(teacher_outputs, student_outputs,
                                            self.temperature)

    def get_config(self):
        config = super().get_config()
        config["temperature"] = self.temperature
        return config
