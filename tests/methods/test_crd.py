"""Tests of `tfkd.losses.contrastive_representation_loss` (CRD, Tian et al.)
and its helpers `contrastive_normalizer`, `contrastive_memory_update`.

The CRD term: heads and memory banks owned by the term, the example
index, updates in training steps only, tf.distribute and saving.
"""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfkd.methods.crd import contrastive_memory_update
from tfkd.methods.crd import contrastive_normalizer
from tfkd.methods.crd import contrastive_representation_loss
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
from tfkd.methods.crd import ContrastiveRepresentationDistillation as CRD
from tfkd.methods.crd import with_example_index
from _distiller_cases import mirrored_strategy


EPS = 1e-7


# ------------------------------- NumPy reference (the authors' code's form)
def np_scores(anchor, rows, temperature):
    anchor = np.asarray(anchor, np.float64)
    rows = np.asarray(rows, np.float64)
    return np.array([[np.exp(np.dot(rows[b, k], anchor[b]) / temperature)
                      for k in range(rows.shape[1])]
                     for b in range(rows.shape[0])])


def np_normalizer(anchor, rows, n, temperature):
    return np.mean(np_scores(anchor, rows, temperature)) * n


def np_contrast_loss(p, n):
    """ContrastLoss of the code on P = exp(score / τ) / Z."""
    b, k1 = p.shape
    m = k1 - 1
    pn = 1.0 / n
    total = 0.0
    for i in range(b):
        total += math.log(p[i, 0] / (p[i, 0] + m * pn + EPS))
        for k in range(1, k1):
            total += math.log(m * pn / (p[i, k] + m * pn + EPS))
    return -total / b


def np_crd(t, s, t_rows, s_rows, n, temperature=0.07, z_t=None, z_s=None):
    out_t = np_scores(t, s_rows, temperature)   # teacher anchor (code: v2)
    out_s = np_scores(s, t_rows, temperature)   # student anchor (code: v1)
    z_t = np.mean(out_t) * n if z_t is None else z_t
    z_s = np.mean(out_s) * n if z_s is None else z_s
    return np_contrast_loss(out_t / z_t, n) + np_contrast_loss(out_s / z_s, n)


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def inputs(b, k, dim, seed):
    rng = np.random.RandomState(seed)
    return (unit(rng.randn(b, dim)), unit(rng.randn(b, dim)),
            unit(rng.randn(b, k + 1, dim)), unit(rng.randn(b, k + 1, dim)))


SIZES = [(1, 1, 2), (2, 3, 4), (5, 16, 8), (8, 64, 16)]


def crd(*args, **kwargs):
    return contrastive_representation_loss(*args, **kwargs)


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("size,n,temperature,normalized,runner", cases(
    [(z, n, tau, norm) for z in SIZES for n, tau in [(100, 0.07), (7, 1.0)]
     for norm in (False, True)],
    [(SIZES[2], 100, 0.07, False), (SIZES[3], 50000, 0.07, True)]))
def test_matches_reference(size, n, temperature, normalized, runner):
    t, s, t_rows, s_rows = inputs(*size, seed=sum(size))
    kwargs = {}
    if normalized:  # fixed normalisers, e.g. those of an earlier batch
        kwargs = {"teacher_normalizer": 3.0 * n, "student_normalizer": 0.5 * n}
    got = run(crd, t, s, t_rows, s_rows, runner=runner, dataset_size=n,
              temperature=temperature, **kwargs)
    want = np_crd(t, s, t_rows, s_rows, n, temperature,
                  kwargs.get("teacher_normalizer"),
                  kwargs.get("student_normalizer"))
    assert got.shape == () and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_normalizer_matches_reference_and_the_default():
    t, s, t_rows, s_rows = inputs(4, 8, 6, seed=1)
    z_t = contrastive_normalizer(t, s_rows, dataset_size=1000)
    z_s = contrastive_normalizer(s, t_rows, dataset_size=1000)
    np.testing.assert_allclose(z_t, np_normalizer(t, s_rows, 1000, 0.07),
                               rtol=1e-5)
    np.testing.assert_allclose(z_s, np_normalizer(s, t_rows, 1000, 0.07),
                               rtol=1e-5)
    # Passing the first batch's estimates (as numbers or tensors) equals
    # letting the loss estimate them.
    default = crd(t, s, t_rows, s_rows, dataset_size=1000)
    for z in [(float(z_t), float(z_s)), (z_t, z_s),
              (tf.Variable(z_t), tf.Variable(z_s))]:
        np.testing.assert_allclose(
            crd(t, s, t_rows, s_rows, dataset_size=1000,
                teacher_normalizer=z[0], student_normalizer=z[1]),
            default, rtol=1e-6)


