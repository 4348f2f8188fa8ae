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


def import_all():
    """Imports every term module of this package (registering its terms
    with Keras and the registry); a module that fails to import raises."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def public_term_names():
    """Names of every public term class (`...Distillation`), sorted: the
    names `tfkd.losses` lists and serves."""
    from tfkd.terms.base import term_classes

    import_all()
    return sorted({cls.__name__ for cls in term_classes()
                   if not cls.__name__.startswith("_")
                   and cls.__name__.endswith("Distillation")})


def __getattr__(name):
    # A term module added to this package is reachable as `tfkd.terms.X`
    # (and `tfkd.losses.X`) without editing this file.
    from tfkd.terms.base import term_classes

    import_all()
    for cls in term_classes():
        if cls.__name__ == name and not name.startswith("_"):
            return cls
    raise AttributeError(f"module 'tfkd.terms' has no attribute {name!r}")
