"""Tests of `tfkd.losses.dkd_loss` (Decoupled KD) against a NumPy reference.

The DKD term: value, labels, live hyperparameters and the warm-up.
"""

from itertools import product

import numpy as np
import pytest
import tensorflow as tf

from tfkd.methods.dkd import dkd_loss
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
from tfkd.callbacks import HyperparameterScheduler
from tfkd.callbacks import linear_warmup
from tfkd.distillers import registry
from tfkd.methods.dkd import DKDDistillation


# ------------------------------------------ NumPy reference (from the paper)
def np_logsumexp(v):
    return np.logaddexp.reduce(np.asarray(v, np.float64))


def np_tckd_nckd(t, s, y, temperature):
    """Per example: (TCKD, NCKD), both without the T² factor, from the
    paper's definitions, in log space so that float64 keeps ±1e4 logits."""
    tckd, nckd = [], []
    for zt, zs, c in zip(np.asarray(t, np.float64) / temperature,
                         np.asarray(s, np.float64) / temperature, y):
        others = [j for j in range(len(zt)) if j != c]
        kl_b = kl_n = 0.0
        lt, ls = np_logsumexp(zt), np_logsumexp(zs)
        # Binary split (p_y, 1 − p_y), 1 − p_y = Σ_{j≠y} p_j.
        log_bt = [zt[c] - lt, np_logsumexp(zt[others]) - lt]
        log_bs = [zs[c] - ls, np_logsumexp(zs[others]) - ls]
        for a, b in zip(log_bt, log_bs):
            kl_b += np.exp(a) * (a - b)
        # p̂_j = p_j / (1 − p_y) over the non-target classes.
        nt, ns = np_logsumexp(zt[others]), np_logsumexp(zs[others])
        for j in others:
            a, b = zt[j] - nt, zs[j] - ns
            kl_n += np.exp(a) * (a - b)
        tckd.append(kl_b)
        nckd.append(kl_n)
    return np.array(tckd), np.array(nckd)


def np_dkd(t, s, y, alpha=1.0, beta=8.0, temperature=4.0):
    tckd, nckd = np_tckd_nckd(t, s, y, temperature)
    return temperature**2 * (alpha * tckd + beta * nckd)


def logits(shape, seed, scale=3.0):
    rng = np.random.RandomState(seed)
    return ((scale * rng.randn(*shape)).astype(np.float32),
            (scale * rng.randn(*shape)).astype(np.float32),
            rng.randint(0, shape[1], size=shape[0]))


def label_form(ids, num_classes, form):
    return {"sparse": ids.astype(np.int32),
            "column": ids.reshape(-1, 1).astype(np.int64),
            "onehot": np.eye(num_classes, dtype=np.float32)[ids]}[form]


SHAPES = [(2, 2), (4, 10), (3, 100)]
WEIGHTS = [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (1.0, 0.0, 2.0)]


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("shape,form,weights,runner", cases(
    product(SHAPES, ["sparse", "column", "onehot"], WEIGHTS),
    [(SHAPES[1], "sparse", WEIGHTS[0]), (SHAPES[2], "onehot", WEIGHTS[1])]))
