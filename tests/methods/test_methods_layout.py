"""One module per method (`tfkd.methods`), and what it takes to add one.

A method's module holds its pure functions, its terms and its record;
`tfkd.losses` serves them all by name (found with `pkgutil`), `tfkd.terms`
the terms, the registry the records, and the docs' navigation, method
table and tables of defaults are generated. A new method is its module,
its test and its page: `test_a_new_method_is_one_module_and_nothing_else`
adds a module to a copy of the package, edits nothing, and finds it
everywhere. The module paths of earlier versions still import, and `.keras`
files name the terms as before.
"""

import ast
import glob
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest

import tfkd
import tfkd.methods
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.kd import SOFT_TARGETS
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import term_classes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")


def _hooks():
    spec = importlib.util.spec_from_file_location(
        "tfkd_docs_hooks", os.path.join(DOCS, "_hooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _defined(module):
    """Public functions and classes `module` defines (not imports)."""
    return {name: value for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module.__name__}


# ----------------------------------------------------------------------
# One public spelling: `tfkd.losses`.

def test_losses_serves_every_function_and_term_of_every_method_module():
    listed = dir(tfkd.losses)
    modules = tfkd.methods.modules()
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} >= {
        "kd", "dkd", "dist", "sp", "rkd", "pkt", "nst", "cc", "vid", "crd",
        "attention", "fitnet", "correlation", "lp", "stc", "ktan"}
    for module in modules:
        for name, value in _defined(module).items():
            assert name in listed, (module.__name__, name)
            assert getattr(tfkd.losses, name) is value
    assert tfkd.losses.__all__ == sorted(tfkd.losses.__all__)
    assert set(tfkd.losses.__all__) <= set(listed)
    # Every term, under the one spelling, and `tfkd.terms.X` is the same
    # object.
    terms = [c for c in term_classes() if not c.__name__.startswith("_")
             and c.__module__.startswith("tfkd.methods.")]
    assert len(terms) >= 18
    for cls in terms:
        assert getattr(tfkd.losses, cls.__name__) is cls
        assert getattr(tfkd.terms, cls.__name__) is cls
    with pytest.raises(AttributeError, match="no attribute 'kd_los'"):
        tfkd.losses.kd_los  # noqa: B018


def test_two_method_modules_may_not_define_one_name(monkeypatch):
    a = type(sys)("tfkd.methods.a")
    b = type(sys)("tfkd.methods.b")
    for module in (a, b):
        exec("def shared_loss(t, s):\n    return t\n", vars(module))
        vars(module)["shared_loss"].__module__ = module.__name__
    monkeypatch.setattr(tfkd.methods, "modules", lambda: [a, b])
    with pytest.raises(ValueError, match="Two method modules define "
                                         "`shared_loss`.*tfkd.methods.a.*"
                                         "tfkd.methods.b"):
        tfkd.methods.public_table()


# ----------------------------------------------------------------------
# Old module paths and saved files.

@pytest.mark.parametrize("old", sorted(tfkd.methods.OLD_PATHS))
def test_old_module_paths_import_the_method_modules(old):
    module = importlib.import_module(old)
    method = tfkd.methods.OLD_PATHS[old]
    target = f"tfkd.methods.{method}" if method else "tfkd.losses"
    assert module is importlib.import_module(target)
    assert sys.modules[old] is module
    # Also reachable as an attribute of the old package.
    package, name = old.rsplit(".", 1)
    assert getattr(importlib.import_module(package), name) is module


def test_old_spellings_give_the_same_objects():
    from tfkd.losses.distillation import CorrelationDistillation
    from tfkd.losses.probabilistic import probabilistic_transfer_loss
    from tfkd.terms.pkt import ProbabilisticTransferDistillation

    assert probabilistic_transfer_loss is tfkd.losses.probabilistic_transfer_loss
    assert ProbabilisticTransferDistillation is (
        tfkd.losses.ProbabilisticTransferDistillation)
    assert CorrelationDistillation is tfkd.losses.CorrelationDistillation
    assert tfkd.terms.adversarial.AdversarialDistillation is (
        tfkd.losses.AdversarialDistillation)


def test_keras_registration_names_are_unchanged():
    # `.keras` files name each class by `tfkd>ClassName`: the move into
    # `tfkd.methods` must not change one.
    for cls in term_classes():
        if cls.__name__.startswith("_"):
            continue
        assert keras.saving.get_registered_name(cls) == (
            f"tfkd>{cls.__name__}")
    for name in ("KDLoss", "SoftCrossEntropy", "HintLoss", "CorrelationLoss",
                 "AttentionTransferLoss"):
        assert keras.saving.get_registered_name(
            getattr(tfkd.losses, name)) == f"tfkd>{name}"


def test_a_keras_file_naming_the_old_modules_loads(tmp_path):
    teacher = testing.tiny_conv_model("teacher", width=8)
    student = testing.tiny_conv_model("student", width=4)
    distiller = tfkd.Distiller(teacher, student, [
        tfkd.losses.KDDistillation(temperature=2.0),
        tfkd.losses.ProbabilisticTransferDistillation("conv2", "conv2")])
    distiller.compile(optimizer="adam")
    x, y = testing.random_images(16)
    distiller.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "new.keras")
    distiller.save(path)
    # The same file as the previous layout wrote it: its terms' modules
    # were `tfkd.terms.kd` and `tfkd.terms.pkt`.
    old = str(tmp_path / "old.keras")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                assert '"module": "tfkd.methods.pkt"' in text
                text = text.replace('"module": "tfkd.methods.pkt"',
                                    '"module": "tfkd.terms.pkt"')
                text = text.replace('"module": "tfkd.methods.kd"',
                                    '"module": "tfkd.terms.kd"')
                json.loads(text)
                data = text.encode()
            dst.writestr(item, data)
    loaded = keras.models.load_model(old)
    assert [type(t).__name__ for t in loaded.distillation_losses] == [
        "KDDistillation", "ProbabilisticTransferDistillation"]
    np.testing.assert_array_equal(loaded.student.predict(x, verbose=0),
                                  distiller.student.predict(x, verbose=0))


