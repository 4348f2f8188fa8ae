"""The registry, tuning spaces, method table and battery derive from the
terms: they cannot drift apart."""

import inspect
import os
import subprocess
import sys

import pytest

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.terms.base import DistillationTerm
from tfkd.terms.base import Method
from tfkd.terms.base import methods_of
from tfkd.terms.base import term_classes
from tfkd.tuning import spaces

from _distiller_cases import all_cases

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_declared_method_is_registered_once():
    declared = [m.name for cls in term_classes() for m in methods_of(cls)]
    assert sorted(declared) == registry.method_names()
    assert len(set(declared)) == len(declared)
    assert {"kd", "fitnet", "attention", "correlation", "lp", "stc", "ktan",
            "dln", "sp"} <= set(declared)


@pytest.mark.parametrize("name", registry.method_names())
def test_search_space_names_arguments_and_defaults_come_from_constructor(
        name):
    spec = registry.get(name)
    arguments = spec.arguments()
    space = spaces.default_search_space(name)
    assert space, f"{name} publishes no search space"
    for key, entry in space.items():
        assert key in arguments, (name, key, sorted(arguments))
        if entry["type"] in ("float", "int"):
            # The space's default is the constructor's (one source).
            assert entry.get("default") == arguments[key], (name, key)
            assert entry["min_value"] <= arguments[key] <= entry[
                "max_value"], (name, key)
    # The tuner's arguments are the registry's.
    assert tfkd.tuning.method_arguments(name) == sorted(arguments)


def test_known_drifts_are_gone():
    ktan = registry.get("ktan")
    signature = inspect.signature(ktan.load().__init__).parameters
    assert ktan.arguments()["pretrain_steps"] == \
        signature["pretrain_steps"].default
    stc = registry.get("stc")
    assert spaces.default_search_space("stc")["alpha"]["default"] == \
        stc.arguments()["alpha"] == 0.5
    assert "dln" in registry.method_names()
    # Every method has a space (users may register more for their own).
    assert set(registry.method_names()) <= set(spaces.DEFAULT_SEARCH_SPACES)


def test_battery_covers_every_method():
    methods = {case.method for case in all_cases() if case.method}
    assert methods == set(registry.method_names())


def test_method_table_lists_every_method_and_the_readme_copies_its_rows():
    """The README's table is a copy of `tfkd methods --markdown`: every row
    it shows is the registry's row, in the registry's order. It may lag by
    methods added later (a new method is its module, test and docs page,
    nothing else edited; the docs' index and `tfkd methods` list it at
    once), never by a changed row."""
    table = registry.method_table()
    for name in registry.method_names():
        assert f"| `{name}` |" in table
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    start = readme.index("<!-- tfkd:methods-table:start -->\n")
    end = readme.index("<!-- tfkd:methods-table:end -->")
    block = readme[start + len("<!-- tfkd:methods-table:start -->\n"):end]
    rows = block.strip().splitlines()
    expected = table.splitlines()
    assert rows[:2] == expected[:2], "README's table header changed"
    assert len(rows) > 2 and all(row in expected for row in rows), (
        "README's method table has a row the registry does not give: "
        "replace the block between the tfkd:methods-table markers with "
        "`tfkd methods --markdown`.")
    assert rows == [row for row in expected if row in rows], (
        "README's method table is out of the registry's order.")


def test_methods_command_lists_every_method():
    result = subprocess.run(
        [sys.executable, "-m", "tfkd.cli", "methods"], capture_output=True,
        text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=True)
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == registry.method_names()


def test_unknown_method_and_bad_registration():
    with pytest.raises(ValueError, match=r"Unknown distillation method\. "
                                         r"Received: method='bogus'\. "
                                         r"Choose one of \['attention'"):
        registry.get("bogus")
    with pytest.raises(TypeError, match="DistillationTerm` subclass"):
        registry.register(int)

    class NoMethod(DistillationTerm):
        pass

    with pytest.raises(ValueError, match="declares no `method`"):
        registry.register(NoMethod)


def test_a_term_registered_from_outside_becomes_a_method():
    class Echo(DistillationTerm):
        method = Method(name="echo_test", description="echo",
                        uses_features=False,
                        search_space={"weight": (0.1, 1.0)})

        def call(self, teacher_outputs, student_outputs, labels=None,
                 training=False):
            return tfkd.losses.kd_loss(teacher_outputs, student_outputs)

    try:
        registry.register(Echo)
        assert "echo_test" in registry.method_names()
        distiller = registry.build("echo_test", testing.tiny_conv_model("t"),
                                   testing.tiny_conv_model("s"))
        assert list(distiller.terms) == ["echo"]
        duplicate = type("Echo2", (Echo,), {"method": Method(
            name="echo_test", description="again")})
        registry.register(duplicate)
        with pytest.raises(ValueError, match="Two terms declare the method "
                                             "'echo_test'"):
            registry.methods()
    finally:
        registry._EXTRA_TERMS.clear()
        term_classes_list = tfkd.terms.base._TERM_CLASSES
        for cls in list(term_classes_list):
            if cls.__name__ in ("Echo", "Echo2", "NoMethod"):
                term_classes_list.remove(cls)


def test_a_term_module_that_fails_to_import_fails_loudly(monkeypatch):
    import pkgutil

    real = pkgutil.iter_modules

    def with_broken(path=None, prefix=""):
        yield from real(path, prefix)
        yield pkgutil.ModuleInfo(None, "does_not_exist_broken_term", False)

    monkeypatch.setattr(pkgutil, "iter_modules", with_broken)
    with pytest.raises(ImportError, match="does_not_exist_broken_term"):
        registry.method_names()
