"""Saving and loading: distillers continue training after a `.keras` round
trip, students save without teacher weights, no Lambda layers anywhere, and
damaged files give a clear error (`tfkd.load`)."""

import os
import re
import zipfile

import keras
import numpy as np
import pytest

import tfkd
from tfkd import models
from tfkd import testing

from _distiller_cases import distiller_params
from _distiller_cases import tiny_pair

TEACHER_WIDTH = 64  # ~38k teacher parameters: 150 kB of float32 weights.


def _state(distiller):
    variables = list(distiller.weights) + list(distiller.optimizer.variables)
    second = getattr(distiller, "discriminator_optimizer", None)
    if second is not None:
        variables += list(second.variables)
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _lambda_layers(model):
    return [
        layer.name
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.Lambda)
    ]


@pytest.mark.parametrize("case", distiller_params())
def test_saved_distiller_continues_training_identically(case, tmp_path):
    teacher, student = tiny_pair(teacher_width=TEACHER_WIDTH, student_width=4)
    distiller = case.build(teacher, student)
    case.compile(distiller, optimizer=keras.optimizers.Adam(1e-2))
    x, y = testing.random_images(32, seed=5)
    fit = dict(batch_size=16, epochs=1, shuffle=False, verbose=0)
    distiller.fit(x, y, **fit)
    assert _lambda_layers(distiller) == []

    path = os.path.join(tmp_path, "distiller.keras")
    distiller.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert type(restored) is type(distiller)
    def own_config(model):
        config = model.get_config()
        return {k: v for k, v in config.items()
                if k not in ("teacher", "student", "regressor")}

    assert own_config(restored) == own_config(distiller)
    before, after = _state(distiller), _state(restored)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)

    # Both go on training on the same batches and stay equal.
    distiller.fit(x, y, **fit)
    restored.fit(x, y, **fit)
    for i, (a, b) in enumerate(zip(_state(distiller), _state(restored))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                   err_msg=f"variable {i} differs")

    # The student alone: no teacher (nor adapter, regressor, discriminator)
    # weights in its file.
    student_path = os.path.join(tmp_path, "student.keras")
    distiller.student.save(student_path)
    teacher_bytes = 4 * distiller.teacher.count_params()
    assert os.path.getsize(student_path) < teacher_bytes / 2
    assert os.path.getsize(path) > teacher_bytes
    alone = tfkd.load(student_path)
    assert alone.count_params() == distiller.student.count_params()
    np.testing.assert_allclose(alone.predict(x, verbose=0),
                               distiller.predict(x, verbose=0), atol=1e-6)


def _zoo():
    """Every model of the zoo, by preset name."""
    builders = {}
    for name in (list(models.RESNET_PRESETS) + list(models.WRN_PRESETS)
                 + list(models.VGG_PRESETS) + list(models.DIGITS_PRESETS)):
        builders[name] = getattr(models, name)
    for name in models.LP_PRESETS:
        if name.startswith("lp_student_"):
            index = int(name.rsplit("_", 1)[1])
            builders[name] = lambda i=index: models.lp_student(i)
        else:
            builders[name] = getattr(models, name)
    for name, preset in models.STUDENT_CENTRIC_VGG_PRESETS.items():
        builders[name] = lambda p=preset: getattr(models, p["builder"])(
            **p["config"])
    builders["discriminator"] = lambda: models.build_discriminator((4, 4, 8))
    return builders


def test_no_lambda_layers_in_zoo():
    builders = _zoo()
    assert len(builders) >= 25
    found = {}
    for name, build in builders.items():
        model = build()
        bad = _lambda_layers(model)
        if bad:
            found[name] = bad
        # Lambda-free models serialise under safe mode without code.
        assert "Lambda" not in str(model.get_config()), name
        del model
    assert found == {}


