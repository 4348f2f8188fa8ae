"""Tests for `tfkd.app.reporting`: run records, runs.csv, summaries."""

import csv
import json
import os
import re

import keras
import numpy as np
import pytest

from tfkd.app.reporting import RUNS_COLUMNS
from tfkd.app.reporting import ResultsWriter
from tfkd.app.reporting import RunResult
from tfkd.app.reporting import load_runs
from tfkd.app.reporting import markdown_table
from tfkd.app.reporting import summarize

PAPER = {("cifar10", "kd"): 89.73, ("cifar10", "teacher"): 92.02}


def _fake_runs():
    """3 KD seeds (by hand: last 90/91/92 %, best 91/93/95 %), 1 student."""
    runs = [
        RunResult(
            method="kd", dataset="cifar10", seed=seed,
            hyperparameters={"temperature": 4.0, "alpha": np.float32(0.3)},
            teacher="vgg11", student="vgg5", teacher_params=7_650_000,
            student_params=1_560_000,
            history={"loss": [1.0, 0.5], "val_accuracy": [0.5, last]},
            test_accuracy_last=last, test_accuracy_best=best,
            val_accuracy_last=last, val_accuracy_best=best,
            wall_time=10.0 * (seed + 1), run_id=f"kd-{seed}",
        )
        for seed, (last, best) in enumerate(
            [(0.90, 0.91), (0.91, 0.93), (0.92, 0.95)]
        )
    ]
    runs.append(RunResult(method="student", dataset="cifar10", seed=0,
                          test_accuracy_last=0.88, test_accuracy_best=0.885,
                          run_id="student-0"))
    return runs


def test_run_result_defaults():
    result = RunResult(method="kd", dataset="cifar10", seed=2,
                       history={"loss": [3.0, 2.0, 1.0]},
                       hyperparameters={"k": np.int64(5), "sizes": (1, 2)})
    assert result.run_id.startswith("cifar10_kd_seed2_")
    assert result.epochs == 3
    assert result.created.endswith("+00:00")
    # NumPy scalars and tuples become JSON types.
    assert result.hyperparameters == {"k": 5, "sizes": [1, 2]}
    assert type(result.hyperparameters["k"]) is int
    other = RunResult(method="kd", dataset="cifar10", seed=2)
    assert other.run_id != result.run_id
    assert RunResult(method="a b/c", dataset="x", run_id="a b/c").run_id \
        == "a-b-c"


@pytest.mark.parametrize(
    "kwargs, error, received",
    [
        (dict(test_accuracy_last=91.2), ValueError, "test_accuracy_last=91.2"),
        (dict(val_accuracy_best=-0.1), ValueError, "val_accuracy_best=-0.1"),
        (dict(method=""), TypeError, "method=''"),
        (dict(seed=True), TypeError, "seed=True"),
        (dict(history=[1, 2]), TypeError, "history=[1, 2]"),
        (dict(test_accuracy_best="high"), TypeError, "'high'"),
    ],
)
def test_run_result_rejects_bad_fields(kwargs, error, received):
    fields = {"method": "kd", "dataset": "cifar10", **kwargs}
    with pytest.raises(error, match=re.escape(received)):
        RunResult(**fields)


def test_percentages_are_rejected_with_a_fix():
    with pytest.raises(ValueError, match="divide it by 100"):
        RunResult(method="kd", dataset="c10", test_accuracy_last=91.2)


def test_from_history():
    history = keras.callbacks.History()
    history.history = {
        "loss": [1.0, 0.7, 0.6],
        "val_accuracy": [np.float32(0.5), 0.75, 0.7],
    }
    result = RunResult.from_history(history, method="kd", dataset="c10",
                                    seed=1, wall_time=3.5)
    assert result.val_accuracy_last == pytest.approx(0.7)
    assert result.val_accuracy_best == pytest.approx(0.75)
    assert result.best_epoch == 2 and result.epochs == 3
    assert result.test_accuracy_last is None
    assert result.history["val_accuracy"][0] == pytest.approx(0.5)

    # The papers' protocol: validating on the test split.
    same = RunResult.from_history(history.history, method="kd",
                                  dataset="c10", validation_is_test=True)
    assert same.test_accuracy_last == pytest.approx(0.7)
    assert same.test_accuracy_best == pytest.approx(0.75)

    # A final evaluation overrides the last test value.
    evaluated = RunResult.from_history(history, method="kd", dataset="c10",
                                       test_accuracy=0.8)
    assert evaluated.test_accuracy_last == evaluated.test_accuracy_best == 0.8

    custom = RunResult.from_history(
        {"val_student_accuracy": [0.2, 0.4]}, method="kd", dataset="c10",
        metric="student_accuracy",
    )
    assert custom.val_accuracy_best == 0.4
    with pytest.raises(TypeError, match="history="):
        RunResult.from_history([0.1], method="kd", dataset="c10")


