"""Real-world teachers and students, and faults (issue 17), in the engine.

- Logits always: a teacher or student ending in a softmax is read before
  it (one warning), or refused when the softmax cannot be reached.
- Taps inside nested models (`"backbone/conv2"`), in the same single pass
  per network, without side effects on the user's layers.
- Any Keras model as a student for logits-only methods, subclassed and
  never built included.
- Non-finite data and weights: the finite guard stops a bad batch before
  the weights, in eager graphs, under XLA and under `tf.distribute`.
"""

import os
import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import _compat
from tfkd import layers
from tfkd import testing
from tfkd.callbacks import NonFiniteDataError
from tfkd.callbacks import NonFiniteLossError
from tfkd.callbacks import StopOnNonFiniteLoss

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs")


def _init(seed):
    return keras.initializers.GlorotUniform(seed)


def _classifier(name, ending=None, seed=3, width=4):
    """A small conv classifier whose head is `Dense(10)` plus `ending`:
    `None` (logits), `"dense"` (`Dense(10, activation="softmax")`),
    `"activation"` (`Activation("softmax")`) or `"softmax"` (a `Softmax`
    layer). The same seed gives the same weights whatever the ending."""
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                            name="conv1", kernel_initializer=_init(seed))(
                                inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    activation = "softmax" if ending == "dense" else None
    x = keras.layers.Dense(10, activation=activation, name="head",
                           kernel_initializer=_init(seed + 1))(x)
    if ending == "activation":
        x = keras.layers.Activation("softmax", name="probabilities")(x)
    elif ending == "softmax":
        x = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, x, name=name)


def _softmax_warnings(caught):
    return [w for w in caught if "ends in a softmax" in str(w.message)]


# ----------------------------------------------------------------------
# Logits, always.


@pytest.mark.parametrize("ending, layer", [("dense", "head"),
                                           ("activation", "probabilities"),
                                           ("softmax", "probabilities")])
def test_softmax_teacher_is_distilled_on_its_logits(ending, layer):
    student = testing.tiny_conv_model("student", width=4, seed=2)
    x, y = testing.random_images(16, seed=1)
    reference = tfkd.Distiller(_classifier("teacher"), student)
    reference.compile(optimizer="sgd")
    expected = reference.evaluate(x, y, return_dict=True, verbose=0)
    teacher = _classifier("teacher", ending)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller = tfkd.Distiller(teacher, student)
        distiller.compile(optimizer="sgd")
        got = distiller.evaluate(x, y, return_dict=True, verbose=0)
        distiller.fit(x, y, epochs=1, verbose=0)
    found = _softmax_warnings(caught)
    assert len(found) == 1, [str(w.message) for w in caught]
    message = str(found[0].message)
    assert "\n" not in message
    assert f"teacher 'teacher'" in message and f"layer {layer!r}" in message
    # KD on the probabilities (as logits) would be far smaller; on the
    # true logits it is the reference's.
    assert got["kd_loss"] == pytest.approx(expected["kd_loss"], rel=1e-5)
    # The teacher itself still outputs probabilities.
    np.testing.assert_allclose(np.sum(teacher.predict(x, verbose=0), -1), 1.0,
                               rtol=1e-5)


def test_softmax_student_trains_on_logits_and_stays_unchanged():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    x, y = testing.random_images(16, seed=2)
    results = []
    for ending in (None, "dense"):
        student = _classifier("student", ending, seed=5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            distiller = tfkd.Distiller(teacher, student, alpha=0.4)
        assert len(_softmax_warnings(caught)) == (1 if ending else 0)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0,
                                shuffle=False)
        results.append((history.history, [np.array(w)
                                          for w in student.weights]))
        if ending:
            # `predict`, `distiller.student` and its export keep the softmax.
            probabilities = distiller.predict(x, verbose=0)
            np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
            assert student.get_layer("head").activation is \
                keras.activations.softmax
    (h1, w1), (h2, w2) = results
    for name in h1:  # student loss and KD computed on the same logits
        np.testing.assert_allclose(h1[name], h2[name], rtol=1e-5)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_softmax_inside_a_nested_model_is_unwrapped():
    inner = _classifier("classifier", "activation")
    inputs = keras.Input((8, 8, 1))
    teacher = keras.Model(inputs, inner(inputs), name="wrapper")
    student = testing.tiny_conv_model("student", width=4, seed=2)
    with pytest.warns(UserWarning, match=r"teacher 'wrapper' ends in a "
                                         r"softmax \(layer "
                                         r"'classifier/probabilities'\)"):
        distiller = tfkd.Distiller(teacher, student)
    reference = tfkd.Distiller(_classifier("teacher"), student)
    x, _ = testing.random_images(8)
    np.testing.assert_allclose(
        np.array(distiller.compute_terms(x)["kd_loss"]),
        np.array(reference.compute_terms(x)["kd_loss"]), rtol=1e-5)


