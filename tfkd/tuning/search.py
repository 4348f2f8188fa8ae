"""Running a search: tfkd's tuners, the best student, trial tables.

`DistillerHyperModel` works with Keras Tuner's own tuners. The tuners here
(`RandomSearch`, `BayesianOptimization`, `Hyperband`) are those same tuners
with two conveniences for distillation:

- `get_best_models()` returns students (the plain `keras.Model`s to export),
  not distillers;
- a project directory is reused only for the search it holds (see
  `tfkd.tuning.signature`): resuming a directory that holds another
  search is refused instead of silently running no new trial and returning
  the old search's students;
- a trial runs without TensorBoard installed. Keras Tuner 1.4 imports
  TensorBoard's HParams plugin at the start of every Keras trial on the
  TensorFlow backend, and TensorFlow >= 2.21 no longer installs
  `tensorboard`, so with Keras Tuner's own tuners every trial fails with
  `No module named 'tensorboard'` unless it is installed. Here it is only
  imported when a `keras.callbacks.TensorBoard` callback is passed;
- every epoch of every trial is recorded (`EpochRecorder`, in the trial's
  directory): Keras Tuner itself keeps only each metric's best epoch, so
  `trial_rows` and `tfkd report` would otherwise have one point a trial.
"""

import math
import os

import keras
import keras_tuner as kt

from tfkd import _compat
from tfkd import io as tfkd_io

from tfkd.tuning import signature as signature_lib
from tfkd.tuning.signature import TUNERS


#: The file, in a trial's directory, holding its per-epoch metrics.
EPOCHS_FILE = "epochs.json"


class EpochRecorder(keras.callbacks.Callback):
    """Writes each epoch's logs of one trial execution to a JSON file.

    The file holds `{"executions": [{"epochs": [...], "metrics": {name:
    [value per epoch]}}, ...]}`, one entry per execution of the trial
    (`executions_per_trial`), and is rewritten atomically after every
    epoch, so a search killed mid-trial keeps the epochs it finished. The
    epochs are Keras's numbers: a two-stage `fit` (numbered on across its
    stages) is one run, and a Hyperband trial resumed at `initial_epoch`
    starts there.

    Args:
        path: The JSON file; an existing one gains a new execution.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "epochs.json")
    >>> recorder = EpochRecorder(path)
    >>> recorder.on_epoch_end(0, {"loss": 2.0})
    >>> recorder.on_epoch_end(1, {"loss": 1.5})
    >>> read_epochs(path)
    {'loss': [2.0, 1.5]}
    """

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)
        self._executions = _read_executions(self.path)
        self._record = {"epochs": [], "metrics": {}}
        self._executions.append(self._record)

    def on_epoch_end(self, epoch, logs=None):
        record = self._record
        record["epochs"].append(int(epoch))
        position = len(record["epochs"]) - 1
        for name, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue  # Not a scalar metric (e.g. a learning-rate object).
            values = record["metrics"].setdefault(name, [])
            # A metric first logged late is padded, so lists stay aligned
            # with `epochs`.
            values.extend([None] * (position - len(values)))
            values.append(None if math.isnan(value) else value)
        tfkd_io.write_json(self.path, {"executions": self._executions})


def _read_executions(path):
    if not os.path.exists(path):
        return []
    import json

    with open(path) as f:
        return list(json.load(f).get("executions", []))


def read_epochs(path):
    """The per-epoch metrics an `EpochRecorder` wrote, `{name: [value per
    epoch]}`, averaged over the trial's executions (epoch by epoch, over
    the executions that reached it); `None` where a value was NaN.

    Args:
        path: The recorder's JSON file.

    Returns:
        A dict of lists, in epoch order (`{}` if nothing was recorded).
    """
    executions = _read_executions(path)
    epochs = sorted({e for run in executions for e in run["epochs"]})
    history = {}
    for name in sorted({n for run in executions for n in run["metrics"]}):
        values = []
        for epoch in epochs:
            seen = [run["metrics"].get(name, [])[i]
                    for run in executions
                    for i, e in enumerate(run["epochs"])
                    if e == epoch and i < len(run["metrics"].get(name, []))]
            seen = [v for v in seen if v is not None]
            values.append(sum(seen) / len(seen) if seen else None)
        history[name] = values
    return history


class StudentTunerMixin(_compat.TunerHooks):
    """Tuner mixin: best models are students; TensorBoard only if used;
    a project directory is resumed only by the search it holds; every
    epoch of every trial is recorded (`EpochRecorder`)."""

    def __init__(self, hypermodel=None, *args, data_signature=None,
                 **kwargs):
        signature = None
        if hasattr(hypermodel, "search_signature"):
            signature = dict(hypermodel.search_signature(),
                             tuner=signature_lib.tuner_kind(type(self)))
            if data_signature is not None:
                signature["data"] = data_signature
            # Keras Tuner's defaults for the project directory.
            project_dir = os.path.join(
                str(kwargs.get("directory") or "."),
                kwargs.get("project_name") or "untitled_project")
            if not kwargs.get("overwrite", False):
                # Before Keras Tuner reloads (and trusts) the old oracle.
                signature_lib.check_signature(project_dir, signature)
        super().__init__(hypermodel, *args, **kwargs)
        if signature is not None:
            signature_lib.write_signature(self.project_dir, signature)

    def execution_callbacks(self, trial):
        # One recorder per execution.
        directory = self.get_trial_dir(trial.trial_id)  # Created if new.
        return [EpochRecorder(os.path.join(directory, EPOCHS_FILE))]

    def load_model(self, trial):
        model = super().load_model(trial)
        return getattr(model, "student", model)


