"""Results of training runs: one record per run, summaries over seeds.

Every recipe and the demo describe a finished run as a `RunResult` and hand
it to a `ResultsWriter`, which keeps, in one run directory:

- `<run_id>.json`: the full record of each run (with the per-epoch history);
- `runs.csv`: one row per run, for spreadsheets;
- `summary.csv` / `summary.md`: mean ± std over seeds per (dataset, method),
  beside the papers' numbers.

Accuracies are stored as Keras reports them, fractions in [0, 1]; summaries
show percentages, as the papers do. Pure Python: csv and json only.
"""

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import re
import statistics
import uuid

from tfkd import io as tfkd_io

RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"

_ACCURACY_FIELDS = (
    "test_accuracy_last", "test_accuracy_best",
    "val_accuracy_last", "val_accuracy_best",
)
# Columns of `runs.csv`, in order. Full records (history) live in the JSON.
RUNS_COLUMNS = (
    "run_id", "dataset", "method", "seed", "teacher", "student",
    "teacher_params", "student_params", *_ACCURACY_FIELDS, "best_epoch",
    "epochs", "wall_time", "created", "hyperparameters", "json_file",
)
SUMMARY_COLUMNS = (
    "dataset", "method", "n", "last_mean", "last_std", "best_mean",
    "best_std", "paper", "diff", "wall_time_mean",
)


def _jsonable(value):
    """`json.dump` fallback for NumPy / TensorFlow scalars and arrays."""
    if hasattr(value, "tolist"):  # np.ndarray, np.generic
        return value.tolist()
    if hasattr(value, "numpy"):  # eager tf.Tensor
        return _jsonable(value.numpy())
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _to_builtin(value):
    """A JSON round-trip: tuples -> lists, NumPy scalars -> Python numbers."""
    return json.loads(json.dumps(value, default=_jsonable))


