"""The Fashion-MNIST results page from the records of the two recipes.

Reads the run folders of `recipes/transfer.py --data fashion_mnist` (few
labels + unlabelled transfer data; several folders when seeds ran in
separate processes) and of `recipes/methods.py --data fashion_mnist` (all
labels), and writes one table -- every method at 10 and 100 labels a class
and with all labels, mean ± std over the seeds that finished, the gain over
the student alone (on the seeds both ran) and the mean wall time of a run -- and its figure:

    python recipes/fashion_mnist_page.py --transfer RUN_DIR [RUN_DIR ...] \\
        --methods-dir RUN_DIR --table out.md --figure out.png

With `--budget RUN_DIR [RUN_DIR ...]` (folders of `recipes/transfer.py
--epochs E` runs of some methods), it also writes the gain of those methods
at every epoch count, the `--transfer` folders' runs giving the default
budget's column (`--budget-table`, `--budget-figure`).

A cell computed from fewer seeds than the others says so (`n = 1`).
"""

import argparse
import statistics
import sys

import tfkd
from tfkd.app.reporting import load_runs
from tfkd.app.reporting import summarize

TITLE = "Fashion-MNIST"
ALL = "all labels"


def _epochs(run):
    """The student epochs a run was given (its recorded setting)."""
    return int(run.hyperparameters.get("epochs", run.epochs or 0))


def unique_runs(runs, *, by_epochs=False):
    """The runs with one record per (data set, method, seed): the first
    (per epoch count too with `by_epochs`).

    Folders of runs made in parallel can hold the same run twice (the
    student alone of a seed, re-run beside a subset of methods); counted
    twice it would pass for another seed.
    """
    seen, kept = set(), []
    for run in runs:
        key = (run.dataset, run.method, run.seed)
        if by_epochs:
            key += (_epochs(run),)
        if key not in seen:
            seen.add(key)
            kept.append(run)
    return kept


def settings_table(transfer_dirs, methods_dir):
    """`({setting: {method: row}}, teacher row)` from the recipes' records.

    `setting` is `"10 labels/class"`, `"100 labels/class"` or `"all
    labels"`; a row is `summarize`'s (mean, std, n, wall time).
    """
    runs = []
    for folder in transfer_dirs:
        runs += load_runs(folder)
    runs = unique_runs(runs)
    rows = summarize(runs)
    table, teacher = {}, None
    accuracy = {}  # (setting, method) -> {seed: test accuracy %}
    for run in runs:
        if run.dataset != f"{TITLE}, all labels":
            setting = run.dataset.split(", ", 1)[1]
            accuracy.setdefault((setting, run.method), {})[run.seed] = (
                100 * run.test_accuracy_last)
    for row in rows:
        dataset = row["dataset"]
        if dataset == f"{TITLE}, all labels":
            teacher = row
            continue
        setting = dataset.split(", ", 1)[1]
        table.setdefault(setting, {})[row["method"]] = row
    if methods_dir:
        methods_runs = unique_runs(load_runs(methods_dir))
        for run in methods_runs:
            accuracy.setdefault((ALL, run.method), {})[run.seed] = (
                100 * run.test_accuracy_last)
        for row in summarize(methods_runs):
            if row["method"] == "teacher":
                teacher = teacher or row
                continue
            table.setdefault(ALL, {})[row["method"]] = row
    # The gain over the student alone, on the seeds both ran.
    for setting, values in table.items():
        base = accuracy.get((setting, "student"), {})
        for method, row in values.items():
            mine = accuracy.get((setting, method), {})
            common = sorted(set(mine) & set(base))
            row["gain"] = (statistics.fmean(mine[s] - base[s] for s in common)
                           if common and method != "student" else None)
    return _in_order(table), teacher


def _in_order(table):
    """`table` with its settings in order: the label budgets, smallest
    first, then all labels."""
    order = sorted((s for s in table if s != ALL),
                   key=lambda s: int(s.split()[0]))
    return {s: table[s] for s in order + ([ALL] if ALL in table else [])}


def budget_table(transfer_dirs, budget_dirs, methods_dir=None):
    """`{setting: {method: {epochs: {seed: accuracy %}}}}` for the methods
    of the `budget_dirs` runs (and the student alone), at every epoch count
    the `transfer_dirs`, `budget_dirs` and `methods_dir` runs hold;
    `budget_dirs` may also be run folders of `recipes/methods.py` (the "all
    labels" setting, as `methods_dir`)."""
    budget_runs = [r for folder in budget_dirs for r in load_runs(folder)]
    runs = list(budget_runs)
    for folder in list(transfer_dirs) + ([methods_dir] if methods_dir
                                         else []):
        runs += load_runs(folder)
    runs = unique_runs(runs, by_epochs=True)
    methods = {r.method for r in budget_runs} - {"teacher"} | {"student"}
    table = {}
    for run in runs:
        if run.method not in methods:
            continue
        # `recipes/methods.py` records all labels under the bare title.
        setting = (ALL if run.dataset == TITLE
                   else run.dataset.split(", ", 1)[1])
        table.setdefault(setting, {}).setdefault(run.method, {}).setdefault(
            _epochs(run), {})[run.seed] = 100 * run.test_accuracy_last
    return _in_order(table)


def budget_gains(table):
    """`{setting: {method: {epochs: (mean gain, std)}}}`: each method's gain
    over the student alone of the same epochs and seed, on the seeds both
    ran."""
    gains = {}
    for setting, methods in table.items():
        base = methods.get("student", {})
        for method, by_epochs in methods.items():
            if method == "student":
                continue
            for epochs, seeds in by_epochs.items():
                common = sorted(set(seeds) & set(base.get(epochs, {})))
                if not common:
                    continue
                values = [seeds[s] - base[epochs][s] for s in common]
                std = statistics.stdev(values) if len(values) > 1 else None
                gains.setdefault(setting, {}).setdefault(method, {})[
                    epochs] = (statistics.fmean(values), std)
    return gains