def test_memory_update_matches_reference():
    rng = np.random.RandomState(2)
    rows, e = unit(rng.randn(5, 4)), unit(rng.randn(5, 4))
    for m in (0.0, 0.5, 0.9, 1.0):
        mixed = m * rows.astype(np.float64) + (1 - m) * e
        want = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
        got = run(lambda r, x: contrastive_memory_update(r, x, momentum=m),
                  rows, e, runner="jit")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Opposite rows cancel at m = 0.5: the zero row stays 0, not NaN.
    got = contrastive_memory_update(rows, -rows).numpy()
    assert np.all(got == 0.0)
    # No gradient flows through the update.
    _, grads = value_and_grads(contrastive_memory_update, rows, e)
    assert all(np.all(g == 0.0) for g in grads)


def test_gradients_match_finite_differences():
    t, s, t_rows, s_rows = inputs(3, 4, 3, seed=3)
    z = {"teacher_normalizer": 40.0, "student_normalizer": 60.0}
    _, (g_t, g_s, g_tr, g_sr) = value_and_grads(
        lambda *a: crd(*a, dataset_size=20, temperature=0.5, **z),
        t, s, t_rows, s_rows, wrt=(0, 1, 2, 3))
    ref = dict(n=20, temperature=0.5, z_t=40.0, z_s=60.0)
    np.testing.assert_allclose(
        g_s, numeric_grad(lambda x: np_crd(t, x, t_rows, s_rows, **ref), s),
        rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        g_t, numeric_grad(lambda x: np_crd(x, s, t_rows, s_rows, **ref), t),
        rtol=1e-4, atol=1e-6)
    # The memory-bank rows are constants.
    assert np.all(g_tr == 0.0) and np.all(g_sr == 0.0)


