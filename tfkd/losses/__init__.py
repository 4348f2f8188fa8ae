"""Distillation losses: pure tensor functions plus thin Keras wrappers.

Every function takes `(teacher_..., student_...)` in that order and returns
per-example values of shape `(batch,)` unless documented as batch-level.
Inputs of any float dtype are computed in float32, and every function also
runs inside `tf.function(jit_compile=True)`.
"""

from tfkd.losses.kd import KDLoss  # noqa: F401
from tfkd.losses.kd import SoftCrossEntropy  # noqa: F401
from tfkd.losses.kd import class_loss  # noqa: F401
from tfkd.losses.kd import cross_entropy  # noqa: F401
from tfkd.losses.kd import kd_loss  # noqa: F401
from tfkd.losses.kd import soft_cross_entropy  # noqa: F401
from tfkd.losses.kd import standardize_logits  # noqa: F401
from tfkd.losses.attention import AttentionTransferLoss  # noqa: F401
from tfkd.losses.attention import attention_map  # noqa: F401
from tfkd.losses.attention import attention_transfer_loss  # noqa: F401
from tfkd.losses.correlation import CorrelationLoss  # noqa: F401
from tfkd.losses.correlation import channel_gram  # noqa: F401
from tfkd.losses.correlation import correlation_loss  # noqa: F401
from tfkd.losses.correlation import spatial_gram  # noqa: F401
from tfkd.losses.correlation import standardize  # noqa: F401
from tfkd.losses.hint import HintLoss  # noqa: F401
from tfkd.losses.hint import hint_loss  # noqa: F401
from tfkd.losses.locality import locality_preserving_loss  # noqa: F401
from tfkd.losses.ktan import adversarial_loss  # noqa: F401
from tfkd.losses.ktan import discriminator_accuracy  # noqa: F401
from tfkd.losses.ktan import discriminator_loss  # noqa: F401
from tfkd.losses.ktan import ktan_mse_loss  # noqa: F401
# Logit, relational and contrastive methods of the wider literature.
from tfkd.losses.congruence import correlation_congruence_loss  # noqa: F401
from tfkd.losses.contrastive import contrastive_memory_update  # noqa: F401
from tfkd.losses.contrastive import contrastive_normalizer  # noqa: F401
from tfkd.losses.contrastive import (  # noqa: F401
    contrastive_representation_loss,
)
from tfkd.losses.dist import dist_loss  # noqa: F401
from tfkd.losses.dkd import dkd_loss  # noqa: F401
from tfkd.losses.probabilistic import (  # noqa: F401
    probabilistic_transfer_loss,
)
from tfkd.losses.relational import relational_loss  # noqa: F401
from tfkd.losses.selectivity import neuron_selectivity_loss  # noqa: F401
from tfkd.losses.similarity import similarity_preserving_loss  # noqa: F401
from tfkd.losses.variational import vid_log_scale_for_variance  # noqa: F401
from tfkd.losses.variational import vid_loss  # noqa: F401


# The knowledge terms, under Keras's `...Distillation` names (every
# `tfkd.terms` class, including ones added later). They build on the
# functions above (and on layers that use them), so they are imported on
# first access rather than here.
def __getattr__(name):
    if name.endswith("Distillation"):
        import tfkd.terms

        try:
            return getattr(tfkd.terms, name)
        except AttributeError:
            pass
    raise AttributeError(f"module 'tfkd.losses' has no attribute {name!r}")


def __dir__():
    # `dir(tfkd.losses)` lists every term too: each has this one public
    # spelling, `tfkd.losses.<Name>Distillation`.
    return sorted(set(globals()) | set(_term_names()))


def _term_names():
    import tfkd.terms

    return tfkd.terms.public_term_names()
