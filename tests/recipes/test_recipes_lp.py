"""CI smoke test of `recipes/lp.py`: its quick path, 1 seed, 1 epoch."""

import importlib.util
import os

import pytest

import tfkd
from _recipe_outputs import check_outputs

_RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "recipes",
                       "lp.py")


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_lp", _RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_path_runs(tmp_path):
    # kd and lp only (plus the teacher), to stay well under a minute on a
    # busy CI machine; the other methods' distillers are built below.
    recipe = _load_recipe()
    rows = recipe.main(["--quick", "--seeds", "0", "--epochs", "1",
                        "--teacher-epochs", "3", "--methods", "kd", "lp",
                        "--out", str(tmp_path)])
    # Three teacher epochs: enough to beat chance clearly (one is not).
    check_outputs(str(tmp_path), rows, [
        "digits_teacher/teacher", "digits_student/kd", "digits_student/lp"],
        teacher="digits_teacher/teacher")
    records = tfkd.app.reporting.load_runs(tmp_path)
    lp = [r for r in records if r.method == "digits_student/lp"][0]
    assert lp.hyperparameters["taps"] == ["gap", "gap"]
    assert lp.hyperparameters["gamma"] == 1.0
    kd = [r for r in records if r.method == "digits_student/kd"][0]
    assert kd.hyperparameters["gamma"] == 0.0


def test_quick_distillers_build():
    recipe = _load_recipe()
    pair = recipe.pair_for("digits", "digits")
    teacher = tfkd.models.digits_teacher()
    for method in ("kd", "lp", "fitnet"):
        distiller = recipe.build_distiller(
            method, teacher, tfkd.models.digits_student(), pair)
        assert distiller.teacher is teacher
    assert isinstance(distiller, tfkd.FitNetDistiller)
    assert distiller.teacher_taps == [tfkd.models.DIGITS_FEATURE_LAYER]
    assert distiller.alpha == pytest.approx(1 / 9)


def test_paper_table_and_missing_data(tmp_path):
    recipe = _load_recipe()
    assert recipe.PAPER[("cifar10", "lp_student_4/lp")] == 91.91
    assert recipe.PAPER[("cifar100", "lp_student_4/lp")] == 65.13
    assert recipe.PAPER[("mnist", "lp_mnist_student/lp")] == pytest.approx(
        99.52)
    pair = recipe.pair_for("cifar10", 4)
    assert pair.lp_taps == ("pool2", "pool2")
    with pytest.raises(FileNotFoundError, match="mnist"):
        recipe.main(["--table", "3", "--seeds", "0", "--epochs", "1",
                     "--data-dir", str(tmp_path / "no_tfds"),
                     "--out", str(tmp_path / "runs")])
