"""The engine: Keras-term parity, one pass per network for every distiller,
mixed terms, live hyperparameters and their schedules."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.callbacks import HyperparameterScheduler
from tfkd.callbacks import linear_warmup

from _distiller_cases import distiller_params


def _pair(seed=1):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=seed)
    student = testing.tiny_conv_model("student", width=8, seed=seed + 10)
    return teacher, student


# ----------------------------------------------------------------------
# Keras's own terms give Keras's own loss, with one student pass.


def _keras_terms():
    return [
        keras.distillation.LogitsDistillation(
            temperature=3.0, loss=keras.losses.KLDivergence()),
        keras.distillation.FeatureDistillation(
            loss="mse", teacher_layer_name="conv2",
            student_layer_name="conv2"),
    ]


@pytest.mark.parametrize("student_loss_weight", [0.3, 0.0, 1.0])
def test_keras_terms_give_keras_distillers_loss(student_loss_weight):
    teacher, student = _pair()
    x, y = testing.random_images(16, seed=4)
    ours = tfkd.Distiller(teacher, student, _keras_terms(),
                          distillation_loss_weights=[1.0, 0.5],
                          student_loss_weight=student_loss_weight)
    theirs = keras.distillation.Distiller(
        teacher, student, _keras_terms(),
        distillation_loss_weights=[1.0, 0.5],
        student_loss_weight=student_loss_weight)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ours.compile(optimizer="sgd", loss=loss)
    theirs.compile(optimizer="sgd", loss=loss)
    expected = float(theirs.compute_loss(x=x, y=y, y_pred=student(x),
                                         training=False))
    got = ours.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    assert got["loss"] == pytest.approx(expected, rel=1e-5)
    # The terms are reported under their names, unweighted.
    t, s = teacher(x), student(x)
    kl = keras.losses.KLDivergence()(tf.nn.softmax(t / 3.0),
                                     tf.nn.softmax(s / 3.0)) * 9.0
    assert got["logits_loss"] == pytest.approx(float(kl), rel=1e-4)


def test_keras_terms_train_like_keras():
    """One SGD step of each gives the same student (Keras's step runs the
    student twice; the engine once)."""
    x, y = testing.random_images(16, seed=5)
    students = []
    for cls in (tfkd.Distiller, keras.distillation.Distiller):
        teacher, student = _pair()
        distiller = cls(teacher, student, _keras_terms(),
                        distillation_loss_weights=[1.0, 0.5],
                        student_loss_weight=0.4)
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True))
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0,
                      shuffle=False)
        students.append([np.array(w) for w in student.weights])
    for a, b in zip(*students):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keras_feature_term_with_mismatched_shapes_is_refused():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    with pytest.raises(ValueError, match=r"shapes must match.*'conv2' of "
                                         r"shape \(None, 8, 8, 8\).*"
                                         r"\(None, 8, 8, 4\).*"
                                         r"HintDistillation"):
        tfkd.Distiller(teacher, student, [
            keras.distillation.FeatureDistillation(
                teacher_layer_name="conv2", student_layer_name="conv2")])


def test_tfkd_terms_run_inside_keras_distiller():
    """tfkd's terms are DistillationLoss objects: Keras's own distiller
    takes them, and trains a term's adapter (a tracked layer)."""
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    correlation = tfkd.losses.CorrelationDistillation(
        "channel", teacher_layer_name="conv2", student_layer_name="conv2",
        adapter=True)
    distiller = keras.distillation.Distiller(
        teacher, student, [tfkd.losses.KDDistillation(), correlation],
        student_loss_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
    before = [np.array(w) for w in correlation.adapters[0].weights]
    x, y = testing.random_images(16)
    distiller.fit(x, y, epochs=1, verbose=0)
    after = [np.array(w) for w in correlation.adapters[0].weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


# ----------------------------------------------------------------------
# Every distiller: each network runs forward exactly once per step.


def _counted(name, width, seed):
    """`tiny_conv_model`'s layout with a counting layer after the input."""
    inputs = keras.Input((8, 8, 1), name="images")
    counter = testing.CallCounter(name="counter")
    x = counter(inputs)
    for i in (1, 2):
        x = keras.layers.Conv2D(
            width, 3, padding="same", activation="relu", name=f"conv{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed + i))(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        10, name="logits",
        kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    return keras.Model(inputs, outputs, name=name), counter


@pytest.mark.parametrize("case", distiller_params())
def test_each_network_runs_forward_once_per_step(case):
    teacher, t_counter = _counted("teacher", 8, 1)
    student, s_counter = _counted("student", 4, 11)
    distiller = case.build(teacher, student)
    case.compile(distiller)
    x, y = testing.random_images(24, seed=2)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # A second pass anywhere (a term re-running a network, Keras's
    # feature extraction, a discriminator step) would count twice.
    assert float(t_counter.calls) == 3.0
    assert float(s_counter.calls) == 3.0
    distiller.evaluate(x, y, batch_size=12, verbose=0)
    assert float(t_counter.calls) == 5.0
    assert float(s_counter.calls) == 5.0


# ----------------------------------------------------------------------
# Mixed terms.


def test_mixed_terms_report_each_and_sum_with_weights():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    terms = [
        tfkd.losses.KDDistillation(temperature=2.0),
        tfkd.losses.AttentionDistillation(teacher_layer_name="conv1",
                                          student_layer_name="conv1"),
        tfkd.losses.CorrelationDistillation(
            "both", teacher_layer_name="conv2", student_layer_name="conv2",
            adapter=True),
        tfkd.losses.KDDistillation(temperature=8.0),
    ]
    distiller = tfkd.Distiller(teacher, student, terms,
                               distillation_loss_weights=[1.0, 100.0, 2.0,
                                                          0.5],
                               student_loss_weight=0.25)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16)
    r = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    assert set(r) == {"loss", "student_loss", "kd_loss", "attention_loss",
                      "correlation_loss", "kd_2_loss",
                      "distillation_loss", "total_loss"}
    distillation = (
        r["kd_loss"] + 100.0 * r["attention_loss"]
        + 2.0 * r["correlation_loss"] + 0.5 * r["kd_2_loss"])
    # Keras's distiller's two metrics: the weighted sum of the terms and
    # the total.
    assert r["distillation_loss"] == pytest.approx(distillation, rel=1e-5)
    expected = 0.25 * r["student_loss"] + 0.75 * distillation
    assert r["loss"] == pytest.approx(expected, rel=1e-5)
    assert r["total_loss"] == pytest.approx(r["loss"], rel=1e-6)
    kd8 = tfkd.losses.kd_loss(teacher(x), student(x), 8.0)
    assert r["kd_2_loss"] == pytest.approx(float(tf.reduce_mean(kd8)),
                                           rel=1e-5)
    assert distiller.terms["correlation"] is terms[2]
    assert set(distiller.hyperparameters) == {
        "student_loss_weight", "kd/weight", "attention/weight",
        "correlation/weight", "kd_2/weight", "kd/temperature",
        "kd_2/temperature"}


def test_unlabelled_examples_count_in_knowledge_terms_only():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student, alpha=0.5)
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    x, y = testing.random_images(8, seed=3)
    partial = y.copy()
    partial[4:] = -1
    r = distiller.evaluate(x, partial, batch_size=8, return_dict=True,
                           verbose=0)
    ce = keras.losses.sparse_categorical_crossentropy(
        y[:4], student(x[:4]), from_logits=True)
    assert r["student_loss"] == pytest.approx(float(np.mean(ce)), rel=1e-5)
    kd = tfkd.losses.kd_loss(teacher(x), student(x), 4.0)
    assert r["kd_loss"] == pytest.approx(float(np.mean(kd)), rel=1e-5)
    none = distiller.evaluate(x, np.full(8, -1, "int32"), batch_size=8,
                              return_dict=True, verbose=0)
    assert none["student_loss"] == 0.0
    # No example labelled: the knowledge takes the whole weight (the
    # default `unlabelled_weight="whole"`); "share" keeps `1 - w_s`.
    assert none["loss"] == pytest.approx(r["kd_loss"], rel=1e-5)
    share = tfkd.Distiller(teacher, student, alpha=0.5,
                           unlabelled_weight="share")
    share.compile(optimizer="sgd")
    shared = share.evaluate(x, np.full(8, -1, "int32"), batch_size=8,
                            return_dict=True, verbose=0)
    assert shared["loss"] == pytest.approx(0.5 * r["kd_loss"], rel=1e-5)
    history = distiller.fit(x, np.full(8, -1, "int32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("jit", [False, True], ids=["eager_graph", "xla"])
def test_metrics_count_labelled_examples_only(jit):
    # Keras's unweighted `metrics=` ignore sample weights: unlabelled
    # examples used to count as class 0 in "accuracy".
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student, alpha=0.5)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy"],
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(
            name="weighted_accuracy")], jit_compile=jit)
    x, y = testing.random_images(16, seed=4)
    predicted = np.argmax(student.predict(x, verbose=0), axis=-1)
    partial = y.copy()
    partial[5:] = -1
    weights = np.linspace(0.5, 2.0, 16).astype("float32")
    correct = (predicted == y)[:5]
    expected = float(np.mean(correct))
    weighted = float(np.sum(correct * weights[:5]) / np.sum(weights[:5]))
    r = distiller.evaluate(x, partial, sample_weight=weights, batch_size=16,
                           return_dict=True, verbose=0)
    assert r["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert r["weighted_accuracy"] == pytest.approx(weighted, abs=1e-6)
    # The training step too (learning rate 0: the same predictions).
    history = distiller.fit(x, partial, sample_weight=weights,
                            batch_size=16, epochs=1, verbose=0).history
    assert history["accuracy"][0] == pytest.approx(expected, abs=1e-6)
    none = distiller.evaluate(x, np.full(16, -1, "int32"), batch_size=16,
                              return_dict=True, verbose=0)
    # No labelled example: no accuracy (NaN), not Keras's 0.
    assert np.isnan(none["accuracy"])


# ----------------------------------------------------------------------
# Live hyperparameters.


def test_assigned_hyperparameters_take_effect_without_recompiling():
    teacher, student = _pair()
    x, y = testing.random_images(16)
    distiller = tfkd.Distiller(teacher, student, alpha=0.5, temperature=4.0)
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, epochs=1, verbose=0)
    before = distiller.evaluate(x, y, return_dict=True, verbose=0)
    train_function = distiller.test_function
    distiller.temperature = 1.0
    distiller.alpha = 1.0
    after = distiller.evaluate(x, y, return_dict=True, verbose=0)
    assert distiller.test_function is train_function  # no retrace
    expected_kd = tfkd.losses.kd_loss(teacher(x), student(x), 1.0)
    assert after["kd_loss"] == pytest.approx(
        float(tf.reduce_mean(expected_kd)), rel=1e-5)
    assert after["kd_loss"] != pytest.approx(before["kd_loss"], rel=1e-3)
    assert after["loss"] == pytest.approx(after["student_loss"], rel=1e-6)


