"""tfkd's losses inside Keras's own `keras.distillation.Distiller`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfkd import testing
from tfkd.methods.attention import attention_transfer_loss
from tfkd.methods.correlation import correlation_loss
from tfkd.methods.fitnet import hint_loss
from tfkd.losses import AttentionDistillation
from tfkd.losses import CorrelationDistillation
from tfkd.losses import HintDistillation
from tfkd.losses import LocalityPreservingDistillation
from tfkd.methods.lp import locality_preserving_loss

INPUT_SHAPE = (8, 8, 3)


def models(teacher_width=6, student_width=3):
    """Functional conv nets with layers `conv1`, `conv2`, `pool`, `logits`."""
    teacher = testing.tiny_conv_model("teacher", width=teacher_width,
                                      num_classes=4, input_shape=INPUT_SHAPE,
                                      seed=1)
    student = testing.tiny_conv_model("student", width=student_width,
                                      num_classes=4, input_shape=INPUT_SHAPE,
                                      seed=2)
    return teacher, student


TAPS = {"teacher_layer_name": "conv2", "student_layer_name": "conv2"}

def _hint_reference(term):
    return lambda t, s: hint_loss(t, term.regressors[0](s))


def _unit(features):
    """Per-example unit-length flattened features (NumPy, independent of
    tfkd's own normalisation)."""
    flat = np.reshape(np.asarray(features, "float64"),
                      (np.shape(features)[0], -1))
    norm = np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
    return tf.constant(flat / norm, tf.float32)


FIT_CASES = {
    # name: (loss factory, teacher width, student width, XLA train step,
    #        reference(term) -> fn(teacher features, student features))
    "correlation_both": (lambda: CorrelationDistillation(**TAPS), 6, 6, False,
                         lambda term: correlation_loss),
    "correlation_spatial": (
        lambda: CorrelationDistillation(mode="spatial", **TAPS), 6, 3, False,
        lambda term: lambda t, s: correlation_loss(t, s, mode="spatial")),
    "attention": (lambda: AttentionDistillation(**TAPS), 6, 3, False,
                  lambda term: attention_transfer_loss),
    # tfkd's default LP term: unit-length features (`normalize="l2"`).
    "locality": (lambda: LocalityPreservingDistillation(k=3, **TAPS), 6, 3,
                 False, lambda term: lambda t, s: locality_preserving_loss(
                     _unit(t), _unit(s), k=3)),
    "locality_raw": (
        lambda: LocalityPreservingDistillation(k=3, normalize=None, **TAPS),
        6, 3, False,
        lambda term: lambda t, s: locality_preserving_loss(t, s, k=3)),
    "locality_logits_xla": (lambda: LocalityPreservingDistillation(k=3), 6, 3,
                            True, lambda term: lambda t, s:
                            locality_preserving_loss(_unit(t), _unit(s),
                                                     k=3)),
    "hint": (lambda: HintDistillation(**TAPS), 6, 6, False, _hint_reference),
}


def _tapped(model, layer, x):
    if layer is None:
        return model(x)
    return keras.Model(model.inputs, model.get_layer(layer).output)(x)


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_one_fit_step_in_keras_distiller(case):
    make_loss, teacher_width, student_width, jit, reference = \
        FIT_CASES[case]
    teacher, student = models(teacher_width, student_width)
    x, y = testing.random_images(16, input_shape=INPUT_SHAPE, num_classes=4)
    teacher_before = [np.array(w) for w in teacher.weights]
    student_before = [np.array(w) for w in student.weights]
    term = make_loss()
    distiller = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=[term], student_loss_weight=0.5,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    # Keras's distiller computes exactly the tfkd function on the tapped
    # features (the batch mean of its per-example values).
    r = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    t = _tapped(teacher, term.teacher_layer_name, x)
    s = _tapped(student, term.student_layer_name, x)
    expected = float(np.mean(reference(term)(t, s).numpy()))
    assert r["distillation_loss"] == pytest.approx(expected, rel=1e-5)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    distillation = history.history["distillation_loss"][0]
    assert np.isfinite(distillation) and distillation > 0.0
    assert np.isfinite(history.history["total_loss"][0])
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(before, np.array(after))
    assert any(not np.array_equal(b, np.array(a))
               for b, a in zip(student_before, student.weights))


def test_compute_loss_is_batch_mean_of_the_function():
    t = tf.random.stateless_normal((4, 3, 3, 5), seed=(1, 1))
    s = tf.random.stateless_normal((4, 3, 3, 2), seed=(1, 2))
    np.testing.assert_allclose(
        float(CorrelationDistillation(mode="spatial").compute_loss(t, s)),
        np.mean(correlation_loss(t, s, mode="spatial").numpy()), rtol=1e-6)
    np.testing.assert_allclose(
        float(AttentionDistillation(p=1, mode="paper").compute_loss(t, s)),
        np.mean(attention_transfer_loss(t, s, p=1, mode="paper").numpy()),
        rtol=1e-6)
    np.testing.assert_allclose(
        float(LocalityPreservingDistillation(
            k=2, sigma=1.5, normalize=None).compute_loss(t, s)),
        float(locality_preserving_loss(t, s, k=2, sigma=1.5)), rtol=1e-6)
    np.testing.assert_allclose(
        float(LocalityPreservingDistillation(k=2, sigma=1.5).compute_loss(
            t, s)),
        float(locality_preserving_loss(_unit(t), _unit(s), k=2, sigma=1.5)),
        rtol=1e-6)
    assert CorrelationDistillation().compute_loss(t, t).shape == ()


def test_serialization_round_trip():
    for loss in [
        CorrelationDistillation(mode="channel", max_spatial_positions=64,
                                **TAPS),
        AttentionDistillation(p=1.5, mode="paper", **TAPS),
        LocalityPreservingDistillation(k=4, sigma=0.5),
        LocalityPreservingDistillation(k=2, sigma=None, **TAPS),
        HintDistillation(**TAPS),
    ]:
        config = keras.saving.serialize_keras_object(loss)
        assert config["registered_name"].startswith("tfkd>")
        restored = keras.saving.deserialize_keras_object(config)
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
        assert type(loss).from_config(loss.get_config()).get_config() \
            == loss.get_config()


def test_shape_errors_at_construction():
    teacher, student = models(6, 3)
    with pytest.raises(ValueError) as e:
        keras.distillation.Distiller(
            teacher=teacher, student=student,
            distillation_losses=[CorrelationDistillation(mode="channel",
                                                         **TAPS)])
    msg = str(e.value)
    assert "Pass adapter=True" in msg
    assert "(None, 8, 8, 6)" in msg and "(None, 8, 8, 3)" in msg
    with pytest.raises(ValueError, match="Pass regressor=True"):
        keras.distillation.Distiller(
            teacher=teacher, student=student,
            distillation_losses=[HintDistillation(regressor=False, **TAPS)])
    # 8 × 8 positions > 16, and as many channels as positions, so the
    # spatial loss would build the 64 × 64 Gram (with 6 and 3 channels
    # `correlation_loss` needs only 6 × 3 products and accepts the maps).
    wide_teacher, wide_student = models(64, 64)
    with pytest.raises(ValueError, match="max_spatial_positions=16"):
        keras.distillation.Distiller(
            teacher=wide_teacher, student=wide_student,
            distillation_losses=[CorrelationDistillation(
                mode="spatial", max_spatial_positions=16, **TAPS)])
    with pytest.raises(ValueError, match="'conv9' in the student model"):
        keras.distillation.Distiller(
            teacher=teacher, student=student,
            distillation_losses=[AttentionDistillation(
                teacher_layer_name="conv2", student_layer_name="conv9")])


def test_bad_arguments():
    with pytest.raises(ValueError, match="teacher_layer_name.*neither"):
        AttentionDistillation(student_layer_name="conv2")
    with pytest.raises(TypeError, match="teacher_layer_name"):
        HintDistillation(teacher_layer_name=3, student_layer_name="conv2")
    with pytest.raises(ValueError, match="Received: mode='gram'"):
        CorrelationDistillation(mode="gram")
    with pytest.raises(ValueError, match="`p`"):
        AttentionDistillation(p=0)
    with pytest.raises(ValueError, match="`k`"):
        LocalityPreservingDistillation(k=0)
    with pytest.raises(ValueError, match="`sigma`"):
        LocalityPreservingDistillation(sigma=-1.0)