def test_method_modules_import_only_the_term_framework_from_terms():
    # The pure functions live beside the terms; they may use the term
    # framework (`tfkd.terms.base`), never another part of `tfkd.terms`
    # (which serves the method modules: a cycle).
    files = (glob.glob(os.path.join(ROOT, "tfkd", "methods", "*.py"))
             + glob.glob(os.path.join(ROOT, "tfkd", "losses", "*.py")))
    assert len(files) >= 18
    for path in files:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [
                    f"{node.module}.{a.name}" for a in node.names]
                if node.module == "tfkd":
                    assert "terms" not in [a.name for a in node.names], path
                    continue
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("tfkd.terms"):
                    assert name.startswith("tfkd.terms.base"), (path, name)


# ----------------------------------------------------------------------
# Docs: defaults generated from the signatures, pages found by the hook.

def _method_pages():
    pages = {}
    for name in registry.method_names():
        pages.setdefault(registry.method_page(name), []).append(name)
    return pages


def _signature_defaults(name):
    """`{argument: default}` of method `name`, read here from the
    signatures and the record."""
    spec = registry.get(name)
    constructor = spec.load().__init__ if spec.preset else spec.term.__init__
    resolved = getattr(spec.load(), "preset_defaults", {}) \
        if spec.preset else {}
    defaults = {}
    for arg, p in inspect.signature(constructor).parameters.items():
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and (
                arg not in registry.NOT_HYPERPARAMETERS):
            defaults[arg] = resolved.get(arg, p.default) \
                if p.default is None else p.default
    if not spec.preset:
        defaults["weight"] = spec.method.weight
        defaults["student_loss_weight"] = spec.method.student_loss_weight
        if spec.method.soft_targets:
            defaults["soft_target_weight"] = SOFT_TARGETS["weight"]
            defaults["soft_target_temperature"] = SOFT_TARGETS["temperature"]
    defaults.update(spec.method.build_defaults)
    return defaults


