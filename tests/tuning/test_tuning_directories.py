"""A tuner directory is resumed only by the search it holds.

tfkd's tuners write the search's signature (methods, search space, fixed
values, tuner kind) into the project directory. Reusing the directory with
the same search resumes it (Keras Tuner's resume); with another method,
space or tuner it is refused with a message naming the directory, what it
holds and the fix, instead of silently running no new trial and returning
the old search's students; `overwrite=True` / `--overwrite` starts afresh.
`tfkd tune` never silently replaces a search in `--out`.
"""

import json
import os
import re

import keras_tuner as kt
import pytest

import tfkd
from tfkd import cli
from tfkd import testing
from tfkd.tuning import build_tuner
from tfkd.tuning import DistillerHyperModel
from tfkd.tuning import digits_hypermodel
from tfkd.cli import tune as tune_cli
from tfkd.tuning import signature as signature_lib


@pytest.fixture(scope="module")
def pair():
    return (testing.tiny_conv_model("teacher", width=8, seed=1),
            testing.tiny_conv_model("student", width=4, seed=2))


def _hypermodel(pair, **kwargs):
    kwargs.setdefault("method", "kd")
    if kwargs["method"] != "kd":
        kwargs.setdefault("feature_layers", ("conv2", "conv2"))
    return DistillerHyperModel(*pair, seed=0, **kwargs)


def _search(tuner):
    x, y = testing.random_images(32)
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=16,
                 verbose=0)


def _completed(tuner):
    return sum(t.status == kt.engine.trial.TrialStatus.COMPLETED
               for t in tuner.oracle.trials.values())


def _tuner(pair, directory, tuner="random", max_trials=1, overwrite=False,
           **kwargs):
    return build_tuner(_hypermodel(pair, **kwargs), tuner,
                       max_trials=max_trials, directory=str(directory),
                       project_name="p", overwrite=overwrite, seed=0)


def test_resume_refuse_overwrite(pair, tmp_path):
    first = _tuner(pair, tmp_path)
    _search(first)
    assert _completed(first) == 1
    project = tmp_path / "p"
    with open(project / signature_lib.SIGNATURE_FILE) as f:
        signature = json.load(f)
    assert signature["methods"] == ["kd"]
    assert signature["tuner"] == "RandomSearch"
    assert set(signature["search_space"]["kd"]) == {"alpha", "temperature"}

    # The same search resumes: one more trial up to max_trials=2.
    resumed = _tuner(pair, tmp_path, max_trials=2)
    assert _completed(resumed) == 1
    _search(resumed)
    assert _completed(resumed) == 2

    # Another method, space, fixed value or tuner kind is refused.
    refused = [
        (dict(method="attention"),
         r"methods \['kd'\] -> \['attention'\]"),
        (dict(search_space={"temperature": (1.0, 2.0)}),
         r"search_space kd/temperature: .*'max_value': 2\.0"),
        (dict(fixed={"alpha": 0.5}),
         r"fixed kd/alpha: None -> 0\.5"),
        (dict(tuner="bayesian"),
         r"tuner 'RandomSearch' -> 'BayesianOptimization'"),
    ]
    for kwargs, difference in refused:
        with pytest.raises(ValueError) as info:
            _tuner(pair, tmp_path, **kwargs)
        message = str(info.value)
        assert re.search(
            rf"tuner directory '{re.escape(str(project))}' holds a "
            r"RandomSearch search over method\(s\) \['kd'\]", message), message
        assert re.search(difference, message), (difference, message)
        assert "run no new trial" in message
        assert "Pass overwrite=True to delete it" in message
    # Refusal happens before Keras Tuner touches the directory.
    with open(project / signature_lib.SIGNATURE_FILE) as f:
        assert json.load(f) == signature

    # overwrite=True starts afresh and records the new search ...
    fresh = _tuner(pair, tmp_path, method="attention", overwrite=True)
    assert _completed(fresh) == 0
    assert not (project / "oracle.json").exists()
    with open(project / signature_lib.SIGNATURE_FILE) as f:
        assert json.load(f)["methods"] == ["attention"]
    # ... which is now the one the directory may resume.
    _tuner(pair, tmp_path, method="attention")
    with pytest.raises(ValueError, match=r"\['attention'\] -> \['kd'\]"):
        _tuner(pair, tmp_path)


def test_unrecorded_project_resumes(pair, tmp_path):
    """A project made before signatures existed cannot be checked: it
    resumes, and gets a signature from then on."""
    first = _tuner(pair, tmp_path)
    os.remove(tmp_path / "p" / signature_lib.SIGNATURE_FILE)
    assert signature_lib.read_signature(tmp_path / "p") is None
    _tuner(pair, tmp_path)
    assert signature_lib.read_signature(tmp_path / "p")["methods"] == ["kd"]
    del first


# ----------------------------------------------------------------------
# tfkd tune


