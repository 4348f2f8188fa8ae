"""Decoupled knowledge distillation (DKD) as a knowledge term."""

import keras

from tfkd import hyperparameters as hp
from tfkd.losses.dkd import dkd_loss
from tfkd.terms.base import Method
from tfkd.terms.kd import _LogitTerm


@keras.saving.register_keras_serializable(package="tfkd")
class DKDDistillation(_LogitTerm):
    """Decoupled KD: target-class and non-target-class KD, weighted apart.

    Hinton's KD split at each example's ground-truth class `y`
    (`tfkd.losses.dkd_loss`): TCKD, the KL divergence between the binary
    distributions `(p_y, 1 − p_y)` of teacher and student, and NCKD, the KL
    divergence between their distributions over the non-target classes,
    both softened by `T` and multiplied by `T²` (the authors' code):

    `L = T² · (alpha · TCKD + beta · NCKD)`, per example.

    The term reads the logits of both networks and the batch's labels
    (integer ids or one-hot). An example without a target class (label
    `-1`, tfkd's mark of an unlabelled example) has no split: its value is
    0. `alpha`, `beta` and `temperature` are live hyperparameters
    (`tfkd.hyperparameters.Hyperparameter`): assign them, or schedule them
    with `tfkd.callbacks.HyperparameterScheduler`, during training.

    The authors' objective is `CE + w(epoch) · L_DKD` with a linear
    warm-up `w(epoch) = min(epoch / 20, 1)`: the method `dkd` builds
    `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[1.0], student_loss_weight=0.5)`, i.e. that
    objective divided by 2. The warm-up belongs to the term: every
    `fit` of a distiller holding it ramps the term's weight (`dkd/weight`,
    logged in the history) linearly from 0 to the weight it had at the
    first `fit` over `warmup_epochs` epochs
    (`tfkd.callbacks.linear_warmup`; Keras counts epochs from 0, so epoch
    0 trains at weight 0). `warmup_epochs=0` turns it off.

    Args:
        alpha: Weight of TCKD, `>= 0` (paper and code: 1).
        beta: Weight of NCKD, `>= 0` (code's CIFAR-100 default 8; the
            paper tunes it per teacher-student pair, 0.5 on ImageNet).
        temperature: Softening temperature `T > 0` (CIFAR-100: 4,
            ImageNet: 1).
        warmup_epochs: Epochs of the linear warm-up of the term's weight,
            an int `>= 0` (the authors' code: 20; 0: no warm-up).
        **kwargs: Layer arguments; `name` (default `"dkd"`) names the
            term's metric (`dkd_loss`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [DKDDistillation(alpha=1.0, beta=8.0, temperature=4.0)],
    ...     distillation_loss_weights=[1.0], student_loss_weight=0.5)
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> history = distiller.fit(x, y, epochs=2, verbose=0)
    >>> history.history["dkd/weight"]
    [0.0, 0.05]

    Reference:
        Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation",
        CVPR 2022; code: github.com/megvii-research/mdistiller
        (`mdistiller/distillers/DKD.py`).
    """

    method = Method(
        name="dkd",
        description="decoupled KD: target-class and non-target-class KD "
                    "weighted apart",
        paper="Zhao et al., CVPR 2022",
        uses_features=False,
        weight=1.0,
        student_loss_weight=0.5,
        # The paper keeps alpha = 1 and varies beta (1-10 on CIFAR-100,
        # 0.5 on ImageNet) and T (4 on CIFAR-100, 1 on ImageNet).
        search_space={
            "beta": {"type": "float", "min_value": 0.5, "max_value": 10.0,
                     "sampling": "log"},
            "temperature": {"type": "float", "min_value": 1.0,
                            "max_value": 8.0},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )

    alpha = hp.Hyperparameter(hp.non_negative, doc="Weight of TCKD.")
    beta = hp.Hyperparameter(hp.non_negative, doc="Weight of NCKD.")
    temperature = hp.Hyperparameter(hp.positive, doc="Softening temperature.")

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0,
                 warmup_epochs=20, **kwargs):
        kwargs.setdefault("name", "dkd")
        if isinstance(warmup_epochs, bool) or not isinstance(
            warmup_epochs, int
        ) or warmup_epochs < 0:
            raise ValueError(
                "`warmup_epochs` must be an int >= 0 (0: no warm-up). "
                f"Received: warmup_epochs={warmup_epochs!r}."
            )
        super().__init__(**kwargs)
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.warmup_epochs = warmup_epochs
        # The weight the warm-up ramps to: read at the first `fit` (a later
        # `fit` continues the same ramp instead of ramping to the value the
        # ramp left).
        self._warmup_target = None

    def training_callbacks(self, distiller):
        """DKD's warm-up: a `HyperparameterScheduler` ramping
        `<name>/weight` over `warmup_epochs` (none if 0)."""
        if not self.warmup_epochs:
            return []
        from tfkd.callbacks import HyperparameterScheduler
        from tfkd.callbacks import linear_warmup

        path = f"{self.name}/weight"
        if self._warmup_target is None:
            self._warmup_target = float(distiller.get_hyperparameter(path))
        return [HyperparameterScheduler(
            {path: linear_warmup(self._warmup_target, self.warmup_epochs)})]

    def call(self, teacher_outputs, student_outputs, labels=None,
             training=False):
        if labels is None:
            raise ValueError(
                "DKDDistillation splits each example's classes at its label "
                "and needs the batch's labels. Received: labels=None. Pass "
                "labels (`fit(x, y)`, `compute_terms(x, y)`, or "
                "`compute_loss(teacher_logits, student_logits, labels=y)`); "
                "-1 marks an unlabelled example (its value is 0)."
            )
        return dkd_loss(teacher_outputs, student_outputs, labels,
                        alpha=self.alpha, beta=self.beta,
                        temperature=self.temperature)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "beta": self.beta,
                       "temperature": self.temperature,
                       "warmup_epochs": self.warmup_epochs})
        return config
