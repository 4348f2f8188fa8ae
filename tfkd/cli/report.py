"""`tfkd report RUN_DIR`: summary table and plots of finished runs.

    tfkd report RUN_DIR [--out DIR] [--split test|val] [--compare last|best]

Reads a run directory written by `tfkd.app.reporting.ResultsWriter` (`runs.csv`
plus one JSON record per run; the recipes), by `tfkd demo`
(`results.json`) or by `tfkd tune` (`trials.json`), and writes into
`RUN_DIR` (or `--out`):

- `summary.md`, `summary.csv`: mean ± std over seeds per (dataset, method),
  beside the papers' numbers when an earlier `summary.csv` in `RUN_DIR`
  recorded them (as `ResultsWriter.write_summary(paper=...)` does);
- `plots/curves_<run_id>.png`: training curves per loss term of every run
  that recorded its history (`tfkd.app.plots.plot_history`);
- `plots/accuracy_vs_params.png` (one per dataset,
  `accuracy_vs_params_<dataset>.png`, when there are several): teacher,
  scratch student and distilled students (`plot_accuracy_vs_params`), and
  `plots/accuracy_vs_latency.png` when runs recorded a TFLite latency;
- `report.md`: the table and the plots on one page.

For a `tfkd tune` folder the table lists the trials best first (rank, the
trial's number as Keras Tuner printed it, method, hyperparameters, the
objective on the validation split), after the teacher's and the best
student's held-out test accuracy, and `plots/curves_trial_<n>.png` draws
each trial's curves.

Methods named `teacher` are drawn as the teacher, `student` / `scratch` /
`baseline` as the student trained from scratch, every other method as a
distilled student.
"""

import csv
import json
import os
import re

from tfkd import io as tfkd_io
from tfkd.app import reporting

DEMO_RESULTS = "results.json"
TUNE_RESULTS = "trials.json"
#: The export report the demo and `tfkd export` may leave beside the model.
EXPORT_REPORT = "student.json"
PLOTS_DIR = "plots"
REPORT_MD = "report.md"
SCRATCH_METHODS = ("student", "scratch", "baseline")
# Demo roles -> the method names its records get.
_DEMO_ROLES = {"teacher": "teacher", "scratch": "student"}


