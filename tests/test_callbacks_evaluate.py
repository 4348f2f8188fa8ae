"""`tfkd.callbacks.EvaluateAccuracy`: per-epoch held-out accuracy in logs."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.callbacks import EvaluateAccuracy
from tfkd.app.reporting import RunResult


@pytest.fixture(scope="module")
def data():
    return tfkd.data.load_digits(image_size=8, batch_size=64)


def _accuracy(model, dataset):
    correct = total = 0
    for images, labels in dataset:
        predicted = np.argmax(model.predict(images, verbose=0), axis=-1)
        correct += int(np.sum(predicted == labels.numpy()))
        total += len(labels)
    return correct / total


def test_logs_the_students_accuracy_under_a_distiller(data):
    keras.utils.set_random_seed(0)
    teacher = testing.tiny_conv_model("teacher", width=8)
    student = testing.tiny_conv_model("student", width=4)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    callback = EvaluateAccuracy(data.test)
    history = distiller.fit(data.train, epochs=2, verbose=0,
                            callbacks=[callback])
    values = history.history["test_accuracy"]
    assert len(values) == 2
    assert values[-1] == pytest.approx(_accuracy(student, data.test))
    result = RunResult.from_history(history, method="kd", dataset="digits")
    assert result.test_accuracy_last == values[-1]
    assert result.test_accuracy_best == max(values)


def test_explicit_model_cached_batches_and_one_hot_labels(data):
    keras.utils.set_random_seed(0)
    teacher = testing.tiny_conv_model("teacher", width=8)
    student = testing.tiny_conv_model("student", width=4)
    distiller = tfkd.Distiller(teacher, student)
    cached = tfkd.data.cache_teacher_outputs(distiller, data.test,
                                             shuffle=False)
    expected = _accuracy(student, data.test)
    assert EvaluateAccuracy(cached, model=student).accuracy() == \
        pytest.approx(expected)
    one_hot = data.test.map(lambda x, y: (x, keras.ops.one_hot(y, 10)))
    assert EvaluateAccuracy(one_hot, model=student).accuracy() == \
        pytest.approx(expected)


def test_bad_arguments(data):
    with pytest.raises(TypeError, match="`data` must be a `tf.data.Dataset`"):
        EvaluateAccuracy(np.zeros((4, 8, 8, 1)))
    with pytest.raises(TypeError, match="`model` must be None"):
        EvaluateAccuracy(data.test, model="student")
    with pytest.raises(ValueError, match="name=''"):
        EvaluateAccuracy(data.test, name="")
    empty = data.test.take(0)
    with pytest.raises(ValueError, match="empty `data`"):
        EvaluateAccuracy(empty, model=testing.tiny_conv_model("s")).accuracy()
