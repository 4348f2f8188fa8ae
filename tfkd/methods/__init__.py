"""The distillation methods: one module per method.

A method's module holds all of it: its pure tensor functions (the
objective, NumPy-checked), its knowledge term(s) (`DistillationTerm`
subclasses, whose constructors alone hold the defaults) and the term's
record (`method = tfkd.terms.Method(...)`), which `tfkd.distillers.registry`
reads. Close methods may share a module (`ktan` serves KTAN and DLN).

Nothing lists the modules: `tfkd.losses` serves every public function and
class of every module found here, `tfkd.terms` every term, and the registry
every record. A new method is one new module here, its test file and its
docs page; no other file is edited.

The method modules import from `tfkd.terms.base` (the term framework),
`tfkd.losses._utils` (argument checks) and each other, never from another
part of `tfkd.terms`.
"""

import importlib
import importlib.abc
import importlib.util
import inspect
import pkgutil
import sys

#: Module paths of tfkd versions before this package, and the method
#: module each now names (user code and pickled references keep working);
#: `tfkd.losses.distillation` served the terms by name, as `tfkd.losses`.
OLD_PATHS = {
    "tfkd.losses.distillation": None,
    "tfkd.losses.kd": "kd", "tfkd.terms.kd": "kd",
    "tfkd.losses.attention": "attention",
    "tfkd.terms.attention": "attention",
    "tfkd.losses.correlation": "correlation",
    "tfkd.terms.correlation": "correlation",
    "tfkd.losses.hint": "fitnet", "tfkd.terms.hint": "fitnet",
    "tfkd.losses.locality": "lp", "tfkd.terms.locality": "lp",
    "tfkd.losses.ktan": "ktan", "tfkd.terms.adversarial": "ktan",
    "tfkd.terms.collaboration": "stc",
    "tfkd.losses.congruence": "cc", "tfkd.terms.cc": "cc",
    "tfkd.losses.contrastive": "crd", "tfkd.terms.crd": "crd",
    "tfkd.losses.dist": "dist", "tfkd.terms.dist": "dist",
    "tfkd.losses.dkd": "dkd", "tfkd.terms.dkd": "dkd",
    "tfkd.losses.probabilistic": "pkt", "tfkd.terms.pkt": "pkt",
    "tfkd.losses.relational": "rkd", "tfkd.terms.rkd": "rkd",
    "tfkd.losses.selectivity": "nst", "tfkd.terms.nst": "nst",
    "tfkd.losses.similarity": "sp", "tfkd.terms.similarity": "sp",
    "tfkd.losses.variational": "vid", "tfkd.terms.vid": "vid",
}


class _OldPathLoader(importlib.abc.Loader):
    """Imports an old module path as the method module it now names: the
    import returns that very module (same objects), imported on demand."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        method = OLD_PATHS[module.__name__]
        target = f"{__name__}.{method}" if method else "tfkd.losses"
        # The import system returns whatever `sys.modules` holds under the
        # name once this returns.
        sys.modules[module.__name__] = importlib.import_module(target)


class _OldPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in OLD_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, _OldPathLoader())


if not any(isinstance(f, _OldPathFinder) for f in sys.meta_path):
    sys.meta_path.append(_OldPathFinder())


def old_path_module(package, name):
    """The method module an old `package.name` path names, or `None`."""
    if f"{package}.{name}" in OLD_PATHS:
        return importlib.import_module(f"{package}.{name}")
    return None


def module_names():
    """Names of the method modules (`kd`, `pkt`, ...), sorted."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if not info.name.startswith("_"))


def modules():
    """Imports every method module and returns them in name order; a module
    that fails to import raises."""
    return [importlib.import_module(f"{__name__}.{name}")
            for name in module_names()]


def public_names(module):
    """The public functions and classes a method module defines (not the
    ones it imports): what `tfkd.losses` serves of it."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [name for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module.__name__]


def public_table():
    """`{name: object}` of every public function and class of every method
    module.

    Raises:
        ValueError: If two method modules define the same public name.
    """
    table, owner = {}, {}
    for module in modules():
        for name in public_names(module):
            if name in table and table[name] is not getattr(module, name):
                raise ValueError(
                    f"Two method modules define `{name}`: {owner[name]} and "
                    f"{module.__name__}. Rename one (or make it private "
                    "with a leading underscore).")
            table[name], owner[name] = getattr(module, name), module.__name__
    return dict(sorted(table.items()))
