"""Tests for the CIFAR model zoo: ResNet, WRN and VGG-13."""

import numpy as np
import pytest

import keras

from tfkd.models import RESNET_PRESETS
from tfkd.models import VGG_PRESETS
from tfkd.models import WRN_PRESETS
from tfkd.models import block_boundaries
from tfkd.models import cifar_resnet
from tfkd.models import resnet20
from tfkd.models import vgg13
from tfkd.models import wide_resnet
from tfkd.models import wrn_16_1
from tfkd.models import wrn_16_2
from tfkd.models import wrn_46_4
from tfkd.models import resnet as resnet_module
from tfkd.models import wrn as wrn_module


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(batch=2, size=32, channels=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(batch, size, size, channels)).astype("float32")


@pytest.mark.parametrize("preset", sorted(RESNET_PRESETS))
def test_resnet_presets_are_exact(preset):
    config = RESNET_PRESETS[preset]
    model = getattr(resnet_module, preset)()
    assert model.count_params() == config["params"]
    assert _trainable(model) == config["trainable_params"]
    assert model.name == preset
    # He et al. 2016, Table 6 counts trainable weights (no BN statistics).
    published = config["published_params"]
    assert abs(_trainable(model) - published) / published < 0.03


@pytest.mark.parametrize("preset", ["wrn_16_1", "wrn_16_2", "wrn_40_1"])
def test_wrn_presets_are_exact(preset):
    config = WRN_PRESETS[preset]
    model = getattr(wrn_module, preset)()
    assert model.count_params() == config["params"]
    assert _trainable(model) == config["trainable_params"]
    if preset == "wrn_16_2":
        # Published (Zagoruyko & Komodakis): 0.69M trainable weights.
        assert abs(_trainable(model) - 0.69e6) / 0.69e6 < 0.03


def test_big_presets_are_exact():
    for builder, config in [
        (wrn_46_4, WRN_PRESETS["wrn_46_4"]),
        (vgg13, VGG_PRESETS["vgg13"]),
    ]:
        model = builder()
        assert model.count_params() == config["params"]
        assert _trainable(model) == config["trainable_params"]


def test_option_a_is_parameter_free_and_default():
    a = cifar_resnet(20)
    b = cifar_resnet(20, shortcut="B")
    assert a.name == "resnet20" and b.name == "resnet20_b"
    # B adds 1x1 convs (16*32 + 32*64) and their BN (gamma, beta).
    assert _trainable(b) - _trainable(a) == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    names = {layer.name for layer in a.layers}
    assert "stage2_block1_shortcut_pad" in names
    assert not any("shortcut_conv" in n for n in names)
    assert "stage2_block1_shortcut_conv" in {layer.name for layer in b.layers}


def test_option_a_shortcut_is_subsample_plus_zero_channels():
    model = resnet20()
    shortcut = keras.Model(
        model.get_layer("stage1_block3_out").output,
        model.get_layer("stage2_block1_shortcut_restore").output,
    )
    x = _images()[:, :, :, :1].repeat(16, axis=-1)
    y = keras.ops.convert_to_numpy(shortcut(x))
    assert y.shape == (2, 16, 16, 32)
    np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., :8], 0)
    np.testing.assert_array_equal(y[..., 24:], 0)


def test_resnet_names_and_shapes():
    model = resnet20(num_classes=100)
    assert model.output.shape == (None, 100)
    expected = {
        "stem_relu": (None, 32, 32, 16),
        "stage1_block3_out": (None, 32, 32, 16),
        "stage2_block1_out": (None, 16, 16, 32),
        "stage3_block3_out": (None, 8, 8, 64),
        "pool": (None, 64),
        "logits": (None, 100),
    }
    for name, shape in expected.items():
        assert model.get_layer(name).output.shape == shape
    assert isinstance(model.get_layer("stage1_block1_add"), keras.layers.Add)
    assert block_boundaries(model) == (
        ["stem_relu"]
        + [f"stage{s}_block{b}_out" for s in (1, 2, 3) for b in (1, 2, 3)]
        + ["pool", "logits"]
    )


def test_wrn_names_and_shapes():
    model = wrn_16_2()
    assert model.get_layer("stage3_block2_out").output.shape == (
        None, 8, 8, 128,
    )
    assert isinstance(model.get_layer("stage1_block1_out"), keras.layers.Add)
    assert block_boundaries(model) == (
        ["stem_conv"]
        + [f"stage{s}_block{b}_out" for s in (1, 2, 3) for b in (1, 2)]
        + ["final_relu", "pool", "logits"]
    )
    # WRN-16-1 keeps width 16 in stage 1: identity shortcut, no 1x1 conv.
    names = {layer.name for layer in wrn_16_1().layers}
    assert "stage1_block1_shortcut_conv" not in names
    assert "stage2_block1_shortcut_conv" in names
    assert "stage1_block1_shortcut_conv" in {
        layer.name for layer in model.layers
    }


def test_vgg13_names_and_shapes():
    model = vgg13(num_classes=100)
    assert model.get_layer("stage1_out").output.shape == (None, 32, 32, 64)
    assert model.get_layer("stage4_out").output.shape == (None, 4, 4, 512)
    assert model.output.shape == (None, 100)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 10
    assert block_boundaries(model) == (
        [f"stage{s}_out" for s in range(1, 6)] + ["pool", "logits"]
    )


@pytest.mark.parametrize(
    "builder", [resnet20, wrn_16_1, vgg13], ids=["resnet20", "wrn", "vgg"]
)
def test_forward_outputs_logits_and_names_are_deterministic(builder):
    model = builder()
    y = keras.ops.convert_to_numpy(model(_images(), training=False))
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    # Logits, not probabilities.
    assert not np.allclose(y.sum(axis=-1), 1.0)
    assert [l.name for l in builder().layers] == [l.name for l in model.layers]
    assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)


def test_resnet_saves_and_loads_in_safe_mode(tmp_path):
    model = resnet20()
    path = str(tmp_path / "resnet20.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _images()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-5,
    )


def test_wrn_dropout_and_other_shapes():
    model = wide_resnet(10, 1, dropout=0.3, input_shape=(None, None, 1))
    assert "stage1_block1_dropout" in {layer.name for layer in model.layers}
    y = model(_images(size=16, channels=1))
    assert y.shape == (2, 10)
    y = resnet20(input_shape=(None, None, 3))(_images(size=20))
    assert y.shape == (2, 10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cifar_resnet(21), "Received: depth=21"),
        (lambda: cifar_resnet(2), "Received: depth=2"),
        (lambda: cifar_resnet(20, shortcut="C"), "Received: shortcut='C'"),
        (lambda: cifar_resnet(20, num_classes=0), "Received: num_classes=0"),
        (lambda: wide_resnet(15, 1), "Received: depth=15"),
        (lambda: wide_resnet(16, 0), "Received: width=0"),
        (lambda: wide_resnet(16, 1, dropout=1.0), "Received: dropout=1.0"),
        (lambda: vgg13(input_shape=(32, 32)), "Received: input_shape"),
        (lambda: vgg13(input_shape=(4, 4, 3)), "Received: input_shape"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_argument_types_raise_type_error():
    with pytest.raises(TypeError, match="Received: depth=20.0"):
        cifar_resnet(20.0)
    with pytest.raises(TypeError, match="Received: width=True"):
        wide_resnet(16, True)