# ----------------------------------------------------------------------
# tfkd.load: damaged and missing files.


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved KD distiller: `(path, bytes of the file, archive members)`."""
    teacher, student = tiny_pair()
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    x, y = testing.random_images(16)
    distiller.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path_factory.mktemp("saved") / "distiller.keras")
    distiller.save(path)
    with open(path, "rb") as f:
        raw = f.read()
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    return path, raw, members


def test_load_round_trip(saved):
    restored = tfkd.load(saved[0])
    assert isinstance(restored, tfkd.Distiller)
    assert tfkd.saving.load_distiller is tfkd.load
    restored = tfkd.load(saved[0], compile=False)
    assert getattr(restored, "optimizer", None) is None


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _rezip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def _flip(data, start, count=64):
    damaged = bytearray(data)
    for i in range(start, start + count):
        damaged[i] ^= 0xFF
    return bytes(damaged)


DAMAGE = {
    "truncated_half": (
        lambda raw, m, p: _write(p, raw[: len(raw) // 2]),
        "not a complete zip archive"),
    "truncated_tail": (
        lambda raw, m, p: _write(p, raw[:-20]), "not a complete zip archive"),
    "empty": (lambda raw, m, p: _write(p, b""), r"\(0 bytes\)"),
    "not_a_zip": (
        lambda raw, m, p: _write(p, b"hello" * 100),
        "not a complete zip archive"),
    "flipped_bytes": (
        lambda raw, m, p: _write(p, _flip(raw, len(raw) // 2)),
        "fails its CRC check"),
    "bad_json": (
        lambda raw, m, p: _rezip(
            p, {**m, "config.json": m["config.json"][:40]}),
        "JSON config is invalid"),
    "missing_config": (
        lambda raw, m, p: _rezip(
            p, {k: v for k, v in m.items() if k != "config.json"}),
        "lacks config.json"),
    "missing_weights": (
        lambda raw, m, p: _rezip(
            p, {k: v for k, v in m.items() if k != "model.weights.h5"}),
        "lacks model.weights.h5"),
    "truncated_weights": (
        lambda raw, m, p: _rezip(
            p, {**m, "model.weights.h5": m["model.weights.h5"][:1000]}),
        "unreadable weights"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_load_damaged_file_names_file_and_recovery(saved, tmp_path, damage):
    make, detail = DAMAGE[damage]
    path = make(saved[1], saved[2], tmp_path / f"{damage}.keras")
    with pytest.raises(ValueError, match="corrupt or truncated") as info:
        tfkd.load(path)
    message = str(info.value)
    assert path in message
    assert "corrupt or truncated" in message
    assert "Re-save the model" in message
    assert re.search(detail, message), message


def test_load_damaged_h5(tmp_path):
    path = _write(tmp_path / "model.h5", b"garbage")
    with pytest.raises(ValueError, match=r"model\.h5.*corrupt or truncated"):
        tfkd.load(path)


def test_load_missing_file(tmp_path):
    path = str(tmp_path / "nope.keras")
    with pytest.raises(FileNotFoundError, match=r"nope\.keras"):
        tfkd.load(path)


def test_load_bad_paths(tmp_path):
    with pytest.raises(TypeError, match=r"path=3 of type int"):
        tfkd.load(3)
    with pytest.raises(ValueError, match=r"is a directory.*path="):
        tfkd.load(tmp_path)
    path = _write(tmp_path / "weights.txt", b"x")
    with pytest.raises(ValueError, match=r"must be a `\.keras` file.*"
                                         r"weights\.txt"):
        tfkd.load(path)


def test_a_compiled_teachers_optimizer_does_not_warn_on_load(tmp_path):
    """A teacher compiled and trained on its own carries its optimizer; the
    distiller's file loads it uncompiled (the distiller trains with its own
    optimizer only), without Keras's "Skipping variable loading for
    optimizer" warning, and the distiller's own optimizer is restored."""
    import warnings

    teacher = testing.tiny_conv_model("teacher", seed=0)
    student = testing.tiny_conv_model("student", width=4, seed=1)
    x, y = testing.random_images(16)
    teacher.compile(optimizer="adam", loss=keras.losses.
                    SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=1, verbose=0)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, verbose=0)
    path = tfkd.saving.save(distiller, str(tmp_path / "distiller.keras"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = tfkd.load(path)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "Skipping variable loading" in m], \
        messages
    assert int(restored.optimizer.iterations) == int(
        distiller.optimizer.iterations) > 0
    np.testing.assert_allclose(restored.predict(x, verbose=0),
                               distiller.predict(x, verbose=0), atol=1e-6)
