"""`tfkd demo --data fashion_mnist` and `tfkd tune --data fashion_mnist` on
tiny IDX files the tests write (never the installed data set)."""

import pytest

from tfkd import cli
from tfkd.app import experiment
from tfkd.data import fashion_mnist
from tfkd.testing import write_fashion_mnist


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """Keras's cache holds 200 + 50 fake images; nothing else is found; the
    recipes' 6,000-image pool becomes the whole (tiny) training split."""
    home = tmp_path / "keras"
    write_fashion_mnist(str(home / "datasets" / "fashion-mnist"))
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
    monkeypatch.setitem(experiment.DATA_SETTINGS["fashion_mnist"], "kwargs",
                        {"image_size": 14, "train_examples": None})
    return home


def test_demo_runs_on_fashion_mnist(tiny_fashion, tmp_path, capsys):
    code = cli.main(["demo", "--data", "fashion_mnist", "--method", "kd",
                     "--labels-per-class", "3", "--epochs", "1",
                     "--teacher-epochs", "1", "--no-export", "--verbose",
                     "0", "--out", str(tmp_path / "demo")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "test split: 50 Fashion-MNIST images" in printed
    assert "30 labelled images" in printed
    assert "--data fashion_mnist" in printed  # The export command to try.
    # ... which runs.
    student = tmp_path / "demo" / "student_kd_seed0.keras"
    code = cli.main(["export", str(student),
                     "--data", "fashion_mnist", "--num-samples", "8",
                     "--out", str(tmp_path / "student.tflite")])
    assert code == 0 and (tmp_path / "student.tflite").exists()


def test_tune_runs_on_fashion_mnist(tiny_fashion, tmp_path, capsys):
    code = cli.main(["tune", "--data", "fashion_mnist", "--method", "kd",
                     "--trials", "1", "--epochs", "1", "--teacher-epochs",
                     "1", "--steps-per-epoch", "2", "--verbose", "0",
                     "--out", str(tmp_path / "tune")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "held-out test split, 50 images" in printed


def test_missing_files_fail_with_how_to_get_them(tmp_path, monkeypatch,
                                                 capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
    code = cli.main(["demo", "--data", "fashion_mnist", "--out",
                     str(tmp_path / "demo"), "--no-export"])
    assert code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