def _float_or_none(value, name):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{name}` must be a number or None. Received: {name}={value!r}."
        ) from None
    return value


def _safe_id(text):
    # Run ids become file names: keep them portable.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "run"


@dataclasses.dataclass(kw_only=True)
class RunResult:
    """The record of one training run.

    Accuracies are fractions in [0, 1], as Keras reports them (a value
    above 1 is rejected: it is probably a percentage). "last" is the final
    epoch's value, "best" the maximum over epochs; reporting "last" is the
    honest choice when the validation set is the test set.

    Args:
        method: Distillation method, e.g. `"kd"`, `"student"`, `"teacher"`,
            `"correlation-two+kd"`.
        dataset: Data set name, e.g. `"cifar10"`.
        seed: Random seed of the run.
        hyperparameters: Dict of the run's settings (JSON-serialisable
            values; NumPy scalars are converted).
        teacher: Teacher model name, or None.
        student: Student model name, or None.
        teacher_params: Teacher parameter count (`count_params()`), or None.
        student_params: Student parameter count, or None.
        history: Per-epoch metrics, `{name: [value per epoch]}`, e.g.
            `keras.callbacks.History.history`.
        test_accuracy_last: Test accuracy after the last epoch.
        test_accuracy_best: Best test accuracy over epochs.
        val_accuracy_last: Validation accuracy after the last epoch.
        val_accuracy_best: Best validation accuracy over epochs.
        best_epoch: 1-based epoch of the best validation (else test)
            accuracy.
        epochs: Number of epochs run; defaults to the history's length.
        wall_time: Training wall time in seconds.
        run_id: Unique id, also the JSON file's name. Default:
            `<dataset>_<method>_seed<seed>_<UTC time>_<random>`.
        created: ISO-8601 UTC time stamp; default now.
        extra: Free-form JSON-serialisable dict (e.g. TFLite size).

    Example:

    >>> result = RunResult(method="kd", dataset="cifar10", seed=0,
    ...                    test_accuracy_last=0.8973, run_id="kd-0")
    >>> result.to_dict()["test_accuracy_last"]
    0.8973
    """

    method: str
    dataset: str
    seed: int = 0
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    teacher: str | None = None
    student: str | None = None
    teacher_params: int | None = None
    student_params: int | None = None
    history: dict = dataclasses.field(default_factory=dict)
    test_accuracy_last: float | None = None
    test_accuracy_best: float | None = None
    val_accuracy_last: float | None = None
    val_accuracy_best: float | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    wall_time: float | None = None
    run_id: str | None = None
    created: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("method", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise TypeError(
                    f"`{name}` must be a non-empty str. Received: "
                    f"{name}={value!r}."
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(
                f"`seed` must be an int. Received: seed={self.seed!r}."
            )
        for name in ("hyperparameters", "history", "extra"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise TypeError(
                    f"`{name}` must be a dict. Received: {name}={value!r} of "
                    f"type {type(value).__name__}."
                )
            setattr(self, name, _to_builtin(value))
        for name in _ACCURACY_FIELDS:
            value = _float_or_none(getattr(self, name), name)
            if value is not None and not (0.0 <= value <= 1.0
                                          or math.isnan(value)):
                raise ValueError(
                    f"`{name}` must be a fraction in [0, 1], as Keras reports "
                    f"accuracy. Received: {name}={value!r}; if it is a "
                    "percentage, divide it by 100."
                )
            setattr(self, name, value)
        self.wall_time = _float_or_none(self.wall_time, "wall_time")
        for name in ("teacher_params", "student_params", "best_epoch",
                     "epochs"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, int(value))
        lengths = [len(v) for v in self.history.values()
                   if isinstance(v, list)]
        if self.epochs is None and lengths:
            self.epochs = max(lengths)
        now = datetime.datetime.now(datetime.timezone.utc)
        if self.created is None:
            self.created = now.isoformat(timespec="seconds")
        if self.run_id is None:
            self.run_id = (
                f"{self.dataset}_{self.method}_seed{self.seed}_"
                f"{now:%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:6]}"
            )
        self.run_id = _safe_id(self.run_id)

    @classmethod
    def from_history(cls, history, *, method, dataset, metric="accuracy",
                     test_accuracy=None, validation_is_test=False, **kwargs):
        """A `RunResult` whose accuracies are read off a training history.

        The validation accuracies come from `history["val_" + metric]`, the
        test ones from `history["test_" + metric]` if a callback logged it.
        A final `test_accuracy` (e.g. from `evaluate`) overrides the last
        test value. With `validation_is_test=True` (the papers' protocol,
        `load_tfds(..., validation_split=None)`) the validation values are
        also the test values.

        Args:
            history: A `keras.callbacks.History` or its `.history` dict.
            method: Distillation method.
            dataset: Data set name.
            metric: Name of the accuracy metric in the history.
            test_accuracy: Final test accuracy, a fraction, or None.
            validation_is_test: Whether the validation data were the test
                split.
            **kwargs: Other `RunResult` fields (seed, hyperparameters, ...).

        Returns:
            A `RunResult`.

        Example:

        >>> history = {"loss": [1.2, 0.8], "val_accuracy": [0.6, 0.7]}
        >>> r = RunResult.from_history(history, method="kd", dataset="digits")
        >>> r.val_accuracy_best, r.best_epoch, r.epochs
        (0.7, 2, 2)
        """
        history = getattr(history, "history", history)
        if not isinstance(history, dict):
            raise TypeError(
                "`history` must be a `keras.callbacks.History` or a dict of "
                f"per-epoch lists. Received: history={history!r}."
            )
        history = _to_builtin(history)

        def last_and_best(key):
            values = [v for v in history.get(key, []) if v is not None]
            if not values:
                return None, None, None
            best = max(values)
            return values[-1], best, history[key].index(best) + 1

        val_last, val_best, val_epoch = last_and_best(f"val_{metric}")
        test_last, test_best, test_epoch = last_and_best(f"test_{metric}")
        if validation_is_test and test_last is None:
            test_last, test_best, test_epoch = val_last, val_best, val_epoch
        if test_accuracy is not None:
            test_last = float(test_accuracy)
            test_best = test_last if test_best is None else max(
                test_best, test_last)
        kwargs.setdefault(
            "best_epoch", val_epoch if val_epoch is not None else test_epoch
        )
        return cls(
            method=method, dataset=dataset, history=history,
            test_accuracy_last=test_last, test_accuracy_best=test_best,
            val_accuracy_last=val_last, val_accuracy_best=val_best, **kwargs,
        )

    def to_dict(self):
        """The record as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record):
        """Inverse of `to_dict`; unknown keys are kept in `extra`."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in record.items() if k in names}
        unknown = {k: v for k, v in record.items() if k not in names}
        if unknown:
            known["extra"] = {**unknown, **(known.get("extra") or {})}
        return cls(**known)

    def accuracy(self, split="test", which="last"):
        """One of the four accuracies, e.g. `accuracy("test", "best")`."""
        if split not in ("test", "val") or which not in ("last", "best"):
            raise ValueError(
                "`split` must be 'test' or 'val' and `which` 'last' or "
                f"'best'. Received: split={split!r}, which={which!r}."
            )
        return getattr(self, f"{split}_accuracy_{which}")

    def csv_row(self, json_file):
        """The `runs.csv` row of this run, as a dict of strings."""
        values = self.to_dict()
        row = {}
        for column in RUNS_COLUMNS:
            if column == "hyperparameters":
                row[column] = json.dumps(values[column], sort_keys=True)
            elif column == "json_file":
                row[column] = json_file
            else:
                value = values[column]
                row[column] = "" if value is None else str(value)
        return row


def _runs_csv(run_dir):
    return os.path.join(run_dir, RUNS_CSV)


def load_runs(run_dir):
    """Reads back every run recorded in `run_dir` by a `ResultsWriter`.

    Args:
        run_dir: Directory holding `runs.csv` and one JSON per run.

    Returns:
        A list of `RunResult`s, in the order they were added.

    Raises:
        FileNotFoundError: `run_dir` has no `runs.csv`, or a run's JSON
            listed in it is missing.

    Example:

    >>> runs = load_runs("runs/cifar10")  # doctest: +SKIP
    >>> [(r.method, r.seed, r.test_accuracy_last) for r in runs]  # doctest: +SKIP
    """
    path = _runs_csv(os.fspath(run_dir))
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No {RUNS_CSV} in run_dir={os.fspath(run_dir)!r}. Pass the "
            "directory a `ResultsWriter` wrote to (it holds runs.csv and "
            "one JSON file per run)."
        )
    results = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            json_path = os.path.join(os.fspath(run_dir), row["json_file"])
            if not os.path.exists(json_path):
                raise FileNotFoundError(
                    f"Run {row['run_id']!r} is listed in {path} but its "
                    f"record {json_path} is missing. Restore the file or "
                    f"delete its row from {RUNS_CSV}."
                )
            with open(json_path, encoding="utf-8") as jf:
                results.append(RunResult.from_dict(json.load(jf)))
    return results


def _mean_std(values):
    """Mean and sample std (n - 1) of the non-None values; None if empty."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def summarize(results, paper=None, *, split="test", scale=100.0,
              compare="last"):
    """Mean ± std over seeds per (dataset, method), beside paper values.

    Args:
        results: Iterable of `RunResult`s.
        paper: Optional dict `{(dataset, method): value}` of the papers'
            numbers, in the summary's unit (percent by default). Convert
            error rates first: accuracy = 100 - error.
        split: `"test"` or `"val"`: which accuracies to summarise.
        scale: Factor applied to the stored fractions; 100 gives percent.
        compare: `"last"` or `"best"`: which of our means `diff` uses.

    Returns:
        A list of dicts with keys `SUMMARY_COLUMNS`, one per (dataset,
        method) in order of first appearance: `n` runs, `last_mean`,
        `last_std`, `best_mean`, `best_std` (sample std over seeds, None
        for a single run), `paper` (or None), `diff` = ours - paper (or
        None) and `wall_time_mean` (seconds).

    Example:

    >>> runs = [RunResult(method="kd", dataset="c10", seed=s,
    ...                   test_accuracy_last=a, run_id=f"kd{s}")
    ...         for s, a in enumerate([0.89, 0.91])]
    >>> row = summarize(runs, {("c10", "kd"): 89.73})[0]
    >>> round(row["last_mean"], 2), round(row["diff"], 2)
    (90.0, 0.27)
    """
    if split not in ("test", "val"):
        raise ValueError(
            f"`split` must be 'test' or 'val'. Received: split={split!r}."
        )
    if compare not in ("last", "best"):
        raise ValueError(
            f"`compare` must be 'last' or 'best'. Received: compare={compare!r}."
        )
    paper = {} if paper is None else paper
    if not isinstance(paper, dict) or not all(
        isinstance(k, tuple) and len(k) == 2 for k in paper
    ):
        raise TypeError(
            "`paper` must be a dict keyed by (dataset, method) tuples, e.g. "
            f"{{('cifar10', 'kd'): 89.73}}. Received: paper={paper!r}."
        )
    groups = {}
    for result in results:
        groups.setdefault((result.dataset, result.method), []).append(result)
    rows = []
    for (dataset, method), runs in groups.items():
        def scaled(which):
            return [None if r.accuracy(split, which) is None
                    else r.accuracy(split, which) * scale for r in runs]

        last_mean, last_std = _mean_std(scaled("last"))
        best_mean, best_std = _mean_std(scaled("best"))
        reference = paper.get((dataset, method))
        ours = last_mean if compare == "last" else best_mean
        rows.append({
            "dataset": dataset,
            "method": method,
            "n": len(runs),
            "last_mean": last_mean,
            "last_std": last_std,
            "best_mean": best_mean,
            "best_std": best_std,
            "paper": None if reference is None else float(reference),
            "diff": None if reference is None or ours is None
            else ours - float(reference),
            "wall_time_mean": _mean_std([r.wall_time for r in runs])[0],
        })
    return rows


def _cell(mean, std=None, digits=2, signed=False):
    if mean is None:
        return "n/a"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if std is None else f"{text} ± {std:.{digits}f}"


def markdown_table(rows, *, digits=2, compare="last", unit="%"):
    """A summary (from `summarize`) as a GitHub-flavoured Markdown table.

    Args:
        rows: The list of dicts `summarize` returns.
        digits: Decimals shown.
        compare: Which mean `diff` was computed from, for the header.
        unit: Unit shown in the headers (`"%"` for `scale=100`, else `""`).

    Returns:
        The table as a string, one line per row, ending in a newline.

    Example:

    >>> print(markdown_table([dict(dataset="c10", method="kd", n=1,
    ...     last_mean=90.0, last_std=None, best_mean=91.0, best_std=None,
    ...     paper=89.73, diff=0.27, wall_time_mean=12.0)]), end="")
    | dataset | method | seeds | last (%) | best (%) | paper (%) | last − paper |
    | --- | --- | ---: | ---: | ---: | ---: | ---: |
    | c10 | kd | 1 | 90.00 | 91.00 | 89.73 | +0.27 |
    """
    suffix = f" ({unit})" if unit else ""
    header = ["dataset", "method", "seeds", f"last{suffix}", f"best{suffix}",
              f"paper{suffix}", f"{compare} − paper"]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | --- | " + " | ".join(["---:"] * 5) + " |",
    ]
    for row in rows:
        cells = [
            str(row["dataset"]), str(row["method"]), str(row["n"]),
            _cell(row["last_mean"], row["last_std"], digits),
            _cell(row["best_mean"], row["best_std"], digits),
            _cell(row["paper"], None, digits),
            _cell(row["diff"], None, digits, signed=True),
        ]
        # A "|" inside a name would break the table.
        cells = [c.replace("|", "\\|") for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows, columns, header=True):
    """CSV text of `rows` (dicts), as `csv.DictWriter` writes it."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buffer.getvalue()


def write_summary_csv(path, rows):
    """Writes summary rows (as `summarize` returns them) to a CSV file.

    Written atomically (see `tfkd.io`); `None` becomes an empty cell.

    Args:
        path: The `.csv` file to write.
        rows: The rows of `summarize`.

    Returns:
        `path`.
    """
    rows = [{k: "" if v is None else v for k, v in row.items()}
            for row in rows]
    return tfkd_io.write_text(path, _csv_text(rows, SUMMARY_COLUMNS),
                              newline="")


class ResultsWriter:
    """Writes run records and their summary into one directory.

    `add` writes `<run_id>.json` and appends a row to `runs.csv`, so an
    interrupted sweep keeps what it finished and a later writer on the same
    directory continues it. `summary` and `write_summary` cover every run in
    the directory, including earlier sessions'.

    Args:
        run_dir: Directory to write to; created if missing.

    Example:

    >>> writer = ResultsWriter("runs/cifar10")  # doctest: +SKIP
    >>> writer.add(RunResult.from_history(history, method="kd",
    ...     dataset="cifar10", seed=0, validation_is_test=True))  # doctest: +SKIP
    >>> writer.write_summary(paper={("cifar10", "kd"): 89.73})  # doctest: +SKIP
    """

    def __init__(self, run_dir):
        if not isinstance(run_dir, (str, os.PathLike)):
            raise TypeError(
                "`run_dir` must be a path (str or os.PathLike). Received: "
                f"run_dir={run_dir!r}."
            )
        self.run_dir = os.fspath(run_dir)
        os.makedirs(self.run_dir, exist_ok=True)

    def add(self, result):
        """Records one run: writes its JSON, appends its `runs.csv` row.

        Args:
            result: A `RunResult` (or a dict accepted by
                `RunResult.from_dict`).

        Returns:
            The path of the JSON file written.
        """
        if isinstance(result, dict):
            result = RunResult.from_dict(result)
        if not isinstance(result, RunResult):
            raise TypeError(
                "`result` must be a `RunResult` or a dict of its fields. "
                f"Received: result of type {type(result).__name__}."
            )
        json_file = f"{result.run_id}.json"
        json_path = os.path.join(self.run_dir, json_file)
        if os.path.exists(json_path):
            raise ValueError(
                f"A run with run_id={result.run_id!r} is already recorded in "
                f"{self.run_dir}. Give the run a unique `run_id` (or leave it "
                "None to generate one)."
            )
        tfkd_io.write_json(json_path, result.to_dict(), default=_jsonable)
        csv_path = _runs_csv(self.run_dir)
        try:
            with open(csv_path, encoding="utf-8", newline="") as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        # The table is rewritten whole and renamed into place, not appended
        # to: a kill mid-write cannot leave a half row that breaks reading.
        rows = _csv_text([result.csv_row(json_file)], RUNS_COLUMNS,
                         header=not text)
        tfkd_io.write_text(csv_path, text + rows, newline="")
        return json_path

    def results(self):
        """Every `RunResult` recorded in `run_dir` (empty list if none)."""
        if not os.path.exists(_runs_csv(self.run_dir)):
            return []
        return load_runs(self.run_dir)

    def summary(self, paper=None, **kwargs):
        """`summarize` over every run in `run_dir`; same arguments."""
        return summarize(self.results(), paper, **kwargs)

    def write_summary(self, paper=None, *, digits=2, **kwargs):
        """Writes `summary.csv` and `summary.md`; returns the rows.

        Args:
            paper: Dict `{(dataset, method): value}` of paper numbers.
            digits: Decimals in the Markdown table (the CSV keeps full
                precision).
            **kwargs: `split`, `scale`, `compare` of `summarize`.

        Returns:
            The summary rows, as `summary` returns them.
        """
        rows = self.summary(paper, **kwargs)
        write_summary_csv(os.path.join(self.run_dir, SUMMARY_CSV), rows)
        table = markdown_table(
            rows, digits=digits, compare=kwargs.get("compare", "last"),
            unit="%" if kwargs.get("scale", 100.0) == 100.0 else "",
        )
        tfkd_io.write_text(os.path.join(self.run_dir, SUMMARY_MD), table)
        return rows
