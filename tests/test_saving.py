"""Saving and loading: distillers continue training after a `.keras` round
trip, students save without teacher weights, no Lambda layers anywhere, and
damaged files give a clear error (`tfkd.load`)."""

import json
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
    # Direct calls, not `predict`: the same arithmetic, no traced function.
    np.testing.assert_allclose(alone(x, training=False),
                               distiller(x, training=False), atol=1e-6)


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


# ----------------------------------------------------------------------
# Preset configs: read from `__init__`'s signature (`tfkd.saving.
# PresetSaving`), in the format tfkd wrote before (the fixture).

#: One preset each, built with non-default arguments for every parameter
#: the config holds.
PRESET_CASES = {
    "attention": lambda t, s: tfkd.distillers.AttentionDistiller(
        t, s, teacher_layer_name=["conv1", "conv2"],
        student_layer_name=["conv1", "conv2"], beta=20.0, alpha=0.4,
        temperature=3.0, p=3, mode="paper", adapter=True, stage=1,
        guided_channels=2, name="at"),
    "correlation": lambda t, s: tfkd.distillers.CorrelationDistiller(
        t, s, teacher_layer_name="conv2", student_layer_name="conv2",
        mode="spatial", alpha=0.6, beta=0.2, temperature=2.5, adapter=True,
        stage=None, pool_to=(4, 4), max_spatial_positions=512),
    "fitnet": lambda t, s: tfkd.distillers.FitNetDistiller(
        t, s, teacher_layer_name="conv1", student_layer_name="conv1",
        alpha=0.5, beta=0.3, temperature=2.0, regressor_activation="relu",
        stage=2, guided_channels=3),
    "feature": lambda t, s: tfkd.distillers.FeatureDistiller(
        t, s, knowledge=tfkd.losses.HintDistillation("conv1", "conv1"),
        alpha=0.7, beta=0.2, temperature=3.0, stage="both"),
    "locality": lambda t, s: tfkd.distillers.LocalityPreservingDistiller(
        t, s, teacher_layer_name="conv2", student_layer_name="conv2", k=3,
        gamma=0.5, lam=1.5, temperature=0.7, sigma=2.0, normalize=None),
    "collaboration_soft": lambda t, s: tfkd.distillers.CollaborationDistiller(
        t, s, teacher_layer_name="conv1", student_layer_name="conv1",
        alpha=0.3, temperature=2.0, kd_weight=0.5, kd_temperature=3.0,
        target="soft", adapter=True),
    "collaboration_heads": lambda t, s: (
        tfkd.distillers.CollaborationDistiller(
            t, s, teacher_layer_name="conv1", student_layer_name="conv1",
            alpha=0.4, temperature=1.5, kd_weight=0.0, kd_temperature=5.0,
            adapter=True,
            collaboration_loss=keras.losses.Huber(reduction=None),
            student_loss=keras.losses.Huber(reduction=None))),
    "adversarial": lambda t, s: tfkd.distillers.AdversarialDistiller(
        t, s, teacher_layer_name="conv2", student_layer_name="conv2",
        alpha=0.2, beta=0.7, pretrain_steps=5, kd_weight=1.0,
        temperature=2.0, discriminator_width=8, pretrain_epochs=0,
        regressor_pretrained=False),
}

PRESET_FIXTURE = os.path.join(os.path.dirname(__file__),
                              "preset_configs_v1.json")


def _own(config):
    """A config without the networks, as JSON would give it back."""
    return json.loads(json.dumps(
        {k: v for k, v in config.items() if k not in ("teacher", "student")},
        default=lambda x: keras.ops.convert_to_numpy(x).tolist()))


def _objective(distiller):
    """What a distiller trains: its terms' configs and its weights."""
    return _own({
        "terms": [t.get_config() for t in distiller._terms],
        "names": list(distiller._term_names),
        "hyperparameters": distiller.hyperparameters,
        "weights": distiller.paper_weights(),
    })