def test_estimated_normalizer_carries_no_gradient():
    t, s, t_rows, s_rows = inputs(3, 4, 3, seed=4)
    _, (g_s,) = value_and_grads(
        lambda *a: crd(*a, dataset_size=20, temperature=0.5),
        t, s, t_rows, s_rows, wrt=(1,))
    z_s = np_normalizer(s, t_rows, 20, 0.5)
    z_t = np_normalizer(t, s_rows, 20, 0.5)
    want = numeric_grad(lambda x: np_crd(t, x, t_rows, s_rows, 20, 0.5,
                                         z_t, z_s), s)
    np.testing.assert_allclose(g_s, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("runner", RUNNERS)
def test_dynamic_batch_and_negatives(runner):
    fn = tf.function(
        lambda *a: crd(*a, dataset_size=500), jit_compile=runner == "jit",
        input_signature=[tf.TensorSpec([None, 4])] * 2
        + [tf.TensorSpec([None, None, 4])] * 2)
    for b, k in [(1, 1), (3, 10)]:
        args = inputs(b, k, 4, seed=5)
        np.testing.assert_allclose(fn(*args).numpy(), np_crd(*args, 500),
                                   rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------- numerical safety
@pytest.mark.parametrize("runner", RUNNERS)
def test_extreme_scores_and_zero_embeddings_stay_finite(runner):
    t, s, t_rows, s_rows = inputs(4, 6, 5, seed=6)
    s[0] = 0.0
    t_rows[1] = 0.0
    # τ = 1e-3 gives scores up to ±1000 (exp overflows float32), and with
    # tiny normalisers P ≫ c while with huge ones P ≪ c.
    for kwargs in [dict(temperature=1e-3),
                   dict(temperature=1e-3, teacher_normalizer=1e-30,
                        student_normalizer=1e30)]:
        value, grads = value_and_grads(
            lambda *a: crd(*a, dataset_size=1000, **kwargs),
            t, s, t_rows, s_rows, runner=runner)
        assert_finite(value, *grads)
    value, grads = value_and_grads(
        lambda *a: crd(*a, dataset_size=1000), t, s, t_rows, s_rows)
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_crd(t, s, t_rows, s_rows, 1000),
                               rtol=1e-5)
    zeros = [np.zeros_like(x) for x in (t, s, t_rows, s_rows)]
    value, grads = value_and_grads(lambda *a: crd(*a, dataset_size=10),
                                   *zeros, runner="eager")
    assert_finite(value, *grads)
    np.testing.assert_allclose(value, np_crd(*zeros, 10), rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs(dtype):
    args = inputs(3, 8, 6, seed=7)
    got = run(crd, *args, dtype=dtype, dataset_size=100)
    assert got.dtype == np.float32
    rounded = [tf.cast(tf.cast(x, dtype), tf.float32).numpy() for x in args]
    np.testing.assert_allclose(got, np_crd(*rounded, 100), rtol=1e-4)


def test_live_temperature_and_momentum():
    args = inputs(3, 5, 4, seed=8)
    check_live_hyperparameters(
        lambda *a, temperature: crd(*a, dataset_size=100,
                                    temperature=temperature),
        args, dict(temperature=0.07), dict(temperature=0.5))
    check_live_hyperparameters(
        contrastive_memory_update, args[:2], dict(momentum=0.5),
        dict(momentum=0.9))


# ------------------------------------------------------------- golden values
def test_golden_values():
    args = inputs(4, 16, 8, seed=123)
    np.testing.assert_allclose(
        [crd(*args, dataset_size=1000).numpy(),
         crd(*args, dataset_size=50, temperature=0.5, teacher_normalizer=80.0,
             student_normalizer=90.0).numpy(),
         contrastive_normalizer(args[0], args[3], dataset_size=1000).numpy()],
        [26.059868, 9.044973, 448773.53], rtol=1e-5)


# ----------------------------------------------------------------- bad input
ARGS = inputs(2, 3, 4, seed=0)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"dataset_size": 0}, ValueError, r"`dataset_size` must be an integer "
     r">= 1\. Received: dataset_size=0"),
    ({"dataset_size": 10.0}, TypeError, r"`dataset_size`.*Received: "
     r"dataset_size=10\.0"),
    ({"dataset_size": 10, "temperature": 0.0}, ValueError,
     r"`temperature`.*Received: temperature=0\.0"),
    ({"dataset_size": 10, "teacher_normalizer": -1.0}, ValueError,
     r"`teacher_normalizer` must be a finite number > 0\. Received: "
     r"teacher_normalizer=-1\.0"),
    ({"dataset_size": 10, "student_normalizer": tf.ones([2])}, ValueError,
     r"`student_normalizer` must have rank 0"),
])
def test_bad_hyperparameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        crd(*ARGS, **kwargs)


