"""Tests of `tfkd.tuning`: search spaces, the hypermodel, tuners and CLI.

Searches run on 8×8 digits with the digits teacher/student pair, a few
batches per epoch and one or two epochs per trial: they check the
machinery (every tuner, student-only checkpoints, export), not accuracy.
"""

import os
import re
import sys
import types

import h5py
import keras
import keras_tuner as kt
import numpy as np
import pytest

import tfkd
from tfkd import cli
from tfkd import testing
from tfkd.data import digits_arrays
from tfkd.export import to_tflite
from tfkd.distillers import registry
from tfkd.tuning import DistillerHyperModel
from tfkd.tuning import best_student
from tfkd.tuning import build_tuner
from tfkd.tuning import digits_hypermodel
from tfkd.tuning import format_trials
from tfkd.tuning import method_arguments
from tfkd.tuning import spaces
from tfkd.tuning import trial_rows

INPUT_SHAPE = (8, 8, 1)
BATCH = 64
STEPS = 3  # Training batches per epoch.


@pytest.fixture(scope="module")
def digits():
    splits = digits_arrays(image_size=8, seed=0)
    x, y = splits.train
    xv, yv = splits.validation
    return (x[:STEPS * BATCH], y[:STEPS * BATCH]), (xv[:128], yv[:128])


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    """Trained once for the module; saved weights give the size bound."""
    keras.utils.set_random_seed(0)
    model = tfkd.models.digits_teacher(10, INPUT_SHAPE)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(*digits[0], batch_size=BATCH, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.weights.h5"
    model.save_weights(path)
    model.weights_path = str(path)
    return model


@pytest.fixture
def tensorboard_stub(monkeypatch):
    """Keras Tuner's own tuners import TensorBoard's HParams plugin in every
    trial; TensorFlow 2.21 no longer installs `tensorboard`. A stub lets the
    plain `kt.*` tuners run here (tfkd's tuners need no stub)."""
    try:
        import tensorboard.plugins.hparams.api  # noqa: F401
        return
    except ImportError:
        pass
    names = ["tensorboard", "tensorboard.plugins",
             "tensorboard.plugins.hparams", "tensorboard.plugins.hparams.api"]
    modules = [types.ModuleType(n) for n in names]
    for parent, child, name in zip(modules, modules[1:], names[1:]):
        setattr(parent, name.rsplit(".", 1)[1], child)
    for name, module in zip(names, modules):
        monkeypatch.setitem(sys.modules, name, module)


def _search(tuner, digits, epochs=1):
    (x, y), validation = digits
    tuner.search(x, y, batch_size=BATCH, validation_data=validation,
                 epochs=epochs, verbose=0)


def _files(directory):
    for root, _, names in os.walk(directory):
        for name in names:
            yield os.path.join(root, name)


def _h5_arrays(path):
    shapes = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda _, obj: shapes.append(obj.shape)
                     if isinstance(obj, h5py.Dataset) else None)
    return shapes


def _check_student_only(project_dir, teacher):
    """The tuner directory holds student checkpoints, never the teacher."""
    files = list(_files(project_dir))
    checkpoints = [f for f in files if f.endswith(".weights.h5")]
    assert checkpoints
    teacher_bytes = os.path.getsize(teacher.weights_path)
    total = sum(os.path.getsize(f) for f in files)
    assert total < teacher_bytes, (total, teacher_bytes)
    teacher_shapes = {tuple(w.shape) for w in teacher.weights
                      if len(w.shape) == 4}
    for path in checkpoints:
        shapes = {tuple(s) for s in _h5_arrays(path)}
        # The teacher's conv kernels (e.g. 3x3x32x64) appear in no file.
        assert not shapes & teacher_shapes, path
    return checkpoints


def _completed(tuner):
    return [t for t in tuner.oracle.trials.values()
            if t.status == "COMPLETED"]


# ----------------------------------------------------------------------
# Search spaces.


def test_default_spaces_name_constructor_arguments():
    for method in registry.method_names():
        arguments = method_arguments(method)
        for name, spec in spaces.default_search_space(method).items():
            assert name in arguments, (method, name)
            assert spec["type"] in ("float", "int", "choice")
    assert set(spaces.DEFAULT_SEARCH_SPACES) >= {"kd", "lp", "stc", "ktan"}
    assert spaces.default_search_space("kd")["temperature"]["max_value"] \
        == 6.0
    # Learning rates from 1e-3: at 1e-4 a trial ends near chance.
    assert spaces.COMMON_SEARCH_SPACE["learning_rate"]["min_value"] == 1e-3


