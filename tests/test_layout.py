"""The package's layout: the command line in `tfkd.cli`, the application in
`tfkd.app`, Keras's private attributes in `tfkd._compat` only.

Reads the sources (no import), so it runs in well under a second.
"""

import ast
import os
import re

from tfkd import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tfkd")
# Private Keras / TensorFlow / Keras Tuner attributes tfkd uses, each
# wrapped in `tfkd._compat` (and tested in tests/test_compat.py).
PRIVATE = ("_loss_tracker", "_flat_metrics", "_flat_weighted_metrics",
           "_inputs_struct", "_outputs_struct", "_as_serialized_graph",
           "_configure_tensorboard_dir", "_build_and_fit_model",
           "_compile_metrics", "_nodes_by_depth", "_keras_history",
           "_inbound_nodes", "_run_through_graph", "_collective_key_base")


def _modules():
    """`{dotted name: source}` of every module of the package."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                with open(path, encoding="utf-8") as f:
                    modules[".".join(rel)] = f.read()
    return modules


def _imported(source, module):
    """Every module `source` imports, at any depth, absolute."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[:len(module.split(".")) -
                                         node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _is_under(name, package):
    return name == package or name.startswith(package + ".")


def test_the_library_imports_neither_the_app_nor_the_command_line():
    offenders = {}
    for module, source in _modules().items():
        if any(_is_under(module, p) for p in ("tfkd.app", "tfkd.cli")) or (
                module == "tfkd.__main__"):
            continue
        bad = sorted(name for name in _imported(source, module)
                     if _is_under(name, "tfkd.app")
                     or _is_under(name, "tfkd.cli"))
        # `tfkd/__init__.py` declares `tfkd.app` as a lazy attribute only.
        if module == "tfkd":
            bad = [name for name in bad if name != "tfkd.app"]
        if bad:
            offenders[module] = bad
    assert offenders == {}


def test_every_command_lives_in_tfkd_cli():
    modules = _modules()
    commands = {m for m in modules
                if _is_under(m, "tfkd.cli") and m != "tfkd.cli"
                and not m.rsplit(".", 1)[-1].startswith("_")}
    assert set(cli._COMMAND_MODULES) == commands
    # No other module adds a sub-command.
    elsewhere = sorted(m for m, source in modules.items()
                       if re.search(r"^def register\(subparsers", source,
                                    re.MULTILINE) and m not in commands)
    assert elsewhere == []
    assert not os.path.exists(os.path.join(ROOT, "tfkd_cli.py"))


def test_private_keras_attributes_only_in_compat():
    found = {}
    for module, source in _modules().items():
        if module == "tfkd._compat":
            continue
        names = sorted({name for name in PRIVATE
                        if re.search(rf"\b{name}\b", source)})
        if names:
            found[module] = names
    assert found == {}


def test_the_tests_tree_mirrors_the_package():
    """Each folder of `tests/` is a subpackage of `tfkd/` (or the recipes),
    and every method module `tfkd/methods/NAME.py` has its test file
    `tests/methods/test_NAME.py`: a reader finds a module's tests where the
    module is."""
    tests = os.path.join(ROOT, "tests")
    for entry in sorted(os.listdir(tests)):
        path = os.path.join(tests, entry)
        if not os.path.isdir(path) or entry.startswith((".", "_")):
            continue
        assert os.path.isdir(os.path.join(PACKAGE, entry)) or (
            os.path.isdir(os.path.join(ROOT, entry))), (
            f"tests/{entry}/ mirrors no folder of tfkd/ (nor of the "
            "repository root): put its tests where their module is.")
    methods = os.path.join(PACKAGE, "methods")
    missing = [name for name in sorted(os.listdir(methods))
               if name.endswith(".py") and not name.startswith("_")
               and not os.path.exists(os.path.join(tests, "methods",
                                                   "test_" + name))]
    assert not missing, (
        f"Method modules without tests/methods/test_<module>.py: {missing}")
