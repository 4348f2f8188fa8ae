"""`tfkd report RUN_DIR`: tables and plots from ResultsWriter and demo runs."""

import csv
import json
import os

import pytest

from tfkd import cli
from tfkd.cli import report as report_cli
from tfkd.app.reporting import ResultsWriter
from tfkd.app.reporting import RunResult
from tfkd.app.reporting import markdown_table
from tfkd.app.reporting import summarize


def _history(final):
    return {"loss": [1.5, 0.9, 0.6], "student_loss": [1.2, 0.7, 0.5],
            "kd_loss": [3.0, 2.0, 1.5], "val_loss": [1.6, 1.0, 0.8],
            "accuracy": [0.5, 0.8, final], "val_accuracy": [0.5, 0.7, final]}


def _writer_dir(path, datasets=("digits",)):
    writer = ResultsWriter(path)
    runs = []
    for dataset in datasets:
        for method, accuracy, params in (("teacher", 0.98, 60000),
                                         ("student", 0.90, 6000),
                                         ("kd", 0.93, 6000)):
            for seed in (0, 1):
                run = RunResult.from_history(
                    _history(accuracy), method=method, dataset=dataset,
                    seed=seed, student_params=params, teacher_params=60000,
                    test_accuracy=accuracy + 0.01 * seed,
                    run_id=f"{dataset}-{method}-{seed}")
                writer.add(run)
                runs.append(run)
    return writer, runs


def test_report_of_a_results_writer_directory(tmp_path, capsys):
    run_dir = tmp_path / "runs"
    writer, runs = _writer_dir(run_dir)
    writer.write_summary(paper={("digits", "kd"): 92.5})

    assert cli.main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    expected_rows = summarize(runs, {("digits", "kd"): 92.5})
    table = markdown_table(expected_rows)
    # The paper values of the earlier summary.csv are kept.
    assert (run_dir / "summary.md").read_text() == table
    assert table in printed and "+1.00" in table
    with open(run_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["teacher", "student", "kd"]
    assert float(rows[2]["paper"]) == 92.5
    plots_dir = run_dir / "plots"
    assert (plots_dir / "accuracy_vs_params.png").exists()
    for run in runs:
        assert (plots_dir / f"curves_{run.run_id}.png").exists()
    assert not (plots_dir / "accuracy_vs_latency.png").exists()
    report = (run_dir / "report.md").read_text()
    assert "![accuracy_vs_params](plots/accuracy_vs_params.png)" in report


def test_accuracy_points_roles_and_means():
    runs = [
        RunResult(method="teacher", dataset="d", seed=0, run_id="t",
                  teacher_params=100, test_accuracy_last=0.9),
        RunResult(method="student", dataset="d", seed=0, run_id="s0",
                  student_params=10, test_accuracy_last=0.8),
        RunResult(method="student", dataset="d", seed=1, run_id="s1",
                  student_params=10, test_accuracy_last=0.7,
                  extra={"latency_ms": 0.5}),
        RunResult(method="lp", dataset="d", seed=0, run_id="lp",
                  student_params=10, val_accuracy_last=0.85),
    ]
    points = report_cli.accuracy_points(runs)["d"]
    by_label = {p["label"]: p for p in points}
    assert by_label["teacher"]["role"] == "teacher"
    assert by_label["teacher"]["params"] == 100
    scratch = by_label["student from scratch"]
    assert scratch["role"] == "scratch"
    assert scratch["accuracy"] == pytest.approx(75.0)
    assert scratch["accuracy_std"] == pytest.approx(7.0710678)
    assert scratch["latency_ms"] == 0.5
    # No test accuracy: the validation accuracy stands in.
    assert by_label["lp"]["accuracy"] == pytest.approx(85.0)


def test_report_of_a_demo_directory(tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    runs = [{"seed": seed, "method": "kd", "seconds": 30.0,
             "teacher": {"accuracy": 0.98, "params": 66218},
             "scratch": {"accuracy": 0.95 + 0.01 * seed, "params": 1490},
             "distilled": {"accuracy": 0.96, "params": 1490,
                           "history": _history(0.96)}}
            for seed in (0, 1)]
    (demo / "results.json").write_text(json.dumps({"runs": runs}))
    (demo / "student.json").write_text(json.dumps(
        {"latency_ms": 0.003, "teacher": {"latency_ms": 0.05}}))
    out = tmp_path / "out"
    assert cli.main(["report", str(demo), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "| digits | teacher | 2 | 98.00 ± 0.00 |" in summary
    assert "| digits | student | 2 | 95.50 ± 0.71 |" in summary
    assert "| digits | kd | 2 | 96.00 ± 0.00 |" in summary
    assert (out / "plots" / "accuracy_vs_params.png").exists()
    assert (out / "plots" / "accuracy_vs_latency.png").exists()
    assert (out / "plots" / "curves_demo_kd_seed0.png").exists()
    assert not (out / "plots" / "curves_demo_teacher_seed0.png").exists()
    assert not (demo / "summary.md").exists()  # --out leaves RUN_DIR alone


def test_several_datasets_and_no_plots(tmp_path):
    run_dir = tmp_path / "runs"
    _writer_dir(run_dir, datasets=("cifar10", "cifar100"))
    written = report_cli.write_report(run_dir)
    assert {"accuracy_vs_params_cifar10", "accuracy_vs_params_cifar100"} \
        <= set(written)
    assert all(os.path.exists(p) for p in written.values())
    other = tmp_path / "tables"
    assert cli.main(["report", str(run_dir), "--out", str(other),
                     "--no-plots", "--split", "val"]) == 0
    assert not (other / "plots").exists()
    assert (other / "summary.md").exists()


@pytest.mark.parametrize("setup, message", [
    ("missing", "is not a directory"),
    ("empty", "No runs.csv, results.json or trials.json"),
    ("bad_json", "not valid JSON"),
    ("no_runs", "no list of runs"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, setup, message):
    run_dir = tmp_path / "runs"
    if setup != "missing":
        run_dir.mkdir()
    if setup == "bad_json":
        (run_dir / "results.json").write_text("{not json")
    if setup == "no_runs":
        (run_dir / "results.json").write_text('{"summary": {}}')
    assert cli.main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfkd report: error:") and message in err
    assert len(err.splitlines()) == 1


def test_report_is_listed_in_the_cli_help():
    parser = cli.build_parser()
    assert "report" in parser.format_help()