def test_bad_shapes():
    t, s, t_rows, s_rows = ARGS
    with pytest.raises(ValueError, match=r"`teacher_embeddings` and "
                       r"`student_embeddings` must have the same shape"):
        crd(t, s[:, :3], t_rows, s_rows, dataset_size=10)
    with pytest.raises(ValueError, match=r"`teacher_bank_rows` must hold the "
                       r"positive \(row 0\) and at least one negative.*"
                       r"\(2, 1, 4\)"):
        crd(t, s, t_rows[:, :1], s_rows, dataset_size=10)
    with pytest.raises(ValueError, match=r"`student_bank_rows` must have the "
                       r"batch size and the embedding size of "
                       r"`teacher_embeddings`.*\(2, 4, 3\).*\(2, 4\)"):
        crd(t, s, t_rows, s_rows[..., :3], dataset_size=10)
    with pytest.raises(ValueError, match=r"`teacher_bank_rows` must have "
                       r"rank 3 \(batch, K \+ 1, dim\)"):
        crd(t, s, t_rows[:, 0], s_rows, dataset_size=10)
    with pytest.raises(ValueError, match=r"`bank_rows` and `embeddings` must "
                       r"have the same shape"):
        contrastive_memory_update(t, t[:, :2])
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\]"):
        contrastive_memory_update(t, t, momentum=1.5)


# --- The term (formerly tests/test_term_crd.py) ---

SMALL = dict(num_negatives=16, embedding_dim=8)


def _pair():
    return (testing.tiny_conv_model("teacher", width=8, seed=1),
            testing.tiny_conv_model("student", width=4, seed=11))


def _embeddings(term, distiller, x):
    t = distiller.teacher_forward(x)[1][0]
    s = distiller.student_forward(x, False)[1][0]
    return term.embed(term.teacher_head, t), term.embed(term.student_head, s)


def _state(term):
    return {name: np.array(getattr(term, name)) for name in (
        "teacher_memory", "student_memory", "teacher_normalizer",
        "student_normalizer", "steps", "queue_position")}


def test_queue_term_matches_the_loss_and_trains():
    terms = []

    def make():
        terms.append(CRD("conv2", "conv2", num_negatives=32,
                         embedding_dim=8))
        return terms[-1]

    def reference(t, s):
        # The queue: the positive is the other network's embedding, the
        # negatives every row of the other network's queue (N = K = 32).
        term = terms[-1]
        e_t = term.embed(term.teacher_head, t)
        e_s = term.embed(term.student_head, s)

        def rows(e, memory):
            bank = tf.broadcast_to(tf.convert_to_tensor(memory)[None],
                                   (e.shape[0],) + tuple(memory.shape))
            return tf.concat([e[:, None], bank], axis=1)

        return contrastive_representation_loss(
            e_t, e_s, rows(e_t, term.teacher_memory),
            rows(e_s, term.student_memory), dataset_size=32,
            temperature=0.07)

    distiller = testing.check_term(make, reference=reference)
    term = distiller.term("crd")
    assert int(term.steps.numpy()) > 0 and float(
        term.teacher_normalizer.numpy()) > 0


def test_method_is_registered_with_the_code_defaults():
    spec = registry.get("crd")
    assert spec.term is CRD
    arguments = spec.arguments()
    assert (arguments["weight"], arguments["num_negatives"],
            arguments["embedding_dim"], arguments["temperature"],
            arguments["momentum"], arguments["dataset_size"]) == (
        0.8, 16384, 128, 0.07, 0.5, None)
    distiller = registry.build("crd", *_pair(),
                               feature_layers=("pool", "pool"))
    # The paper's weight, then the soft targets (SOFT_TARGETS).
    assert distiller.distillation_loss_weights == [0.8, 2.0]
    assert distiller.student_loss_weight == 0.5