def test_add_writes_json_and_csv(tmp_path):
    writer = ResultsWriter(tmp_path / "runs")
    for result in _fake_runs():
        writer.add(result)
    run_dir = tmp_path / "runs"
    assert sorted(os.listdir(run_dir)) == [
        "kd-0.json", "kd-1.json", "kd-2.json", "runs.csv", "student-0.json"
    ]
    with open(run_dir / "kd-1.json") as f:
        record = json.load(f)
    assert record["test_accuracy_best"] == 0.93
    assert record["history"]["val_accuracy"] == [0.5, 0.91]
    assert record["hyperparameters"]["alpha"] == pytest.approx(0.3)
    with open(run_dir / "runs.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == RUNS_COLUMNS
    assert [r["run_id"] for r in rows] == ["kd-0", "kd-1", "kd-2", "student-0"]
    assert rows[0]["test_accuracy_last"] == "0.9"
    assert rows[3]["teacher"] == ""  # None -> empty cell
    assert json.loads(rows[0]["hyperparameters"])["temperature"] == 4.0
    assert rows[0]["json_file"] == "kd-0.json"

    with pytest.raises(ValueError, match="run_id='kd-0'"):
        writer.add(_fake_runs()[0])


def test_summary_numbers_by_hand(tmp_path):
    writer = ResultsWriter(tmp_path)
    for result in _fake_runs():
        writer.add(result)
    kd, student = writer.summary(paper=PAPER)
    assert (kd["dataset"], kd["method"], kd["n"]) == ("cifar10", "kd", 3)
    # last: 90, 91, 92 -> mean 91, sample std sqrt((1 + 0 + 1) / 2) = 1.
    assert kd["last_mean"] == pytest.approx(91.0)
    assert kd["last_std"] == pytest.approx(1.0)
    # best: 91, 93, 95 -> mean 93, std sqrt((4 + 0 + 4) / 2) = 2.
    assert kd["best_mean"] == pytest.approx(93.0)
    assert kd["best_std"] == pytest.approx(2.0)
    assert kd["paper"] == 89.73
    assert kd["diff"] == pytest.approx(91.0 - 89.73)
    assert kd["wall_time_mean"] == pytest.approx(20.0)
    # One seed: no std; no paper value: no difference.
    assert student["n"] == 1 and student["last_mean"] == pytest.approx(88.0)
    assert student["last_std"] is None
    assert student["paper"] is None and student["diff"] is None

    best = writer.summary(paper=PAPER, compare="best")[0]
    assert best["diff"] == pytest.approx(93.0 - 89.73)
    fractions = writer.summary(scale=1.0)[0]
    assert fractions["last_mean"] == pytest.approx(0.91)
    val = writer.summary(split="val")[1]  # the student has no val accuracy
    assert val["last_mean"] is None and val["n"] == 1


def test_write_summary_markdown_and_csv(tmp_path):
    writer = ResultsWriter(tmp_path)
    for result in _fake_runs():
        writer.add(result)
    rows = writer.write_summary(paper=PAPER)
    assert len(rows) == 2
    with open(tmp_path / "summary.md", encoding="utf-8") as f:
        table = f.read()
    assert table == (
        "| dataset | method | seeds | last (%) | best (%) | paper (%) "
        "| last − paper |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
        "| cifar10 | kd | 3 | 91.00 ± 1.00 | 93.00 ± 2.00 | 89.73 | +1.27 |\n"
        "| cifar10 | student | 1 | 88.00 | 88.50 | n/a | n/a |\n"
    )
    with open(tmp_path / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert float(summary[0]["last_std"]) == pytest.approx(1.0)
    assert summary[1]["paper"] == "" and summary[1]["last_std"] == ""


def test_markdown_escapes_pipes_and_signs_negative_diffs():
    row = dict(dataset="c|10", method="kd", n=2, last_mean=88.0,
               last_std=0.5, best_mean=None, best_std=None, paper=89.73,
               diff=-1.73, wall_time_mean=None)
    line = markdown_table([row], digits=1).splitlines()[2]
    assert line == "| c\\|10 | kd | 2 | 88.0 ± 0.5 | n/a | 89.7 | -1.7 |"


def test_load_runs_round_trip_and_resume(tmp_path):
    runs = _fake_runs()
    ResultsWriter(tmp_path).add(runs[0])
    # A second writer on the same directory continues the record.
    later = ResultsWriter(tmp_path)
    for result in runs[1:]:
        later.add(result)
    loaded = load_runs(tmp_path)
    assert [r.to_dict() for r in loaded] == [r.to_dict() for r in runs]
    assert isinstance(loaded[0], RunResult)
    assert len(later.summary()) == 2


def test_load_runs_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="runs.csv") as info:
        load_runs(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert ResultsWriter(tmp_path).summary() == []
    writer = ResultsWriter(tmp_path)
    writer.add(_fake_runs()[0])
    os.remove(tmp_path / "kd-0.json")
    with pytest.raises(FileNotFoundError, match="kd-0"):
        load_runs(tmp_path)


def test_from_dict_keeps_unknown_keys():
    record = _fake_runs()[0].to_dict()
    record["tflite_bytes"] = 1234
    result = RunResult.from_dict(record)
    assert result.extra == {"tflite_bytes": 1234}


def test_bad_summary_arguments():
    runs = _fake_runs()
    with pytest.raises(TypeError, match="paper="):
        summarize(runs, {"kd": 89.73})
    with pytest.raises(ValueError, match="split='train'"):
        summarize(runs, split="train")
    with pytest.raises(ValueError, match="compare='mean'"):
        summarize(runs, compare="mean")
    with pytest.raises(TypeError, match="run_dir=3"):
        ResultsWriter(3)
    with pytest.raises(TypeError, match="result of type list"):
        ResultsWriter.__new__(ResultsWriter).add([1])
