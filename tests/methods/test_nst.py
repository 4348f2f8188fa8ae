"""Tests of `tfkd.losses.neuron_selectivity_loss` (NST, Huang & Wang).

The NST (neuron selectivity transfer) term: value, spatial sizes.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfkd.methods.nst import neuron_selectivity_loss
from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads
import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.nst import NeuronSelectivityDistillation


# ------------------------------------------------ NumPy reference (paper)
def np_channel_maps(f):
    """(H, W, C) -> list of C unit vectors of length H·W (0 stays 0)."""
    f = np.asarray(f, np.float64)
    maps = []
    for c in range(f.shape[-1]):
        v = f[..., c].reshape(-1)
        n = np.sqrt(np.sum(v**2))
        maps.append(v / n if n > 0 else v)
    return maps


def np_mean_kernel(xs, ys):
    return np.mean([np.dot(x, y) ** 2 for x in xs for y in ys])


def np_nst(t, s):
    out = []
    for ft, fs in zip(t, s):
        mt, ms = np_channel_maps(ft), np_channel_maps(fs)
        out.append(np_mean_kernel(mt, mt) + np_mean_kernel(ms, ms)
                   - 2 * np_mean_kernel(ms, mt))
    return np.array(out)


def features(shape, seed, scale=1.0):
    rng = np.random.RandomState(seed)
    return (scale * rng.randn(*shape)).astype(np.float32)


SHAPES = [
    ((1, 2, 2, 3), (1, 2, 2, 3)),
    ((2, 3, 3, 4), (2, 3, 3, 2)),
    ((4, 4, 2, 6), (4, 4, 2, 9)),
    ((3, 1, 1, 5), (3, 1, 1, 1)),
]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("t_shape,s_shape,runner", cases(SHAPES, SHAPES[1:3]))
def test_matches_reference(t_shape, s_shape, runner):
    t, s = features(t_shape, 0), features(s_shape, 1)
    got = run(neuron_selectivity_loss, t, s, runner=runner)
    assert got.shape == (t_shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(got, np_nst(t, s), rtol=1e-4, atol=1e-6)


def test_zero_for_rescaled_and_permuted_channels():
    t = features((3, 4, 4, 5), 2)
    # Each channel scaled by its own positive factor, channels permuted:
    # the same set of normalised maps.
    s = t[..., ::-1] * np.array([1.0, 2.0, 0.5, 3.0, 7.0], np.float32)
    np.testing.assert_allclose(neuron_selectivity_loss(t, s), 0.0,
                               atol=1e-6)
    assert np.all(neuron_selectivity_loss(t, features(t.shape, 3)) > 0.0)


def test_gradient_matches_finite_differences():
    t, s = features((2, 2, 2, 3), 4), features((2, 2, 2, 2), 5)
    _, (g_t, g_s) = value_and_grads(neuron_selectivity_loss, t, s)
    np.testing.assert_allclose(g_s, numeric_grad(lambda x: np_nst(t, x), s),
                               rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(g_t, numeric_grad(lambda x: np_nst(x, s), t),
                               rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(neuron_selectivity_loss, jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 3, 3, 4]),
                                      tf.TensorSpec([None, 3, 3, 2])])
    t, s = features((4, 3, 3, 4), 6), features((4, 3, 3, 2), 7)
    for b in (1, 4):
        np.testing.assert_allclose(fn(t[:b], s[:b]).numpy(),
                                   np_nst(t[:b], s[:b]), rtol=1e-4,
                                   atol=1e-6)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_dead_channels_and_extreme_scales_stay_finite(runner):
    t, s = features((3, 3, 3, 4), 8), features((3, 3, 3, 3), 9)
    t[..., 1] = 0.0          # a dead teacher channel in every example
    s[0, ..., 2] = 0.0       # a dead student channel in example 0
    s[1] = 0.0               # an all-zero student map
    s[2] *= 1e4
    value, grads = value_and_grads(neuron_selectivity_loss, t, s,
                                   runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_nst(t, s), rtol=1e-4, atol=1e-6)
    assert np.all(grads[1][0, ..., 2] == 0.0)
    assert np.all(grads[1][1] == 0.0)
    zeros = np.zeros((2, 2, 2, 3), np.float32)
    value, grads = value_and_grads(neuron_selectivity_loss, zeros, zeros,
                                   runner="eager")
    assert np.all(value == 0.0)
    assert_finite(*grads)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, s = features((2, 3, 3, 4), 10), features((2, 3, 3, 2), 11)
    got = run(neuron_selectivity_loss, t, s, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in (t, s)]
    np.testing.assert_allclose(got, np_nst(*rounded), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s = features((3, 4, 4, 6), 123), features((3, 4, 4, 4), 124)
    np.testing.assert_allclose(neuron_selectivity_loss(t, s).numpy(),
                               [0.37529427, 0.33539414, 0.32692897], rtol=1e-5)


# ----------------------------------------------------------------- bad input
def test_bad_shapes():
    with pytest.raises(ValueError, match=r"same batch size and spatial size "
                       r"\(their channel counts may differ\).*\(2, 4, 4, 3\)"
                       r".*\(2, 2, 2, 3\).*AveragePooling2D"):
        neuron_selectivity_loss(np.zeros((2, 4, 4, 3)), np.zeros((2, 2, 2, 3)))
    with pytest.raises(ValueError, match=r"same batch size"):
        neuron_selectivity_loss(np.zeros((2, 4, 4, 3)), np.zeros((3, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"`student_features` must have rank "
                       r"4 \(batch, H, W, C\)"):
        neuron_selectivity_loss(np.zeros((2, 4, 4, 3)), np.zeros((2, 16, 3)))
    with pytest.raises(TypeError, match="teacher_features"):
        neuron_selectivity_loss([[[["a"]]]], [[[[1.0]]]])


# --- The term (formerly tests/test_term_nst.py) ---

def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: NeuronSelectivityDistillation("conv2", "conv2"),
        reference=neuron_selectivity_loss)


def test_method_is_registered_with_its_weight():
    spec = registry.get("nst")
    assert spec.term is NeuronSelectivityDistillation
    assert spec.arguments()["weight"] == 50.0
    assert spec.build_defaults == {"adapter": True}
    distiller = registry.build(
        "nst", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("conv2", "conv2"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [50.0, 2.0]
    assert distiller.term("nst").adapters == []  # sizes match


def _pooled_student(seed=11):
    """A student whose tapped map is 4×4 (the teacher's is 8×8)."""
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="half")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="student")


def test_spatial_mismatch_needs_the_adapter():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    with pytest.raises(ValueError, match=r"equal spatial sizes.*'conv2' -> "
                                         r"'half'.*\(None, 8, 8, 8\).*"
                                         r"\(None, 4, 4, 4\).*adapter=True"):
        tfkd.Distiller(teacher, _pooled_student(),
                       [NeuronSelectivityDistillation("conv2", "half")])
    term = NeuronSelectivityDistillation("conv2", "half", adapter=True)
    distiller = tfkd.Distiller(teacher, _pooled_student(), [term])
    assert len(term.adapters) == 1
    x, y = testing.random_images(8, seed=2)
    values = distiller.compute_terms(x, y)["nst_loss"]
    assert values.shape == (8,)
    assert np.all(np.isfinite(values.numpy()))


def test_config_round_trip():
    term = NeuronSelectivityDistillation("a", "b", adapter=True)
    clone = NeuronSelectivityDistillation.from_config(term.get_config())
    assert clone.get_config() == term.get_config()
    assert clone.adapter is True
