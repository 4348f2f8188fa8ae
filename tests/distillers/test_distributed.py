"""Every distiller under `tf.distribute.MirroredStrategy` on 2 logical CPUs.

Two replicas with a global batch of 32 must give the same per-epoch losses
and the same final weights (student, adapters, regressors, discriminator)
as one device with the same global batch of 32, from the same initial
weights, with unlabelled examples (label -1) and sample weights spread
unevenly over the replicas. Batch-level losses (LP) are, by design,
computed per replica on its local batch: the single-device reference
computes them on the same halves of each global batch and averages them
(see `docs/distributed.md`).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd import testing

from _distiller_cases import distiller_params
from _distiller_cases import mirrored_strategy
from _distiller_cases import tiny_pair

GLOBAL_BATCH = 32
REPLICAS = 2


def _devices():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < REPLICAS:
        pytest.skip(f"needs {REPLICAS} logical CPU devices (set up in "
                    f"tests/conftest.py); found {len(devices)}")
    return [d.name for d in devices[:REPLICAS]]


def _per_replica_reference(distiller, batch_level, replicas):
    """Makes `distiller` compute batch-level terms as `replicas` replicas
    do: on consecutive equal slices of the global batch, then averaged.
    Per-example terms are concatenated (unchanged)."""
    term_values = distiller.term_values

    def per_replica(teacher, student, y, training, inputs=None):
        size = tf.shape(y)[0] // replicas
        parts = []
        for r in range(replicas):
            s = slice(r * size, (r + 1) * size)
            parts.append(term_values(
                {k: v[s] for k, v in teacher.items()},
                {k: v[s] for k, v in student.items()}, y[s], training))
        merged = {}
        for name in parts[0]:
            values = [p[name] for p in parts]
            if f"{name}_loss" in batch_level:
                merged[name] = tf.add_n(values) / replicas
            else:
                merged[name] = tf.concat(values, axis=0)
        return merged

    object.__setattr__(distiller, "term_values", per_replica)
    return distiller


def _train(case, strategy, initial_weights, x, y, reference=False,
           **fit_kwargs):
    with strategy.scope():
        teacher, student = tiny_pair()
        distiller = case.build(teacher, student)
        batch_level = case.batch_level(distiller)
        if reference and batch_level:
            _per_replica_reference(distiller, batch_level, REPLICAS)
        if initial_weights is not None:
            distiller.set_weights(initial_weights)
        # The one-device reference runs eagerly: the same arithmetic
        # without a traced step (the mirrored run is the traced one).
        case.compile(distiller, optimizer=keras.optimizers.SGD(0.01),
                     run_eagerly=reference)
    weights = distiller.get_weights()
    student = [np.array(w) for w in distiller.student.weights]
    teacher = [np.array(w) for w in distiller.teacher.weights]
    history = distiller.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2,
                            verbose=0, shuffle=False, **fit_kwargs)
    for before, w in zip(teacher, distiller.teacher.weights):
        np.testing.assert_array_equal(np.array(w), before)
    assert any(not np.array_equal(np.array(w), before)
               for before, w in zip(student, distiller.student.weights)), (
        "no student weight changed")
    return weights, history.history, distiller


def _unevenly_labelled(n):
    """Images, labels and sample weights spread unevenly over replicas.

    In the first global batch replica 0's half holds one labelled example
    (label -1: unlabelled) and replica 1's half sixteen; in the second,
    replica 1's half holds none. The student loss must divide by the
    global batch's labelled count, as one device does, not by each
    replica's own. The sample weights differ from example to example.
    """
    x, y = testing.random_images(n, seed=3)
    y = np.array(y, dtype="int64")
    half = GLOBAL_BATCH // REPLICAS
    y[1:half] = -1
    y[GLOBAL_BATCH + half:] = -1
    sample_weight = np.linspace(0.2, 3.0, n).astype("float32")
    return x, y, sample_weight


def _divergence_atol(distiller, batch):
    """Absolute float32 rounding floor of the loss metrics' batch-level
    divergence terms (PKT), which rtol cannot cover.

    PKT is `mean_{i,j} P_T[i,j] (log P_T[i,j] - log P_S[i,j])` over the
    `b²` pairs of a replica's `b` examples, two distributions that agree
    to ~1e-5 here: its value (~3e-6) is what is left after cancelling
    summands of size `P (1 + |log P|) ~ (1 + ln b) / b`. Rounding each log
    (and P, relative `u = eps/2`) errs by `u P (1 + |log P|)` per pair,
    independently, so the mean errs by `u (1 + ln b) / b²` (`√(b²)`
    pairs over `b²`), times the term's weight in `distillation_loss`
    (30000): 2.6e-5 at b = 16, against rtol 1e-5 of a 0.09 loss. The
    weights (compared below) are not cancelled and keep their tolerance.
    """
    from tfkd.methods.pkt import ProbabilisticTransferDistillation

    u = float(np.finfo(np.float32).eps) / 2
    floor = u * (1 + np.log(batch)) / batch ** 2
    _, weights = distiller.loss_weights()
    return sum(float(np.array(w)) * floor
               for term, w in zip(distiller.terms.values(), weights)
               if isinstance(term, ProbabilisticTransferDistillation))


@pytest.mark.parametrize("case", distiller_params())
def test_mirrored_matches_single_device(case):
    devices = _devices()
    x, y, sample_weight = _unevenly_labelled(2 * GLOBAL_BATCH)
    keras.utils.set_random_seed(0)
    initial, h1, single = _train(case, tf.distribute.get_strategy(), None,
                                 x, y, reference=True,
                                 sample_weight=sample_weight)
    keras.utils.set_random_seed(0)
    _, h2, mirrored = _train(case, mirrored_strategy(devices),
                             initial, x, y, sample_weight=sample_weight)
    assert mirrored.distribute_strategy.num_replicas_in_sync == REPLICAS
    assert sorted(h1) == sorted(h2)
    atol = 1e-6 + _divergence_atol(single, GLOBAL_BATCH // REPLICAS)
    for name in h1:
        np.testing.assert_allclose(h2[name], h1[name], rtol=1e-5, atol=atol,
                                   err_msg=f"metric {name!r}")
    w1, w2 = single.weights, mirrored.weights
    # Paths differ only in the uniquified name of the distiller itself.
    assert [w.path.split("/", 1)[-1] for w in w1] == [
        w.path.split("/", 1)[-1] for w in w2]
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5,
                                   atol=1e-5, err_msg=a.path)


def test_mirrored_matches_single_device_with_unlabelled_weight_whole():
    """`unlabelled_weight="whole"` adds the unlabelled examples' knowledge,
    summed per replica over the local batch: replicas averaged equal one
    device's sum over the global batch, however the labels fall."""
    from _distiller_cases import Case

    import tfkd

    def make(teacher, student):
        return tfkd.Distiller(
            teacher, student,
            [tfkd.losses.KDDistillation(temperature=2.0),
             tfkd.losses.AttentionDistillation(teacher_layer_name="conv2",
                                               student_layer_name="conv2")],
            distillation_loss_weights=[1.0, 50.0], student_loss_weight=0.3,
            unlabelled_weight="whole")

    test_mirrored_matches_single_device(Case("kd_at_whole", make=make))
