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