class RandomSearch(StudentTunerMixin, kt.RandomSearch):
    """`keras_tuner.RandomSearch` whose best models are students."""


class BayesianOptimization(StudentTunerMixin, kt.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` whose best models are students."""


class Hyperband(StudentTunerMixin, kt.Hyperband):
    """`keras_tuner.Hyperband` whose best models are students."""


_TUNER_CLASSES = {"random": RandomSearch,
                  "bayesian": BayesianOptimization,
                  "hyperband": Hyperband}


def tuner_kind(tuner):
    """The signature's `tuner` entry for a `build_tuner` kind (`"random"`)."""
    return signature_lib.tuner_kind(_TUNER_CLASSES[tuner])


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}."
        )
    return value


def build_tuner(hypermodel, tuner="random", *, objective="val_accuracy",
                max_trials=10, max_epochs=10, factor=3, directory=None,
                project_name="tfkd_tuning", overwrite=False, seed=None,
                **kwargs):
    """Builds a Keras Tuner tuner for a `DistillerHyperModel`.

    Args:
        hypermodel: A `tfkd.tuning.DistillerHyperModel`.
        tuner: `"random"`, `"bayesian"` or `"hyperband"`: tfkd's
            `RandomSearch`, `BayesianOptimization` or `Hyperband`.
        objective: A student validation metric (`"val_accuracy"`), or a
            `kt.Objective`.
        max_trials: Trials of random and Bayesian search (Hyperband's
            brackets set its own count from `max_epochs` and `factor`).
        max_epochs: Hyperband's largest epoch budget per trial.
        factor: Hyperband's reduction factor.
        directory: Directory of the tuner's project (student checkpoints and
            trial records only).
        project_name: Sub-directory name of the project.
        overwrite: Delete an existing project and start afresh. Without
            it, an existing project of the same search (methods, search
            space, fixed values, tuner kind) is resumed, and one of another
            search is refused with a `ValueError` naming what it holds.
        seed: Seed of the oracle.
        **kwargs: Other arguments of the Keras Tuner tuner, and
            `data_signature`: optional JSON-able dict describing the data
            the trials are scored on (data set, split seed, image size,
            teacher, ...); recorded with the search, a directory is resumed
            only with the same (`tfkd tune` passes it).

    Returns:
        The tuner.

    Example:

    >>> from tfkd import testing
    >>> from tfkd.tuning import DistillerHyperModel
    >>> hypermodel = DistillerHyperModel(
    ...     testing.tiny_conv_model("t"), testing.tiny_conv_model("s"))
    >>> tuner = build_tuner(hypermodel, "random", max_trials=2,
    ...                     directory="/tmp/tfkd_doc", overwrite=True)
    >>> type(tuner).__name__
    'RandomSearch'
    """
    if tuner not in TUNERS:
        raise ValueError(
            f"Unknown tuner. Received: tuner={tuner!r}. Choose one of "
            f"{list(TUNERS)}."
        )
    common = dict(hypermodel=hypermodel, objective=objective,
                  directory=directory, project_name=project_name,
                  overwrite=overwrite, seed=seed, **kwargs)
    if tuner == "hyperband":
        _positive_int(max_epochs, "max_epochs")
        if isinstance(factor, bool) or not isinstance(factor, int) \
                or factor < 2:
            raise ValueError(
                f"`factor` must be an int >= 2. Received: factor={factor!r}."
            )
        return Hyperband(max_epochs=max_epochs, factor=factor, **common)
    _positive_int(max_trials, "max_trials")
    if tuner == "bayesian":
        return BayesianOptimization(max_trials=max_trials, **common)
    return RandomSearch(max_trials=max_trials, **common)


def _completed(tuner, num):
    trials = tuner.oracle.get_best_trials(num)
    done = [t for t in trials
            if t.status == kt.engine.trial.TrialStatus.COMPLETED]
    if not done:
        raise ValueError(
            "The tuner has no completed trial to load. Run "
            "`tuner.search(...)` first (or check the trials' error messages "
            f"in {tuner.project_dir})."
        )
    return done


def best_students(tuner, num_students=1):
    """The best students of a search, best first, from their checkpoints.

    Args:
        tuner: A Keras Tuner tuner over a `DistillerHyperModel`.
        num_students: How many (at most the completed trials).

    Returns:
        A list of trained student `keras.Model`s.
    """
    _positive_int(num_students, "num_students")
    trials = _completed(tuner, num_students)
    # Keras Tuner's own tuners load distillers; tfkd's load students.
    return [getattr(model, "student", model)
            for model in (tuner.load_model(t) for t in trials)]


def best_student(tuner):
    """The best trial's student, loaded from its (student-only) checkpoint.

    The returned model is a plain student `keras.Model`, ready for
    `tfkd.export.to_tflite` or `.save("student.keras")`.

    Args:
        tuner: A Keras Tuner tuner that searched a `DistillerHyperModel`.

    Returns:
        The best student.

    Example:

    ```python
    tuner.search(data.train, validation_data=data.validation, epochs=5)
    student = tfkd.tuning.best_student(tuner)
    tfkd.export.to_tflite(student, "student.tflite")
    ```
    """
    return best_students(tuner, 1)[0]


def trial_number(trial_id):
    """The trial's number as Keras Tuner prints it ("Running Trial #2"):
    its id plus one (ids count from 0), or the id itself when it is not a
    number.

    Example:

    >>> trial_number("0"), trial_number("07"), trial_number("a1b2")
    (1, 8, 'a1b2')
    """
    text = str(trial_id)
    return int(text) + 1 if text.isdigit() else text


def trial_history(trial, tuner=None):
    """A trial's per-epoch metrics, `{name: [value per epoch]}`.

    With tfkd's tuners every epoch is recorded (`EpochRecorder`; the mean
    over executions when a trial runs several). Keras Tuner's own tuners
    keep only each metric's best epoch, so a trial they ran has one value a
    metric.

    Args:
        trial: A `keras_tuner.engine.trial.Trial`.
        tuner: The tuner that ran it (to find the recorded epochs).

    Returns:
        A dict of lists of floats (`None` for NaN), in epoch order.
    """
    if tuner is not None:
        # The path `get_trial_dir` names, without creating the directory.
        path = os.path.join(str(tuner.project_dir),
                            f"trial_{trial.trial_id}", EPOCHS_FILE)
        if os.path.exists(path):
            return read_epochs(path)
    history = {}
    for name, metric in trial.metrics.metrics.items():
        values = []
        for observation in metric.get_history():
            value = float(observation.mean())
            values.append(None if math.isnan(value) else value)
        if values:
            history[name] = values
    return history


def trial_rows(tuner):
    """One dict per trial, best first: number, status, hyperparameters,
    score and per-epoch history.

    Keras Tuner's bookkeeping entries (`tuner/...`) are left out, except
    Hyperband's epoch budget, reported as `epochs`.

    Args:
        tuner: A Keras Tuner tuner.

    Returns:
        A list of dicts with keys `trial` (the number Keras Tuner prints,
        "Trial #2" -> 2), `trial_id`, `status`, `score` (the objective:
        its best epoch's value, `None` if the trial did not complete),
        `hyperparameters` and `history` (see `trial_history`).
    """
    direction = getattr(tuner.oracle.objective, "direction", "max")
    rows = []
    for trial in tuner.oracle.trials.values():
        values = dict(trial.hyperparameters.values)
        hps = {k: v for k, v in values.items()
               if not k.startswith("tuner/")}
        if "tuner/epochs" in values:
            hps["epochs"] = values["tuner/epochs"]
        score = trial.score
        if score is not None and (not isinstance(score, (int, float))
                                  or math.isnan(score)):
            score = None
        rows.append({"trial": trial_number(trial.trial_id),
                     "trial_id": trial.trial_id, "status": trial.status,
                     "score": None if score is None else float(score),
                     "hyperparameters": hps,
                     "history": trial_history(trial, tuner)})

    def key(row):
        if row["score"] is None:
            return (1, 0.0, str(row["trial_id"]))
        score = row["score"] if direction == "min" else -row["score"]
        return (0, score, str(row["trial_id"]))

    return sorted(rows, key=key)


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_trials(rows, objective="val_accuracy"):
    """Formats `trial_rows` as a plain-text table, best first.

    The `trial` column is the number Keras Tuner printed while searching
    ("Running Trial #2" is trial 2).

    Args:
        rows: The output of `trial_rows`.
        objective: Name of the objective, for the header.

    Returns:
        The table as a string.

    Example:

    >>> print(format_trials([{"trial": 2, "score": 0.95, "status": "COMPLETED",
    ...                       "hyperparameters": {"alpha": 0.3}}]))
    rank  trial  alpha  val_accuracy     status
    -------------------------------------------
       1      2    0.3        0.9500  COMPLETED
    """
    names = []
    for row in rows:
        for name in row["hyperparameters"]:
            if name not in names:
                names.append(name)
    header = ["rank", "trial"] + names + [str(objective), "status"]
    table = [header]
    for rank, row in enumerate(rows, start=1):
        hps = row["hyperparameters"]
        table.append(
            [str(rank), str(row.get("trial", row.get("trial_id")))]
            + [_format_value(hps[n]) if n in hps else "-" for n in names]
            + ["-" if row["score"] is None else f"{row['score']:.4f}",
               str(row["status"])]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths))
             for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
