"""Smoke test of `recipes/lp_mnist.py` on tiny IDX files it writes: the LP
paper's Table III and Fig. 2 protocols, 1 seed, tiny budgets."""

import importlib.util
import json
import os

import tfkd
from tfkd.testing import write_fashion_mnist
from _recipe_outputs import page_table

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
    # Fig. 2's own budget differs from Table III's in every flag, so each
    # flag is seen to change the Fig. 2 run (and not Table III's).
    results = recipe.main(["--part", "fig2", "table3", "--seeds", "0",
                           "--epochs", "2",
                           "--teacher-epochs", "1", "--batch-size", "32",
                           "--fig2-epochs", "1", "--fig2-teacher-epochs", "2",
                           "--fig2-train-examples", "50",
                           "--fig2-width", "0.125", "--data-dir",
                           str(data_dir), "--out", str(out)])
    table3 = {r["method"]: r for r in results["table3"]}
    assert set(table3) == {"lp_mnist_teacher/teacher",
                           "lp_mnist_student/student", "lp_mnist_student/kd",
                           "lp_mnist_student/fitnet", "lp_mnist_student/lp"}
    # Accuracy on the 40 test images: a multiple of 2.5 %.
    for row in table3.values():
        assert row["n"] == 1
        assert abs(row["last_mean"] / 2.5 - round(row["last_mean"] / 2.5)) \
            < 1e-6
    # Table III kept its own budget: 1 teacher epoch, 2 student epochs.
    runs = [json.loads(p.read_text()) for p in (out / "table3").glob("*.json")]
    epochs = {r["method"].split("/")[-1]: r["hyperparameters"]["epochs"]
              for r in runs}
    assert epochs == {"teacher": 1, "student": 2, "kd": 2, "fitnet": 2,
                      "lp": 2}
    fig2 = results["fig2"][0]
    assert set(fig2) == {"teacher", "student", "fitnet", "lp"}
    record = results["fig2_records"][0]
    # --fig2-teacher-epochs 2, --fig2-epochs 1 (FitNets: 1 hint epoch, then
    # at least 1 of eq. 2), --fig2-train-examples 50, --fig2-width 0.125.
    assert record["epochs"] == {"teacher": 2, "student": 1, "fitnet": 2,
                                "lp": 1}
    assert record["train_examples"] == 50
    assert record["parameters"]["teacher"] == tfkd.models.lenetpp_teacher(
        width=0.125).count_params()
    assert record["parameters"]["lp"] == tfkd.models.lenetpp_student(
        width=0.125).count_params()
    # Written as it arrived: the per-seed records and the figure.
    assert json.loads((out / "fig2.json").read_text()) == json.loads(
        json.dumps(results["fig2_records"]))
    assert (out / "fig2.png").stat().st_size > 10_000
    # `--part fig2 table3`: Fig. 2 ran (and was written) first.
    assert (out / "fig2.png").stat().st_mtime_ns < min(
        p.stat().st_mtime_ns for p in (out / "table3").glob("*.json"))
    page = (out / "lp_mnist.md").read_text()
    assert "| lp | " in page and "99.52" in page and "99.2" in page
    assert "Command: `python recipes/lp_mnist.py --part fig2 table3 " \
        "--seeds 0" in page
    assert "partial" not in page


def test_fig2_budget_defaults_to_table3s():
    recipe = _load_recipe()
    args = recipe.parse_args(["--epochs", "3", "--teacher-epochs", "4",
                              "--train-examples", "500", "--width", "0.5"])
    assert (args.fig2_epochs, args.fig2_teacher_epochs,
            args.fig2_train_examples, args.fig2_width) == (3, 4, 500, 0.5)
    args = recipe.parse_args(["--epochs", "3", "--fig2-epochs", "7",
                              "--fig2-teacher-epochs", "8",
                              "--fig2-train-examples", "900"])
    assert (args.epochs, args.fig2_epochs, args.fig2_teacher_epochs,
            args.fig2_train_examples, args.train_examples) == (3, 7, 8, 900,
                                                               None)