def test_tapping_the_final_softmax_layer_reads_probabilities():
    teacher = _classifier("teacher", "dense")
    student = testing.tiny_conv_model("student", width=4, seed=2)
    with pytest.warns(UserWarning, match="ends in a softmax"):
        distiller = tfkd.Distiller(teacher, student, [
            tfkd.losses.KDDistillation(),
            keras.distillation.FeatureDistillation(
                teacher_layer_name="head", student_layer_name="logits")])
    x, _ = testing.random_images(4)
    logits, (tapped,) = distiller.teacher_forward(x)
    np.testing.assert_allclose(np.array(tapped), teacher.predict(x, verbose=0),
                               atol=1e-6)
    np.testing.assert_allclose(np.array(tf.nn.softmax(logits)),
                               np.array(tapped), atol=1e-6)


class _SoftmaxDense(keras.layers.Layer):
    """A custom layer with a softmax `activation` tfkd cannot drop."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get("softmax")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x):
        return self.activation(x @ self.kernel)


def _unreachable_softmax(kind):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    if kind == "custom_layer":
        x = _SoftmaxDense(10, name="custom")(x)
    elif kind == "reshaped":
        x = keras.layers.Dense(10, activation="softmax", name="dense")(x)
        x = keras.layers.Reshape((10,), name="reshape")(x)
    else:  # a softmax over the wrong axis
        x = keras.layers.Dense(20)(x)
        x = keras.layers.Reshape((2, 10))(x)
        x = keras.layers.Softmax(axis=1, name="over_axis_1")(x)
    return keras.Model(inputs, x, name=f"teacher_{kind}")


@pytest.mark.parametrize("kind, pattern", [
    ("custom_layer", r"layer 'custom' is a _SoftmaxDense with `activation="
                     r"'softmax'`"),
    ("reshaped", r"layer 'dense' is a softmax followed by layer 'reshape'"),
    ("axis", r"layer 'over_axis_1' is a softmax over axis 1"),
])
def test_unreachable_softmax_is_refused(kind, pattern):
    student = testing.tiny_conv_model("student", width=4)
    with pytest.raises(ValueError) as info:
        tfkd.Distiller(_unreachable_softmax(kind), student)
    message = str(info.value)
    assert re.search(fr"teacher 'teacher_{kind}' ends in a softmax that tfkd "
                     fr"cannot unwrap: {pattern}", message), message
    assert "classifier_activation=None" in message and "\n" not in message


# ----------------------------------------------------------------------
# Taps inside nested models.


def _backbone(name="backbone", input_shape=(8, 8, 1), width=8, seed=1,
              self_taught=False):
    inputs = keras.Input(input_shape)
    counter = testing.CallCounter(name="counter")
    x = counter(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv1",
                            kernel_initializer=_init(seed))(x)
    x = keras.layers.ReLU(name="relu1")(x)
    if self_taught:
        x = layers.SelfTaughtConv2D(width // 2, width // 2, 3,
                                    padding="same", name="conv2")(x)
    else:
        x = keras.layers.Conv2D(width, 3, padding="same", name="conv2",
                                kernel_initializer=_init(seed + 1))(x)
    x = keras.layers.ReLU(name="relu2")(x)
    return keras.Model(inputs, x, name=name), counter


def _wrapped(name, backbone, outer=False):
    """`keras.Model(inp, head(backbone(inp)))`, as applications are used;
    with `outer`, wrapped once more (a path of depth 3)."""
    inputs = keras.Input((8, 8, 1), name="images")
    x = backbone(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(10, name="logits",
                           kernel_initializer=_init(9))(x)
    model = keras.Model(inputs, x, name=name)
    if outer:
        inputs = keras.Input((8, 8, 1), name="images")
        model = keras.Model(inputs, model(inputs), name=f"{name}_outer")
    return model


def test_nested_taps_in_one_pass_per_network():
    backbone, t_counter = _backbone(width=8)
    teacher = _wrapped("teacher", backbone, outer=True)
    s_backbone, s_counter = _backbone("s_backbone", width=4, seed=5)
    student = _wrapped("student", s_backbone)
    distiller = tfkd.Distiller(teacher, student, [
        tfkd.losses.KDDistillation(),
        tfkd.losses.AttentionDistillation(
            teacher_layer_name=["teacher/backbone/relu1",
                                "teacher/backbone/relu2"],
            student_layer_name=["s_backbone/relu1", "s_backbone/relu2"]),
    ])
    # The tapped values are the nested layers' outputs.
    x, y = testing.random_images(16, seed=3)
    _, (relu1, relu2) = distiller.teacher_forward(x)
    view = keras.Model(backbone.inputs, [backbone.get_layer("relu1").output,
                                         backbone.get_layer("relu2").output])
    for got, expected in zip((relu1, relu2), view(x)):
        np.testing.assert_allclose(np.array(got), np.array(expected),
                                   atol=1e-6)
    distiller.compile(optimizer="sgd")
    for counter in (t_counter, s_counter):
        counter.calls.assign(0.0)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # Two steps: each network ran forward exactly twice.
    assert float(t_counter.calls.numpy()) == 2.0
    assert float(s_counter.calls.numpy()) == 2.0


def test_nested_tap_leaves_the_users_layers_untouched():
    backbone, _ = _backbone()
    teacher = _wrapped("teacher", backbone)
    nodes = {layer.name: len(_compat.inbound_nodes(layer))
             for layer in backbone.layers}
    tfkd.Distiller(teacher, testing.tiny_conv_model("student", width=4), [
        tfkd.losses.KDDistillation(),
        tfkd.losses.AttentionDistillation(
            teacher_layer_name="backbone/relu2", student_layer_name="conv2")])
    assert nodes == {layer.name: len(_compat.inbound_nodes(layer))
                     for layer in backbone.layers}
    assert tuple(backbone.get_layer("relu2").output.shape) == (None, 8, 8, 8)
    assert tuple(teacher.get_layer("backbone").output.shape) == (None, 8, 8, 8)


def test_nested_tap_shapes_come_from_the_network_not_the_backbone():
    # A backbone built for any image size: its own graph says (None, None,
    # None, 8); fed 8×8 images it gives 8×8 maps, which attention needs.
    backbone, _ = _backbone(input_shape=(None, None, 1))
    teacher = _wrapped("teacher", backbone)
    distiller = tfkd.Distiller(
        teacher, testing.tiny_conv_model("student", width=4), [
            tfkd.losses.KDDistillation(),
            tfkd.losses.AttentionDistillation(
                teacher_layer_name="backbone/relu2",
                student_layer_name="conv2")])
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(8)
    history = distiller.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["attention_loss"][0])


class _ContextDropout(keras.layers.Layer):
    """Dropout whose `call` takes no `training`: it reads Keras's call
    context, which `model(x, training=True)` sets."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dropout = keras.layers.Dropout(0.5, seed=1)

    def call(self, x):
        return self.dropout(x)