def budget_markdown(table):
    """One row per (setting, method), one column per epoch count: the test
    accuracy, mean ± std over seeds, and the gain over the student alone
    of the same epochs."""
    gains = budget_gains(table)
    budgets = sorted({e for t in table.values() for c in t.values()
                      for e in c})
    lines = ["| labels | method | " + " | ".join(
                 f"{e} epochs (%)" for e in budgets) + " |",
             "| --- | --- |" + " ---: |" * len(budgets)]
    for setting, methods in table.items():
        for method in ["student"] + sorted(m for m in methods
                                           if m != "student"):
            if method not in methods:
                continue
            cells = []
            for e in budgets:
                seeds = methods[method].get(e)
                if not seeds:
                    cells.append("—")
                    continue
                values = list(seeds.values())
                text = f"{statistics.fmean(values):.1f}"
                if len(values) > 1:
                    text += f" ± {statistics.stdev(values):.1f}"
                gain = gains.get(setting, {}).get(method, {}).get(e)
                if gain is not None:
                    text += f" ({gain[0]:+.1f})"
                cells.append(text)
            name = "student alone" if method == "student" else f"`{method}`"
            labels = (setting if setting == ALL
                      else f"{setting.split()[0]}/class")
            lines.append(f"| {labels} | {name} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines) + "\n"


def _cell(row, seeds):
    if row is None or row["last_mean"] is None:
        return "—"
    text = f"{row['last_mean']:.1f}"
    if row["last_std"] is not None:
        text += f" ± {row['last_std']:.1f}"
    if row["n"] < seeds:
        text += f" (n = {row['n']})"
    return text


def markdown(table, teacher):
    """The combined table: methods measured in more settings first, then
    by their mean over settings, best first."""
    settings = list(table)
    seeds = max((r["n"] for t in table.values() for r in t.values()),
                default=0)
    methods = []
    for values in table.values():
        methods += [m for m in values if m not in methods]

    def overall(method):
        means = [table[s][method]["last_mean"] for s in settings
                 if method in table[s]
                 and table[s][method]["last_mean"] is not None]
        return statistics.fmean(means) if means else float("-inf")

    def rank(method):
        # A partial run: the methods measured in more settings first.
        present = sum(method in table[s] for s in settings)
        return present, overall(method)

    methods.sort(key=rank, reverse=True)
    header = (["method"] + [f"{s} (%)" for s in settings]
              + [f"gain, {s}" for s in settings] + ["s / run"])
    lines = ["| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (2 * len(settings) + 1)]
    for method in methods:
        cells = ["student alone" if method == "student" else f"`{method}`"]
        gains, walls = [], []
        for s in settings:
            row = table[s].get(method)
            cells.append(_cell(row, seeds))
            if row and row.get("wall_time_mean") is not None:
                walls.append(row["wall_time_mean"])
            if row is None or row.get("gain") is None:
                gains.append("")
            else:
                gains.append(f"{row['gain']:+.1f}")
        wall = f"{statistics.fmean(walls):.0f}" if walls else ""
        lines.append("| " + " | ".join(cells + gains + [wall]) + " |")
    if teacher is not None:
        lines.append("| teacher (all training labels) | " + " | ".join(
            [_cell(teacher, seeds)] * len(settings) + [""] * len(settings)
            # Blank: a teacher reused from an earlier run records ~0 s.
            + [""]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfer", nargs="+", required=True,
                        help="run folders of recipes/transfer.py")
    parser.add_argument("--methods-dir", default=None,
                        help="run folder of recipes/methods.py")
    parser.add_argument("--table", required=True, help="Markdown to write")
    parser.add_argument("--figure", default=None, help=".png to write")
    parser.add_argument("--budget", nargs="+", default=(),
                        help="run folders of recipes/transfer.py (or "
                             "methods.py) --epochs E")
    parser.add_argument("--budget-table", default=None,
                        help="Markdown to write: gains by epoch count")
    parser.add_argument("--budget-figure", default=None,
                        help=".png to write: gains by epoch count")
    args = parser.parse_args(argv)
    if (args.budget_table or args.budget_figure) and not args.budget:
        parser.error("--budget-table and --budget-figure need --budget "
                     "RUN_DIR [RUN_DIR ...]")
    table, teacher = settings_table(args.transfer, args.methods_dir)
    text = markdown(table, teacher)
    tfkd.io.write_text(args.table, text)
    if args.figure:
        fig = tfkd.app.plots.plot_method_comparison(
            {s: {m: (r["last_mean"], r["last_std"]) for m, r in t.items()
                 if r["last_mean"] is not None} for s, t in table.items()},
            args.figure,
            title="Fashion-MNIST: few labels + unlabelled images, and all "
                  "labels")
        fig.clear()
    print(text)
    if args.budget:
        budget = budget_table(args.transfer, args.budget, args.methods_dir)
        budget_text = budget_markdown(budget)
        if args.budget_table:
            tfkd.io.write_text(args.budget_table, budget_text)
        if args.budget_figure:
            tfkd.app.plots.plot_gain_by_budget(
                budget_gains(budget), args.budget_figure,
                title="Fashion-MNIST: gain over the student alone by "
                      "student epochs").clear()
        print(budget_text)
    return table, teacher


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