def test_spec_shorthands():
    assert spaces.normalize_spec("k", (1, 10))["type"] == "int"
    spec = spaces.normalize_spec("learning_rate", (1e-4, 1e-2, "log"))
    assert spec["sampling"] == "log"
    assert spaces.normalize_spec("k", [3, 5])["values"] == [3, 5]
    like = spaces.default_search_space("kd")["temperature"]
    assert spaces.normalize_spec("temperature", (1, 8), like=like)[
        "type"] == "float"
    spec = spaces.normalize_spec("temperature", kt.engine.hyperparameters
                                 .Float("t", 1.0, 3.0))
    assert (spec["min_value"], spec["max_value"]) == (1.0, 3.0)


def test_overrides_and_fixed_reach_the_distiller():
    teacher = testing.tiny_conv_model("teacher", width=8)
    student = testing.tiny_conv_model("student", width=4)
    hypermodel = DistillerHyperModel(
        teacher, student, method="kd", fixed={"alpha": 0.3},
        search_space={"temperature": (2.0, 3.0), "learning_rate": None},
    )
    hp = kt.HyperParameters()
    distiller = hypermodel.build(hp)
    assert isinstance(distiller, tfkd.Distiller)
    assert distiller.alpha == 0.3
    assert 2.0 <= distiller.temperature <= 3.0
    assert sorted(hp.values) == ["temperature"]
    assert distiller.teacher is teacher
    # Each trial's student is a fresh copy starting from the same weights.
    for a, b in zip(distiller.student.get_weights(), student.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert distiller.student is not student


def test_per_method_entries():
    hypermodel = digits_hypermodel(
        tfkd.models.digits_teacher(), method=["kd", "lp"],
        search_space={"temperature": (2, 3), "lp": {"k": [3, 4]}},
        fixed={"kd": {"alpha": 0.2}},
    )
    assert hypermodel.method_spaces["lp"]["k"]["values"] == [3, 4]
    # A shorthand of ints for a float hyperparameter is a float range.
    assert hypermodel.method_spaces["kd"]["temperature"]["type"] == "float"
    assert hypermodel.method_spaces["lp"]["temperature"]["max_value"] == 3.0
    assert "alpha" not in hypermodel.method_spaces["kd"]
    assert hypermodel.method_fixed == {"kd": {"alpha": 0.2}, "lp": {}}
    with pytest.raises(ValueError, match="Unknown hyperparameter 'alpha'"):
        digits_hypermodel(tfkd.models.digits_teacher(), method=["kd", "lp"],
                          fixed={"lp": {"alpha": 0.2}})


def test_two_stage_fit():
    """A `stage="both"` distiller trains both stages in one trial."""
    hypermodel = DistillerHyperModel(
        testing.tiny_conv_model("teacher", width=8),
        testing.tiny_conv_model("student", width=8),
        method="correlation", feature_layers=("conv1", "conv1"))
    hp = kt.HyperParameters()
    distiller = hypermodel.build(hp)
    x, y = testing.random_images(32)
    history = hypermodel.fit(hp, distiller, x, y, epochs=2, verbose=0)
    assert distiller.stage == 2 and history.epoch == [0, 1]
    with pytest.raises(TypeError, match="cannot start at `initial_epoch`"):
        hypermodel.fit(hp, hypermodel.build(hp), x, y, epochs=2,
                       initial_epoch=1, verbose=0)


def test_student_builder_with_hp_and_width():
    teacher = testing.tiny_conv_model("teacher", width=8)

    def builder(hp):
        return testing.tiny_conv_model(
            "student", width=hp.Int("student_width", 2, 4))

    hp = kt.HyperParameters()
    DistillerHyperModel(teacher, builder).build(hp)
    assert "student_width" in hp.values

    hypermodel = digits_hypermodel(tfkd.models.digits_teacher(),
                                   method=["kd", "lp"],
                                   fixed={"width_multiplier": 2.0})
    hp = kt.HyperParameters()
    distiller = hypermodel.build(hp)
    assert distiller.student.get_layer("block2_relu").output.shape[-1] == 32
    # Several methods: a `method` choice, method-scoped names.
    assert hp.values["method"] == "kd"
    assert "kd/temperature" in hp.values
    assert "lp/k" in [p.name for p in hp.space]


#: (DistillerHyperModel arguments, expected message) of bad entries.
BAD_ENTRIES = [
    ({"search_space": {"gamma": (0.1, 1.0)}},
     "Unknown hyperparameter 'gamma'"),
    ({"fixed": {"lam": 2.0}}, "Unknown hyperparameter 'lam'"),
    ({"search_space": {"temperature": (10.0, 1.0)}}, "inverted"),
    ({"search_space": {"temperature": (4.0, 4.0)}}, "empty"),
    ({"search_space": {"temperature": []}}, "non-empty list"),
    ({"search_space": {"temperature": "high"}}, "must be a dict"),
    ({"search_space": {"temperature": {"type": "float", "min": 1}}},
     "unknown keys"),
    ({"search_space": {"temperature": {"type": "gaussian"}}}, "unknown type"),
    ({"search_space": {"alpha": (0.0, 2.0)}}, "above the largest valid"),
    ({"search_space": {"learning_rate": (0.0, 0.1, "log")}},
     "needs min_value > 0"),
    ({"search_space": {"temperature": ["a", 1]}}, "one type"),
    ({"fixed": {"alpha": 1.5}}, "Bad fixed value 'alpha'"),
    ({"search_space": {"alpha": (0.1, 0.9)}, "fixed": {"alpha": 0.3}},
     "both"),
    ({"search_space": {"method": ["kd"]}}, "cannot set 'method'"),
    ({"search_space": {"width_multiplier": [1.0, 2.0]}}, "width_multiplier"),
    ({"method": "nope"}, "Unknown distillation method"),
    ({"method": []}, "at least one method"),
]


def test_bad_entries_raise():
    # One test for all cases: the per-test Keras reset costs ~1 s each.
    teacher = testing.tiny_conv_model("teacher", width=8)
    student = testing.tiny_conv_model("student", width=4)
    for kwargs, match in BAD_ENTRIES:
        with pytest.raises(ValueError, match=match):
            DistillerHyperModel(teacher, student, **kwargs)
            pytest.fail(f"no error for {kwargs}")


def test_bad_entries_for_lp():
    teacher = tfkd.models.digits_teacher()
    with pytest.raises(ValueError, match="takes ints"):
        digits_hypermodel(teacher, method="lp", search_space={"k": (1.5, 4.0)})
    with pytest.raises(ValueError, match="feature_layers"):
        DistillerHyperModel(teacher, tfkd.models.digits_student(),
                            method="lp")
    with pytest.raises(TypeError, match="search_space"):
        digits_hypermodel(teacher, search_space=[("alpha", 0.5)])


# ----------------------------------------------------------------------
# Searches.


def test_random_search_kd_with_keras_tuner(digits, teacher, tmp_path,
                                           tensorboard_stub):
    """Keras Tuner's own RandomSearch: 3 trials, student-only checkpoints."""
    hypermodel = digits_hypermodel(teacher, method="kd",
                                   input_shape=INPUT_SHAPE, seed=0)
    tuner = kt.RandomSearch(hypermodel, objective="val_accuracy",
                            max_trials=3, seed=0, directory=str(tmp_path),
                            project_name="kd")
    _search(tuner, digits)
    assert len(_completed(tuner)) == 3
    _check_student_only(tuner.project_dir, teacher)
    # Keras Tuner's own tuners return distillers; `best_student` the student.
    assert isinstance(tuner.get_best_models()[0], tfkd.Distiller)
    student = best_student(tuner)
    assert student.name == "digits_student"
    assert not isinstance(student, tfkd.Distiller)
    best = tuner.get_best_hyperparameters()[0].values
    assert set(best) == {"alpha", "temperature", "learning_rate",
                         "width_multiplier"}


@pytest.mark.slow
def test_random_search_feature_method_exports(digits, teacher, tmp_path):
    """tfkd's RandomSearch on LP; the best student exports to TFLite."""
    method = "lp"
    hypermodel = digits_hypermodel(teacher, method=method,
                                   input_shape=INPUT_SHAPE, seed=0)
    tuner = build_tuner(hypermodel, "random", max_trials=3, seed=1,
                        directory=str(tmp_path), project_name=method)
    _search(tuner, digits)
    assert len(_completed(tuner)) == 3
    _check_student_only(tuner.project_dir, teacher)
    student = tuner.get_best_models()[0]  # tfkd tuners: the student.
    assert not isinstance(student, tfkd.Distiller)
    # The reloaded student scores what the trial reported (same weights).
    best = tuner.oracle.get_best_trials()[0]
    student.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    accuracy = student.evaluate(*digits[1], verbose=0, return_dict=True)[
        "accuracy"]
    assert accuracy == pytest.approx(best.score, abs=1e-6)
    rows = trial_rows(tuner)
    assert rows[0]["score"] == max(r["score"] for r in rows)
    assert {"k", "gamma", "lam", "temperature"} <= set(
        rows[0]["hyperparameters"])
    path = tmp_path / "student.tflite"
    report = to_tflite(student, str(path), verify_data=digits[1],
                       num_samples=32, latency_runs=2)
    assert path.exists() and report.size_bytes > 0


@pytest.mark.slow
def test_hyperband_over_methods(digits, teacher, tmp_path):
    """Hyperband resumes trials from student-only checkpoints, with the
    method chosen among KD and LP."""
    hypermodel = digits_hypermodel(teacher, method=["kd", "lp"],
                                   input_shape=INPUT_SHAPE, seed=0)
    tuner = build_tuner(hypermodel, "hyperband", max_epochs=2, factor=2,
                        seed=0, directory=str(tmp_path), project_name="hb")
    _search(tuner, digits, epochs=2)
    trials = _completed(tuner)
    assert len(trials) >= 3
    assert {t.hyperparameters.values["method"] for t in trials} == {
        "kd", "lp"}
    # At least one trial continued another's checkpoint.
    assert any(t.hyperparameters.values.get("tuner/trial_id")
               for t in trials)
    _check_student_only(tuner.project_dir, teacher)
    assert isinstance(best_student(tuner), keras.Model)
    table = format_trials(trial_rows(tuner))
    assert "epochs" in table.splitlines()[0]


def test_best_student_without_trials(teacher, tmp_path):
    hypermodel = digits_hypermodel(teacher, input_shape=INPUT_SHAPE)
    tuner = build_tuner(hypermodel, max_trials=1, directory=str(tmp_path))
    with pytest.raises(ValueError, match="no completed trial"):
        best_student(tuner)
    with pytest.raises(ValueError, match="Unknown tuner"):
        build_tuner(hypermodel, "grid")


# ----------------------------------------------------------------------
# Command line.


@pytest.mark.slow
def test_cli_tune(tmp_path, capsys):
    """Trains the teacher once, runs a Bayesian search over two methods,
    numbers the trials as Keras Tuner prints them, writes a folder `tfkd
    report` reads, and reuses its teacher when the search is redone."""
    import json

    out = tmp_path / "run"
    args = [
        "tune", "--method", "kd", "--method", "lp", "--tuner", "bayesian",
        "--trials", "2", "--epochs", "1", "--teacher-epochs", "1",
        "--image-size", "8", "--steps-per-epoch", "3",
        "--space", "temperature=2:6", "--fix", "alpha=0.4",
        "--out", str(out), "--verbose", "0",
    ]
    code = cli.main(args)
    printed = capsys.readouterr().out
    assert code == 0
    assert "trials, best first (2;" in printed
    lines = printed.splitlines()
    header_at = next(i for i, line in enumerate(lines)
                     if line.lstrip().startswith("rank"))
    header = lines[header_at]
    assert "method" in header and "val_accuracy" in header
    assert "kd/temperature" in header or "lp/k" in header
    # "Running Trial #1" and "#2": trials 1 and 2, not 0 and 1.
    numbers = {int(line.split()[1]) for line in lines[header_at + 2:
                                                     header_at + 4]}
    assert numbers == {1, 2}
    assert "test accuracy (held-out test split, 360 images)" in printed
    assert "Next:" in printed and "tfkd report " in printed
    assert (out / "teacher.keras").exists()
    with open(out / "trials.json") as f:
        record = json.load(f)
    assert {row["trial"] for row in record["trials"]} == {1, 2}
    assert all(len(row["history"]["val_accuracy"]) == 1
               for row in record["trials"])
    student = keras.saving.load_model(out / "best_student.keras")
    assert student.name == "digits_student"
    total = sum(os.path.getsize(f) for f in _files(out / "search"))
    assert total < os.path.getsize(out / "teacher.keras")

    # `tfkd report` reads the folder: trials best first, curves per trial.
    assert cli.main(["report", str(out)]) == 0
    report = capsys.readouterr().out
    assert "| rank | trial | method |" in report
    best = record["trials"][0]
    assert f"| 1 | {best['trial']} | " in report
    assert (out / "plots" / "curves_trial_1.png").exists()
    assert (out / "plots" / "curves_trial_2.png").exists()

    # Redone with --overwrite: the same teacher settings, so the teacher
    # file is reused, not retrained.
    stamp = os.path.getmtime(out / "teacher.keras")
    assert cli.main(args + ["--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "reusing" in printed and "not retrained" in printed
    assert os.path.getmtime(out / "teacher.keras") == stamp
    assert not (out / "plots").exists()  # The old report went with it.


def test_cli_errors(tmp_path, capsys):
    assert cli.main(["tune", "--method", "nope", "--out",
                     str(tmp_path)]) == 2
    assert "Unknown distillation method" in capsys.readouterr().err
    assert cli.main(["tune", "--teacher", str(tmp_path / "missing.keras"),
                     "--out", str(tmp_path)]) == 2
    assert "Teacher file not found" in capsys.readouterr().err
    assert cli.main(["tune", "--fix", "alpha", "--out", str(tmp_path)]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_trials_record_every_epoch(digits, teacher, tmp_path):
    """Keras Tuner keeps one value a metric (the best epoch); tfkd's tuners
    record each epoch, so the trial rows (trials.json, `tfkd report`) have
    curves."""
    hypermodel = digits_hypermodel(teacher, method="kd",
                                   input_shape=INPUT_SHAPE, seed=0)
    tuner = build_tuner(hypermodel, "random", max_trials=1, seed=0,
                        directory=str(tmp_path), project_name="kd")
    _search(tuner, digits, epochs=3)
    (row,) = trial_rows(tuner)
    history = row["history"]
    assert len(history["loss"]) == 3
    assert len(history["val_accuracy"]) == 3
    assert row["score"] == pytest.approx(max(history["val_accuracy"]))
    # Training curves move: not one value repeated.
    assert len(set(history["loss"])) == 3


@pytest.mark.parametrize("argv, pattern", [
    (["--space", "temperature=9:1"], r"temperature"),
    (["--fix", "temperature=-1"], r"temperature"),
    (["--method", "lp", "--space", "k=0:3"], r"\bk\b"),
    (["--labels-per-class", "0"], r"labels.per.class"),
    (["--labels-per-class", "6", "--data", "mnist"],
     r"--labels-per-class is available with --data digits only"),
])
def test_cli_checks_everything_before_training(argv, pattern, tmp_path,
                                               capsys, monkeypatch):
    """A bad setting fails in seconds, before the teacher trains (and
    before the run folder is created)."""
    from tfkd.cli import tune as tune_cli

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher trained before the check")

    monkeypatch.setattr(tune_cli, "_train_teacher", no_training)
    out = tmp_path / "run"
    assert cli.main(["tune", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_tune_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--labels-per-class N|all training labels the students keep" in \
        text
    assert "--batch-size BATCH_SIZE training batch size" in text
    assert "--seed SEED seed of the data split" in text


def test_cli_labels_per_class_reaches_the_search(tmp_path, monkeypatch):
    """`--labels-per-class 6`: the teacher learns from every label, the
    trials' students from 6 a class plus the unlabelled rest (-1)."""
    from tfkd.cli import tune as tune_cli
    from tfkd.tuning import search

    seen = {}

    class Stop(Exception):
        pass

    def train_teacher(data, epochs, verbose):
        seen["teacher"] = np.concatenate([y for _, y in data.train])
        return tfkd.models.digits_teacher(data.num_classes, data.input_shape)

    class FakeTuner:
        def search(self, train, **kwargs):
            seen["students"] = np.concatenate([y for _, y in train])
            raise Stop

    monkeypatch.setattr(tune_cli, "_train_teacher", train_teacher)
    monkeypatch.setattr(search, "build_tuner", lambda *a, **k: FakeTuner())
    with pytest.raises(Stop):
        cli.main(["tune", "--labels-per-class", "6", "--image-size", "8",
                  "--out", str(tmp_path / "run"), "--verbose", "0"])
    assert (seen["teacher"] >= 0).all()
    students = seen["students"]
    assert len(students) == len(seen["teacher"])
    assert np.bincount(students[students >= 0]).tolist() == [6] * 10
