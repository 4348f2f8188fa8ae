"""Tests of the recipe building blocks in `tfkd.app.experiment`."""

import numpy as np
import pytest
import tensorflow as tf

from tfkd.app import experiment
from tfkd import testing
from tfkd.app.reporting import ResultsWriter
from tfkd.app.reporting import load_runs


def test_test_accuracy_matches_argmax():
    model = testing.tiny_conv_model("m", seed=0)
    x, y = testing.random_images(40)
    y = np.argmax(model.predict(x, verbose=0), axis=-1).astype("int32")
    y[:10] = (y[:10] + 1) % 10  # 10 of 40 now wrong
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    assert experiment.test_accuracy(model, dataset) == 0.75
    assert experiment.steps_per_epoch(dataset) == 3
    assert experiment.steps_per_epoch(dataset.repeat(), default=7) == 7


def test_record_run_writes_and_prints(tmp_path, capsys):
    model = testing.tiny_conv_model("student", seed=0)
    teacher = testing.tiny_conv_model("teacher", width=16, seed=1)
    experiment.compile_classifier(model, "sgd")
    x, y = testing.random_images(32)
    history = model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y))
    writer = ResultsWriter(str(tmp_path))
    result = experiment.record_run(
        writer, history, label="student", method="kd", dataset="digits",
        seed=3, model=model, teacher=teacher,
        test_data=tf.data.Dataset.from_tensor_slices((x, y)).batch(8),
        seconds=1.5, hyperparameters={"alpha": 0.5},
        validation_is_test=False)
    assert result.student_params == model.count_params()
    assert result.teacher_params == teacher.count_params()
    assert "kd" in capsys.readouterr().out
    [loaded] = load_runs(str(tmp_path))
    assert loaded.method == "kd" and loaded.seed == 3
    assert loaded.hyperparameters == {"alpha": 0.5}


def test_test_accuracy_leaves_the_model_as_it_was():
    """Measuring never recompiles: the user's optimizer object (and its
    state), loss and metrics are the ones they compiled."""
    import keras

    model = testing.tiny_conv_model("m", seed=0)
    optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss="mse")
    x, y = testing.random_images(16)
    model.fit(x, np.eye(10)[y], epochs=1, verbose=0)
    iterations = int(optimizer.iterations)
    loss, compiled_loss = model.loss, model._compile_config
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    accuracy = experiment.test_accuracy(model, dataset)
    assert 0.0 <= accuracy <= 1.0
    assert model.optimizer is optimizer
    assert int(optimizer.iterations) == iterations
    assert model.loss == loss == "mse"
    assert model._compile_config is compiled_loss
    # An uncompiled model stays uncompiled.
    fresh = testing.tiny_conv_model("fresh", seed=0)
    experiment.test_accuracy(fresh, dataset)
    assert not fresh.compiled


def test_test_accuracy_skips_unlabelled_examples():
    model = testing.tiny_conv_model("m", seed=0)
    x, _ = testing.random_images(8)
    y = np.argmax(model.predict(x, verbose=0), axis=-1).astype("int32")
    y[:4] = -1
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    assert experiment.test_accuracy(model, dataset) == 1.0
    assert np.isnan(experiment.test_accuracy(
        model, [(x, np.full(8, -1, "int32"))]))


def test_method_overrides_parse_values_per_method():
    from tfkd.app.experiment import method_overrides

    assert method_overrides(
        ["kd.temperature=1", "kd.alpha=0.7", "vid.soft_target_weight=0",
         "dist.unlabelled_weight=share"], ["kd", "vid", "dist"]) == {
        "kd": {"temperature": 1, "alpha": 0.7},
        "vid": {"soft_target_weight": 0},
        "dist": {"unlabelled_weight": "share"}}
    assert method_overrides([], ["kd"]) == {}


@pytest.mark.parametrize("item, methods, message", [
    ("temperature=1", ["kd"], "METHOD.NAME=VALUE"),
    ("kd.temperature=", ["kd"], "METHOD.NAME=VALUE"),
    ("kd.temperature=1", ["lp"], "does not build"),
    ("kd.beta=1", ["kd"], "takes no argument 'beta'"),
    # KD carries its own logit term: no added soft targets.
    ("kd.soft_target_weight=1", ["kd"], "takes no argument"),
])
def test_method_overrides_refuse_what_no_build_takes(item, methods, message):
    from tfkd.app.experiment import method_overrides

    with pytest.raises(ValueError, match=message) as error:
        method_overrides([item], methods)
    assert repr(item) in str(error.value) or item in str(error.value)
