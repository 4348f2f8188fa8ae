"""Smoke test of `recipes/lp_mnist.py` on tiny IDX files it writes: the LP
paper's Table III and Fig. 2 protocols, 1 seed, tiny budgets."""

import importlib.util
import os

from tfkd.testing import write_fashion_mnist

_RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "recipes",
                       "lp_mnist.py")


def _load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_lp_mnist", _RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table3_and_fig2_run_and_write(tmp_path):
    data_dir = tmp_path / "fashion"
    write_fashion_mnist(str(data_dir), n_train=120, n_test=40)
    out = tmp_path / "out"
    recipe = _load_recipe()
    results = recipe.main(["--seeds", "0", "--epochs", "2",
                           "--teacher-epochs", "1", "--batch-size", "32",
                           "--width", "0.125", "--data-dir", str(data_dir),
                           "--out", str(out)])
    table3 = {r["method"]: r for r in results["table3"]}
    assert set(table3) == {"lp_mnist_teacher/teacher",
                           "lp_mnist_student/student", "lp_mnist_student/kd",
                           "lp_mnist_student/fitnet", "lp_mnist_student/lp"}
    # Accuracy on the 40 test images: a multiple of 2.5 %.
    for row in table3.values():
        assert row["n"] == 1
        assert abs(row["last_mean"] / 2.5 - round(row["last_mean"] / 2.5)) \
            < 1e-6
    fig2 = results["fig2"][0]
    assert set(fig2) == {"teacher", "student", "fitnet", "lp"}
    assert (out / "fig2.png").stat().st_size > 10_000
    page = (out / "lp_mnist.md").read_text()
    assert "| lp | " in page and "99.52" in page and "99.2" in page
    assert "Command: `python recipes/lp_mnist.py --seeds 0" in page
