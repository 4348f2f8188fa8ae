"""Similarity-preserving knowledge distillation (SP) as a knowledge term."""

import keras

from tfkd.losses.similarity import similarity_preserving_loss
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


@keras.saving.register_keras_serializable(package="tfkd")
class SimilarityPreservingDistillation(DistillationTerm):
    """Similarity preserving: examples similar for the teacher stay similar.

    For each tapped pair, the `b × b` matrix of the batch's pairwise
    similarities (`G = Q·Qᵀ`, rows L2-normalised, `Q` the flattened
    activations) of the student is matched to the teacher's:
    `‖G_T − G_S‖²_F / b²` (`tfkd.losses.similarity_preserving_loss`),
    summed over pairs. A batch-level term: its value depends on the batch,
    sample weights do not apply, and under `tf.distribute` each replica
    compares its own examples. Feature shapes may differ (no adapter).

    The paper's `γ = 3000` is the term's weight: the method `sp` builds
    `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[3000.0], student_loss_weight=0.5)`, i.e.
    the paper's `CE + γ · L_SP` divided by 2.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"sp"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [SimilarityPreservingDistillation("conv2", "conv2")],
    ...     distillation_loss_weights=[3000.0])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'sp_loss', 'student_loss', 'total_loss']

    Reference:
        Tung & Mori, "Similarity-Preserving Knowledge Distillation",
        ICCV 2019; code: github.com/HobbitLong/RepDistiller
        (`distiller_zoo/SP.py`).
    """

    method = Method(
        name="sp",
        description="similarity preserving: match the batch's pairwise "
                    "similarity matrices",
        paper="Tung & Mori, ICCV 2019",
        weight=3000.0,
        search_space={
            "weight": {"type": "float", "min_value": 300.0,
                       "max_value": 30000.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    batch_level = True

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "sp")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)

    def pair_loss(self, teacher_feature, student_feature):
        return similarity_preserving_loss(teacher_feature, student_feature)
