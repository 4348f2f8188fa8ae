"""Tests of `tfkd.export`: TFLite conversion, parity, report and CLI."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd.data import digits_arrays
from tfkd.export import ExportReport
from tfkd.export import to_tflite
from tfkd.export import verify_tflite

# Verify on all 360 held-out digits.
NUM_SAMPLES = 400


def _conv_net(filters, name):
    inputs = keras.Input((16, 16, 1))
    x = inputs
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu",
                                name=f"block{i + 1}_conv")(x)
        x = keras.layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x),
                       name=name)


@pytest.fixture(scope="module")
def digits():
    return digits_arrays(image_size=16, channels=1, seed=0)


@pytest.fixture(scope="module")
def student(digits):
    keras.utils.set_random_seed(0)
    model = _conv_net((16, 32), "student")
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(*digits.train, epochs=6, batch_size=32, verbose=0)
    return model


def _export(student, digits, path, **kwargs):
    return to_tflite(student, str(path), representative_data=digits.train[0],
                     verify_data=digits.test, num_samples=NUM_SAMPLES,
                     latency_runs=10, **kwargs)


def test_float32_matches_keras(student, digits, tmp_path):
    path = tmp_path / "student.tflite"
    report = _export(student, digits, path)
    assert isinstance(report, ExportReport)
    assert report.size_bytes == os.path.getsize(path)
    # Written via a temp file + rename: nothing else is left behind.
    assert os.listdir(tmp_path) == ["student.tflite"]
    assert report.num_verified == len(digits.test[0])
    assert report.max_abs_diff <= 1e-4
    assert report.top1_agreement == 1.0
    assert report.tflite_accuracy == report.keras_accuracy > 0.9
    assert report.num_params == student.count_params()
    assert report.num_tensors > 0 and report.latency_ms > 0
    assert report.quantization == "none"


def test_float16_and_dynamic(student, digits, tmp_path):
    f16 = _export(student, digits, tmp_path / "f16.tflite",
                  quantization="float16")
    assert f16.max_abs_diff <= 1e-2
    assert f16.top1_agreement >= 0.99
    dynamic = _export(student, digits, tmp_path / "dyn.tflite",
                      quantization="dynamic")
    assert dynamic.top1_agreement >= 0.97
    assert dynamic.size_bytes < f16.size_bytes
    # verify_tflite on its own, from a batched tf.data pipeline with labels.
    data = tf.data.Dataset.from_tensor_slices(digits.test).batch(50)
    result = verify_tflite(tmp_path / "dyn.tflite", student, data)
    assert result["num_samples"] == len(digits.test[0])
    assert result["top1_agreement"] == pytest.approx(dynamic.top1_agreement)
    assert result["tflite_accuracy"] is not None


@pytest.mark.parametrize("int8_io", [False, True])
def test_int8(student, digits, tmp_path, int8_io):
    path = tmp_path / "int8.tflite"
    report = _export(student, digits, path, quantization="int8",
                     int8_io=int8_io)
    assert report.top1_agreement >= 0.97
    assert abs(report.tflite_accuracy - report.keras_accuracy) <= 0.01
    from ai_edge_litert.interpreter import Interpreter

    (detail,) = Interpreter(model_path=str(path)).get_input_details()
    assert detail["dtype"] == (np.int8 if int8_io else np.float32)


def test_low_agreement_warns(student, digits, tmp_path):
    with pytest.warns(RuntimeWarning, match="agrees with the Keras model"):
        _export(student, digits, tmp_path / "s.tflite",
                quantization="dynamic", min_agreement=1.01)


class FakeDistiller(keras.Model):
    def __init__(self, teacher, student):
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.adapter = keras.layers.Conv2D(64, 1)
        self.adapter.build((None, 8, 8, 16))

    def call(self, x):
        return self.student(x)


def test_distiller_exports_student_only(student, digits, tmp_path):
    teacher = _conv_net((64, 128), "teacher")
    direct = to_tflite(student, str(tmp_path / "direct.tflite"),
                       verify=False, latency_runs=0)
    report = to_tflite(
        FakeDistiller(teacher, student), str(tmp_path / "d.tflite"),
        verify_data=digits.test, teacher=teacher, latency_runs=10,
    )
    assert report.num_tensors == direct.num_tensors
    assert report.size_bytes == direct.size_bytes
    assert report.num_params == student.count_params()
    assert report.teacher.num_params == teacher.count_params()
    assert report.size_ratio < 0.2
    assert report.teacher.size_bytes > 5 * report.size_bytes
    assert report.latency_ratio > 0 and "teacher" in report.to_table()
    saved = json.loads(open(report.save_json(tmp_path / "r.json")).read())
    assert saved["teacher"]["num_params"] == teacher.count_params()
    assert saved["top1_agreement"] == 1.0


def test_bad_inputs(student, digits, tmp_path):
    out = str(tmp_path / "s.tflite")
    with pytest.raises(ValueError, match="representative_data"):
        to_tflite(student, out, quantization="int8")
    with pytest.raises(ValueError, match="quantization='int4'"):
        to_tflite(student, out, quantization="int4")
    with pytest.raises(ValueError, match="int8_io"):
        to_tflite(student, out, quantization="dynamic", int8_io=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_tflite(student, str(tmp_path / "missing" / "s.tflite"))
    with pytest.raises(TypeError, match="keras.Model"):
        to_tflite(lambda x: x, out)
    small = digits_arrays(image_size=8).train[0]
    with pytest.raises(ValueError, match=r"\(None, 16, 16, 1\)"):
        to_tflite(student, out, quantization="int8", representative_data=small)
    assert os.listdir(tmp_path) == []


def test_cli(student, tmp_path, capsys, monkeypatch):
    from tfkd import cli

    # Only this sub-command: the test must not depend on the others.
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("tfkd.export.cli",))
    main = cli.main

    saved = str(tmp_path / "student.keras")
    student.save(saved)
    out = str(tmp_path / "student.tflite")
    code = main(["export", saved, "--quantization", "dynamic", "--data",
                 "digits", "--out", out])
    assert code == 0
    assert os.path.getsize(out) > 0
    report = json.loads(open(tmp_path / "student.json").read())
    assert report["quantization"] == "dynamic"
    assert "top-1 agreement" in capsys.readouterr().out

    code = main(["export", str(tmp_path / "missing.keras")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.keras" in err
