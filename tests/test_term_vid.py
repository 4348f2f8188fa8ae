"""The VID term: its regressor and log-scale belong to the term."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd import testing
from tfkd.distillers import registry
from tfkd.losses import vid_log_scale_for_variance
from tfkd.losses import vid_loss
from tfkd.terms.vid import VariationalInformationDistillation


def test_term_matches_the_loss_and_trains():
    terms = []

    def make():
        terms.append(VariationalInformationDistillation("conv2", "conv2"))
        return terms[-1]

    def reference(t, s):
        term = terms[-1]
        return vid_loss(t, term.regressors[0](s), term.log_scales[0])

    testing.check_term(make, reference=reference)


def test_method_is_registered_with_the_code_weight():
    spec = registry.get("vid")
    assert spec.term is VariationalInformationDistillation
    assert spec.arguments()["weight"] == 1.0
    assert spec.arguments()["init_variance"] == 5.0
    distiller = registry.build(
        "vid", testing.tiny_conv_model("t"), testing.tiny_conv_model("s"),
        feature_layers=("conv2", "conv2"))
    assert distiller.distillation_loss_weights == [1.0]
    assert distiller.student_loss_weight == 0.5


def _pair(student=None):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    return teacher, student or testing.tiny_conv_model("student", width=4,
                                                       seed=11)


def test_regressor_and_log_scale_are_trained_and_not_in_the_student():
    teacher, student = _pair()
    term = VariationalInformationDistillation("conv2", "conv2")
    distiller = tfkd.Distiller(teacher, student, [term])
    parts = term.regressors[0].trainable_weights + [term.log_scales[0]]
    # Three 1×1 convs without bias (4 -> 8 -> 8 -> 8), one scale per
    # teacher channel, initialised to the code's variance 5.
    assert [tuple(w.shape) for w in parts] == [
        (1, 1, 4, 8), (1, 1, 8, 8), (1, 1, 8, 8), (8,)]
    np.testing.assert_allclose(np.array(term.log_scales[0]),
                               vid_log_scale_for_variance(5.0), rtol=1e-6)
    student_ids = {id(w) for w in student.weights}
    assert not any(id(w) in student_ids for w in parts)
    step = {id(v) for v in distiller.step_variables()}
    assert all(id(w) in step for w in parts)
    before = [np.array(w) for w in parts]
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = testing.random_images(32, seed=4)
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(not np.array_equal(b, np.array(w))
               for b, w in zip(before, parts))
    assert student.count_params() == testing.tiny_conv_model(
        "s", width=4).count_params()


def test_hidden_channels_and_initial_variance():
    teacher, student = _pair()
    term = VariationalInformationDistillation(
        "conv2", "conv2", hidden_channels=3, init_variance=1.0)
    tfkd.Distiller(teacher, student, [term])
    assert [tuple(w.shape) for w in term.regressors[0].weights] == [
        (1, 1, 4, 3), (1, 1, 3, 3), (1, 1, 3, 8)]
    variance = np.log1p(np.exp(np.array(term.log_scales[0]))) + 1e-5
    np.testing.assert_allclose(variance, 1.0, rtol=1e-5)
    config = term.get_config()
    assert (config["hidden_channels"], config["init_variance"]) == (3, 1.0)
    clone = VariationalInformationDistillation.from_config(config)
    assert clone.get_config() == config


def _student_with_maps(name="student"):
    """Student taps: `conv2` (8×8), `half` (4×4), `third` (3×3 from 8×8)."""
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            name="conv1")(inputs)
    wide = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                               name="conv2")(x)
    half = keras.layers.MaxPooling2D(2, name="half")(wide)
    third = keras.layers.Conv2D(4, 6, padding="valid", name="third")(wide)
    merged = keras.layers.Concatenate(name="merge")([
        keras.layers.GlobalAveragePooling2D(name="p1")(half),
        keras.layers.GlobalAveragePooling2D(name="p2")(third)])
    outputs = keras.layers.Dense(10, name="logits")(merged)
    return keras.Model(inputs, outputs, name=name)


def test_the_larger_map_is_average_pooled():
    x, y = testing.random_images(4, seed=5)
    # Teacher 8×8, student 4×4: the teacher's map is pooled 2×2.
    teacher, student = _pair(_student_with_maps())
    term = VariationalInformationDistillation("conv2", "half")
    distiller = tfkd.Distiller(teacher, student, [term])
    t = keras.Model(teacher.inputs, teacher.get_layer("conv2").output)(x)
    s = keras.Model(student.inputs, student.get_layer("half").output)(x)
    pooled = keras.layers.AveragePooling2D(2)(t)
    np.testing.assert_allclose(
        distiller.compute_terms(x, y)["vid_loss"].numpy(),
        vid_loss(pooled, term.regressors[0](s), term.log_scales[0]).numpy(),
        rtol=1e-5)
    # Teacher 4×4 (the student's half map), student 8×8: the student's
    # map is pooled inside the regressor.
    teacher2, student2 = _student_with_maps("t2"), _pair()[1]
    term2 = VariationalInformationDistillation("half", "conv2")
    tfkd.Distiller(teacher2, student2, [term2])
    assert isinstance(term2.regressors[0].layers[0],
                      keras.layers.AveragePooling2D)
    assert term2.regressors[0].output_shape == (None, 4, 4, 4)


def test_sizes_that_do_not_divide_are_refused():
    teacher, student = _pair(_student_with_maps())
    with pytest.raises(ValueError, match=r"must divide it exactly.*"
                                         r"\(None, 8, 8, 8\).*'conv2'.*"
                                         r"\(None, 3, 3, 4\).*'third'"):
        tfkd.Distiller(teacher, student,
                       [VariationalInformationDistillation("conv2",
                                                           "third")])


def test_unbound_term_and_bad_arguments():
    term = VariationalInformationDistillation("conv2", "conv2")
    t = np.zeros((2, 4, 4, 3), "float32")
    with pytest.raises(ValueError, match="has not been bound yet"):
        term.compute_loss(t, t)
    with pytest.raises(ValueError, match=r"`variance` must be > 1e-05"):
        VariationalInformationDistillation(init_variance=1e-6)
    with pytest.raises(ValueError, match=r"`hidden_channels` must be an "
                                         r"integer >= 1"):
        VariationalInformationDistillation(hidden_channels=0)
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"needs 4D feature maps.*'pool'"):
        tfkd.Distiller(teacher, student,
                       [VariationalInformationDistillation("pool", "pool")])
