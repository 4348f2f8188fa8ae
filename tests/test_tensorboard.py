"""Each loss term reaches TensorBoard through `keras.callbacks.TensorBoard`.

A `tfkd.Distiller` reports `loss`, `student_loss` and `kd_loss` as metrics, so
the standard callback writes one scalar per term (`epoch_<name>`), for
training and validation; the test reads the event files back.
"""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing


def _scalars(log_dir):
    """`{tag: [values]}` of every scalar in the event files under log_dir."""
    values = {}
    files = glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"),
                      recursive=True)
    assert files, f"no event files under {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor"):
                    number = tf.make_ndarray(value.tensor)
                    if number.ndim:
                        continue  # Not a scalar (e.g. a histogram).
                    number = float(number)
                else:
                    continue
                values.setdefault(value.tag, []).append(float(number))
    return values


def test_each_loss_term_is_a_tensorboard_scalar(tmp_path):
    # TensorFlow 2.21 no longer depends on TensorBoard, whose package
    # implements `tf.summary.scalar`; the `test` extra installs it.
    pytest.importorskip(
        "tensorboard",
        reason="the `tensorboard` package is not installed (pip install "
               "-e '.[test]' installs it)",
    )
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    x, y = testing.random_images(32)
    distiller = tfkd.Distiller(teacher, student, alpha=0.5, temperature=4.0)
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    log_dir = str(tmp_path / "logs")
    history = distiller.fit(
        x, y, batch_size=16, epochs=1, verbose=0, validation_data=(x, y),
        callbacks=[keras.callbacks.TensorBoard(log_dir, write_graph=False)],
    )

    train = _scalars(os.path.join(log_dir, "train"))
    validation = _scalars(os.path.join(log_dir, "validation"))
    for tag in ("epoch_loss", "epoch_student_loss", "epoch_kd_loss",
                "epoch_accuracy"):
        assert tag in train, f"{tag} missing from {sorted(train)}"
        assert tag in validation, f"{tag} missing from {sorted(validation)}"
    # The logged values are the History's values, term by term.
    for name in ("loss", "student_loss", "kd_loss"):
        np.testing.assert_allclose(train[f"epoch_{name}"],
                                   history.history[name], rtol=1e-5)
        np.testing.assert_allclose(validation[f"epoch_{name}"],
                                   history.history[f"val_{name}"], rtol=1e-5)
