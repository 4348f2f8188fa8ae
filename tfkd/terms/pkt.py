"""Probabilistic knowledge transfer (PKT) as a knowledge term."""

import keras

from tfkd.losses.probabilistic import probabilistic_transfer_loss
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method


@keras.saving.register_keras_serializable(package="tfkd")
class ProbabilisticTransferDistillation(DistillationTerm):
    """Probabilistic knowledge transfer: match the batch's conditional
    similarity distributions.

    For each tapped pair (`tfkd.losses.probabilistic_transfer_loss`), each
    network's embeddings define, under the cosine kernel `K(a, b) =
    (cos(a, b) + 1) / 2`, the conditional probabilities `P[i, j] = K(f_i,
    f_j) / Σ_k K(f_i, f_k)` over the examples of the batch, and

    `L = mean_{i,j} P_T[i, j] · log((P_T[i, j] + eps) / (P_S[i, j] +
    eps))`, `eps = 1e-7`,

    as the authors' code (which keeps `j = i` and averages over all `b²`
    entries; the paper excludes `j = i` and sums). Features are flattened
    per example (tap the pooled embedding, as the authors do); teacher and
    student sizes may differ, no adapter. A batch-level term: sample
    weights do not apply, and under `tf.distribute` each replica compares
    its own examples.

    The method `pkt` weighs the term with 30000, RepDistiller's and
    mdistiller's CIFAR-100 weight for this mean: `tfkd.Distiller(teacher,
    student, [term], distillation_loss_weights=[30000.0],
    student_loss_weight=0.5)`, i.e. `CE + 30000 · L_PKT` divided by 2.

    Args:
        teacher_layer_name: Teacher layer (or list of layers) to tap.
        student_layer_name: Student layer(s), paired in order.
        guided_channels: See `tfkd.terms.DistillationTerm`.
        **kwargs: Layer arguments (`name`, default `"pkt"`).

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> distiller = tfkd.Distiller(
    ...     testing.tiny_conv_model("teacher", width=8),
    ...     testing.tiny_conv_model("student", width=4),
    ...     [ProbabilisticTransferDistillation("pool", "pool")],
    ...     distillation_loss_weights=[30000.0])
    >>> distiller.compile(optimizer="adam")
    >>> x, y = testing.random_images(16)
    >>> sorted(distiller.fit(x, y, verbose=0).history)
    ['distillation_loss', 'loss', 'pkt_loss', 'student_loss', 'total_loss']

    Reference:
        Passalis & Tefas, "Learning Deep Representations with
        Probabilistic Knowledge Transfer", ECCV 2018, eqs. 6-10; code:
        github.com/passalis/probabilistic_kt (`nn/pkt.py`).
    """

    method = Method(
        name="pkt",
        embedding=True,
        description="probabilistic knowledge transfer: match the batch's "
                    "cosine-similarity distributions",
        paper="Passalis & Tefas, ECCV 2018",
        weight=30000.0,
        student_loss_weight=0.5,
        search_space={
            "weight": {"type": "float", "min_value": 3000.0,
                       "max_value": 300000.0, "sampling": "log"},
            "student_loss_weight": {"type": "float", "min_value": 0.1,
                                    "max_value": 0.9},
        },
    )
    batch_level = True

    def __init__(self, teacher_layer_name=None, student_layer_name=None, *,
                 guided_channels=None, **kwargs):
        kwargs.setdefault("name", "pkt")
        super().__init__(teacher_layer_name, student_layer_name,
                         guided_channels=guided_channels, **kwargs)

    def pair_loss(self, teacher_feature, student_feature):
        return probabilistic_transfer_loss(teacher_feature, student_feature)
