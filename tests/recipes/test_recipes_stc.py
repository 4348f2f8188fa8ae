"""CI-speed smoke test of `recipes/stc.py`: the `--quick` path, 1 seed."""

import importlib.util
import os

import pytest

from _recipe_outputs import check_outputs

_RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "recipes",
                       "stc.py")


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_stc", _RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_path_runs_and_writes_results(tmp_path):
    recipe = _load_recipe()
    out = str(tmp_path / "stc")
    rows = recipe.main([
        "--quick", "--seeds", "0", "--epochs", "1", "--teacher-epochs", "3",
        "--methods", "student", "kd", "stc+kd", "stc-labels", "--out", out,
    ])
    # Three teacher epochs: enough to beat chance clearly (one is not).
    pair = "digits_student<-digits_teacher"
    check_outputs(out, rows, [
        f"{pair}/{m}" for m in ("teacher", "student", "kd", "stc+kd",
                                "stc-labels")], teacher=f"{pair}/teacher")


def test_cifar_pairs_and_paper_numbers():
    recipe = _load_recipe()
    paper = recipe.paper_accuracy()
    assert paper[("cifar10", "resnet20<-resnet56/stc")] == 100.0 - 6.53
    assert paper[("cifar10", "wrn_16_1<-wrn_16_2/stc+kd")] == 100.0 - 7.05
    assert paper[("cifar100", "resnet20<-resnet110/stc+kd")] == 100.0 - 28.53
    assert paper[("cifar10", "vgg13<-wrn_46_4/stc-labels")] == 100.0 - 5.17
    # The pair whose widths differ builds through the adapter.
    pair = recipe.PAIRS[1][3]
    small = type("Data", (), {"num_classes": 10, "input_shape": (32, 32, 3)})
    teacher = recipe.build_model(pair.teacher, small)
    student = recipe.build_model(pair.student, small)
    distiller = recipe.build_distiller("stc", teacher, student, pair, 0.3)
    assert distiller.stc.adapter_layer is not None