def test_memory_bank_value_is_the_authors_loss():
    teacher, student = _pair()
    term = CRD("pool", "pool", dataset_size=40, **SMALL)
    distiller = tfkd.Distiller(teacher, student, [term])
    x, y = testing.random_images(8, seed=2)
    index = np.arange(30, 38)
    got = distiller.compute_terms({"images": x, "index": index}, y)[
        "crd_loss"]
    assert got.shape == (8,)
    # Row 0: the example's own bank row; rows 1..K: the term's draws.
    rows = tf.concat([index[:, None], term._negatives(
        tf.constant(index, tf.int64))], axis=1)
    e_t, e_s = _embeddings(term, distiller, x)
    want = contrastive_representation_loss(
        e_t, e_s, tf.gather(term.teacher_memory, rows),
        tf.gather(term.student_memory, rows), dataset_size=40,
        temperature=0.07)
    np.testing.assert_allclose(float(tf.reduce_mean(got)), float(want),
                               rtol=1e-5)
    # Negatives: uniform over the bank, K per example, a deterministic
    # function of (seed, step, index).
    draws = term._negatives(tf.constant(index, tf.int64)).numpy()
    assert draws.shape == (8, 16) and draws.min() >= 0 and draws.max() < 40
    np.testing.assert_array_equal(
        draws[3], term._negatives(tf.constant([33], tf.int64)).numpy()[0])
    many = term._negatives(tf.range(2000, dtype=tf.int64)).numpy()
    counts = np.bincount(many.ravel(), minlength=40)
    assert counts.min() > 0.8 * counts.mean()


@pytest.mark.parametrize("normalizers", [None, (5.0, 7.0)])
@pytest.mark.parametrize("temperature", [0.02, 0.3])
@pytest.mark.parametrize("dataset_size", [None, 40])
def test_term_value_and_gradients_are_the_reference_loss(
        dataset_size, temperature, normalizers):
    """The term scores the positive and the negatives apart, divides the
    anchors (not the scores) by τ and reads a stored `Z` without a pass
    over the scores: value and gradients (heads and student) stay those of
    `contrastive_representation_loss` on the same rows, at both ends of
    the tuner's τ range, for the queue and the memory bank."""
    teacher, student = _pair()
    term = CRD("pool", "pool", dataset_size=dataset_size,
               temperature=temperature, **SMALL)
    distiller = tfkd.Distiller(teacher, student, [term])
    x, y = testing.random_images(8, seed=3)
    index = np.arange(30, 38)
    inputs = x if dataset_size is None else {"images": x, "index": index}
    if normalizers is not None:
        term.teacher_normalizer.assign(normalizers[0])
        term.student_normalizer.assign(normalizers[1])
    variables = (term.teacher_head.trainable_variables
                 + term.student_head.trainable_variables
                 + student.trainable_variables)
    with tf.GradientTape(persistent=True) as tape:
        got = tf.reduce_mean(distiller.compute_terms(inputs, y)["crd_loss"])
        e_t, e_s = _embeddings(term, distiller, x)
        if dataset_size is None:
            def rows(e, memory):
                bank = tf.broadcast_to(
                    tf.convert_to_tensor(memory)[None],
                    (e.shape[0],) + tuple(memory.shape))
                return tf.concat([e[:, None], bank], axis=1)

            t_rows = rows(e_t, term.teacher_memory)
            s_rows = rows(e_s, term.student_memory)
            size = SMALL["num_negatives"]
        else:
            drawn = tf.concat([index[:, None], term._negatives(
                tf.constant(index, tf.int64))], axis=1)
            t_rows = tf.gather(term.teacher_memory, drawn)
            s_rows = tf.gather(term.student_memory, drawn)
            size = dataset_size
        z_t, z_s = normalizers or (None, None)
        want = contrastive_representation_loss(
            e_t, e_s, t_rows, s_rows, dataset_size=size,
            temperature=temperature, teacher_normalizer=z_t,
            student_normalizer=z_s)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    reached = 0
    for g, w in zip(tape.gradient(got, variables),
                    tape.gradient(want, variables)):
        # Layers after the tapped one (the student's logits) get none.
        assert (g is None) == (w is None)
        if g is not None:
            reached += 1
            np.testing.assert_allclose(np.asarray(g), np.asarray(w),
                                       rtol=1e-4, atol=1e-6)
    assert reached >= 4


def _bank_distiller(dataset_size=32, **kwargs):
    teacher, student = _pair()
    term = CRD("pool", "pool", dataset_size=dataset_size,
               **{**SMALL, **kwargs})
    distiller = tfkd.Distiller(teacher, student, [term],
                               distillation_loss_weights=[0.8])
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    return distiller, term


