"""Neuron selectivity transfer (NST) as a knowledge term."""

import keras

from tfkd.losses.selectivity import neuron_selectivity_loss
from tfkd.terms.base import SPATIAL
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


@keras.saving.register_keras_serializable(package="tfkd")
class NeuronSelectivityDistillation(DistillationTerm):
    """Neuron selectivity transfer: match the distributions of the
    channels' activation patterns (MMD).

    Each channel of a tapped feature map is one "neuron"; its activation
    map over the `H·W` positions, L2-normalised, is one sample of the
    network's selectivity patterns. Per example and tapped pair
    (`tfkd.losses.neuron_selectivity_loss`), the squared maximum mean
    discrepancy between the teacher's and the student's samples with the
    polynomial kernel `k(x, y) = (xᵀy)²`:

    `L = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') − 2 ·
    mean_{i,j} k(s_j, t_i)`.

    Channel counts may differ; spatial sizes must match: `adapter=True`
    resizes a student map of another size bilinearly (a
    `tfkd.layers.FeatureAdapter` owned by the term; RepDistiller
    average-pools the larger map instead), else binding raises a
    `ValueError` naming both shapes.

    The paper's objective is `CE + λ/2 · L_MMD²`; the method `nst` weighs
    the term with 50 (`λ/2`), RepDistiller's and mdistiller's CIFAR-100
    weight: `tfkd.Distiller(teacher, student, [term],
    distillation_loss_weights=[50.0], student_loss_weight=0.5)`, i.e. `CE
    + 50 · L_NST` divided by 2.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        adapter: Resize a student map whose spatial size differs.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"nst"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [NeuronSelectivityDistillation("conv2", "conv2")],
    ...     distillation_loss_weights=[50.0])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'nst_loss', 'student_loss', 'total_loss']

    Reference:
        Huang & Wang, "Like What You Like: Knowledge Distill via Neuron
        Selectivity Transfer", arXiv:1707.01219, 2017, eqs. 4-6; code:
        github.com/TuSimple/neuron-selectivity-transfer
        (`symbol/transfer.py`).
    """

    method = Method(
        name="nst",
        description="neuron selectivity transfer: MMD between the "
                    "channels' activation patterns",
        paper="Huang & Wang, 2017",
        build_defaults={"adapter": True},
        weight=50.0,
        student_loss_weight=0.5,
        search_space={
            "weight": {"type": "float", "min_value": 5.0,
                       "max_value": 500.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    feature_requirements = (SPATIAL,)

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 adapter=False, guided_channels=None, **kwargs):
        kwargs.setdefault("name", "nst")
        super().__init__(teacher_layer_name, student_layer_name,
                         adapter=adapter, guided_channels=guided_channels,
                         **kwargs)

    def pair_loss(self, teacher_feature, student_feature):
        return neuron_selectivity_loss(teacher_feature, student_feature)
