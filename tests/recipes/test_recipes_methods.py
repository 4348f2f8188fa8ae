"""Smoke test of `recipes/methods.py`: one seed, one epoch, three methods."""

import importlib.util
import os
import re

import pytest

_RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "recipes",
                       "methods.py")


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_methods", _RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(page):
    """`{method: (mean accuracy, std or None)}` parsed from the page."""
    rows = {}
    for line in page.splitlines():
        match = re.fullmatch(
            r"\| (\w+) \| (\d+\.\d\d)(?: ± (\d+\.\d\d))? \| "
            r"([+-]\d+\.\d\d)? \| .* \| (\d+) \|", line)
        if match:
            std = match.group(3)
            rows[match.group(1)] = (float(match.group(2)),
                                    None if std is None else float(std))
    return rows


@pytest.mark.slow
def test_recipe_writes_a_row_per_method(tmp_path):
    doc = tmp_path / "results.md"
    rows = _load_recipe().main([
        "--seeds", "0", "--epochs", "1", "--teacher-epochs", "1",
        "--methods", "dkd", "crd", "vid", "--out", str(tmp_path / "runs"),
        "--doc", str(doc)])
    assert [row["method"] for row in rows] == [
        "teacher", "student", "dkd", "crd", "vid"]
    page = doc.read_text()
    assert "python recipes/methods.py --seeds 0 --epochs 1" in page
    assert re.search(r"Wall time: \d+\.\d min", page)
    table = _table(page)
    assert list(table) == ["teacher", "student", "dkd", "crd", "vid"]
    for method, (mean, std) in table.items():
        assert 0.0 <= mean <= 100.0, method
        assert std is None  # one seed
    assert (tmp_path / "runs" / "summary.md").exists()


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        _load_recipe().main(["--methods", "bogus", "--out", str(tmp_path)])


class _Built(Exception):
    """Raised by a stand-in `registry.build`: what the recipe passed."""


def test_set_reaches_the_build_and_keeps_the_defaults_page(tmp_path,
                                                           monkeypatch):
    recipe = _load_recipe()

    def build(method, teacher, student, **kwargs):
        raise _Built(method, kwargs)

    monkeypatch.setattr(recipe.registry, "build", build)
    with pytest.raises(_Built) as built:
        recipe.main(["--seeds", "0", "--epochs", "1", "--teacher-epochs",
                     "1", "--methods", "kd", "--set", "kd.temperature=1",
                     "kd.alpha=0.7", "--out", str(tmp_path / "runs")])
    assert built.value.args[0] == "kd"
    assert built.value.args[1]["temperature"] == 1
    assert built.value.args[1]["alpha"] == 0.7
    # The variant's page goes to its run folder, and says what it changed.
    page = recipe.results_page([], "cmd", 1.0, [0], 1, 1,
                               overrides={"kd": {"temperature": 1}})
    assert "`kd.temperature=1`" in page


def test_a_bad_set_is_refused_before_any_training(tmp_path, monkeypatch):
    recipe = _load_recipe()
    monkeypatch.setattr(recipe, "run_seed", lambda *a: pytest.fail("ran"))
    with pytest.raises(ValueError, match="takes no argument 'beta'"):
        recipe.main(["--methods", "kd", "--set", "kd.beta=2",
                     "--out", str(tmp_path)])