def test_results_page_matches_the_recipe_and_its_command():
    """docs/results_lp_fashion_mnist.md: the paper's column is the recipe's,
    its command parses and is the budget its prose states, its figure
    exists, and its ordering claims are its table's."""
    root = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
    with open(os.path.join(root, "docs", "results_lp_fashion_mnist.md"),
              encoding="utf-8") as f:
        text = f.read()
    recipe = _load_recipe()
    fig2 = page_table(text, "## Fig. 2")
    table3 = page_table(text, "## Table III")
    names = {"teacher (3-d features)": "teacher",
             "student alone (2-d)": "student", "FitNets (2-d)": "fitnet",
             "LP (2-d)": "lp"}
    assert {names[k]: float(v[1]) for k, v in fig2.items()} == \
        recipe.PAPER_FIG2
    rows3 = {"teacher": "teacher", "student alone": "student", "KD": "kd",
             "FitNets": "fitnet", "LP": "lp"}
    assert {rows3[k]: float(v[1]) for k, v in table3.items()} == \
        recipe.PAPER_TABLE3
    command = text[text.index("python recipes/lp_mnist.py"):]
    command = command[:command.index("```")].replace("\\\n", " ").split()
    args = recipe.parse_args(command[2:])
    assert args.seeds == [0] and args.part == ["fig2", "table3"]
    assert (args.train_examples, args.teacher_epochs, args.epochs) == (
        24000, 3, 2)
    assert "a 24,000-image training pool, 3 teacher and 2 student epochs" \
        in " ".join(text.split())
    assert (args.fig2_train_examples, args.fig2_teacher_epochs,
            args.fig2_epochs, args.fig2_width) == (15000, 4, 4, 0.5)
    assert "a 15,000-image training pool, 4 teacher and 4 student epochs" \
        in " ".join(text.split())
    assert "teacher 201,022 parameters, students 50,634" in " ".join(
        text.split())
    assert tfkd.models.lenetpp_teacher(width=0.5).count_params() == 201_022
    assert tfkd.models.lenetpp_student(width=0.5).count_params() == 50_634
    assert os.path.getsize(os.path.join(
        root, "docs", "img", "lp_fashion_mnist_fig2.png")) > 10_000
    ours = {names[k]: float(v[2]) for k, v in fig2.items()}
    # "LP above FitNets above the student alone" on this seed.
    assert ours["lp"] > ours["fitnet"] > ours["student"]
    ours3 = {rows3[k]: float(v[2]) for k, v in table3.items()}
    # "Every distilled student is above the student alone", "KD (+3.6
    # points) is above LP (+2.6)", "FitNets gains least (+0.5)".
    assert min(ours3["kd"], ours3["lp"], ours3["fitnet"]) > ours3["student"]
    gains = {m: round(ours3[m] - ours3["student"], 1)
             for m in ("kd", "lp", "fitnet")}
    assert gains == {"kd": 3.6, "lp": 2.6, "fitnet": 0.5}
    assert "The teacher itself is at 77.9 %" in " ".join(text.split())
    assert ours3["teacher"] == 77.88 and ours["teacher"] == 82.07
    # The second Table III run: its command parses, its table's claims.
    second = page_table(text, "A second Table III run")
    runb = {rows3[k]: float(v[2]) for k, v in second.items()}
    assert {rows3[k]: float(v[1]) for k, v in second.items()} == \
        recipe.PAPER_TABLE3
    cmd = text[text.index("python recipes/lp_mnist.py --part table3"):]
    cmd = cmd[:cmd.index("```")].replace("\\\n", " ").split()
    args = recipe.parse_args(cmd[2:])
    assert (args.train_examples, args.teacher_epochs, args.epochs) == (
        36000, 4, 2)
    gains = [runb[m] - runb["student"] for m in ("kd", "fitnet", "lp")]
    assert (round(min(gains), 1), round(max(gains), 1)) == (12.6, 15.1)
    assert runb["kd"] > runb["fitnet"] > runb["lp"]
    assert 82.6 <= runb["teacher"] < 85
