"""`Distiller(unlabelled_weight="whole")`, the default: an unlabelled
example's knowledge gets the absent student loss's share (weight 1 instead
of `1 - w_s`, which `unlabelled_weight="share"` keeps).

Checked against a NumPy reference of the objective: per example,
`w_s · CE` averaged over the labelled examples, plus the knowledge terms
averaged over the batch, each example's knowledge weighing `1 - w_s` if it
has a label and 1 if it has none; a batch-level term (SP) weighs
`1 - w_s + w_s · (unlabelled fraction)`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing


def _pair():
    keras.utils.set_random_seed(3)
    return (testing.tiny_conv_model("teacher", width=8),
            testing.tiny_conv_model("student", width=4))


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _kd_per_example(t, s, temperature):
    """Hinton KD per example: T² · KL(softmax(t/T) ‖ softmax(s/T))."""
    lp_t = _log_softmax(t / temperature)
    lp_s = _log_softmax(s / temperature)
    return temperature ** 2 * (np.exp(lp_t) * (lp_t - lp_s)).sum(axis=1)


def _reference(teacher, student, x, y, w_s, temperature, whole,
               sample_weight=None):
    t = teacher.predict(x, verbose=0).astype(np.float64)
    s = student.predict(x, verbose=0).astype(np.float64)
    labelled = y >= 0
    sw = np.ones(len(y)) if sample_weight is None else sample_weight
    ce = -_log_softmax(s)[np.arange(len(y)), np.maximum(y, 0)]
    student_loss = (ce * sw * labelled).sum() / labelled.sum()
    kd = _kd_per_example(t, s, temperature) * sw
    share = np.where(labelled, 1 - w_s, 1.0 if whole else 1 - w_s)
    return w_s * student_loss + (share * kd).sum() / len(y)


@pytest.mark.parametrize("batch, unlabelled", [(8, 5), (6, 1), (5, 0)])
@pytest.mark.parametrize("weighted", [False, True])
def test_total_matches_numpy_reference(batch, unlabelled, weighted):
    teacher, student = _pair()
    x, y = testing.random_images(batch, seed=batch)
    y = np.array(y).astype(np.int64)
    y[:unlabelled] = -1
    rng = np.random.default_rng(batch)
    sample_weight = rng.uniform(0.5, 2.0, batch) if weighted else None
    for whole in (False, True):
        distiller = tfkd.Distiller(
            teacher, student, alpha=0.3, temperature=2.0,
            unlabelled_weight="whole" if whole else "share")
        total = distiller.compute_losses(
            tf.constant(x), tf.constant(y),
            None if sample_weight is None else tf.constant(sample_weight))[0]
        expected = _reference(teacher, student, x, y, 0.3, 2.0, whole,
                              sample_weight)
        np.testing.assert_allclose(float(total), expected, rtol=2e-5,
                                   err_msg=f"whole={whole}")


def test_whole_differs_only_with_unlabelled_examples_and_jit():
    teacher, student = _pair()
    x, y = testing.random_images(8, seed=1)
    y = np.array(y).astype(np.int64)
    share = tfkd.Distiller(teacher, student, alpha=0.3,
                           unlabelled_weight="share")
    whole = tfkd.Distiller(teacher, student, alpha=0.3)  # the default
    labelled = [float(d.compute_losses(tf.constant(x), tf.constant(y))[0])
                for d in (share, whole)]
    assert labelled[0] == pytest.approx(labelled[1], rel=1e-6)
    y[:4] = -1
    step = tf.function(lambda x, y: whole.compute_losses(x, y)[0],
                       jit_compile=True)
    eager = float(whole.compute_losses(tf.constant(x), tf.constant(y))[0])
    assert float(step(tf.constant(x), tf.constant(y))) == pytest.approx(
        eager, rel=1e-5)
    assert eager > float(share.compute_losses(tf.constant(x),
                                              tf.constant(y))[0])


def test_batch_level_term_weighs_the_unlabelled_fraction():
    teacher, student = _pair()
    x, y = testing.random_images(8, seed=2)
    y = np.array(y).astype(np.int64)
    y[:2] = -1  # a quarter unlabelled
    terms = lambda: [tfkd.losses.SimilarityPreservingDistillation(
        teacher_layer_name="conv2", student_layer_name="conv2")]
    built = {mode: tfkd.Distiller(teacher, student, terms(),
                                  student_loss_weight=0.4,
                                  unlabelled_weight=mode)
             for mode in ("share", "whole")}
    totals, values = {}, {}
    for mode, d in built.items():
        total, values[mode] = d.compute_losses(tf.constant(x),
                                               tf.constant(y))[:2]
        totals[mode] = float(total)
    sp = float(values["share"]["sp_loss"])
    assert sp > 0
    assert totals["whole"] - totals["share"] == pytest.approx(
        0.4 * 0.25 * sp, rel=1e-4)


def test_fit_saves_and_refuses_bad_values(tmp_path):
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"unlabelled_weight.*'whole'.*"
                                         r"'share'.*Received: "
                                         r"unlabelled_weight='all'"):
        tfkd.Distiller(teacher, student, unlabelled_weight="all")
    assert tfkd.Distiller(teacher, student).unlabelled_weight == "whole"
    # The non-default value survives saving (a lost key would load "whole").
    distiller = tfkd.Distiller(teacher, student, unlabelled_weight="share")
    distiller.compile(optimizer="adam")
    x, y = testing.random_images(16)
    y = np.array(y).astype(np.int64)
    y[::2] = -1
    distiller.fit(x, y, epochs=1, batch_size=8, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.unlabelled_weight == "share"
    preset = tfkd.FitNetDistiller(teacher, student, teacher_layer_name="conv2",
                                  student_layer_name="conv2",
                                  unlabelled_weight="share")
    clone = type(preset).from_config(preset.get_config())
    assert clone.unlabelled_weight == "share"


@pytest.mark.parametrize("method", tfkd.distillers.registry.method_names())
def test_every_registry_method_takes_the_option(method):
    teacher, student = _pair()
    distiller = tfkd.distillers.registry.build(
        method, teacher, student, feature_layers=("conv2", "conv2"),
        unlabelled_weight="share")
    assert distiller.unlabelled_weight == "share"
    # An engine option, not a hyperparameter of the method.
    assert "unlabelled_weight" not in \
        tfkd.distillers.registry.get(method).arguments()


def test_an_assignment_changes_the_next_steps_objective():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student, alpha=0.3)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = testing.random_images(8, seed=4)
    y = np.array(y).astype(np.int64)
    y[:4] = -1

    def evaluated():
        return distiller.evaluate(x, y, batch_size=8, return_dict=True,
                                  verbose=0)["loss"]

    whole = evaluated()  # traces the test step with "whole"
    distiller.unlabelled_weight = "share"
    share = evaluated()
    assert share < whole
    assert share == pytest.approx(float(distiller.compute_losses(
        tf.constant(x), tf.constant(y))[0]), rel=1e-5)
    with pytest.raises(ValueError, match="unlabelled_weight.*'half'"):
        distiller.unlabelled_weight = "half"
    assert distiller.unlabelled_weight == "share"