@pytest.mark.parametrize("target, value, error, match", [
    ("alpha", 5.0, ValueError, r"`alpha` must be in \[0, 1\]. Received: "
                               r"alpha=5.0"),
    ("temperature", 0.0, ValueError, r"`temperature` must be a finite "
                                     r"number > 0. Received: temperature=0"),
    ("temperature", "hot", TypeError, r"`temperature` must be a number"),
    ("student_loss_weight", -0.1, ValueError,
     r"`student_loss_weight` must be in \[0, 1\]"),
])
def test_out_of_range_assignment_raises(target, value, error, match):
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    before = distiller.hyperparameters
    with pytest.raises(error, match=match):
        setattr(distiller, target, value)
    assert distiller.hyperparameters == before


def test_numpy_scalars_are_accepted():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student, alpha=np.float32(0.25),
                               temperature=np.float64(2.0))
    distiller.temperature = np.float32(3.0)
    assert distiller.alpha == 0.25 and distiller.temperature == 3.0


def test_preset_weights_are_derived_and_refuse_direct_assignment():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.CorrelationDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv2",
        adapter=True, alpha=0.3, beta=0.1, stage=None)
    assert distiller.student_loss_weight == pytest.approx(0.03 / 1.1)
    distiller.beta = 1.0
    assert distiller.student_loss_weight == pytest.approx(0.3 / 2.0)
    with pytest.raises(ValueError, match="derives `student_loss_weight` "
                                         "from its paper's hyperparameters"):
        distiller.student_loss_weight = 0.5
    with pytest.raises(ValueError, match="`beta` must be a finite number "
                                         ">= 0. Received: beta=-1.0"):
        distiller.set_hyperparameter("beta", -1.0)
    with pytest.raises(ValueError, match=r"Unknown hyperparameter.*"
                                         r"path='gamma'.*'alpha', 'beta'"):
        distiller.set_hyperparameter("gamma", 1.0)


