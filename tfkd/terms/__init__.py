"""Knowledge terms: what each distillation method adds to the student's loss.

The term framework (`DistillationTerm`, `Method`, `LOGITS`) lives in
`tfkd.terms.base`; the terms themselves live with their methods, one module
per method in `tfkd.methods`, and are served here by name
(`tfkd.terms.KDDistillation` is `tfkd.losses.KDDistillation`, the public
spelling). A new method's module adds its terms without editing this file.
"""

import importlib
import pkgutil

import tfkd.methods as _methods
from tfkd.terms.base import LOGITS  # noqa: F401
from tfkd.terms.base import DistillationTerm  # noqa: F401
from tfkd.terms.base import Method  # noqa: F401


def import_all():
    """Imports every method module and every module of this package
    (registering their terms with Keras and the registry); a module that
    fails to import raises."""
    _methods.modules()
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
    # A method module added to `tfkd.methods` serves its terms as
    # `tfkd.terms.X` (and `tfkd.losses.X`) without editing this file.
    from tfkd.terms.base import term_classes

    if name.startswith("_"):
        raise AttributeError(
            f"module 'tfkd.terms' has no attribute {name!r}")
    module = _methods.old_path_module(__name__, name)
    if module is not None:
        return module
    import_all()
    for cls in term_classes():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'tfkd.terms' has no attribute {name!r}")
