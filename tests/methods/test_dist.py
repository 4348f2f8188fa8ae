"""Tests of `tfkd.losses.dist_loss` (DIST, Huang et al.).

The DIST term: value, batch level, live hyperparameters.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.dist import dist_loss
from tfkd.methods.kd import kd_loss
from _loss_checks import RUNNERS
from _loss_checks import assert_finite
from _loss_checks import check_live_hyperparameters
from _loss_checks import cases
from _loss_checks import numeric_grad
from _loss_checks import run
from _loss_checks import value_and_grads
import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.methods.dist import DISTDistillation


# ------------------------------------- NumPy reference (paper + code's eps)
def np_softmax(z):
    z = np.asarray(z, np.float64)
    out = np.empty_like(z)
    for i, row in enumerate(z):
        e = np.exp(row - row.max())
        out[i] = e / e.sum()
    return out


def np_pearson(u, v):
    u, v = u - u.mean(), v - v.mean()
    return np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-8)


def np_dist(t, s, beta=1.0, gamma=1.0, temperature=1.0):
    y_t = np_softmax(np.asarray(t, np.float64) / temperature)
    y_s = np_softmax(np.asarray(s, np.float64) / temperature)
    b, c = y_t.shape
    inter = 1 - np.mean([np_pearson(y_s[i], y_t[i]) for i in range(b)])
    intra = 1 - np.mean([np_pearson(y_s[:, j], y_t[:, j]) for j in range(c)])
    return temperature**2 * (beta * inter + gamma * intra)


def logits(shape, seed, scale=3.0):
    rng = np.random.RandomState(seed)
    return ((scale * rng.randn(*shape)).astype(np.float32),
            (scale * rng.randn(*shape)).astype(np.float32))


SHAPES = [(1, 3), (2, 2), (4, 10), (16, 100)]
WEIGHTS = [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0), (0.0, 1.0, 2.0)]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("shape,weights,runner", cases(
    [(s, w) for s in SHAPES for w in WEIGHTS],
    [(SHAPES[2], WEIGHTS[1]), (SHAPES[3], WEIGHTS[0])]))
def test_matches_reference(shape, weights, runner):
    beta, gamma, temperature = weights
    t, s = logits(shape, sum(shape))
    got = run(dist_loss, t, s, runner=runner, beta=beta, gamma=gamma,
              temperature=temperature)
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, np_dist(t, s, beta, gamma, temperature),
                               rtol=1e-4, atol=1e-5)


def test_zero_at_a_match_and_relations_not_values():
    t, s = logits((6, 5), 1)
    np.testing.assert_allclose(dist_loss(t, t), 0.0, atol=1e-6)
    assert dist_loss(t, s).numpy() > 0.1
    # With two classes a row (p, 1 − p) is centred to ±(p − ½): any student
    # preferring the same class correlates perfectly, however confident, so
    # a less confident student (halved logits) has no inter-class loss.
    t2 = np.array([[2.0, 0.0], [0.0, 1.0], [-1.0, 3.0]], np.float32)
    np.testing.assert_allclose(
        dist_loss(t2, 0.5 * t2, beta=1.0, gamma=0.0), 0.0, atol=1e-6)
    assert kd_loss(t2, 0.5 * t2, temperature=1.0).numpy().sum() > 0.01


def test_batch_of_one_intra_term_is_constant():
    t, s = logits((1, 4), 2)
    # The intra-class columns have one entry: correlation 0, L_intra = 1.
    np.testing.assert_allclose(
        dist_loss(t, s, beta=0.0, gamma=1.0), 1.0, rtol=1e-6)
    _, (_, g_s) = value_and_grads(
        lambda a, b: dist_loss(a, b, beta=0.0, gamma=1.0), t, s)
    assert np.all(g_s == 0.0)


def test_gradient_matches_finite_differences():
    t, s = logits((3, 4), 3)
    _, (g_t, g_s) = value_and_grads(
        lambda a, b: dist_loss(a, b, beta=1.5, gamma=0.5, temperature=2.0),
        t, s)
    np.testing.assert_allclose(
        g_s, numeric_grad(lambda x: np_dist(t, x, 1.5, 0.5, 2.0), s),
        rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(
        g_t, numeric_grad(lambda x: np_dist(x, s, 1.5, 0.5, 2.0), t),
        rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch(runner):
    fn = tf.function(dist_loss, jit_compile=runner == "jit",
                     input_signature=[tf.TensorSpec([None, 5]),
                                      tf.TensorSpec([None, 5])])
    t, s = logits((6, 5), 4)
    for b in (1, 2, 6):
        np.testing.assert_allclose(fn(t[:b], s[:b]).numpy(),
                                   np_dist(t[:b], s[:b]), rtol=1e-4,
                                   atol=1e-5)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_confident_and_uniform_logits_stay_finite(runner):
    t = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0], [-1e4, 1e4, 1e4],
                  [5.0, 1.0, -2.0]], np.float32)
    s = np.array([[-1e4, 1e4, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                  [1e4, -1e4, 3.0]], np.float32)
    value, grads = value_and_grads(dist_loss, t, s, runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_dist(t, s), rtol=1e-4, atol=1e-5)
    zeros = np.zeros((3, 4), np.float32)
    value, grads = value_and_grads(dist_loss, zeros, zeros, runner="eager")
    np.testing.assert_allclose(value, 2.0)  # every row and column constant
    assert_finite(*grads)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, s = logits((5, 7), 5)
    got = run(dist_loss, t, s, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in (t, s)]
    np.testing.assert_allclose(got, np_dist(*rounded), rtol=1e-4, atol=1e-5)


def test_live_hyperparameters():
    t, s = logits((5, 6), 6)
    check_live_hyperparameters(
        dist_loss, (t, s), dict(beta=1.0, gamma=1.0, temperature=1.0),
        dict(beta=2.0, gamma=0.5, temperature=4.0))


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s = logits((6, 5), 123)
    np.testing.assert_allclose(
        [dist_loss(t, s).numpy(),
         dist_loss(t, s, beta=2.0, gamma=0.5, temperature=4.0).numpy()],
        [2.255293, 53.321777], rtol=1e-5)


# ----------------------------------------------------------------- bad input
T2 = np.zeros((2, 3), np.float32)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"temperature": -1.0}, ValueError, r"`temperature` must be a finite "
     r"number > 0\. Received: temperature=-1\.0"),
    ({"beta": -0.5}, ValueError, r"`beta`.*Received: beta=-0\.5"),
    ({"gamma": "1"}, TypeError, r"`gamma`.*Received: gamma='1'"),
])
def test_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        dist_loss(T2, T2, **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"teacher_logits.*student_logits"
                       r".*\(2, 3\).*\(2, 4\)"):
        dist_loss(T2, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"`teacher_logits` must have rank "
                       r"2 \(batch, num_classes\)"):
        dist_loss(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)))
    with pytest.raises(TypeError, match="student_logits"):
        dist_loss([[0.0, 1.0]], [["a", "b"]])


# --- The term (formerly tests/test_term_dist.py) ---

def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: DISTDistillation(beta=2.0, gamma=1.0, temperature=4.0),
        reference=lambda t, s: dist_loss(t, s, beta=2.0, gamma=1.0,
                                         temperature=4.0),
        taps=("logits", "logits"))


def test_method_is_registered_with_the_papers_weights():
    spec = registry.get("dist")
    assert spec.term is DISTDistillation
    arguments = spec.arguments()
    assert (arguments["beta"], arguments["gamma"],
            arguments["temperature"]) == (1.0, 1.0, 1.0)
    distiller = registry.build("dist", testing.tiny_conv_model("t"),
                               testing.tiny_conv_model("s"))
    assert distiller.distillation_loss_weights == [1.0]
    assert distiller.student_loss_weight == 0.5
    assert distiller.term("dist").batch_level


def test_hyperparameters_are_live():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    distiller = tfkd.Distiller(teacher, student, [DISTDistillation()])
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=2)
    distiller.evaluate(x, y, batch_size=16, verbose=0)
    distiller.set_hyperparameter("dist/gamma", 0.0)
    distiller.set_hyperparameter("dist/temperature", 2.0)
    logs = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                              verbose=0)
    want = dist_loss(teacher(x), student(x), beta=1.0, gamma=0.0,
                     temperature=2.0)
    np.testing.assert_allclose(logs["dist_loss"], float(want), rtol=1e-5)
    with pytest.raises(ValueError, match=r"`gamma` must be a finite number "
                                         r">= 0\. Received: gamma=-1\.0"):
        DISTDistillation(gamma=-1.0)


def test_logits_must_match():
    teacher = testing.tiny_conv_model("teacher", num_classes=10)
    student = testing.tiny_conv_model("student", num_classes=5)
    with pytest.raises(
            ValueError,
            match=r"The teacher outputs 10 logits and the student 5, but the "
                  r"terms \['dist'\] compare them class by class\. Received: "
                  r"teacher logits of shape \(None, 10\), student logits of "
                  r"shape \(None, 5\)"):
        tfkd.Distiller(teacher, student, [DISTDistillation()])


def test_config_round_trip():
    term = DISTDistillation(beta=2.0, gamma=0.5, temperature=4.0)
    clone = DISTDistillation.from_config(term.get_config())
    assert (clone.beta, clone.gamma, clone.temperature) == (2.0, 0.5, 4.0)