def register(subparsers):
    """Adds the `report` sub-command to an `argparse` sub-parser group."""
    parser = subparsers.add_parser(
        "report",
        help="summary table and plots of a run directory",
        description=(
            "Summarise the runs in RUN_DIR (written by "
            "tfkd.app.reporting.ResultsWriter or by `tfkd demo --out`): "
            "summary.md / summary.csv, training curves per loss term and "
            "accuracy vs parameters."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="directory with runs.csv, results.json (tfkd "
                             "demo) or trials.json (tfkd tune)")
    parser.add_argument("--out", default=None,
                        help="output directory (default: RUN_DIR)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="accuracies summarised (default: test)")
    parser.add_argument("--compare", choices=("last", "best"),
                        default="last",
                        help="which mean is compared with the paper "
                             "(default: last)")
    parser.add_argument("--digits", type=int, default=2,
                        help="decimals in summary.md (default: 2)")
    parser.add_argument("--no-plots", action="store_true",
                        help="write the tables only")
    # Tables and matplotlib plots: no TensorFlow to start.
    parser.set_defaults(func=_run_from_args, needs_tensorflow=False)
    return parser


def _run_from_args(args):
    written = write_report(args.run_dir, args.out, split=args.split,
                           compare=args.compare, digits=args.digits,
                           plots=not args.no_plots)
    with open(written["summary.md"], encoding="utf-8") as f:
        print(f.read(), end="")
    print("\nWrote:")
    for path in written.values():
        print(f"  {path}")
    return 0


# ----------------------------------------------------------------------------
# Reading.


def load_demo_results(path):
    """Reads the demo's `results.json` as `RunResult`s.

    Each seed of the demo becomes three records on data set `digits`:
    method `teacher`, method `student` (the same student trained from
    scratch) and the distilled student under its method's name (e.g.
    `kd`). Histories (`"history"` per role) and an export report
    (`student.json` beside it, with `latency_ms`) are used when present.

    Args:
        path: The `results.json` file, or the directory holding it.

    Returns:
        A list of `tfkd.app.reporting.RunResult`.

    Example:

    >>> import json, os, tempfile
    >>> run = {"seed": 0, "method": "kd", "seconds": 40.0,
    ...        "teacher": {"accuracy": 0.97, "params": 60000},
    ...        "scratch": {"accuracy": 0.91, "params": 6000},
    ...        "distilled": {"accuracy": 0.94, "params": 6000}}
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "results.json"), "w") as f:
    ...     json.dump({"runs": [run]}, f)
    >>> [(r.method, r.test_accuracy_last) for r in load_demo_results(folder)]
    [('teacher', 0.97), ('student', 0.91), ('kd', 0.94)]
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, DEMO_RESULTS)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No demo results at {path!r}. Run `tfkd demo --out DIR` first, "
            "or pass the directory it wrote."
        )
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path} is not valid JSON ({e}). Re-run `tfkd demo` to "
                "rewrite it."
            ) from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise ValueError(
            f"{path} has no list of runs under 'runs'. Pass a results.json "
            "written by `tfkd demo`."
        )
    export = _read_export_report(os.path.dirname(path))
    results = []
    for i, run in enumerate(runs):
        seed = int(run.get("seed", i))
        method = str(run.get("method", "distilled"))
        wall_time = run.get("seconds")
        for role in ("teacher", "scratch", "distilled"):
            record = run.get(role)
            if not isinstance(record, dict):
                continue
            name = _DEMO_ROLES.get(role, method)
            extra = {"source": "tfkd demo", "role": role}
            latency = None
            if export is not None and i == len(runs) - 1:
                # The demo exports the last seed's distilled student (and
                # its teacher for comparison).
                if role == "distilled":
                    latency = export.get("latency_ms")
                elif role == "teacher":
                    latency = (export.get("teacher") or {}).get("latency_ms")
            if record.get("latency_ms") is not None:
                latency = record["latency_ms"]
            if latency is not None:
                extra["latency_ms"] = float(latency)
            history = record.get("history") or {}
            results.append(reporting.RunResult(
                method=name, dataset=str(run.get("dataset", "digits")),
                seed=seed,
                teacher="digits_teacher",
                student="digits_teacher" if role == "teacher"
                else "digits_student",
                student_params=record.get("params"),
                teacher_params=(run.get("teacher") or {}).get("params"),
                history=history,
                test_accuracy_last=record.get("accuracy"),
                test_accuracy_best=record.get("accuracy"),
                wall_time=wall_time if role == "distilled" else None,
                run_id=f"demo_{name}_seed{seed}",
                hyperparameters=run.get("hyperparameters") or {},
                extra=extra,
            ))
    return results


def load_tune_results(path):
    """Reads `tfkd tune`'s `trials.json` (the file or its folder).

    Args:
        path: `trials.json`, or the folder `tfkd tune` wrote.

    Returns:
        The record as a dict: `trials` (best first, each with `trial`,
        `status`, `score`, `hyperparameters`, `history`), `objective`,
        `teacher_test_accuracy`, `best_student_test_accuracy`, ...

    Raises:
        FileNotFoundError: No `trials.json` there.
        ValueError: The file is not a `tfkd tune` record.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, TUNE_RESULTS)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No tuning results at {path!r}. Run `tfkd tune --out DIR` "
            "first, or pass the folder it wrote.")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}). Re-run `tfkd "
                         "tune` to rewrite it.") from None
    if not isinstance(data, dict) or not isinstance(data.get("trials"),
                                                    list):
        raise ValueError(f"{path} has no list of trials under 'trials'. "
                         "Pass a trials.json written by `tfkd tune`.")
    return data


def _is_tune_dir(run_dir):
    return (os.path.exists(os.path.join(run_dir, TUNE_RESULTS))
            and not os.path.exists(os.path.join(run_dir, reporting.RUNS_CSV))
            and not os.path.exists(os.path.join(run_dir, DEMO_RESULTS)))


def _trial_label(row):
    return row.get("trial", row.get("trial_id", "?"))