def test_a_training_step_updates_the_examples_rows_only():
    distiller, term = _bank_distiller()
    x, y = testing.random_images(8, seed=3)
    index = np.array([3, 9, 12, 0, 31, 17, 5, 22])
    before = _state(term)
    e_t, e_s = _embeddings(term, distiller, x)
    distiller.fit({"images": x, "index": index}, y, batch_size=8,
                  verbose=0, shuffle=False)
    after = _state(term)
    for memory, e in (("teacher_memory", e_t), ("student_memory", e_s)):
        want = contrastive_memory_update(before[memory][index], e,
                                         momentum=0.5)
        np.testing.assert_allclose(after[memory][index], want, rtol=1e-5,
                                   atol=1e-6)
        others = np.setdiff1d(np.arange(32), index)
        np.testing.assert_array_equal(after[memory][others],
                                      before[memory][others])
    assert before["teacher_normalizer"] < 0 < after["teacher_normalizer"]
    assert after["student_normalizer"] > 0
    assert (before["steps"], after["steps"]) == (0, 1)


def test_heads_are_trained_and_not_in_the_student():
    distiller, term = _bank_distiller()
    heads = term.teacher_head.weights + term.student_head.weights
    student_ids = {id(w) for w in distiller.student.weights}
    assert not any(id(w) in student_ids for w in heads)
    assert {id(w) for w in heads} <= {id(v) for v in
                                      distiller.step_variables()}
    banks = [term.teacher_memory, term.student_memory]
    assert not any(b.trainable for b in banks)
    before = [np.array(w) for w in heads]
    x, y = testing.random_images(32, seed=4)
    distiller.fit({"images": x, "index": np.arange(32)}, y, batch_size=16,
                  verbose=0)
    assert all(not np.array_equal(b, np.array(w))
               for b, w in zip(before, heads))


@pytest.mark.parametrize("dataset_size", [32, None])
def test_evaluate_and_predict_leave_the_banks_alone(dataset_size):
    distiller, term = _bank_distiller(dataset_size)
    x, y = testing.random_images(32, seed=5)
    data = {"images": x, "index": np.arange(32)} if dataset_size else x
    distiller.fit(data, y, batch_size=16, verbose=0)
    before = _state(term)
    # Validation data without an index: the live positive.
    logs = distiller.evaluate(x, y, batch_size=16, return_dict=True,
                              verbose=0)
    assert np.isfinite(logs["crd_loss"])
    if dataset_size:
        distiller.evaluate(data, y, batch_size=16, verbose=0)
    distiller.predict(data, verbose=0)
    after = _state(term)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], name)


def test_queue_writes_the_latest_embeddings_in_order():
    teacher, student = _pair()
    term = CRD("pool", "pool", num_negatives=12, embedding_dim=8)
    distiller = tfkd.Distiller(teacher, student, [term])
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))  # frozen heads
    x, y = testing.random_images(16, seed=6)
    distiller.fit(x, y, batch_size=8, verbose=0, shuffle=False)
    # 16 embeddings through a queue of 12: rows 0-3 hold examples 12-15,
    # rows 4-11 examples 4-11; the next write starts at row 4.
    e_t, e_s = _embeddings(term, distiller, x)
    order = np.r_[12:16, 4:12]
    np.testing.assert_allclose(np.array(term.teacher_memory), e_t.numpy()[
        order], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(term.student_memory), e_s.numpy()[
        order], rtol=1e-5, atol=1e-6)
    assert int(term.queue_position.numpy()) == 4


def test_index_errors():
    distiller, term = _bank_distiller()
    x, y = testing.random_images(8, seed=7)
    with pytest.raises(ValueError, match=r"dataset_size=32\) keeps one bank "
                                         r"row per training example.*"
                                         r"with_example_index"):
        distiller.fit(x, y, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"index is >= dataset_size=32"):
        distiller.compute_terms({"images": x, "index": np.arange(30, 38)}, y)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"index is negative"):
        distiller.compute_terms({"images": x, "index": np.arange(-1, 7)}, y)
    queue = tfkd.Distiller(*_pair(), [CRD("pool", "pool", **SMALL)])
    with pytest.raises(ValueError, match=r"carries an example index, but .*"
                                         r"dataset_size=None"):
        queue.compute_terms({"images": x, "index": np.arange(8)}, y)