def test_the_fixture_covers_every_preset():
    with open(PRESET_FIXTURE, encoding="utf-8") as f:
        fixture = json.load(f)
    presets = {c.__name__ for c in vars(tfkd.distillers).values()
               if isinstance(c, type) and issubclass(c, tfkd.Distiller)
               and c is not tfkd.Distiller}
    assert {v["class"] for k, v in fixture.items() if k != "_about"} \
        == presets
    assert set(fixture) - {"_about"} == set(PRESET_CASES)


@pytest.mark.parametrize("case", sorted(PRESET_CASES))
def test_preset_configs_keep_their_format_and_old_ones_load(case):
    with open(PRESET_FIXTURE, encoding="utf-8") as f:
        old = json.load(f)[case]
    teacher, student = tiny_pair(teacher_width=8, student_width=4)
    distiller = PRESET_CASES[case](teacher, student)
    assert type(distiller).__name__ == old["class"]
    config = distiller.get_config()
    # Today's `get_config` writes what tfkd wrote before (the model's name,
    # unless given, is numbered by Keras per process), plus the key added
    # since: `unlabelled_weight`, which an old config lacks and loads as
    # "share", what it trained with.
    assert _own(config) == dict(old["config"], name=distiller.name,
                                unlabelled_weight=distiller.unlabelled_weight)
    # A config in the old format loads, and rebuilds the same objective.
    networks = {k: config[k] for k in ("teacher", "student")}
    loaded = type(distiller).from_config(dict(old["config"], **networks))
    assert type(loaded) is type(distiller)
    assert _objective(loaded) == _objective(distiller)
    assert loaded.unlabelled_weight == "share"
    assert _own(loaded.get_config()) == dict(old["config"],
                                             unlabelled_weight="share")
    # And so does `from_config(get_config())`.
    again = type(distiller).from_config(json.loads(json.dumps(config)))
    assert _objective(again) == _objective(distiller)


class _Extra(tfkd.distillers.LocalityPreservingDistiller):
    """An LP preset with one more argument, kept as `self.kept` if
    `keep`."""

    def __init__(self, teacher, student, *, extra=1, keep=True, **kwargs):
        super().__init__(teacher, student, **kwargs)
        if keep:
            self.kept = extra
        self.keep = keep


def test_a_preset_argument_nothing_holds_is_refused_by_name():
    teacher, student = tiny_pair()
    distiller = _Extra(teacher, student, teacher_layer_name="conv2",
                       student_layer_name="conv2", extra=7, keep=False)
    with pytest.raises(TypeError, match=r"`extra`.*attribute 'extra'"):
        distiller.get_config()


def test_a_declared_source_saves_an_argument_under_another_name():
    class Declared(_Extra):
        config_sources = {"extra": "kept"}

    teacher, student = tiny_pair()
    distiller = Declared(teacher, student, teacher_layer_name="conv2",
                         student_layer_name="conv2", extra=7, k=2)
    config = distiller.get_config()
    assert (config["extra"], config["keep"], config["k"]) == (7, True, 2)
    assert Declared.from_config(config).kept == 7

    class Missing(_Extra):
        config_sources = {"extra": "lp/no_such_key"}

    distiller = Missing(teacher, student, teacher_layer_name="conv2",
                        student_layer_name="conv2")
    with pytest.raises(ValueError, match=r"'lp/no_such_key'"):
        distiller.get_config()


def test_terms_holding_an_argument_with_different_values_must_be_told():
    # `FeatureDistiller` saves the KD term's temperature; without the
    # declaration a knowledge term with its own `temperature` is ambiguous.
    class Undeclared(tfkd.distillers.FeatureDistiller):
        config_sources = {"stage": "_stage_argument"}

    teacher, student = tiny_pair()
    knowledge = tfkd.losses.ContrastiveRepresentationDistillation(
        "pool", "pool", dataset_size=32, num_negatives=8, embedding_dim=4,
        temperature=0.5)
    with pytest.raises(ValueError, match=r"`temperature`.*config_sources"):
        Undeclared(teacher, student, knowledge=knowledge,
                   temperature=3.0).get_config()
    declared = tfkd.distillers.FeatureDistiller(
        teacher, student, knowledge=knowledge, temperature=3.0)
    assert declared.get_config()["temperature"] == 3.0
