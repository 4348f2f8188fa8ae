"""One training step's Python: how many tfkd functions it enters, and the
bound terms' unchecked kernels against their checked functions."""

import importlib.util
import os

import keras
import numpy as np

import tfkd
from tfkd import testing

_SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "benchmarks",
                       "step_functions.py")


def _benchmark():
    spec = importlib.util.spec_from_file_location("step_functions", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_kd_attention_step_enters_at_most_30_tfkd_functions():
    """Per-step validators, property layers and graph walks are gone from
    the step: what does not change between steps runs once."""
    functions = _benchmark().step_functions()
    assert len(functions) <= 30, "\n".join(f"{p}:{n}" for p, n in functions)
    names = {name for _, name in functions}
    # Shape and argument checks ran at bind, not in the step.
    assert not names & {"check_rank", "check_same_shape", "check_positive",
                        "check_option", "to_float32", "kd_loss",
                        "attention_transfer_loss", "run_graph"}


def test_bound_terms_compute_their_functions_values():
    teacher = testing.tiny_conv_model("teacher", width=8)
    student = testing.tiny_conv_model("student", width=4)
    kd = tfkd.losses.KDDistillation(temperature=3.0)
    attention = tfkd.losses.AttentionDistillation(
        teacher_layer_name="conv2", student_layer_name="conv2")
    distiller = tfkd.Distiller(teacher, student,
                               distillation_losses=[kd, attention])
    assert kd.shapes_checked and attention.shapes_checked
    x, _ = testing.random_images(8, seed=3)
    values = distiller.compute_terms(x)
    t_logits, s_logits = teacher(x), student(x)
    t_map = distiller._teacher_extractor(x, training=False)["conv2"]
    s_map = distiller._student_extractor(x, training=False)["conv2"]
    np.testing.assert_array_equal(
        values["kd_loss"], tfkd.losses.kd_loss(t_logits, s_logits, 3.0))
    np.testing.assert_array_equal(
        values["attention_loss"],
        tfkd.losses.attention_transfer_loss(t_map, s_map))


def test_eager_and_traced_steps_report_the_same_losses():
    """Hyperparameters read as tensors in an eager step too."""
    logs = []
    for eager in (True, False):
        teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
        student = testing.tiny_conv_model("student", width=4, seed=2)
        distiller = tfkd.Distiller(
            teacher, student,
            distillation_losses=[
                tfkd.losses.KDDistillation(temperature=2.5),
                tfkd.losses.AttentionDistillation(
                    teacher_layer_name="conv2", student_layer_name="conv2")],
            distillation_loss_weights=[0.7, 300.0], student_loss_weight=0.3)
        distiller.compile(optimizer=keras.optimizers.SGD(0.0),
                          run_eagerly=eager)
        x, y = testing.random_images(16, seed=5)
        logs.append(distiller.test_on_batch(x, y, return_dict=True))
    for name in logs[0]:
        np.testing.assert_allclose(logs[0][name], logs[1][name], rtol=1e-6)