def test_argument_errors_and_config():
    with pytest.raises(ValueError, match="one embedding per network"):
        CRD(["conv1", "conv2"], ["conv1", "conv2"])
    with pytest.raises(ValueError, match=r"`num_negatives` must be an "
                                         r"integer >= 1\. Received: "
                                         r"num_negatives=0"):
        CRD(num_negatives=0)
    with pytest.raises(TypeError, match=r"`dataset_size` must be an integer"):
        CRD(dataset_size=10.5)
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0, 1\]"):
        CRD(momentum=1.5)
    with pytest.raises(ValueError, match="has not been bound yet"):
        CRD().compute_loss(np.zeros((2, 3)), np.zeros((2, 3)))
    term = CRD("a", "b", dataset_size=100, num_negatives=64,
               embedding_dim=16, temperature=0.1, momentum=0.9, seed=3)
    config = term.get_config()
    assert CRD.from_config(config).get_config() == config


def test_with_example_index():
    x, y = testing.random_images(6, seed=8)
    w = np.linspace(0.5, 1.0, 6).astype("float32")
    data = with_example_index(tf.data.Dataset.from_tensor_slices((x, y, w)))
    inputs, labels, weights = next(iter(data.batch(6)))
    np.testing.assert_array_equal(inputs["index"], np.arange(6))
    np.testing.assert_array_equal(inputs["images"], x)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(weights, w)
    with pytest.raises(ValueError, match=r"looks batched.*before `\.batch"):
        with_example_index(tf.data.Dataset.from_tensor_slices((x, y))
                           .batch(2))
    with pytest.raises(TypeError, match=r"For NumPy arrays pass"):
        with_example_index(x)
    # A shuffled, batched pipeline trains with the memory bank.
    distiller, term = _bank_distiller(dataset_size=6)
    train = with_example_index(tf.data.Dataset.from_tensor_slices(
        (x, y))).shuffle(6, seed=1).batch(3)
    distiller.fit(train, epochs=2, verbose=0, shuffle=False)
    assert int(term.steps.numpy()) == 4


def test_memory_bank_under_xla_and_mixed_precision():
    for policy, jit in (("float32", True), ("mixed_float16", False)):
        keras.mixed_precision.set_dtype_policy(policy)
        distiller, term = _bank_distiller()
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2),
                          jit_compile=jit)
        x, y = testing.random_images(32, seed=9)
        history = distiller.fit({"images": x, "index": np.arange(32)}, y,
                                batch_size=8, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["crd_loss"]))
        assert term.teacher_memory.dtype == "float32"
        assert int(term.steps.numpy()) == 8
    keras.mixed_precision.set_dtype_policy("float32")


def _fit_bank(strategy, initial, x, y):
    with strategy.scope():
        distiller, term = _bank_distiller()
        if initial is not None:
            distiller.set_weights(initial)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    weights = distiller.get_weights()
    history = distiller.fit({"images": x, "index": np.arange(len(x))}, y,
                            batch_size=16, epochs=2, verbose=0,
                            shuffle=False)
    return weights, history.history, distiller


