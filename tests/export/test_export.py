"""Tests of `tfkd.export`: TFLite conversion, parity, report and CLI.

Parity is measured on a *trained* digits student (real held-out digits, all
ten classes predicted) by running the LiteRT interpreter directly in the
test (`_litert.py`), not through tfkd's own `verify_tflite`; that function
is then checked against the direct numbers, so it cannot silently compare
Keras with Keras. Error bounds are relative to the spread of the model's
logits, so they cannot pass on a model whose outputs are all near zero.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import _litert
import tfkd
from tfkd.data import digits_arrays
from tfkd.export import ExportReport
from tfkd.export import to_tflite
from tfkd.export import verify_tflite

# Verify on all 360 held-out digits.
NUM_SAMPLES = 400
EPOCHS = 8

# name: to_tflite arguments. Each is exported once, in the module fixture.
MODES = {
    "float32": dict(quantization=None),
    "float16": dict(quantization="float16"),
    "dynamic": dict(quantization="dynamic"),
    "int8": dict(quantization="int8"),
    "int8_io": dict(quantization="int8", int8_io=True),
}
QUANTISED = ("dynamic", "int8", "int8_io")


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
def student():
    """`tfkd.models.digits_student()` trained briefly on the real digits."""
    keras.utils.set_random_seed(0)
    data = tfkd.data.load_digits(image_size=16, batch_size=32, seed=0)
    model = tfkd.models.digits_student()
    model.compile(
        keras.optimizers.Adam(5e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.train, epochs=EPOCHS, shuffle=False, verbose=0)
    return model


@pytest.fixture(scope="module")
def keras_logits(student, digits):
    return keras.ops.convert_to_numpy(
        student(digits.test[0], training=False))


@pytest.fixture(scope="module")
def exports(student, digits, tmp_path_factory):
    """`{mode: (path, ExportReport)}`, each file alone in its directory."""
    out = {}
    for mode, kwargs in MODES.items():
        path = tmp_path_factory.mktemp(mode) / "student.tflite"
        out[mode] = path, to_tflite(
            student, str(path), representative_data=digits.train[0],
            verify_data=digits.test, num_samples=NUM_SAMPLES, latency_runs=3,
            **kwargs)
    return out


@pytest.fixture(scope="module")
def direct(exports, digits, keras_logits):
    """`{mode: parity figures}` from running the interpreter directly."""
    return {
        mode: _litert.compare(_litert.run(path, digits.test[0]),
                              keras_logits, digits.test[1])
        for mode, (path, _) in exports.items()
    }


def test_trained_student_is_a_real_classifier(keras_logits, digits):
    # What makes the parity bounds below mean something: the model
    # predicts every class, is accurate, and its logits span a real range.
    figures = _litert.compare(keras_logits, keras_logits, digits.test[1])
    assert figures["keras_classes"] == 10
    assert figures["keras_accuracy"] >= 0.85
    assert figures["spread"] >= 5.0


@pytest.mark.parametrize("mode", MODES)
def test_parity_with_keras(direct, mode):
    f = direct[mode]
    spread = f["spread"]
    if mode == "float32":
        assert f["max_abs_diff"] <= 1e-4 * spread
        assert f["top1_agreement"] == 1.0
        assert f["tflite_accuracy"] == f["keras_accuracy"]
        return
    # The file really holds fewer bits: its outputs are not Keras's.
    assert f["max_abs_diff"] > 1e-5 * spread
    if mode == "float16":
        assert f["max_abs_diff"] <= 1e-2 * spread
        assert f["top1_agreement"] >= 0.99
    else:
        assert f["mean_abs_diff"] <= 0.03 * spread
        assert f["max_abs_diff"] <= 0.25 * spread
        assert f["top1_agreement"] >= 0.97
    assert abs(f["tflite_accuracy"] - f["keras_accuracy"]) <= 0.02


def test_files_hold_the_requested_number_formats(exports, digits):
    dtypes = {mode: _litert.tensor_dtypes(path)
              for mode, (path, _) in exports.items()}
    assert set(dtypes["float32"]) <= {"float32", "int32"}
    assert dtypes["float16"]["float16"] > 0 and dtypes["float16"]["int8"] == 0
    assert dtypes["dynamic"]["int8"] > 0 and dtypes["dynamic"]["float16"] == 0
    # Full integer: float tensors are only the float input and output.
    assert dtypes["int8"]["float32"] == 2
    assert dtypes["int8_io"]["float32"] == 0
    for mode in ("float32", "float16", "dynamic", "int8"):
        inp, out = _litert.io_details(exports[mode][0])
        assert inp["dtype"] == out["dtype"] == np.float32, mode
    inp, out = _litert.io_details(exports["int8_io"][0])
    assert inp["dtype"] == out["dtype"] == np.int8
    # The input range was calibrated on the images, which span [0, 1].
    assert float(digits.train[0].min()) == 0.0
    assert float(digits.train[0].max()) == 1.0
    scale, zero_point = inp["quantization"]
    assert scale == pytest.approx(1 / 255, rel=1e-6) and zero_point == -128
    size = {mode: report.size_bytes for mode, (_, report) in exports.items()}
    assert size["float16"] < size["float32"]
    assert size["dynamic"] < size["float32"]
    assert size["int8"] < size["float16"]


@pytest.mark.parametrize("mode", MODES)
def test_reports_match_direct_computation(exports, direct, student, digits,
                                          mode):
    path, report = exports[mode]
    f = direct[mode]
    # verify_tflite on its own, from a batched tf.data pipeline with labels.
    data = tf.data.Dataset.from_tensor_slices(digits.test).batch(50)
    verified = verify_tflite(path, student, data)
    fields = ("max_abs_diff", "mean_abs_diff", "top1_agreement",
              "keras_accuracy", "tflite_accuracy")
    for name, got in (("to_tflite", report.to_dict()),
                      ("verify_tflite", verified)):
        assert got.get("num_verified", got.get("num_samples")) == len(
            digits.test[0]), name
        for key in fields:
            # Same interpreter, same Keras model: equal up to float noise
            # (tfkd runs the interpreter in chunks of 64 images).
            assert got[key] == pytest.approx(
                f[key], rel=1e-3, abs=1e-6 * f["spread"]), (name, key)


def test_report_fields(exports, student):
    path, report = exports["float32"]
    assert isinstance(report, ExportReport)
    assert report.path == os.path.abspath(path)
    assert report.size_bytes == os.path.getsize(path)
    # Written via a temp file + rename: nothing else is left behind.
    for mode, (mode_path, _) in exports.items():
        assert os.listdir(mode_path.parent) == ["student.tflite"], mode
    assert report.num_params == student.count_params()
    assert report.num_tensors > 0 and report.num_ops > 0
    assert report.latency_ms > 0 and report.latency_runs == 3
    assert [r.quantization for _, r in exports.values()] == [
        "none", "float16", "dynamic", "int8", "int8"]
    assert [r.int8_io for _, r in exports.values()] == [
        False, False, False, False, True]


def test_low_agreement_warns(student, digits, tmp_path):
    with pytest.warns(RuntimeWarning, match="agrees with the Keras model"):
        to_tflite(student, str(tmp_path / "s.tflite"),
                  quantization="dynamic", verify_data=digits.test,
                  latency_runs=0, min_agreement=1.01)


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


def test_cli(student, digits, keras_logits, tmp_path, capsys, monkeypatch):
    from tfkd import cli

    # Only this sub-command: the test must not depend on the others.
    monkeypatch.setattr(cli, "_COMMAND_MODULES", ("tfkd.cli.export",))
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
    # The CLI verified its file on the first 256 held-out digits.
    n = report["num_verified"]
    assert n == 256
    f = _litert.compare(_litert.run(out, digits.test[0][:n]),
                        keras_logits[:n], digits.test[1][:n])
    assert report["top1_agreement"] == pytest.approx(f["top1_agreement"])
    assert report["top1_agreement"] >= 0.97
    assert report["max_abs_diff"] == pytest.approx(f["max_abs_diff"],
                                                   rel=1e-3)
    assert "top-1 agreement" in capsys.readouterr().out

    code = main(["export", str(tmp_path / "missing.keras")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.keras" in err


def test_export_keeps_the_converters_log_lines_off_the_terminal(
        tmp_path, capfd):
    """TensorFlow's converter and LiteRT print C++ log lines (SavedModel
    reading, MLIR passes, the XNNPACK delegate) straight to file
    descriptor 2; an export shows only tfkd's own output."""
    from tfkd import testing

    model = testing.tiny_conv_model("quiet", seed=0)
    capfd.readouterr()
    to_tflite(model, str(tmp_path / "quiet.tflite"),
              verify_data=testing.random_images(8), num_samples=8,
              latency_runs=2)
    err = capfd.readouterr().err
    for noise in ("SavedModel", "tf_tfl_flatbuffer_helpers", "XNNPACK",
                  "mlir"):
        assert noise not in err, err[:2000]


