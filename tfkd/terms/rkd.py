"""Relational knowledge distillation (RKD) as a knowledge term."""

import keras

from tfkd import hyperparameters as hp
from tfkd.losses.relational import relational_loss
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


@keras.saving.register_keras_serializable(package="tfkd")
class RelationalDistillation(DistillationTerm):
    """Relational KD: the student keeps the distances and angles between
    the teacher's embeddings of a batch.

    For each tapped pair (`tfkd.losses.relational_loss`), with `h` the
    Huber (smooth L1) loss:

    `L = distance_weight · mean_{i,j} h(ψ_D^S(i, j) − ψ_D^T(i, j)) +
    angle_weight · mean_{i,j,k} h(ψ_A^S(i, j, k) − ψ_A^T(i, j, k))`,

    `ψ_D` the pair distances divided by their mean over the batch and
    `ψ_A` the cosine of the angle at `e_i` between `e_j` and `e_k`; means
    over all ordered pairs and triplets, as the authors' code. Features
    are flattened per example (tap the pooled embedding, the penultimate
    layer, as the paper does); teacher and student sizes may differ, no
    adapter. A batch-level term: sample weights do not apply, and under
    `tf.distribute` each replica relates its own examples. The teacher
    side carries no gradient. `distance_weight` and `angle_weight` are
    live hyperparameters. The angle term costs `O(b²·d + b³)` memory.

    The paper's objective is `CE + λ_D · L_D + λ_A · L_A`; the weights 25
    and 50 are those of RepDistiller and mdistiller on CIFAR-100, tuned for
    the means: the method `rkd` builds `tfkd.Distiller(teacher, student,
    [term], distillation_loss_weights=[1.0], student_loss_weight=0.5)`,
    i.e. that objective divided by 2.

    Args:
        distance_weight: `λ_D >= 0`, weight of the distance-wise term.
        angle_weight: `λ_A >= 0`, weight of the angle-wise term.
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"rkd"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [RelationalDistillation(25.0, 50.0, "pool", "pool")])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'rkd_loss', 'student_loss', 'total_loss']

    Reference:
        Park, Kim, Lu, Cho, "Relational Knowledge Distillation", CVPR
        2019, eqs. 3-7; code: github.com/lenscloth/RKD (`metric/loss.py`)
        and github.com/HobbitLong/RepDistiller (`distiller_zoo/RKD.py`).
    """

    method = Method(
        name="rkd",
        embedding=True,
        description="relational KD: distances and angles between the "
                    "batch's embeddings",
        paper="Park et al., CVPR 2019",
        weight=1.0,
        student_loss_weight=0.5,
        # RepDistiller's 25 / 50 for the means (ratio 1:2 as the paper's
        # lambda_D = 1, lambda_A = 2 for sums), searched around them.
        search_space={
            "distance_weight": {"type": "float", "min_value": 5.0,
                                "max_value": 125.0, "sampling": "log"},
            "angle_weight": {"type": "float", "min_value": 10.0,
                             "max_value": 250.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    batch_level = True

    distance_weight = hp.Hyperparameter(
        hp.non_negative, doc="Weight of the distance-wise term.")
    angle_weight = hp.Hyperparameter(
        hp.non_negative, doc="Weight of the angle-wise term.")

    def __init__(self, distance_weight=25.0, angle_weight=50.0,
                 teacher_layer_name=None, student_layer_name=None, *,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "rkd")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def pair_loss(self, teacher_feature, student_feature):
        return relational_loss(teacher_feature, student_feature,
                               distance_weight=self.distance_weight,
                               angle_weight=self.angle_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"distance_weight": self.distance_weight,
                       "angle_weight": self.angle_weight})
        return config