def test_matches_reference(shape, form, weights, runner):
    alpha, beta, temperature = weights
    t, s, ids = logits(shape, seed=sum(shape))
    got = run(dkd_loss, t, s, label_form(ids, shape[1], form), runner=runner,
              alpha=alpha, beta=beta, temperature=temperature)
    assert got.shape == (shape[0],) and got.dtype == np.float32
    np.testing.assert_allclose(
        got, np_dkd(t, s, ids, alpha, beta, temperature), rtol=1e-4,
        atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_decomposes_classical_kd(temperature):
    # The paper's eq. (1): KD = TCKD + (1 − p_y^T) · NCKD.
    t, s, ids = logits((6, 7), seed=1)
    tckd = dkd_loss(t, s, ids, alpha=1.0, beta=0.0, temperature=temperature)
    nckd = dkd_loss(t, s, ids, alpha=0.0, beta=1.0, temperature=temperature)
    p_t = tf.nn.softmax(t / temperature).numpy()[np.arange(6), ids]
    np.testing.assert_allclose(
        tckd + (1.0 - p_t) * nckd,
        kd_loss(t, s, temperature=temperature), rtol=1e-4, atol=1e-6)


def test_zero_at_perfect_match_and_non_negative():
    t, s, ids = logits((8, 5), seed=2)
    np.testing.assert_allclose(dkd_loss(t, t, ids), 0.0, atol=1e-6)
    assert np.all(dkd_loss(t, s, ids).numpy() >= 0.0)


def test_unlabelled_examples_give_zero():
    t, s, ids = logits((4, 5), seed=3)
    ids = ids.copy()
    ids[[1, 3]] = -1
    value, (g_t, g_s) = value_and_grads(
        lambda a, b, y: dkd_loss(a, b, y), t, s, ids)
    want = np_dkd(t, s, np.where(ids < 0, 0, ids))
    np.testing.assert_allclose(value[[0, 2]], want[[0, 2]], rtol=1e-4)
    assert np.all(value[[1, 3]] == 0.0)
    assert np.all(g_s[[1, 3]] == 0.0) and np.all(g_t[[1, 3]] == 0.0)
    # The same with one-hot rows: an all-zero row has no target.
    onehot = np.eye(5, dtype=np.float32)[np.where(ids < 0, 0, ids)]
    onehot[[1, 3]] = 0.0
    np.testing.assert_allclose(dkd_loss(t, s, onehot).numpy(), value)


def test_gradient_matches_finite_differences():
    t, s, ids = logits((3, 4), seed=4)
    _, (g_t, g_s) = value_and_grads(
        lambda a, b, y: dkd_loss(a, b, y, alpha=0.7, beta=2.0,
                                 temperature=2.0), t, s, ids)
    np.testing.assert_allclose(
        g_s, numeric_grad(lambda x: np_dkd(t, x, ids, 0.7, 2.0, 2.0), s),
        rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(
        g_t, numeric_grad(lambda x: np_dkd(x, s, ids, 0.7, 2.0, 2.0), t),
        rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch_and_classes(runner):
    fn = tf.function(
        lambda t, s, y: dkd_loss(t, s, y), jit_compile=runner == "jit",
        input_signature=[tf.TensorSpec([None, None]),
                         tf.TensorSpec([None, None]),
                         tf.TensorSpec([None], tf.int32)])
    for shape in [(1, 3), (5, 6)]:
        t, s, ids = logits(shape, seed=5)
        np.testing.assert_allclose(fn(t, s, ids.astype(np.int32)).numpy(),
                                   np_dkd(t, s, ids), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_confident_and_zero_logits_stay_finite(runner):
    t = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0],
                  [1e4, 0.0, -1e4]], np.float32)
    s = np.array([[-1e4, 1e4, 0.0], [1e4, -1e4, 0.0], [0.0, 0.0, 0.0],
                  [1e4, 0.0, -1e4]], np.float32)
    ids = np.array([0, 1, 2, 0])
    value, grads = value_and_grads(
        lambda a, b, y: dkd_loss(a, b, y, temperature=1.0), t, s, ids,
        runner=runner)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_dkd(t, s, ids, temperature=1.0),
                               rtol=1e-4, atol=1e-4)
    assert value[2] == 0.0 and value[3] == 0.0


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    t, s, ids = logits((4, 6), seed=6)
    got = run(dkd_loss, t, s, ids, dtype=dtype)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in (t, s)]
    np.testing.assert_allclose(got, np_dkd(*rounded, ids), rtol=1e-4,
                               atol=1e-4)


def test_live_hyperparameters():
    t, s, ids = logits((4, 6), seed=7)
    check_live_hyperparameters(
        dkd_loss, (t, s, ids), dict(alpha=1.0, beta=8.0, temperature=4.0),
        dict(alpha=0.5, beta=2.0, temperature=1.0))


# ------------------------------------------------------------- golden values
def test_golden_values():
    t, s, ids = logits((3, 5), seed=123)
    np.testing.assert_allclose(
        dkd_loss(t, s, ids).numpy(),
        [9.509934, 58.1933, 21.345158], rtol=1e-5)
    np.testing.assert_allclose(
        dkd_loss(t, s, ids, alpha=0.5, beta=2.0, temperature=1.0).numpy(),
        [0.21771015, 3.5908465, 5.13274], rtol=1e-5)


