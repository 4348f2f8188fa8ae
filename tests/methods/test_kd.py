"""Tests of the logit losses in `tfkd.methods.kd` against NumPy references.

The KD term's logit-standardisation option (Sun et al., CVPR 2024).
"""

from itertools import product

import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.kd import class_loss
from tfkd.methods.kd import cross_entropy
from tfkd.methods.kd import kd_loss
from tfkd.methods.kd import soft_cross_entropy
import tfkd
from tfkd import testing
from tfkd.methods.kd import KDDistillation


SHAPES = [(1, 2), (4, 10), (3, 100)]
RUNNERS = ["eager", "jit"]
LABEL_FORMS = ["sparse", "sparse_column", "onehot"]


def cases(every, jit_subset):
    """All `every` cases eagerly, and the `jit_subset` also under XLA (each
    XLA case costs a compile, which dominates the run time)."""
    return ([tuple(c) + ("eager",) for c in every]
            + [tuple(c) + ("jit",) for c in jit_subset])


def run(fn, *args, runner="eager", **kwargs):
    """Calls `fn` eagerly or inside `tf.function(jit_compile=True)`."""
    args = [tf.constant(a) for a in args]
    if runner == "jit":
        return tf.function(lambda *a: fn(*a, **kwargs),
                           jit_compile=True)(*args).numpy()
    return fn(*args, **kwargs).numpy()


# ----------------------------------------------------------- NumPy reference
def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    out = np.empty_like(z)
    for b in range(z.shape[0]):
        shifted = z[b] - z[b].max()
        out[b] = shifted - np.log(np.sum(np.exp(shifted)))
    return out


def np_kd(t, s, temperature):
    log_pt = np_log_softmax(np.asarray(t, np.float64) / temperature)
    log_ps = np_log_softmax(np.asarray(s, np.float64) / temperature)
    return temperature**2 * np.array(
        [np.sum(np.exp(lt) * (lt - ls)) for lt, ls in zip(log_pt, log_ps)])


def np_soft_ce(t, s, temperature):
    log_pt = np_log_softmax(np.asarray(t, np.float64) / temperature)
    log_ps = np_log_softmax(np.asarray(s, np.float64) / temperature)
    return np.array([-np.sum(np.exp(lt) * ls)
                     for lt, ls in zip(log_pt, log_ps)])


def np_ce(labels, logits):
    log_p = np_log_softmax(logits)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return np.array([-np.sum(y * lp) for y, lp in zip(labels, log_p)])
    labels = labels.reshape(-1)
    return np.array([-log_p[b, int(labels[b])] for b in range(len(labels))])


def logits_pair(shape, seed, scale=3.0):
    rng = np.random.RandomState(seed)
    t = (scale * rng.randn(*shape)).astype(np.float32)
    s = (scale * rng.randn(*shape)).astype(np.float32)
    return t, s


# ------------------------------------------------------------------- values
@pytest.mark.parametrize("shape,temperature,runner", cases(
    product(SHAPES, [1.0, 4.0]), product(SHAPES, [4.0])))
def test_kd_loss_matches_reference(shape, temperature, runner):
    t, s = logits_pair(shape, seed=sum(shape))
    got = run(kd_loss, t, s, runner=runner, temperature=temperature)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, np_kd(t, s, temperature), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("shape,runner", cases(
    product(SHAPES), [(SHAPES[1],)]))
def test_soft_cross_entropy_matches_reference(shape, runner):
    t, s = logits_pair(shape, seed=1 + sum(shape))
    got = run(soft_cross_entropy, t, s, runner=runner, temperature=2.0)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, np_soft_ce(t, s, 2.0), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("shape,label_form,runner", cases(
    product(SHAPES, LABEL_FORMS), product(SHAPES[2:], LABEL_FORMS)))
def test_cross_entropy_matches_reference(shape, label_form, runner):
    _, logits = logits_pair(shape, seed=2)
    ids = np.random.RandomState(3).randint(0, shape[1], size=shape[0])
    labels = {
        "sparse": ids.astype(np.int32),
        "sparse_column": ids.reshape(-1, 1).astype(np.int64),
        "onehot": np.eye(shape[1], dtype=np.float32)[ids],
    }[label_form]
    got = run(cross_entropy, labels, logits, runner=runner)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, np_ce(ids, logits), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,alpha,runner", cases(
    product(SHAPES, [0.0, 0.3, 1.0]), product(SHAPES[1:2], [0.0, 0.3, 1.0])))
