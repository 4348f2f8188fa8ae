"""Checks of what a recipe's quick run returns and writes, for the smoke tests.

A one-epoch smoke run cannot show that distillation helps, but it can show
that the recipe trains a teacher that learns, runs every requested method,
and reports the same numbers everywhere: in the rows it returns, in
`summary.csv`, in the `summary.md` table and (as fractions, one run per
row) in `runs.csv`. A recipe that drops or reorders a method, reports the
teacher's accuracy for a student, mixes fractions and percentages or
writes a table from stale runs fails here.
"""

import csv
import math
import os

import pytest

CHANCE = 10.0  # Percent: ten classes.


def _markdown_rows(text):
    """The body rows of the first Markdown table in `text`, as cell lists."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 3 and set(lines[1]) <= set("|-: "), text
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in lines[2:]]


def check_outputs(out, rows, methods, *, teacher, min_teacher=3 * CHANCE):
    """Checks a quick run's `rows` and the files in `out` (see module doc).

    Args:
        out: The recipe's output directory.
        rows: What the recipe's `main` returned.
        methods: The expected `method` of each row, in order.
        teacher: The `method` of the teacher's row.
        min_teacher: Test accuracy (%) the teacher must reach, or `None`
            when another test checks it for the same recipe code.
    """
    assert [row["method"] for row in rows] == methods
    for row in rows:
        assert row["dataset"] == "digits" and row["n"] == 1, row
        assert math.isfinite(row["last_mean"]), row
        assert row["best_mean"] >= row["last_mean"], row
        assert row["wall_time_mean"] > 0, row
    by_method = {row["method"]: row for row in rows}
    if min_teacher is not None:
        # The teacher learned: clearly better than guessing.
        assert by_method[teacher]["last_mean"] >= min_teacher, (
            by_method[teacher])

    with open(os.path.join(out, "summary.csv"), newline="") as f:
        summary = list(csv.DictReader(f))
    assert [s["method"] for s in summary] == methods
    for s in summary:
        row = by_method[s["method"]]
        assert int(s["n"]) == 1
        assert float(s["last_mean"]) == pytest.approx(row["last_mean"])
        assert float(s["best_mean"]) == pytest.approx(row["best_mean"])

    with open(os.path.join(out, "summary.md")) as f:
        table = _markdown_rows(f.read())
    assert [cells[1] for cells in table] == methods
    assert [cells[3] for cells in table] == [
        f"{by_method[m]['last_mean']:.2f}" for m in methods]

    with open(os.path.join(out, "runs.csv"), newline="") as f:
        runs = list(csv.DictReader(f))
    assert sorted(r["method"] for r in runs) == sorted(methods)
    for run in runs:
        row = by_method[run["method"]]
        assert 100 * float(run["test_accuracy_last"]) == pytest.approx(
            row["last_mean"])
        assert 100 * float(run["test_accuracy_best"]) == pytest.approx(
            row["best_mean"])
        assert os.path.exists(os.path.join(out, run["json_file"]))


def page_table(text, start, key_cells=1):
    """`{first cell: cells}` of the first Markdown table after `start` (a
    results page's heading or table header); with `key_cells=n`, keyed by
    the tuple of the first `n` cells."""
    lines = text[text.index(start):].splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("| "))
    rows = {}
    for line in lines[i + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0] if key_cells == 1 else tuple(cells[:key_cells])] = (
            cells)
    return rows