def _tables(text, header):
    """Rows (cell lists) of every Markdown table of `text` whose header
    row contains `header`, one list per table."""
    lines, tables, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("|") and header in lines[i].lower() and (
                i + 1 < len(lines) and lines[i + 1].startswith("| ---")):
            cells = [c.strip().lower() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in
                             lines[i].strip().strip("|").split(" | ")])
                i += 1
            tables.append((cells, rows))
        i += 1
    return tables


@pytest.mark.parametrize("page", sorted(_method_pages()))
def test_method_page_defaults_equal_the_signatures(page):
    hooks = _hooks()
    with open(os.path.join(DOCS, "methods", page), encoding="utf-8") as f:
        source = f.read()
    text = hooks.expand(source, f"methods/{page}")
    assert "{{" not in text
    tables = [rows for cells, rows in _tables(text, "argument")
              if cells == ["argument", "default"]]
    methods = _method_pages()[page]
    assert len(tables) == len(methods), page
    # One table per method, in the registry's (name) order.
    for name, rows in zip(methods, tables):
        expected = _signature_defaults(name)
        shown = {row[0].strip("`"): row[1].strip("`") for row in rows}
        assert shown == {arg: registry.format_default(value)
                         for arg, value in expected.items()}, (page, name)


def test_method_pages_retype_no_default():
    # A default typed into a page goes stale when the code changes (the
    # attention, FitNets, STC and correlation pages had, before they were
    # generated: alpha 1.0 for 0.3, kd_weight 0.0 for 1.0, mode "spatial"
    # for "both"). Every cell of a "default" column is a placeholder, "—",
    # or says what the default is in words.
    words = {"—", "CE"}
    for page in sorted(_method_pages()):
        with open(os.path.join(DOCS, "methods", page),
                  encoding="utf-8") as f:
            text = f.read()
        for cells, rows in _tables(text, "default"):
            column = cells.index("default")
            for row in rows:
                if len(row) != len(cells):
                    continue  # a `|` inside a formula cell
                cell = row[column].strip("`")
                assert cell in words or cell.startswith("{{ default"), (
                    f"docs/methods/{page}: the default {row[column]!r} of "
                    f"{row[:column]} is typed; write `{{{{ default: "
                    "METHOD.ARGUMENT }}` instead.")


def test_placeholders_name_real_defaults():
    assert registry.expand_defaults(
        "{{ default: kd.temperature }} {{ default: kd_loss.temperature }}"
    ) == "4.0 4.0"
    assert registry.expand_defaults("{{ default: pkt.weight }}") == "30000"
    assert registry.expand_defaults(
        "{{ default: AdversarialDistiller.compile."
        "discriminator_learning_rate_scale }}") == "0.01"
    with pytest.raises(ValueError, match="Method 'sp' has no argument "
                                         "'gamma'.*weight"):
        registry.expand_defaults("{{ default: sp.gamma }}")
    with pytest.raises(ValueError, match="names no default.*'nope'"):
        registry.expand_defaults("{{ default: nope.x }}")
    with pytest.raises(ValueError, match="takes a method name"):
        registry.expand_defaults("{{ defaults: nope }}")


def test_the_nav_and_the_index_list_every_method_page(tmp_path):
    hooks = _hooks()
    nav = hooks.method_pages(DOCS)
    assert nav[0] == "methods/index.md"
    pages = [list(entry.values())[0] for entry in nav[1:]]
    assert sorted(pages) == sorted(f"methods/{p}" for p in _method_pages())
    assert {"Hinton knowledge distillation": "methods/kd.md"} in nav
    with open(os.path.join(DOCS, "methods", "index.md"),
              encoding="utf-8") as f:
        index = hooks.expand(f.read(), "methods/index.md")
    for name in registry.method_names():
        assert f"[`{name}`]({registry.method_page(name)})" in index
    # A method without a page fails the build, naming the page to write.
    shutil.copytree(os.path.join(DOCS, "methods"), tmp_path / "methods")
    os.remove(tmp_path / "methods" / "pkt.md")
    with pytest.raises(ValueError, match=r"'pkt' has no docs page: write "
                                         r"docs/methods/pkt\.md"):
        hooks.method_pages(str(tmp_path))