def test_scheduler_anneals_per_epoch_and_logs():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(distiller.evaluate(
                x, y, return_dict=True, verbose=0)["kd_loss"])

    schedule = HyperparameterScheduler(
        {"kd/temperature": lambda epoch: 8.0 / 2 ** epoch,
         "student_loss_weight": linear_warmup(0.9, 2, start=0.1)})
    history = distiller.fit(x, y, epochs=3, verbose=0,
                            callbacks=[schedule, Record()])
    assert history.history["kd/temperature"] == [8.0, 4.0, 2.0]
    assert history.history["student_loss_weight"] == pytest.approx(
        [0.1, 0.5, 0.9])
    assert distiller.temperature == 2.0
    kd2 = tfkd.losses.kd_loss(teacher(x), student(x), 2.0)
    assert seen[-1] == pytest.approx(float(tf.reduce_mean(kd2)), rel=1e-5)


def test_scheduler_per_step_and_bad_paths():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(32)
    steps = []

    def schedule(step, current):
        steps.append(step)
        return current + 1.0

    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[
        HyperparameterScheduler({"kd/temperature": schedule}, per="step")])
    assert steps == [0, 1, 2, 3]
    assert distiller.temperature == 8.0
    with pytest.raises(ValueError, match=r"Unknown hyperparameter.*"
                                         r"path='kd/tau'"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[
            HyperparameterScheduler({"kd/tau": lambda e: 1.0})])
    with pytest.raises(ValueError, match=r"schedule of 'kd/temperature' "
                                         r"returned -1.0 at epoch 0"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[
            HyperparameterScheduler({"kd/temperature": lambda e: -1.0})])
    # A schedule without a value for some epochs (a missing `return`).
    with pytest.raises(TypeError, match=r"schedule of 'kd/weight' returned "
                                        r"None at epoch 1; a schedule must "
                                        r"return a number"):
        distiller.fit(x, y, epochs=2, verbose=0, callbacks=[
            HyperparameterScheduler(
                {"kd/weight": lambda e: 1.0 if e < 1 else None})])
    with pytest.raises(TypeError, match=r"'kd/temperature' returned 'hot' "
                                        r"at step \d+"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[
            HyperparameterScheduler({"kd/temperature": lambda s: "hot"},
                                    per="step")])