def test_taps_run_in_the_networks_call_context():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                            bias_initializer="ones", name="conv1")(inputs)
    x = _ContextDropout(name="drop")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    student = keras.Model(inputs, keras.layers.Dense(10)(x), name="student")
    distiller = tfkd.Distiller(
        testing.tiny_conv_model("teacher", width=4), student, [
            tfkd.losses.KDDistillation(),
            tfkd.losses.AttentionDistillation(teacher_layer_name="conv1",
                                              student_layer_name="drop")])
    x, _ = testing.random_images(4)
    _, (training,) = distiller.student_forward(x, training=True)
    _, (inference,) = distiller.student_forward(x, training=False)
    conv = keras.Model(student.inputs, student.get_layer("conv1").output)
    np.testing.assert_allclose(np.array(inference), np.array(conv(x)),
                               atol=1e-6)
    zeros = np.mean(np.array(inference) == 0)
    assert np.mean(np.array(training) == 0) > zeros + 0.25  # dropped out
    # The network's own input checks apply to the fused pass too.
    with pytest.raises(ValueError, match=r"expected shape=\(None, 8, 8, 1\)"
                                         r".*found shape=\(4, 9, 9"):
        distiller.student_forward(np.zeros((4, 9, 9, 1), "float32"), True)


def test_missing_nested_layer_lists_nested_names():
    teacher = _wrapped("teacher", _backbone()[0])
    with pytest.raises(ValueError) as info:
        tfkd.Distiller(teacher, testing.tiny_conv_model("student"), [
            tfkd.losses.HintDistillation(teacher_layer_name="backbone/nope",
                                         student_layer_name="conv1")])
    message = str(info.value)
    assert "`teacher_layer`='backbone/nope'" in message
    assert "no layer 'nope' in nested model 'backbone'" in message
    assert "'backbone', 'backbone/input_layer" in message
    assert "'backbone/relu2'" in message