# ----------------------------------------------------------------- bad input
T2 = np.zeros((2, 3), np.float32)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"temperature": 0.0}, ValueError, r"`temperature` must be a finite "
     r"number > 0\. Received: temperature=0\.0"),
    ({"temperature": "4"}, TypeError, r"`temperature`.*Received: "
     r"temperature='4'"),
    ({"alpha": -1.0}, ValueError, r"`alpha` must be a finite number >= 0\. "
     r"Received: alpha=-1\.0"),
    ({"beta": float("nan")}, ValueError, r"`beta`.*Received: beta=nan"),
    ({"beta": None}, TypeError, r"`beta`.*Received: beta=None"),
])
def test_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        dkd_loss(T2, T2, [0, 1], **kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"teacher_logits.*student_logits"
                       r".*\(2, 3\).*\(2, 4\)"):
        dkd_loss(T2, np.zeros((2, 4)), [0, 1])
    with pytest.raises(ValueError, match=r"`teacher_logits` must have at "
                       r"least 2 classes.*\(2, 1\)"):
        dkd_loss(np.zeros((2, 1)), np.zeros((2, 1)), [0, 0])
    with pytest.raises(ValueError, match=r"`teacher_logits` must have rank "
                       r"2 \(batch, num_classes\)"):
        dkd_loss(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), [0, 1])


def test_bad_labels():
    with pytest.raises(ValueError, match=r"`labels` must have one entry per "
                       r"example.*labels.shape=\(3,\)"):
        dkd_loss(T2, T2, [0, 1, 2])
    with pytest.raises(ValueError, match=r"One-hot `labels` must have one "
                       r"column per class.*\(2, 4\)"):
        dkd_loss(T2, T2, np.eye(4)[:2])
    with pytest.raises(ValueError, match=r"`labels` must be class ids.*"
                       r"\(2, 3, 1\)"):
        dkd_loss(T2, T2, np.zeros((2, 3, 1)))
    with pytest.raises(TypeError, match="`labels` must have a numeric dtype"):
        dkd_loss(T2, T2, ["a", "b"])
    with pytest.raises(TypeError, match="teacher_logits"):
        dkd_loss([["a", "b"]], [[0.0, 1.0]], [0])


# --- The term (formerly tests/test_term_dkd.py) ---

# check_term's batch: random_images(32, seed=3), first 16 examples.
_, _LABELS = testing.random_images(32, seed=3)


def test_term_matches_the_loss_and_trains():
    testing.check_term(
        lambda: DKDDistillation(alpha=1.0, beta=8.0, temperature=4.0),
        reference=lambda t, s: dkd_loss(t, s, _LABELS[:16], alpha=1.0,
                                        beta=8.0, temperature=4.0),
        taps=("logits", "logits"))


def test_method_is_registered_with_the_papers_weights():
    spec = registry.get("dkd")
    assert spec.term is DKDDistillation
    assert not spec.uses_features
    arguments = spec.arguments()
    assert (arguments["alpha"], arguments["beta"],
            arguments["temperature"]) == (1.0, 8.0, 4.0)
    distiller = registry.build("dkd", testing.tiny_conv_model("t"),
                               testing.tiny_conv_model("s"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [1.0, 2.0]
    assert distiller.student_loss_weight == 0.5


def _pair():
    return (testing.tiny_conv_model("teacher", width=8, seed=1),
            testing.tiny_conv_model("student", width=4, seed=11))


def test_term_unlabelled_examples_give_zero():
    teacher, student = _pair()
    x, y = testing.random_images(8, seed=4)
    term = DKDDistillation(unlabelled_target=None)
    t, s = teacher(x), student(x)
    labels = np.where(np.arange(8) % 2 == 0, -1, y)
    values = term(t, s, labels=labels).numpy()
    assert np.all(values[::2] == 0.0)
    assert np.all(values[1::2] > 0.0)
    distiller = tfkd.Distiller(teacher, student,
                               [DKDDistillation(unlabelled_target=None)])
    values = distiller.compute_terms(x, labels)["dkd_loss"].numpy()
    assert np.all(values[::2] == 0.0)
    # By default an unlabelled example is split at the teacher's top class.
    top = np.argmax(t.numpy(), axis=-1)
    values = DKDDistillation()(t, s, labels=labels).numpy()
    np.testing.assert_allclose(values[::2], dkd_loss(t, s, top).numpy()[::2],
                               rtol=1e-6)
    np.testing.assert_allclose(values[1::2], dkd_loss(t, s, y).numpy()[1::2],
                               rtol=1e-6)


def test_unlabelled_examples_give_zero_in_training_steps():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student,
                               [DKDDistillation(unlabelled_target=None)])
    distiller.compile(optimizer="sgd")
    x, _ = testing.random_images(8, seed=4)
    y = np.full((8,), -1, dtype="int32")
    logs = distiller.evaluate(x, y, return_dict=True, verbose=0)
    assert logs["dkd_loss"] == 0.0


def test_labels_are_required():
    term = DKDDistillation()
    logits = np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match=r"needs the batch's labels\. "
                                         r"Received: labels=None"):
        term.compute_loss(logits, logits)