def tune_table(record, *, digits=2):
    """The trials of a `tfkd tune` record as Markdown, best first.

    Example:

    >>> print(tune_table({"objective": "val_accuracy", "trials": [
    ...     {"trial": 2, "score": 0.95, "status": "COMPLETED",
    ...      "hyperparameters": {"method": "kd", "kd/alpha": 0.31}},
    ...     {"trial": 1, "score": 0.90, "status": "COMPLETED",
    ...      "hyperparameters": {"method": "lp", "lp/k": 3}}]}), end="")
    | rank | trial | method | hyperparameters | val_accuracy (%) | status |
    | ---: | ---: | --- | --- | ---: | --- |
    | 1 | 2 | kd | alpha=0.31 | 95.00 | COMPLETED |
    | 2 | 1 | lp | k=3 | 90.00 | COMPLETED |
    """
    objective = str(record.get("objective") or "score")
    percent = "accuracy" in objective
    unit = " (%)" if percent else ""
    lines = [f"| rank | trial | method | hyperparameters | {objective}{unit}"
             " | status |",
             "| ---: | ---: | --- | --- | ---: | --- |"]
    methods = record.get("methods") or []
    for rank, row in enumerate(record["trials"], start=1):
        hps = dict(row.get("hyperparameters") or {})
        method = hps.pop("method", methods[0] if len(methods) == 1 else "")
        shown = []
        for name, value in hps.items():
            name = name.split("/", 1)[1] if "/" in name else name
            if isinstance(value, float):
                value = f"{value:.4g}"
            shown.append(f"{name}={value}")
        score = row.get("score")
        if score is None:
            cell = "n/a"
        else:
            cell = f"{score * 100 if percent else score:.{digits}f}"
        cells = [str(rank), str(_trial_label(row)), str(method),
                 ", ".join(shown) or "-", cell, str(row.get("status", ""))]
        lines.append("| " + " | ".join(
            c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _tune_summary(record, digits):
    lines = ["## Trials, best first", "",
             "Trial numbers are the ones Keras Tuner printed (\"Running "
             "Trial #2\" is trial 2). The objective is each trial's best "
             "epoch on the validation split.", "", tune_table(record,
                                                              digits=digits)]
    size = record.get("test_size")
    split = f"held-out test split, {size} images" if size else \
        "held-out test split"
    facts = []
    if record.get("teacher_test_accuracy") is not None:
        facts.append(f"- teacher: {record['teacher_test_accuracy'] * 100:.2f}"
                     f" % test accuracy ({split})")
    if record.get("best_student_test_accuracy") is not None:
        params = record.get("best_student_params")
        params = f", {params:,} parameters" if params else ""
        facts.append(f"- best student (trial {record.get('best_trial', '?')}"
                     f"{params}): "
                     f"{record['best_student_test_accuracy'] * 100:.2f} % "
                     f"test accuracy ({split})")
    if facts:
        lines[1:1] = [""] + facts
    return "\n".join(lines).rstrip() + "\n"


def _write_tune_report(run_dir, out, digits, plots):
    record = load_tune_results(run_dir)
    os.makedirs(out, exist_ok=True)
    written = {}
    text = "# Tuning report\n\n" + _tune_summary(record, digits)
    written["summary.md"] = tfkd_io.write_text(
        os.path.join(out, reporting.SUMMARY_MD), text)
    columns = ["rank", "trial", "status", "score", "hyperparameters"]
    rows = [{"rank": rank, "trial": _trial_label(row),
             "status": row.get("status", ""),
             "score": "" if row.get("score") is None else row["score"],
             "hyperparameters": json.dumps(row.get("hyperparameters") or {},
                                           sort_keys=True)}
            for rank, row in enumerate(record["trials"], start=1)]
    written["summary.csv"] = tfkd_io.write_text(
        os.path.join(out, reporting.SUMMARY_CSV),
        reporting._csv_text(rows, columns), newline="")
    images = {}
    if plots:
        from tfkd.app import plots as plots_lib

        folder = os.path.join(out, PLOTS_DIR)
        os.makedirs(folder, exist_ok=True)
        for row in record["trials"]:
            history = row.get("history") or {}
            if not any(isinstance(v, list) and v for v in history.values()):
                continue
            key = f"curves_trial_{_file_id(_trial_label(row))}"
            path = os.path.join(folder, f"{key}.png")
            method = (row.get("hyperparameters") or {}).get("method", "")
            try:
                fig = plots_lib.plot_history(
                    history, path, title=f"trial {_trial_label(row)} "
                                         f"{method}".rstrip())
            except ValueError:
                continue
            _close(fig)
            images[key] = path
    body = [text.rstrip(), ""]
    for key, path in images.items():
        rel = os.path.relpath(path, out).replace(os.sep, "/")
        body += [f"## {key.replace('_', ' ')}", "", f"![{key}]({rel})", ""]
    written["report.md"] = tfkd_io.write_text(
        os.path.join(out, REPORT_MD), "\n".join(body).rstrip() + "\n")
    written.update(images)
    return written


def _read_export_report(folder):
    path = os.path.join(folder, EXPORT_REPORT)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) else None


def collect_runs(run_dir):
    """Every run recorded in `run_dir`, from `runs.csv` and `results.json`.

    Args:
        run_dir: A directory written by `ResultsWriter` and/or `tfkd demo`.

    Returns:
        A list of `RunResult`s (the `ResultsWriter` runs first).

    Raises:
        FileNotFoundError: `run_dir` does not exist or holds neither file.
    """
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(
            f"RUN_DIR {run_dir!r} is not a directory. Pass the directory a "
            "`ResultsWriter` or `tfkd demo --out` wrote to."
        )
    has_runs = os.path.exists(os.path.join(run_dir, reporting.RUNS_CSV))
    has_demo = os.path.exists(os.path.join(run_dir, DEMO_RESULTS))
    if not has_runs and not has_demo:
        raise FileNotFoundError(
            f"No {reporting.RUNS_CSV}, {DEMO_RESULTS} or {TUNE_RESULTS} in "
            f"RUN_DIR {run_dir!r}. Pass a directory written by "
            "`tfkd.app.reporting.ResultsWriter` (runs.csv + one JSON per "
            "run), by `tfkd demo` (results.json) or by `tfkd tune` "
            "(trials.json)."
        )
    runs = reporting.load_runs(run_dir) if has_runs else []
    if has_demo:
        known = {r.run_id for r in runs}
        runs += [r for r in load_demo_results(run_dir)
                 if r.run_id not in known]
    if not runs:
        raise ValueError(
            f"RUN_DIR {run_dir!r} records no runs yet ({reporting.RUNS_CSV} "
            "has no rows). Finish at least one run first."
        )
    return runs


def read_paper_values(path):
    """Paper values `{(dataset, method): value}` from a `summary.csv`.

    Args:
        path: A `summary.csv` written by `ResultsWriter.write_summary`.

    Returns:
        The dict (empty when the file is missing or has no paper values).

    Example:

    >>> read_paper_values("no/such/summary.csv")
    {}
    """
    paper = {}
    if not os.path.exists(path):
        return paper
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                value = float(row.get("paper") or "")
            except ValueError:
                continue
            paper[(row.get("dataset", ""), row.get("method", ""))] = value
    return paper


# ----------------------------------------------------------------------------
# Plot data.


def role_of(method):
    """`"teacher"`, `"scratch"` or `"distilled"` for a method name.

    Example:

    >>> role_of("teacher"), role_of("student"), role_of("correlation-two+kd")
    ('teacher', 'scratch', 'distilled')
    """
    method = str(method).lower()
    if method == "teacher":
        return "teacher"
    if method in SCRATCH_METHODS:
        return "scratch"
    return "distilled"


def _latency(result):
    extra = result.extra or {}
    for source in (extra, extra.get("tflite") or {},
                   extra.get("export") or {}):
        if isinstance(source, dict) and source.get("latency_ms") is not None:
            return float(source["latency_ms"])
    return None


def _accuracy(result, split, which):
    value = result.accuracy(split, which)
    if value is None:
        other = "val" if split == "test" else "test"
        value = result.accuracy(other, which)
    return value


def accuracy_points(results, *, split="test", which="last"):
    """Points for `tfkd.app.plots.plot_accuracy_vs_params`, per data set.

    Runs are grouped by (dataset, method); each group gives one point with
    the mean accuracy over seeds (percent), its sample standard deviation,
    the student's parameter count (the teacher's for method `teacher`) and
    the mean TFLite latency when recorded (`extra["latency_ms"]`).

    Args:
        results: `RunResult`s.
        split: `"test"` or `"val"` (the other split is used when a run has
            no value for this one).
        which: `"last"` or `"best"`.

    Returns:
        A dict `{dataset: [point, ...]}`.
    """
    groups = {}
    for r in results:
        groups.setdefault((r.dataset, r.method), []).append(r)
    points = {}
    for (dataset, method), runs in groups.items():
        role = role_of(method)
        accuracies = [_accuracy(r, split, which) for r in runs]
        accuracies = [100.0 * a for a in accuracies if a is not None]
        if not accuracies:
            continue
        mean, std = reporting._mean_std(accuracies)
        params = [r.student_params for r in runs if r.student_params]
        if role == "teacher" and not params:
            params = [r.teacher_params for r in runs if r.teacher_params]
        latencies = [v for v in map(_latency, runs) if v is not None]
        label = {"teacher": "teacher",
                 "scratch": "student from scratch" if method == "student"
                 else f"student ({method})"}.get(role, method)
        points.setdefault(dataset, []).append({
            "label": label,
            "role": role,
            "accuracy": mean,
            "accuracy_std": std,
            "params": params[0] if params else None,
            "latency_ms": (sum(latencies) / len(latencies)
                           if latencies else None),
            "seeds": len(accuracies),
        })
    return points


def _file_id(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "run"


# ----------------------------------------------------------------------------
# Writing.


def write_report(run_dir, out=None, *, split="test", compare="last",
                 digits=2, plots=True):
    """Writes the summary tables and plots of `run_dir`.

    Args:
        run_dir: Directory written by `ResultsWriter` and/or `tfkd demo`.
        out: Output directory (created if missing); default `run_dir`.
        split: Accuracies summarised, `"test"` or `"val"`.
        compare: `"last"` or `"best"`: which mean is compared with the
            paper's value.
        digits: Decimals in `summary.md`.
        plots: Whether to draw the PNGs.

    Returns:
        A dict `{name: path}` of the files written (`summary.md`,
        `summary.csv`, `report.md`, then the plots).

    Example:

    >>> import tempfile
    >>> from tfkd.app.reporting import ResultsWriter, RunResult
    >>> folder = tempfile.mkdtemp()
    >>> writer = ResultsWriter(folder)
    >>> _ = writer.add(RunResult(method="kd", dataset="digits", seed=0,
    ...     student_params=6000, test_accuracy_last=0.95, run_id="kd-0",
    ...     history={"loss": [1.0, 0.5], "kd_loss": [2.0, 1.0]}))
    >>> sorted(write_report(folder))  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy_vs_params', 'curves_kd-0', 'report.md', 'summary.csv',
     'summary.md']
    """
    if not isinstance(digits, int) or isinstance(digits, bool) \
            or digits < 0:
        raise ValueError(
            f"`digits` must be an int >= 0. Received: digits={digits!r}."
        )
    if os.path.isdir(os.fspath(run_dir)) and _is_tune_dir(os.fspath(run_dir)):
        return _write_tune_report(os.fspath(run_dir), os.fspath(
            run_dir if out is None else out), digits, plots)
    results = collect_runs(run_dir)
    out = os.fspath(run_dir if out is None else out)
    os.makedirs(out, exist_ok=True)
    paper = read_paper_values(os.path.join(os.fspath(run_dir),
                                           reporting.SUMMARY_CSV))
    rows = reporting.summarize(results, paper, split=split, compare=compare)
    table = reporting.markdown_table(rows, digits=digits, compare=compare)
    written = {}
    path = os.path.join(out, reporting.SUMMARY_MD)
    written["summary.md"] = tfkd_io.write_text(path, table)
    path = os.path.join(out, reporting.SUMMARY_CSV)
    written["summary.csv"] = reporting.write_summary_csv(path, rows)
    images = {}
    if plots:
        images = _write_plots(results, os.path.join(out, PLOTS_DIR), split,
                              compare)
    path = os.path.join(out, REPORT_MD)
    written["report.md"] = tfkd_io.write_text(
        path, _report_markdown(table, images, out, split))
    written.update(images)
    return written


def _write_plots(results, folder, split, which):
    from tfkd.app import plots

    os.makedirs(folder, exist_ok=True)
    images = {}
    by_dataset = accuracy_points(results, split=split, which=which)
    several = len(by_dataset) > 1
    for dataset, points in by_dataset.items():
        suffix = f"_{_file_id(dataset)}" if several else ""
        for x, name in (("params", "accuracy_vs_params"),
                        ("latency_ms", "accuracy_vs_latency")):
            if not any(p.get(x) is not None for p in points):
                continue
            path = os.path.join(folder, f"{name}{suffix}.png")
            what = "parameters" if x == "params" else "TFLite latency"
            fig = plots.plot_accuracy_vs_params(
                points, path, x=x,
                title=f"{dataset}: {split} accuracy vs {what}")
            _close(fig)
            images[f"{name}{suffix}"] = path
    for r in results:
        if not any(isinstance(v, list) and v for v in r.history.values()):
            continue
        key = f"curves_{_file_id(r.run_id)}"
        path = os.path.join(folder, f"{key}.png")
        try:
            fig = plots.plot_history(
                r.history, path,
                title=f"{r.dataset} · {r.method} · seed {r.seed}")
        except ValueError:
            continue  # A history without numeric curves.
        _close(fig)
        images[key] = path
    return images


def _close(fig):
    fig.clear()


def _report_markdown(table, images, out, split):
    lines = ["# Run report", "",
             f"Mean ± sample standard deviation over seeds, {split} "
             "accuracy in percent.", "", table]
    for key, path in images.items():
        rel = os.path.relpath(path, out).replace(os.sep, "/")
        lines += [f"## {key.replace('_', ' ')}", "", f"![{key}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"