def test_class_loss_matches_reference(shape, alpha, runner):
    t, s = logits_pair(shape, seed=4)
    ids = np.random.RandomState(5).randint(0, shape[1], size=shape[0])
    got = run(class_loss, ids, t, s, runner=runner, alpha=alpha,
              temperature=4.0)
    want = alpha * np_ce(ids, s) + (1 - alpha) * np_kd(t, s, 4.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_kd_loss_zero_at_perfect_match_and_non_negative():
    t, s = logits_pair((8, 10), seed=6)
    np.testing.assert_allclose(kd_loss(t, t).numpy(), 0.0, atol=1e-6)
    assert np.all(kd_loss(t, s).numpy() >= 0.0)


# ------------------------------------------------------------ numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("temperature", [1e-3, 1e3])
@pytest.mark.parametrize("fn", [kd_loss, soft_cross_entropy])
def test_extreme_temperatures_stay_finite(fn, temperature, runner):
    t, s = logits_pair((4, 10), seed=7, scale=10.0)
    t, s = tf.constant(t), tf.constant(s)

    def value_and_grad(t, s):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = fn(t, s, temperature=temperature)
        return loss, tape.gradient(loss, s)

    if runner == "jit":
        value_and_grad = tf.function(value_and_grad, jit_compile=True)
    loss, grad = value_and_grad(t, s)
    assert np.all(np.isfinite(loss.numpy()))
    assert np.all(np.isfinite(grad.numpy()))
    if fn is kd_loss and temperature == 1e-3:
        # At T -> 0 the softmaxes are one-hot: compare with the reference.
        np.testing.assert_allclose(loss.numpy(), np_kd(t, s, temperature),
                                   rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s = logits_pair((3, 5), seed=123)
    ids = np.array([0, 3, 4])
    np.testing.assert_allclose(
        kd_loss(t, s, temperature=4.0).numpy(),
        [1.1770208, 6.7042985, 11.215806], rtol=1e-5)
    np.testing.assert_allclose(
        soft_cross_entropy(t, s, temperature=0.5).numpy(),
        [0.6402248, 4.433498, 14.015606], rtol=1e-5)
    np.testing.assert_allclose(
        class_loss(ids, t, s, alpha=0.3, temperature=4.0).numpy(),
        [3.4044867, 5.0968766, 9.460176], rtol=1e-5)


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [kd_loss, soft_cross_entropy])
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf")])
def test_bad_temperature(fn, temperature):
    with pytest.raises(ValueError, match="temperature"):
        fn([[0.0, 1.0]], [[0.0, 1.0]], temperature=temperature)


@pytest.mark.parametrize("fn", [kd_loss, soft_cross_entropy])
def test_non_numeric_temperature(fn):
    with pytest.raises(TypeError, match="temperature"):
        fn([[0.0, 1.0]], [[0.0, 1.0]], temperature="4")


@pytest.mark.parametrize("fn", [kd_loss, soft_cross_entropy])
def test_mismatched_shapes(fn):
    with pytest.raises(ValueError, match="teacher_logits.*student_logits"):
        fn(np.zeros((2, 3)), np.zeros((2, 4)))


@pytest.mark.parametrize("fn", [kd_loss, soft_cross_entropy])
def test_non_numeric_input(fn):
    with pytest.raises(TypeError, match="teacher_logits"):
        fn([["a", "b"]], [[0.0, 1.0]])
    with pytest.raises(TypeError, match="student_logits"):
        fn([[0.0, 1.0]], [["a", "b"]])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_class_loss_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        class_loss([0], [[0.0, 1.0]], [[0.0, 1.0]], alpha=alpha)


# ------------------------------------------- logit standardisation (CVPR 24)
from _loss_checks import check_live_hyperparameters  # noqa: E402
from _loss_checks import numeric_grad  # noqa: E402
from _loss_checks import value_and_grads  # noqa: E402
from tfkd.methods.kd import KDLoss  # noqa: E402
from tfkd.methods.kd import standardize_logits  # noqa: E402


def np_standardize(z):
    """Per row: (z − mean) / (std + 1e-7), std with Bessel's correction."""
    z = np.asarray(z, np.float64)
    out = np.empty_like(z)
    for b in range(z.shape[0]):
        mean = z[b].sum() / z.shape[1]
        std = np.sqrt(np.sum((z[b] - mean) ** 2) / (z.shape[1] - 1))
        out[b] = (z[b] - mean) / (std + 1e-7)
    return out


def np_kd_standardized(t, s, temperature):
    return np_kd(np_standardize(t), np_standardize(s), temperature)


@pytest.mark.parametrize("shape,temperature,runner", cases(
    product(SHAPES, [1.0, 2.0]), [((4, 10), 2.0)]))
def test_standardized_kd_matches_reference(shape, temperature, runner):
    t, s = logits_pair(shape, seed=10 + sum(shape), scale=5.0)
    got = run(kd_loss, t, s, runner=runner, temperature=temperature,
              standardize_logits=True)
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(got, np_kd_standardized(t, s, temperature),
                               rtol=1e-4, atol=1e-5)


def test_standardize_logits_matches_reference():
    z = logits_pair((5, 7), seed=11)[0]
    np.testing.assert_allclose(standardize_logits(z).numpy(),
                               np_standardize(z), rtol=1e-5, atol=1e-6)


def test_standardized_kd_ignores_scale_and_shift_of_each_row():
    t, s = logits_pair((4, 6), seed=12)
    scale = np.array([[0.5], [2.0], [10.0], [1.0]], np.float32)
    shift = np.array([[3.0], [-1.0], [0.0], [100.0]], np.float32)
    base = kd_loss(t, s, 2.0, standardize_logits=True).numpy()
    moved = kd_loss(scale * t + shift, s / scale - shift, 2.0,
                    standardize_logits=True).numpy()
    np.testing.assert_allclose(moved, base, rtol=1e-3, atol=1e-5)
    # Without standardisation the same change does matter.
    assert not np.allclose(kd_loss(scale * t + shift, s, 2.0).numpy(),
                           kd_loss(t, s, 2.0).numpy(), rtol=1e-2)


def test_standardized_kd_gradient_matches_finite_differences():
    t, s = logits_pair((2, 4), seed=13)
    _, (_, g_s) = value_and_grads(
        lambda a, b: kd_loss(a, b, 2.0, standardize_logits=True), t, s)
    want = numeric_grad(lambda x: np_kd_standardized(t, x, 2.0), s)
    np.testing.assert_allclose(g_s, want, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("runner", RUNNERS)
def test_standardized_kd_degenerate_inputs_stay_finite(runner):
    # A constant row has std 0 (its z-scores are 0); ±1e4 logits are
    # brought back to a moderate range by the z-score.
    t = np.array([[3.0, 3.0, 3.0], [1e4, -1e4, 0.0], [0.0, 0.0, 0.0]],
                 np.float32)
    s = np.array([[0.0, 0.0, 0.0], [-1e4, 1e4, 1e4], [1e4, -1e4, 5.0]],
                 np.float32)
    value, grads = value_and_grads(
        lambda a, b: kd_loss(a, b, 4.0, standardize_logits=True), t, s,
        runner=runner)
    assert np.all(np.isfinite(value))
    for g in grads:
        assert np.all(np.isfinite(g))
    np.testing.assert_allclose(value, np_kd_standardized(t, s, 4.0),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_standardized_kd_mixed_precision_inputs(dtype):
    t, s = logits_pair((3, 5), seed=14)
    got = kd_loss(tf.constant(t, dtype), tf.constant(s, dtype),
                  temperature=2.0, standardize_logits=True).numpy()
    assert got.dtype == np.float32
    t16 = tf.cast(tf.cast(t, dtype), tf.float32).numpy()
    s16 = tf.cast(tf.cast(s, dtype), tf.float32).numpy()
    np.testing.assert_allclose(got, np_kd_standardized(t16, s16, 2.0),
                               rtol=1e-4, atol=1e-5)


def test_standardized_golden_values():
    t, s = logits_pair((3, 5), seed=123)
    np.testing.assert_allclose(
        kd_loss(t, s, temperature=2.0, standardize_logits=True).numpy(),
        [0.138493, 0.54759294, 1.4912175], rtol=1e-5)


def test_kd_loss_wrapper_standardizes_and_serialises():
    loss = KDLoss(temperature=2.0, standardize_logits=True)
    t, s = logits_pair((4, 6), seed=15)
    np.testing.assert_allclose(
        float(loss(t, s)), np.mean(np_kd_standardized(t, s, 2.0)), rtol=1e-4)
    clone = KDLoss.from_config(loss.get_config())
    assert clone.standardize_logits is True and clone.temperature == 2.0


def test_numpy_scalar_hyperparameters_are_accepted():
    t, s = logits_pair((2, 3), seed=16)
    np.testing.assert_allclose(
        kd_loss(t, s, temperature=np.float32(2.0),
                standardize_logits=np.bool_(True)).numpy(),
        kd_loss(t, s, temperature=2.0, standardize_logits=True).numpy())
    np.testing.assert_allclose(
        class_loss([0, 1], t, s, alpha=np.float64(0.3)).numpy(),
        class_loss([0, 1], t, s, alpha=0.3).numpy())


def test_standardize_logits_bad_input():
    with pytest.raises(TypeError, match=r"`standardize_logits` must be "
                       r"True or False\. Received: standardize_logits='yes'"):
        kd_loss([[0.0, 1.0]], [[0.0, 1.0]], standardize_logits="yes")
    with pytest.raises(ValueError, match=r"`teacher_logits` must have at "
                       r"least 2 classes.*\(2, 1\)"):
        kd_loss(np.zeros((2, 1)), np.zeros((2, 1)), standardize_logits=True)
    with pytest.raises(TypeError, match="temperature"):
        kd_loss([[0.0, 1.0]], [[0.0, 1.0]], temperature=np.bool_(True))


def test_live_temperature_with_standardization():
    t, s = logits_pair((4, 6), seed=17)
    for standardize in (False, True):
        check_live_hyperparameters(
            lambda a, b, temperature: kd_loss(
                a, b, temperature, standardize_logits=standardize),
            (t, s), dict(temperature=4.0), dict(temperature=1.5))


# --- The term (formerly tests/test_term_kd.py) ---

def test_standardized_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: KDDistillation(temperature=2.0, standardize_logits=True),
        reference=lambda t, s: kd_loss(t, s, 2.0, standardize_logits=True),
        taps=("logits", "logits"))


def test_option_defaults_off_and_is_in_the_config():
    assert KDDistillation().standardize_logits is False
    term = KDDistillation(standardize_logits=True)
    config = term.get_config()
    assert config["standardize_logits"] is True
    assert KDDistillation.from_config(config).standardize_logits is True
    # Configs saved before the option existed load with it off.
    config.pop("standardize_logits")
    assert KDDistillation.from_config(config).standardize_logits is False


def test_standardized_value_ignores_the_logits_scale_and_shift():
    x, _ = testing.random_images(8, seed=2)
    teacher = testing.tiny_conv_model("teacher", seed=1)
    t = teacher(x)
    s = 3.0 * t + 1.5
    plain = KDDistillation(temperature=2.0).compute_loss(t, s)
    standardized = KDDistillation(temperature=2.0, standardize_logits=True)
    assert float(plain) > 1e-3
    np.testing.assert_allclose(float(standardized.compute_loss(t, s)), 0.0,
                               atol=1e-5)


def test_bad_option_is_refused():
    with pytest.raises(TypeError, match=r"standardize_logits.*Received: "
                                        r"standardize_logits='yes'"):
        KDDistillation(standardize_logits="yes")


def test_hinton_distiller_keeps_plain_kd():
    distiller = tfkd.Distiller(testing.tiny_conv_model("t"),
                               testing.tiny_conv_model("s"))
    assert distiller.term("kd").standardize_logits is False
