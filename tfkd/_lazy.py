"""Lazy package attributes (PEP 562), declared once as ordinary imports.

A package lists its public names as ordinary `from ... import ...`
statements in an `if typing.TYPE_CHECKING:` block, where IDEs, type
checkers and griffe (the docs) read them as usual, and ends with

    __getattr__, __dir__, __all__ = _lazy.attach(__name__)

`attach` reads that block from the package's source without running it.
The package's `__getattr__` imports a name's module the first time the name
is used (and caches the value in the package), so `import tfkd` costs
nothing until, say, `tfkd.tuning.DistillerHyperModel` needs Keras Tuner.
Any submodule is also reachable as an attribute (`tfkd.io`), as the
eager imports used to make most of them.
"""

import ast
import importlib
import importlib.util
import pkgutil
import sys


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def declared_names(package, source):
    """`{name: (module, member)}` of a package's `TYPE_CHECKING` imports.

    Args:
        package: The package's dotted name (to resolve relative imports).
        source: The package's `__init__.py` source.

    Returns:
        A dict mapping each bound name to the module it comes from and its
        name there, in source order.

    Example:

    >>> declared_names("pkg", '''
    ... if TYPE_CHECKING:
    ...     from pkg import sub
    ...     from pkg.mod import f as g
    ... ''')
    {'sub': ('pkg', 'sub'), 'g': ('pkg.mod', 'f')}
    """
    names = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.ImportFrom):
                raise ValueError(
                    f"{package}'s `if TYPE_CHECKING:` block may only hold "
                    "`from ... import ...` statements (they declare its lazy "
                    f"names). Received: {ast.unparse(statement)!r}."
                )
            module = importlib.util.resolve_name(
                "." * statement.level + (statement.module or ""), package)
            for alias in statement.names:
                names[alias.asname or alias.name] = (module, alias.name)
    return names


def attach(package):
    """Lazy `__getattr__`, `__dir__` and `__all__` for a package.

    Args:
        package: The package's `__name__`; its source must be readable
            (`loader.get_source`), as it is for any installed tfkd.

    Returns:
        The tuple `(__getattr__, __dir__, __all__)` to assign in the
        package; `__all__` holds the declared names.
    """
    module = sys.modules[package]
    source = module.__spec__.loader.get_source(package)
    declared = declared_names(package, source)
    submodules = []

    def __getattr__(name):
        if name in declared:
            origin, member = declared[name]
            if origin == package:
                value = importlib.import_module(f"{package}.{member}")
            else:
                value = importlib.import_module(origin)
                try:
                    value = getattr(value, member)
                except AttributeError:
                    value = importlib.import_module(f"{origin}.{member}")
        elif not name.startswith("__") and name in _submodules():
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(
                f"module {package!r} has no attribute {name!r}")
        # Later look-ups find it without calling `__getattr__` again.
        setattr(module, name, value)
        return value

    def _submodules():
        if not submodules:
            submodules.extend(
                info.name for info in pkgutil.iter_modules(module.__path__))
        return submodules

    def __dir__():
        public = [n for n in _submodules() if not n.startswith("_")]
        return sorted(set(vars(module)) | set(declared) | set(public))

    return __getattr__, __dir__, list(declared)