def test_live_hyperparameters_survive_keras_round_trip(tmp_path):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv2")
    distiller.gamma = 0.25
    distiller.temperature = 1.5
    distiller.compile(optimizer="adam")
    path = str(tmp_path / "lp.keras")
    distiller.save(path)
    restored = keras.models.load_model(path)
    assert restored.hyperparameters == {
        "gamma": 0.25, "lam": 2.0, "soft/temperature": 1.5}


# ----------------------------------------------------------------------
# A term that dwarfs the student loss is named at the first step.


def test_first_step_warns_when_a_term_dwarfs_the_student_loss():
    teacher, student = _pair()
    x, y = testing.random_images(16)
    distiller = tfkd.Distiller(
        teacher, student, [tfkd.losses.HintDistillation("conv2", "conv2")],
        distillation_loss_weights=[1e6])
    distiller.compile(optimizer=keras.optimizers.SGD(1e-9))
    with pytest.warns(UserWarning, match=r"the term `hint_loss` adds .* "
                                         r"the student loss's .*lower "
                                         r"`hint/weight`"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    balanced = tfkd.Distiller(teacher, student, alpha=0.5)
    balanced.compile(optimizer="sgd")
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        balanced.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not [w for w in caught if "At the first step" in str(w.message)]


def test_lp_preset_names_its_own_weight():
    teacher, student = _pair()
    distiller = tfkd.LocalityPreservingDistiller(
        teacher, student, teacher_layer_name="conv2",
        student_layer_name="conv2",
        gamma=1e6)
    message = distiller.scale_report(
        {"student_loss": 2.0, "soft_loss": 1.0, "lp_loss": 1.0})
    assert "lp_loss" in message and "lower `gamma`" in message