def test_memory_bank_under_mirrored_strategy_equals_one_device():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (tests/conftest.py)")
    x, y = testing.random_images(32, seed=10)
    initial, h1, single = _fit_bank(tf.distribute.get_strategy(), None, x, y)
    _, h2, mirrored = _fit_bank(
        mirrored_strategy([d.name for d in devices[:2]]), initial, x, y)
    assert mirrored.distribute_strategy.num_replicas_in_sync == 2
    for name in h1:
        np.testing.assert_allclose(h2[name], h1[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    for a, b in zip(single.weights, mirrored.weights):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5,
                                   atol=1e-5, err_msg=a.path)
    term = mirrored.term("crd")
    for name in ("teacher_memory", "student_memory", "steps"):
        replicas = mirrored.distribute_strategy.experimental_local_results(
            getattr(term, name).value)
        np.testing.assert_array_equal(np.array(replicas[0]),
                                      np.array(replicas[1]), name)


def test_saved_memory_bank_continues_identically(tmp_path):
    distiller, term = _bank_distiller()
    x, y = testing.random_images(32, seed=11)
    data = {"images": x, "index": np.arange(32)}
    distiller.fit(data, y, batch_size=16, verbose=0, shuffle=False)
    path = os.path.join(tmp_path, "crd.keras")
    distiller.save(path)
    restored = tfkd.load(path)
    for name, value in _state(term).items():
        np.testing.assert_array_equal(
            np.array(getattr(restored.term("crd"), name)), value, name)
    distiller.fit(data, y, batch_size=16, verbose=0, shuffle=False)
    restored.fit(data, y, batch_size=16, verbose=0, shuffle=False)
    for a, b in zip(distiller.weights, restored.weights):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5,
                                   atol=1e-6, err_msg=a.path)


@pytest.mark.parametrize("dataset_size, jit", [(32, False), (None, False),
                                               (32, True)])
def test_a_refused_step_leaves_the_banks_and_counters_alone(dataset_size,
                                                            jit):
    """The finite guard refuses a step with non-finite gradients: the
    banks, normalizers, queue position and step counter keep their values,
    like the weights, and training goes on once the cause is gone."""
    from tfkd.callbacks import NonFiniteDataError

    distiller, term = _bank_distiller(dataset_size)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
    x, y = testing.random_images(8, seed=3)
    data = x if dataset_size is None else {"images": x,
                                           "index": np.arange(8)}
    distiller.fit(data, y, batch_size=8, verbose=0, shuffle=False)
    before = _state(term)
    kernel = distiller.student.get_layer("conv2").kernel
    good = kernel.numpy()
    kernel.assign(np.full_like(good, np.nan))  # Finite images, NaN grads.
    with pytest.raises(NonFiniteDataError, match="Non-finite gradients"):
        distiller.fit(data, y, batch_size=8, verbose=0, shuffle=False)
    after = _state(term)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    kernel.assign(good)
    distiller.fit(data, y, batch_size=8, verbose=0, shuffle=False)
    assert int(term.steps.numpy()) == before["steps"] + 1
    assert np.isfinite(np.array(term.student_memory)).all()


def test_cached_teacher_outputs_carry_the_example_index():
    """`cache_teacher_outputs` over a `with_example_index` pipeline keeps
    each index with its example (shuffled too) at the top of the batch
    dict, where CRD reads it: training on the cache writes the same bank
    rows as training on the pipeline itself."""
    x, y = testing.random_images(16, seed=4)
    indexed = with_example_index(tf.data.Dataset.from_tensor_slices((x, y)))
    states = []
    for cached in (False, True):
        keras.utils.set_random_seed(0)
        distiller, term = _bank_distiller(16)
        data = indexed.batch(8)
        if cached:
            shuffled = tfkd.data.cache_teacher_outputs(distiller, data,
                                                       shuffle=True, seed=1)
            for inputs, labels in shuffled:
                assert sorted(inputs) == ["images", "index", "teacher_features",
                                          "teacher_logits"]
                np.testing.assert_array_equal(
                    inputs["images"].numpy(), x[inputs["index"].numpy()])
            data = tfkd.data.cache_teacher_outputs(distiller, data,
                                                   shuffle=False)
        distiller.fit(data, epochs=1, verbose=0, shuffle=False)
        states.append(_state(term))
    for name, value in states[0].items():
        np.testing.assert_allclose(states[1][name], value, rtol=1e-5,
                                   atol=1e-6, err_msg=name)
    assert states[1]["steps"] == 2
