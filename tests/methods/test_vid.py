"""Tests of `tfkd.losses.vid_loss` (VID, Ahn et al.).

The VID term: its regressor and log-scale belong to the term.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfkd.methods.vid import vid_log_scale_for_variance
from tfkd.methods.vid import vid_loss
from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads
import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.vid import VariationalInformationDistillation


# --------------------------------- NumPy reference (the authors' code's form)
def np_softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def np_vid(t, mu, log_scale):
    t = np.asarray(t, np.float64)
    mu = np.asarray(mu, np.float64)
    out = []
    for tb, mb in zip(t, mu):
        total, count = 0.0, 0
        for idx in np.ndindex(*tb.shape):
            var = np_softplus(float(log_scale[idx[-1]])) + 1e-5
            total += 0.5 * ((mb[idx] - tb[idx]) ** 2 / var + math.log(var))
            count += 1
        out.append(total / count)
    return np.array(out)


def inputs(shape, seed, scale=1.0):
    rng = np.random.RandomState(seed)
    t = (scale * rng.randn(*shape)).astype(np.float32)
    mu = (scale * rng.randn(*shape)).astype(np.float32)
    log_scale = rng.uniform(-3.0, 5.0, size=shape[-1]).astype(np.float32)
    return t, mu, log_scale


SHAPES = [(1, 2, 2, 1), (2, 3, 3, 4), (4, 2, 5, 3), (3, 6)]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("shape,runner", cases(
    [(s,) for s in SHAPES], [(SHAPES[1],), (SHAPES[3],)]))
def test_matches_reference(shape, runner):
    t, mu, log_scale = inputs(shape, sum(shape))
    got = run(vid_loss, t, mu, log_scale, runner=runner)
    assert got.shape == (shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(got, np_vid(t, mu, log_scale), rtol=1e-5,
                               atol=1e-6)


def test_log_scale_for_variance_inverts_the_parametrisation():
    for variance in (5.0, 1.0, 1e-3, 100.0, np.float32(2.0)):
        log_scale = vid_log_scale_for_variance(variance)
        np.testing.assert_allclose(np_softplus(log_scale) + 1e-5, variance,
                                   rtol=1e-9)
    # The authors' initial value: log(exp(5 − 1e-5) − 1).
    np.testing.assert_allclose(vid_log_scale_for_variance(5.0),
                               np.log(np.exp(5.0 - 1e-5) - 1.0), rtol=1e-12)


def test_gradients_match_finite_differences():
    t, mu, log_scale = inputs((2, 2, 2, 3), 1)
    _, (g_t, g_mu, g_ls) = value_and_grads(vid_loss, t, mu, log_scale,
                                           wrt=(0, 1, 2))
    np.testing.assert_allclose(
        g_mu, numeric_grad(lambda x: np_vid(t, x, log_scale), mu),
        rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        g_t, numeric_grad(lambda x: np_vid(x, mu, log_scale), t),
        rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        g_ls, numeric_grad(lambda x: np_vid(t, mu, x), log_scale),
        rtol=1e-4, atol=1e-7)


def test_optimal_variance_is_the_mean_squared_error():
    # d/dσ² of ½(e²/σ² + log σ²) is 0 at σ² = e²: the learned variance
    # tracks the per-channel residual.
    t, mu, _ = inputs((4, 3, 3, 2), 2)
    mse = np.mean((mu - t) ** 2, axis=(0, 1, 2))
    log_scale = np.array([vid_log_scale_for_variance(float(v)) for v in mse],
                         np.float32)
    _, (g_ls,) = value_and_grads(vid_loss, t, mu, log_scale, wrt=(2,))
    np.testing.assert_allclose(g_ls, 0.0, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(vid_loss, jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 2, 2, 3]),
                                      tf.TensorSpec([None, 2, 2, 3]),
                                      tf.TensorSpec([3])])
    t, mu, log_scale = inputs((5, 2, 2, 3), 3)
    for b in (1, 5):
        np.testing.assert_allclose(fn(t[:b], mu[:b], log_scale).numpy(),
                                   np_vid(t[:b], mu[:b], log_scale),
                                   rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_extreme_inputs_stay_finite(runner):
    t, mu, _ = inputs((3, 2, 2, 4), 4)
    t[0] = 0.0
    mu[0] = 0.0
    t[1] *= 1e4
    log_scale = np.array([-100.0, 100.0, 0.0, -20.0], np.float32)
    value, grads = value_and_grads(vid_loss, t, mu, log_scale, wrt=(0, 1, 2),
                                   runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_vid(t, mu, log_scale), rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, mu, log_scale = inputs((2, 3, 3, 4), 5)
    got = run(vid_loss, t, mu, log_scale, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy()
               for x in (t, mu, log_scale)]
    np.testing.assert_allclose(got, np_vid(*rounded), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, mu, log_scale = inputs((3, 2, 2, 3), 123)
    np.testing.assert_allclose(vid_loss(t, mu, log_scale).numpy(),
                               [1.4278665, 0.74623054, 0.500296], rtol=1e-5)


# ----------------------------------------------------------------- bad input
def test_bad_shapes():
    t = np.zeros((2, 3, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"`teacher_features` and "
                       r"`predicted_mean` must have the same shape.*"
                       r"\(2, 3, 3, 4\).*\(2, 3, 3, 2\)"):
        vid_loss(t, np.zeros((2, 3, 3, 2)), np.zeros(4))
    with pytest.raises(ValueError, match=r"`log_scale` must have one entry "
                       r"per channel.*log_scale.shape=\(3,\)"):
        vid_loss(t, t, np.zeros(3))
    with pytest.raises(ValueError, match=r"`log_scale` must have rank 1 "
                       r"\(C,\)"):
        vid_loss(t, t, np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"`teacher_features` must have rank "
                       r">= 2"):
        vid_loss(np.zeros(4), np.zeros(4), np.zeros(4))
    with pytest.raises(TypeError, match="predicted_mean"):
        vid_loss([[1.0]], [["b"]], [0.0])


@pytest.mark.parametrize("variance,error", [(1e-5, ValueError),
                                            (0.0, ValueError),
                                            ("5", TypeError)])
def test_bad_variance(variance, error):
    with pytest.raises(error, match=r"`variance`.*Received: variance="):
        vid_log_scale_for_variance(variance)


# --- The term (formerly tests/test_term_vid.py) ---

def test_term_matches_the_loss_and_trains():
    terms = []

    def make():
        terms.append(VariationalInformationDistillation("conv2", "conv2"))
        return terms[-1]

    def reference(t, s):
        term = terms[-1]
        return vid_loss(t, term.regressors[0](s), term.log_scales[0])

    testing.check_term(make, reference=reference)


def test_method_is_registered_with_the_code_weight():
    spec = registry.get("vid")
    assert spec.term is VariationalInformationDistillation
    assert spec.arguments()["weight"] == 1.0
    assert spec.arguments()["init_variance"] == 5.0
    distiller = registry.build(
        "vid", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("conv2", "conv2"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [1.0, 2.0]
    assert distiller.student_loss_weight == 0.5


def _pair(student=None):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    return teacher, student or testing.tiny_conv_model("student", width=4,
                                                       seed=11)


def test_regressor_and_log_scale_are_trained_and_not_in_the_student():
    teacher, student = _pair()
    term = VariationalInformationDistillation("conv2", "conv2")
    distiller = tfkd.Distiller(teacher, student, [term])
    parts = term.regressors[0].trainable_weights + [term.log_scales[0]]
    # Three 1×1 convs without bias (4 -> 8 -> 8 -> 8), one scale per
    # teacher channel, initialised to the code's variance 5.
    assert [tuple(w.shape) for w in parts] == [
        (1, 1, 4, 8), (1, 1, 8, 8), (1, 1, 8, 8), (8,)]
    np.testing.assert_allclose(np.array(term.log_scales[0]),
                               vid_log_scale_for_variance(5.0), rtol=1e-6)
    student_ids = {id(w) for w in student.weights}
    assert not any(id(w) in student_ids for w in parts)
    step = {id(v) for v in distiller.step_variables()}
    assert all(id(w) in step for w in parts)
    before = [np.array(w) for w in parts]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = testing.random_images(32, seed=4)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(not np.array_equal(b, np.array(w))
               for b, w in zip(before, parts))
    assert student.count_params() == testing.tiny_conv_model(
        "s", width=4).count_params()


def test_hidden_channels_and_initial_variance():
    teacher, student = _pair()
    term = VariationalInformationDistillation(
        "conv2", "conv2", hidden_channels=3, init_variance=1.0)
    tfkd.Distiller(teacher, student, [term])
    assert [tuple(w.shape) for w in term.regressors[0].weights] == [
        (1, 1, 4, 3), (1, 1, 3, 3), (1, 1, 3, 8)]
    variance = np.log1p(np.exp(np.array(term.log_scales[0]))) + 1e-5
    np.testing.assert_allclose(variance, 1.0, rtol=1e-5)
    config = term.get_config()
    assert (config["hidden_channels"], config["init_variance"]) == (3, 1.0)
    clone = VariationalInformationDistillation.from_config(config)
    assert clone.get_config() == config


def _student_with_maps(name="student"):
    """Student taps: `conv2` (8×8), `half` (4×4), `third` (3×3 from 8×8)."""
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            name="conv1")(inputs)
    wide = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                               name="conv2")(x)
    half = keras.layers.MaxPooling2D(2, name="half")(wide)
    third = keras.layers.Conv2D(4, 6, padding="valid", name="third")(wide)
    merged = keras.layers.Concatenate(name="merge")([
        keras.layers.GlobalAveragePooling2D(name="p1")(half),
        keras.layers.GlobalAveragePooling2D(name="p2")(third)])
    outputs = keras.layers.Dense(10, name="logits")(merged)
    return keras.Model(inputs, outputs, name=name)


def test_the_larger_map_is_average_pooled():
    x, y = testing.random_images(4, seed=5)
    # Teacher 8×8, student 4×4: the teacher's map is pooled 2×2.
    teacher, student = _pair(_student_with_maps())
    term = VariationalInformationDistillation("conv2", "half")
    distiller = tfkd.Distiller(teacher, student, [term])
    t = keras.Model(teacher.inputs, teacher.get_layer("conv2").output)(x)
    s = keras.Model(student.inputs, student.get_layer("half").output)(x)
    pooled = keras.layers.AveragePooling2D(2)(t)
    np.testing.assert_allclose(
        distiller.compute_terms(x, y)["vid_loss"].numpy(),
        vid_loss(pooled, term.regressors[0](s), term.log_scales[0]).numpy(),
        rtol=1e-5)
    # Teacher 4×4 (the student's half map), student 8×8: the student's
    # map is pooled inside the regressor.
    teacher2, student2 = _student_with_maps("t2"), _pair()[1]
    term2 = VariationalInformationDistillation("half", "conv2")
    tfkd.Distiller(teacher2, student2, [term2])
    assert isinstance(term2.regressors[0].layers[0],
                      keras.layers.AveragePooling2D)
    assert term2.regressors[0].output_shape == (None, 4, 4, 4)


def test_sizes_that_do_not_divide_are_refused():
    teacher, student = _pair(_student_with_maps())
    with pytest.raises(ValueError, match=r"must divide it exactly.*"
                                         r"\(None, 8, 8, 8\).*'conv2'.*"
                                         r"\(None, 3, 3, 4\).*'third'"):
        tfkd.Distiller(teacher, student,
                       [VariationalInformationDistillation("conv2",
                                                           "third")])


def test_unbound_term_and_bad_arguments():
    term = VariationalInformationDistillation("conv2", "conv2")
    t = np.zeros((2, 4, 4, 3), "float32")
    with pytest.raises(ValueError, match="has not been bound yet"):
        term.compute_loss(t, t)
    with pytest.raises(ValueError, match=r"`variance` must be > 1e-05"):
        VariationalInformationDistillation(init_variance=1e-6)
    with pytest.raises(ValueError, match=r"`hidden_channels` must be an "
                                         r"integer >= 1"):
        VariationalInformationDistillation(hidden_channels=0)
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"needs 4D feature maps.*'pool'"):
        tfkd.Distiller(teacher, student,
                       [VariationalInformationDistillation("pool", "pool")])
