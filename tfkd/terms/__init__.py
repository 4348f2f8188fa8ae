"""Knowledge terms: what each distillation method adds to the student's loss.

Every module in this package defines terms (`DistillationTerm` subclasses);
`tfkd.distillers.registry` imports them all, so a new method is one new
module here plus its test.
"""

from tfkd.terms.base import LOGITS  # noqa: F401
from tfkd.terms.base import DistillationTerm  # noqa: F401
from tfkd.terms.base import Method  # noqa: F401
from tfkd.terms.adversarial import AdversarialDistillation  # noqa: F401
from tfkd.terms.adversarial import RegressedFeatureDistillation  # noqa: F401
from tfkd.terms.attention import AttentionDistillation  # noqa: F401
from tfkd.terms.collaboration import CollaborationDistillation  # noqa: F401
from tfkd.terms.correlation import CorrelationDistillation  # noqa: F401
from tfkd.terms.hint import HintDistillation  # noqa: F401
from tfkd.terms.kd import KDDistillation  # noqa: F401
from tfkd.terms.kd import SoftTargetDistillation  # noqa: F401
from tfkd.terms.locality import LocalityPreservingDistillation  # noqa: F401