def test_hyperparameters_are_live_and_checked():
    teacher, student = _pair()
    term = DKDDistillation(alpha=1.0, beta=8.0, temperature=4.0)
    distiller = tfkd.Distiller(teacher, student, [term])
    assert {"dkd/alpha": 1.0, "dkd/beta": 8.0,
            "dkd/temperature": 4.0}.items() <= distiller.hyperparameters.items()
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=6)
    before = distiller.evaluate(x, y, return_dict=True, verbose=0)
    distiller.set_hyperparameter("dkd/beta", 0.0)
    distiller.set_hyperparameter("dkd/temperature", 1.0)
    after = distiller.evaluate(x, y, return_dict=True, verbose=0)
    # Same traced step, new values: only TCKD at T = 1 is left.
    want = dkd_loss(teacher(x), student(x), y, alpha=1.0, beta=0.0,
                    temperature=1.0)
    np.testing.assert_allclose(after["dkd_loss"], float(np.mean(want)),
                               rtol=1e-5)
    assert after["dkd_loss"] != before["dkd_loss"]
    with pytest.raises(ValueError, match=r"`beta` must be a finite number "
                                         r">= 0\. Received: beta=-1\.0"):
        term.beta = -1.0
    with pytest.raises(ValueError, match=r"`temperature` must be a finite "
                                         r"number > 0"):
        DKDDistillation(temperature=0.0)


def test_warmup_of_the_weight_as_the_authors():
    teacher, student = _pair()
    # The authors' objective: without the soft targets tfkd adds.
    distiller = registry.build("dkd", teacher, student,
                               soft_target_weight=0.0)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16, seed=7)
    # The term's own warm-up (`warmup_epochs=20`, its default).
    history = distiller.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    assert history["dkd/weight"] == [0.0, 0.05, 0.1]
    # Epoch 1: the DKD term has weight 0, the total is 0.5 · CE.
    np.testing.assert_allclose(history["loss"][0],
                               0.5 * history["student_loss"][0], rtol=1e-6)
    # Later epochs: 0.5 · (CE + w · DKD).
    np.testing.assert_allclose(
        history["loss"][2],
        0.5 * (history["student_loss"][2] + 0.1 * history["dkd_loss"][2]),
        rtol=1e-5)


def test_a_users_schedule_of_the_warmed_up_weight_is_refused():
    """DKD's warm-up schedules `dkd/weight` after the user's callbacks: a
    user's scheduler of the same path would be overwritten silently, so
    `fit` refuses it and names the fix; with `warmup_epochs=0` it runs."""
    teacher, student = _pair()
    x, y = testing.random_images(16, seed=7)
    mine = HyperparameterScheduler({"dkd/weight": linear_warmup(1.0, 2)})
    distiller = registry.build("dkd", teacher, student)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"schedules \['dkd/weight'\].*"
                                         r"warmup_epochs=0"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[mine])
    distiller = registry.build("dkd", teacher, student, warmup_epochs=0)
    distiller.compile(optimizer="sgd")
    history = distiller.fit(x, y, epochs=3, verbose=0,
                            callbacks=[mine]).history
    assert history["dkd/weight"] == [0.0, 0.5, 1.0]


def test_one_hot_labels_and_config_round_trip():
    teacher, student = _pair()
    x, y = testing.random_images(8, seed=8)
    term = DKDDistillation(alpha=0.5, beta=2.0, temperature=2.0,
                           unlabelled_target=None)
    one_hot = np.eye(10, dtype="float32")[y]
    np.testing.assert_allclose(
        term(teacher(x), student(x), labels=one_hot).numpy(),
        term(teacher(x), student(x), labels=y).numpy(), rtol=1e-6)
    clone = DKDDistillation.from_config(term.get_config())
    assert (clone.alpha, clone.beta, clone.temperature,
            clone.unlabelled_target) == (0.5, 2.0, 2.0, None)
