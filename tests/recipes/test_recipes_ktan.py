"""CI-speed smoke test of `recipes/ktan.py`: the `--quick` path, 1 seed."""

import importlib.util
import os

import pytest

from _recipe_outputs import check_outputs

_RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "recipes",
                       "ktan.py")


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_ktan", _RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_path_runs_and_writes_results(tmp_path):
    recipe = _load_recipe()
    out = str(tmp_path / "ktan")
    rows = recipe.main([
        "--quick", "--seeds", "0", "--epochs", "1", "--teacher-epochs", "3",
        "--methods", "dln", "ktan", "--out", out,
    ])
    # Three teacher epochs: enough to beat chance clearly (one is not).
    check_outputs(out, rows, ["teacher", "dln", "ktan"], teacher="teacher")


def test_cifar_without_data_fails_clearly(tmp_path):
    recipe = _load_recipe()
    with pytest.raises(FileNotFoundError, match="cifar10"):
        recipe.main(["--seeds", "0", "--data-dir", str(tmp_path / "none"),
                     "--out", str(tmp_path / "out")])