def test_failed_conversion_still_shows_the_converters_lines(capfd):
    from tfkd.export import tflite

    with pytest.raises(RuntimeError, match="boom"):
        with tflite._quiet_native_logs():
            os.write(2, b"native detail\n")
            raise RuntimeError("boom")
    assert "native detail" in capfd.readouterr().err


@pytest.fixture(scope="module")
def tiny_student_export(tmp_path_factory):
    """The tiny student of `_distiller_cases` exported on its own."""
    from _distiller_cases import tiny_pair

    _, student = tiny_pair()
    path = tmp_path_factory.mktemp("tiny") / "student.tflite"
    return to_tflite(student, str(path), verify=False, latency_runs=0)


def _registry_cases():
    from _distiller_cases import all_cases
    from tfkd.distillers import registry

    names = registry.method_names()
    return [pytest.param(c, id=c.name) for c in all_cases()
            if c.name in names]


class _Tracked(Exception):
    """Stops `to_tflite` once it has chosen the model to convert."""


@pytest.mark.parametrize("case", _registry_cases())
def test_real_distiller_exports_its_student_only(case, tiny_student_export,
                                                 tmp_path, monkeypatch):
    # A real distiller of each method, its adapters, regressors or
    # discriminator built: what is exported is the student alone. KTAN
    # (discriminator, regressor, two optimizers) is converted in full; for
    # the others the model handed to the converter is checked, which costs
    # no conversion.
    from _distiller_cases import tiny_pair

    teacher, student = tiny_pair()
    distiller = case.build(teacher, student)
    x = np.zeros((2, 8, 8, 1), "float32")
    distiller.compute_losses(x, np.zeros(2, "int64"))  # builds its parts
    path = str(tmp_path / "d.tflite")
    if case.name == "ktan":
        report = to_tflite(distiller, path, verify=False, latency_runs=0)
        assert report.num_params == student.count_params()
        assert report.num_tensors == tiny_student_export.num_tensors
        assert report.size_bytes == tiny_student_export.size_bytes
        return
    from tfkd.export import tflite

    tracked = []

    def convert(model, *args, **kwargs):
        tracked.append(model)
        raise _Tracked

    monkeypatch.setattr(tflite, "_convert", convert)
    with pytest.raises(_Tracked):
        to_tflite(distiller, path, verify=False, latency_runs=0)
    (model,) = tracked
    assert model is student
    others = {id(w) for w in distiller.weights} - {
        id(w) for w in student.weights}
    assert others  # The teacher's at least.
    assert not others & {id(w) for w in model.weights}