def _run_cli(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def tune_out(tmp_path):
    """`--out` holding a kd search (recorded, no trial yet) and its teacher,
    as `tfkd tune --image-size 8` leaves them."""
    out = tmp_path / "tune"
    out.mkdir()
    teacher = tfkd.models.digits_teacher(10, (8, 8, 1))
    tfkd.saving.save(teacher, out / "teacher.keras")
    settings = tune_cli.teacher_settings(data="digits", seed=0, image_size=8,
                                         batch_size=64, teacher_epochs=20)
    with open(out / "teacher.json", "w") as f:
        json.dump(settings, f)
    hypermodel = digits_hypermodel(teacher, method=["kd"],
                                   input_shape=(8, 8, 1), fixed={},
                                   search_space={}, seed=0)
    build_tuner(hypermodel, "random", max_trials=1, directory=str(out),
                project_name="search", seed=0,
                data_signature=tune_cli.data_signature(settings))
    return out


def _users_tuner_project(tmp_path):
    """A Keras Tuner project made with `build_tuner` (no tfkd tune run)."""
    out = tmp_path / "mine"
    out.mkdir()
    hypermodel = digits_hypermodel(tfkd.models.digits_teacher(10, (8, 8, 1)),
                                   method=["kd"], input_shape=(8, 8, 1),
                                   fixed={}, search_space={}, seed=0)
    build_tuner(hypermodel, "random", max_trials=1, directory=str(out),
                project_name="search", seed=0)
    return out


CLI_ARGS = ["--image-size", "8", "--trials", "1", "--epochs", "1",
            "--steps-per-epoch", "1", "--verbose", "0"]


def test_cli_refuses_to_replace_a_search(tune_out, capsys):
    code, err = _run_cli(["tune", "--out", str(tune_out)] + CLI_ARGS, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert re.match(
        rf"tfkd tune: error: --out '{re.escape(str(tune_out))}' already "
        r"holds a RandomSearch search over method\(s\) \['kd'\] .*Pass "
        r"--resume to continue it, --overwrite to delete it", err), err


def test_cli_resume_refuses_another_method(tune_out, capsys):
    code, err = _run_cli(["tune", "--out", str(tune_out), "--resume",
                          "--method", "lp"] + CLI_ARGS, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert re.match(
        rf"tfkd tune: error: The tuner directory "
        rf"'{re.escape(str(tune_out / 'search'))}' holds a RandomSearch "
        r"search over method\(s\) \['kd'\]; this search differs \(methods "
        r"\['kd'\] -> \['lp'\].*Pass --overwrite to delete it", err), err


def test_cli_resume_and_overwrite_exclusive(tune_out, capsys):
    code, err = _run_cli(["tune", "--out", str(tune_out), "--resume",
                          "--overwrite"], capsys)
    assert code == 2
    assert "--overwrite: not allowed with argument --resume" in err, err


def test_cli_resumes_the_same_search(tune_out, capsys):
    code, err = _run_cli(["tune", "--out", str(tune_out), "--resume"]
                         + CLI_ARGS, capsys)
    assert code == 0, err
    with open(tune_out / "trials.json") as f:
        result = json.load(f)
    # The search's own teacher was reused, not retrained.
    assert result["teacher"] == str(tune_out / "teacher.keras")
    assert len(result["trials"]) == 1


@pytest.mark.parametrize("with_own_files", [True, False])
def test_cli_overwrite_never_empties_a_users_tuner_project(
        tmp_path, capsys, with_own_files):
    """A Keras Tuner project the user made with `build_tuner` (alone, or
    beside their own files) is not a `tfkd tune` run: --overwrite refuses,
    naming what is in the way, and deletes nothing."""
    tune_out = _users_tuner_project(tmp_path)
    if with_own_files:
        (tune_out / "notes.txt").write_text("precious")
    before = sorted(os.listdir(tune_out))
    code, err = _run_cli(["tune", "--out", str(tune_out), "--overwrite"]
                         + CLI_ARGS, capsys)
    assert code == 2, err
    assert re.search(r"holds files a tfkd run did not write \(.*search.*"
                     r"\).*will not delete", err), err
    assert sorted(os.listdir(tune_out)) == before
    assert os.listdir(tune_out / "search")
    if with_own_files:
        assert (tune_out / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("change, difference", [
    (["--seed", "1"], r"data seed: 0 -> 1"),
    (["--image-size", "6"], r"data image_size: 8 -> 6"),
    (["--batch-size", "32"], r"data batch_size: 64 -> 32"),
    (["--teacher-epochs", "3"],
     r"data teacher: 'trained: 20 epochs' -> 'trained: 3 epochs'"),
])
def test_cli_resume_refuses_other_data_settings(tune_out, capsys, change,
                                                difference):
    """Trials scored on another split (seed), size or teacher are not
    ranked with new ones: --resume refuses before training anything, and
    the search and its teacher stay as they were."""
    stamp = os.path.getmtime(tune_out / "teacher.keras")
    args = [a for a in CLI_ARGS]
    if "--image-size" in change:
        args[args.index("--image-size"):args.index("--image-size") + 2] = []
    code, err = _run_cli(["tune", "--out", str(tune_out), "--resume"]
                         + args + change, capsys)
    assert code == 2, err
    assert re.search(r"holds a RandomSearch search .*this search differs "
                     r"\(.*" + difference, err), err
    assert "Resume with the settings it was run with" in err, err
    assert os.path.getmtime(tune_out / "teacher.keras") == stamp
    assert not (tune_out / "trials.json").exists()


def test_cli_resume_refuses_a_teacher_trained_otherwise(tune_out, capsys):
    """A teacher recorded with other settings is not reused by --resume."""
    with open(tune_out / "teacher.json") as f:
        settings = json.load(f)
    with open(tune_out / "teacher.json", "w") as f:
        json.dump(dict(settings, teacher_epochs=5), f)
    code, err = _run_cli(["tune", "--out", str(tune_out), "--resume"]
                         + CLI_ARGS, capsys)
    assert code == 2, err
    assert re.search(r"--resume: .*teacher.keras was trained with other "
                     r"settings .*'teacher_epochs': 5.*scored against it",
                     err), err
