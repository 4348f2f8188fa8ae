"""Cold start: `tfkd --help` without TensorFlow, `import tfkd` lazily.

`tfkd --help` and `tfkd COMMAND --help` import no TensorFlow, Keras, Keras
Tuner, matplotlib, tensorflow-datasets or scikit-learn and print nothing on
stderr; `import tfkd` loads each module on first use, under the same names;
a command that runs starts TensorFlow without its C++ start-up noise.
Each subprocess here starts in about a second, except the one that runs
`tfkd methods` (a TensorFlow import).
"""

import configparser
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from tfkd import _lazy
from tfkd import _tf_startup
from tfkd import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("tensorflow", "keras", "keras_tuner", "matplotlib",
         "tensorflow_datasets", "sklearn")
# Packages whose public names are imported on first use.
LAZY_PACKAGES = ("tfkd", "tfkd.data", "tfkd.export", "tfkd.tuning")


def _python(code, env=None, args=(), as_command=False, python_args=(),
            module="tfkd"):
    """Runs `code` (or `python -m module` with `args`) with this tree first on
    the path; `as_command`: `code` is the program file `tfkd`, as the
    console script is (so tfkd defers its Keras classes as in the
    command)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    with tempfile.TemporaryDirectory() as folder:
        if code is None:
            program = ["-m", module, *args]
        elif as_command:
            program = [os.path.join(folder, "tfkd"), *args]
            with open(program[0], "w") as f:
                f.write(code)
        else:
            program = ["-c", code]
        return subprocess.run(
            [sys.executable, *python_args, *program], capture_output=True,
            text=True, env=env, cwd=ROOT, timeout=600)


def test_help_imports_nothing_heavy():
    # Every command the parser knows, so a new one is checked too.
    result = _python(as_command=True, code=textwrap.dedent(f"""
        import contextlib, io, json, sys
        from tfkd import cli

        commands = [a for a in cli.build_parser()._actions
                    if a.dest == "command"][0].choices
        helps = {{}}
        for argv in [["--help"]] + [[c, "--help"] for c in commands]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    cli.main(argv)
                except SystemExit as e:
                    assert e.code == 0, (argv, e.code)
            helps[" ".join(argv)] = out.getvalue()
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        print(json.dumps({{"loaded": loaded, "helps": helps}}))
    """))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["loaded"] == []
    helps = report["helps"]
    assert {"demo --help", "export --help", "tune --help", "report --help",
            "methods --help"} <= set(helps)
    assert all(text.startswith("usage: tfkd") for text in helps.values())
    assert "`tfkd methods` lists them" in " ".join(
        helps["demo --help"].split())
    assert "{random,bayesian,hyperband}" in helps["tune --help"]


@pytest.mark.parametrize("module", ["tfkd", "tfkd.cli"])
@pytest.mark.parametrize("args", [["--help"], ["demo", "--help"]])
def test_console_module_help_is_silent(module, args):
    result = _python(None, args=args, module=module)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("usage: tfkd")


def test_installed_console_script_help_imports_no_tensorflow():
    # The script pip writes for setup.cfg's entry point, run as installed.
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    entry = config["options.entry_points"]["console_scripts"].strip()
    name, target = (part.strip() for part in entry.split("="))
    module, function = target.split(":")
    assert (name, module) == ("tfkd", "tfkd.cli")
    script = textwrap.dedent(f"""
        import re
        import sys
        from {module} import {function}
        if __name__ == '__main__':
            sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
            sys.exit({function}())
    """)
    result = _python(script, args=["--help"], as_command=True,
                     python_args=["-X", "importtime"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tfkd")
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in result.stderr.splitlines()}
    assert "tfkd" in imported and not imported & set(HEAVY)


@pytest.mark.parametrize("argv, orig_argv, expected", [
    (["/venv/bin/tfkd", "--help"], ["/venv/bin/python", "/venv/bin/tfkd",
                                    "--help"], True),
    (["C:/venv/Scripts/tfkd-script.py"], ["python"], True),
    (["-m", "demo"], ["python", "-m", "tfkd", "demo"], True),
    (["-m"], ["python", "-X", "dev", "-mtfkd.cli"], True),
    (["-m", "-x"], ["python", "-m", "pytest", "-x"], False),
    (["-m", "tfkd"], ["python", "-m", "pytest", "tfkd"], False),
    (["/work/tfkd_train.py"], ["python", "/work/tfkd_train.py"], False),
    (["-c"], ["python", "-c", "import tfkd"], False),
    ([], [], False),
])
def test_running_the_command(monkeypatch, argv, orig_argv, expected):
    import tfkd

    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert tfkd._running_the_command() is expected


def test_import_tfkd_loads_each_dependency_on_first_use():
    result = _python(textwrap.dedent(f"""
        import json, sys

        def loaded():
            return [m for m in {HEAVY!r} if m in sys.modules]

        stages = {{}}
        import keras
        stages["import keras"] = loaded()
        import tfkd
        stages["import tfkd"] = loaded()
        tfkd.app.plots, tfkd.app.reporting, tfkd.io, tfkd.tuning.spaces
        tfkd.Distiller, tfkd.models.digits_student, tfkd.data.load_digits
        tfkd.data.digits_arrays(image_size=8)
        stages["distillers, models, digits"] = loaded()
        tfkd.tuning.DistillerHyperModel
        stages["tuning"] = loaded()
        print(json.dumps(stages))
    """), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr
    stages = json.loads(result.stdout.splitlines()[-1])
    # Keras itself imports TensorFlow, matplotlib and scikit-learn when they
    # are installed (`keras.src.visualization`, `keras.src.wrappers`);
    # `import tfkd` (which registers tfkd's Keras classes) adds nothing to
    # that, and Keras Tuner and tensorflow-datasets wait until used.
    assert stages["import tfkd"] == stages["import keras"]
    assert "keras_tuner" not in stages["distillers, models, digits"]
    assert "tensorflow_datasets" not in stages["distillers, models, digits"]
    assert "keras_tuner" in stages["tuning"]


def test_plain_keras_loads_a_distiller_after_import_tfkd(tmp_path):
    path = str(tmp_path / "d.keras")
    save = textwrap.dedent(f"""
        import tfkd
        from tfkd import testing
        d = tfkd.CorrelationDistiller(
            testing.tiny_conv_model("t", width=8),
            testing.tiny_conv_model("s", width=4), teacher_layer_name="conv2",
            student_layer_name="conv2", adapter=True)
        d.save({path!r})
    """)
    load = textwrap.dedent(f"""
        import keras, tfkd
        d = keras.models.load_model({path!r})
        print(type(d).__name__, ",".join(sorted(d.hyperparameters)))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    assert _python(save, env=env).returncode == 0
    result = _python(load, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "CorrelationDistiller alpha,beta,kd/temperature")