# ----------------------------------------------------------------------
# A new method: one module, no other edit (+ its test and page).

_TOY_CHECK = textwrap.dedent("""
    import importlib.util, os, sys
    import tfkd, tfkd.losses, tfkd.terms
    from tfkd.distillers import registry

    assert tfkd.__file__.startswith(sys.argv[1]), tfkd.__file__
    term = tfkd.losses.ToySimilarityDistillation
    assert "ToySimilarityDistillation" in dir(tfkd.losses)
    assert "toy_similarity_loss" in dir(tfkd.losses)
    assert tfkd.terms.ToySimilarityDistillation is term
    assert registry.get("toy").term is term
    assert registry.get("toy").defaults()["weight"] == 3000.0
    assert registry.method_page("toy") == "toy.md"
    spec = importlib.util.spec_from_file_location("hooks", sys.argv[2])
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    nav = hooks.method_pages(sys.argv[3])
    assert {"Toy similarity": "methods/toy.md"} in nav, nav
    page = open(os.path.join(sys.argv[3], "methods", "toy.md")).read()
    assert "| `weight` | `3000` |" in hooks.expand(page, "methods/toy.md")
    # `tfkd methods`, as the command runs it.
    import contextlib, io
    from tfkd.cli import main
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        assert main(["methods"]) == 0
    assert any(line.split()[:1] == ["toy"]
               for line in listing.getvalue().splitlines()), listing
    print("ok")
""")


def test_a_new_method_is_one_module_and_nothing_else(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "tfkd"), src / "tfkd",
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = sorted(p.relative_to(src) for p in src.rglob("*")
                    if p.is_file())
    # The worked example of docs/tutorials/own-term.md, under a new name.
    with open(os.path.join(ROOT, "tfkd", "methods", "sp.py"),
              encoding="utf-8") as f:
        module = f.read()
    for old, new in (("similarity_preserving_loss", "toy_similarity_loss"),
                     ("SimilarityPreservingDistillation",
                      "ToySimilarityDistillation"),
                     ('name="sp"', 'name="toy"'),
                     ('"name", "sp"', '"name", "toy"')):
        assert old in module
        module = module.replace(old, new)
    (src / "tfkd" / "methods" / "toy.py").write_text(module)
    after = sorted(p.relative_to(src) for p in src.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)
    assert sorted(set(after) - set(before)) == [
        src.joinpath("tfkd", "methods", "toy.py").relative_to(src)]
    # Its page, beside copies of the others (the docs' only other input).
    docs = tmp_path / "docs"
    shutil.copytree(os.path.join(DOCS, "methods"), docs / "methods")
    (docs / "methods" / "toy.md").write_text(
        "# Toy similarity\n\n{{ defaults: toy }}\n")
    env = dict(os.environ, PYTHONPATH=str(src))
    result = subprocess.run(
        [sys.executable, "-c", _TOY_CHECK, str(src),
         os.path.join(DOCS, "_hooks.py"), str(docs)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-3000:])


def test_the_tutorials_module_is_the_shipped_one():
    # docs/tutorials/own-term.md shows `tfkd/methods/sp.py`: its record and
    # constructor as shipped.
    with open(os.path.join(DOCS, "tutorials", "own-term.md"),
              encoding="utf-8") as f:
        tutorial = f.read()
    source = inspect.getsource(tfkd.losses.SimilarityPreservingDistillation)
    record = source[source.index("    method = Method("):
                    source.index("    batch_level = True")]
    for line in record.splitlines():
        assert line.split("#")[0].rstrip() in tutorial, line
    assert issubclass(tfkd.losses.SimilarityPreservingDistillation,
                      DistillationTerm)
