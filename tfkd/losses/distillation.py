"""tfkd's knowledge terms under Keras's `...Distillation` names.

The terms live in `tfkd.terms`; they are `keras.distillation.
DistillationLoss` objects, so they also run inside Keras's own
`keras.distillation.Distiller` (which trains a term's adapter or regressor
too, as a tracked layer). Re-exported here so `tfkd.losses` holds every
loss, as Keras's naming suggests.
"""

from tfkd.terms.adversarial import AdversarialDistillation  # noqa: F401
from tfkd.terms.adversarial import RegressedFeatureDistillation  # noqa: F401
from tfkd.terms.attention import AttentionDistillation  # noqa: F401
from tfkd.terms.collaboration import CollaborationDistillation  # noqa: F401
from tfkd.terms.correlation import CorrelationDistillation  # noqa: F401
from tfkd.terms.hint import HintDistillation  # noqa: F401
from tfkd.terms.kd import KDDistillation  # noqa: F401
from tfkd.terms.kd import SoftTargetDistillation  # noqa: F401
from tfkd.terms.locality import LocalityPreservingDistillation  # noqa: F401