def test_guided_channels_found_inside_a_nested_student():
    s_backbone, _ = _backbone("s_backbone", width=8, self_taught=True)
    student = _wrapped("student", s_backbone)
    term = tfkd.losses.CorrelationDistillation(
        "channel", teacher_layer_name="conv2",
        student_layer_name="s_backbone/relu2")
    tfkd.Distiller(testing.tiny_conv_model("teacher", width=4), student,
                   [tfkd.losses.KDDistillation(), term])
    assert term.guided_channels == [4]


def test_keras_applications_example_of_the_tutorial():
    """The `keras.applications` example of docs/tutorials/own-model.md
    (a `py` block: not run by the docs test, to keep it fast) runs."""
    with open(os.path.join(DOCS, "tutorials", "own-model.md"),
              encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    namespace = {"__name__": "tutorial"}
    with pytest.warns(UserWarning, match=r"teacher 'MobileNetV3Small' ends "
                                         r"in a softmax \(layer "
                                         r"'predictions'\)"):
        exec(compile(blocks[0], "own-model.md", "exec"), namespace)
    history = namespace["history"].history
    assert {"kd_loss", "attention_loss"} <= set(history)
    assert all(np.isfinite(v[0]) for v in history.values())


# ----------------------------------------------------------------------
# Any Keras model as the student of a logits-only method.


@keras.saving.register_keras_serializable(package="tfkd_tests")
class _LazyStudent(keras.Model):
    """A subclassed student, never built before the distiller trains it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, name="conv1")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(10)

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_unbuilt_subclassed_student_fits_evaluates_predicts_and_saves(
        tmp_path):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = _LazyStudent(name="lazy")
    assert not student.built
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    x, y = testing.random_images(32, seed=2)
    history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    results = distiller.evaluate(x, y, return_dict=True, verbose=0)
    assert set(results) == {"loss", "student_loss", "kd_loss",
                            "distillation_loss", "total_loss"}
    predicted = distiller.predict(x, verbose=0)
    np.testing.assert_allclose(predicted, student.predict(x, verbose=0),
                               atol=1e-6)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored.predict(x, verbose=0), predicted,
                               atol=1e-6)
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)


# ----------------------------------------------------------------------
# Non-finite data and weights.


def _nan_stream(bad_batch=1, bad_example=2, batch=8, batches=3, seed=0):
    x, y = testing.random_images(batch * batches, seed=seed)
    x[bad_batch * batch + bad_example, 2, 3, 0] = np.nan
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _weights(model):
    return [np.array(w) for w in model.weights]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_nan_batch_stops_fit_before_the_weights(jit_compile, tmp_path):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      jit_compile=jit_compile)
    # The reference: the one good batch before the bad one.
    good = _nan_stream().take(1)
    expected = tfkd.Distiller(
        testing.tiny_conv_model("teacher", width=8, seed=1),
        testing.tiny_conv_model("student", width=4, seed=2))
    expected.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    expected.fit(good, epochs=1, verbose=0)
    checkpoint = str(tmp_path / "student.weights.h5")
    with pytest.raises(NonFiniteDataError) as info:
        distiller.fit(_nan_stream(), epochs=2, verbose=0, callbacks=[
            keras.callbacks.ModelCheckpoint(checkpoint,
                                            save_weights_only=True)])
    message = str(info.value)
    assert re.search(r"NaN or Inf in the images of training batch 1 of "
                     r"epoch 0 \(optimizer step 1; .*\), first in example 2 "
                     r"of the batch\. The step stopped before changing any "
                     r"weight", message), message
    assert "check_finite = False" in message and "\n" not in message
    assert not os.path.exists(checkpoint)
    for got, want in zip(_weights(student), _weights(expected.student)):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_nan_batch_under_mirrored_strategy():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (set up in conftest)")
    strategy = _compat.mirrored_strategy([d.name for d in devices[:2]])
    with strategy.scope():
        student = testing.tiny_conv_model("student", width=4, seed=2)
        distiller = tfkd.Distiller(
            testing.tiny_conv_model("teacher", width=8, seed=1), student)
        distiller.compile(optimizer="sgd")
    before = _weights(student)
    # Example 6 of the first batch: on the second replica's half.
    with pytest.raises(NonFiniteDataError,
                       match=r"training batch 0 of epoch 0 .*first in "
                             r"example 6 of the batch"):
        distiller.fit(_nan_stream(bad_batch=0, bad_example=6), epochs=1,
                      verbose=0)
    for got, want in zip(_weights(student), before):
        np.testing.assert_array_equal(got, want)


def test_non_finite_gradients_stop_before_the_weights():
    # NaN sample weights: finite images, a NaN loss and NaN gradients.
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.Distiller(
        testing.tiny_conv_model("teacher", width=8, seed=1), student)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16)
    weights = np.ones(16, "float32")
    weights[11] = np.nan
    before = _weights(student)
    with pytest.raises(NonFiniteDataError,
                       match=r"Non-finite gradients at training batch 1 of "
                             r"epoch 0 .*although the images are finite; "
                             r"non-finite loss terms: `loss`, "
                             r"`student_loss`"):
        distiller.fit(x, y, sample_weight=weights, batch_size=8,
                      shuffle=False, epochs=1, verbose=0)
    # Batch 0 was applied; the bad batch 1 was not: no weight is NaN.
    assert all(np.isfinite(w).all() for w in _weights(student))
    assert any(not np.array_equal(a, b)
               for a, b in zip(before, _weights(student)))


def test_check_finite_switch_retraces_and_lets_data_through():
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.Distiller(
        testing.tiny_conv_model("teacher", width=8, seed=1), student)
    distiller.compile(optimizer="sgd")
    assert distiller.check_finite is True
    distiller.fit(_nan_stream().take(1), epochs=1, verbose=0)
    assert distiller.train_function is not None
    distiller.check_finite = False
    assert distiller.train_function is None
    distiller.fit(_nan_stream(bad_batch=0), epochs=1, verbose=0)
    with pytest.raises(TypeError, match=r"`check_finite`.*check_finite=1"):
        distiller.check_finite = 1


def test_stop_on_non_finite_loss_names_the_first_bad_weight():
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.Distiller(
        testing.tiny_conv_model("teacher", width=8, seed=1), student)
    callback = StopOnNonFiniteLoss()
    callback.set_model(distiller)
    callback.on_train_begin()
    callback.on_epoch_end(0)  # finite: nothing happens
    kernel = student.get_layer("conv2").kernel
    value = np.array(kernel)
    value[0, 0, 0, 1] = np.inf
    kernel.assign(value)
    with pytest.raises(NonFiniteLossError,
                       match=r"the student's weight `conv2/kernel` "
                             r"holds inf after epoch 3\. Do not save"):
        callback.on_epoch_end(3)
    quiet = StopOnNonFiniteLoss(raise_error=False)
    quiet.set_model(distiller)
    quiet.on_train_begin()
    quiet.on_train_end()
    assert "when training ended" in quiet.message
    assert distiller.stop_training


class _ZeroNonFinite(keras.layers.Layer):
    """Zeroes non-finite activations: the forward pass (and so the loss)
    stays finite, while the kernel that multiplied a NaN pixel gets a NaN
    gradient (`0 · NaN`)."""

    def call(self, x):
        return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


def _nan_blind_model(name, width, seed):
    # Not `tiny_conv_model`: whether its fused conv + ReLU maps NaN to 0
    # or keeps it depends on the CPU's kernels (AVX-512 vs AVX2 builds of
    # oneDNN differ), and with it whether the loss stays finite.
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU()(_ZeroNonFinite()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x),
                       name=name)


def test_nan_weights_from_unguarded_nan_data_are_caught():
    """Without the guard, a NaN image reaches the kernels while the loss
    stays finite; the callback names the first non-finite weight at the
    epoch's end."""
    student = _nan_blind_model("student", width=4, seed=2)
    distiller = tfkd.Distiller(_nan_blind_model("teacher", 8, seed=1),
                               student)
    distiller.compile(optimizer="sgd")
    distiller.check_finite = False
    losses = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    with pytest.raises(NonFiniteLossError,
                       match=r"weight `conv1/kernel` holds nan after epoch "
                             r"0"):
        distiller.fit(_nan_stream(bad_batch=2), epochs=1, verbose=0,
                      callbacks=[record, StopOnNonFiniteLoss()])
    # The premise: the loss of the NaN batch was finite, only the weights
    # were not.
    assert len(losses) == 3 and np.all(np.isfinite(losses)), losses
    assert np.isnan(np.array(student.get_layer("conv1").kernel)).any()