def test_report_runs_without_tensorflow(tmp_path):
    result = _python(as_command=True, code=textwrap.dedent(f"""
        import sys
        from tfkd import cli
        from tfkd.app.reporting import ResultsWriter, RunResult

        ResultsWriter({str(tmp_path)!r}).add(RunResult(
            method="kd", dataset="digits", seed=0, student_params=6000,
            test_accuracy_last=0.95, run_id="kd-0",
            history={{"loss": [1.0, 0.5]}}))
        assert cli.main(["report", {str(tmp_path)!r}]) == 0
        print([m for m in ("tensorflow", "keras") if m in sys.modules])
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert (tmp_path / "report.md").exists()


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_names_resolve_and_are_listed(package):
    module = __import__(package, fromlist=["_"])
    declared = _lazy.declared_names(
        package, module.__spec__.loader.get_source(package))
    assert declared and list(declared) == module.__all__
    listing = dir(module)
    for name, (origin, member) in declared.items():
        assert name in listing, name
        value = getattr(module, name)
        source = sys.modules.get(f"{origin}.{member}")
        assert value is getattr(sys.modules[origin], member, source), name
    with pytest.raises(AttributeError, match=f"'{package}' has no attribute "
                                             "'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_submodules_are_attributes_and_from_imports_work():
    import tfkd

    assert "app" in dir(tfkd) and "io" in dir(tfkd)
    assert "plots" in dir(tfkd.app) and "plots" not in dir(tfkd)
    assert tfkd.app.plots.plot_history.__module__ == "tfkd.app.plots"
    from tfkd import Distiller
    from tfkd.tuning import TUNERS

    assert Distiller is tfkd.distillers.Distiller
    from tfkd.tuning import search

    # `tfkd tune --help` reads the kinds without Keras Tuner: same list.
    assert TUNERS == tuple(search._TUNER_CLASSES) == search.TUNERS


def test_lazy_block_holds_only_from_imports():
    with pytest.raises(ValueError, match=r"only hold `from \.\.\. import"):
        _lazy.declared_names("pkg", "if TYPE_CHECKING:\n    import os\n")
    assert _lazy.declared_names(
        "pkg.sub", "if typing.TYPE_CHECKING:\n    from .mod import f\n"
    ) == {"f": ("pkg.sub.mod", "f")}


# ------------------------------------------------ TensorFlow start-up log

_LOG = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR\n"
    "I0000 00:00:1796079926.510790   16192 port.cc:153] oneDNN custom "
    "operations are on.\n"
    "W0000 00:00:1796079926.510790   16192 x.cc:1] a warning\n"
    "E0000 00:00:1796079941.702973   16291 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error: UNKNOWN ERROR (303)\n"
    "E0000 00:00:1796079941.702973   16291 y.cc:2] a real error\n"
    "Traceback (most recent call last):\n"
)


@pytest.mark.parametrize("level, nvidia, kept", [
    (0, False, "IWEET"), (1, False, "WET"), (2, False, "ET"),
    (2, True, "EET"), (3, False, "T"),
])
def test_startup_log_filter(level, nvidia, kept):
    text = _tf_startup.filter_startup_log(_LOG, level, nvidia)
    lines = text.splitlines()
    assert "".join(line[0] for line in lines
                   if not line.startswith("WARNING:")) == kept
    assert any(line.startswith("WARNING:") for line in lines) == (level == 0)
    if level in (1, 2) and not nvidia:
        assert "cuInit" not in text and "a real error" in text


def test_filtered_stderr_works_on_the_file_descriptor(capfd):
    with _tf_startup.filtered_stderr(2, nvidia_device=False):
        os.write(2, _LOG.encode())
        print("from Python", file=sys.stderr)
    lines = capfd.readouterr().err.splitlines()
    # pytest's capture may take Python's line before the file's.
    assert "from Python" in lines
    assert [line for line in lines if line != "from Python"] == [
        "E0000 00:00:1796079941.702973   16291 y.cc:2] a real error",
        "Traceback (most recent call last):"]


def test_min_log_level_is_set_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["methods", "--help"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with pytest.raises(SystemExit):
        cli.main(["methods", "--help"])
    assert _tf_startup.min_log_level() == 0
    assert _tf_startup.min_log_level({"TF_CPP_MIN_LOG_LEVEL": "x"}) == 0


def test_a_command_starts_tensorflow_silently():
    env = {k: v for k, v in os.environ.items()
           if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = _python(None, env=env, args=["methods"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "kd" in result.stdout.split()
