"""Tests of the base `tfkd.Distiller` (Hinton KD) and its machinery."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import _compat
from tfkd import testing
from tfkd.callbacks import NonFiniteDataError
from tfkd.callbacks import NonFiniteLossError
from tfkd.callbacks import StopOnNonFiniteLoss


def _pair(teacher_width=16, student_width=4, **kwargs):
    teacher = testing.tiny_conv_model("teacher", width=teacher_width,
                                      seed=1, **kwargs)
    student = testing.tiny_conv_model("student", width=student_width,
                                      seed=2, **kwargs)
    return teacher, student


def test_fit_battery_plain_kd():
    teacher, student = _pair()
    x, y = testing.random_images(48)
    testing.run_distiller_test(
        tfkd.Distiller(teacher, student, alpha=0.5, temperature=4.0), x, y,
        expected_metrics=["student_loss", "kd_loss"],
    )


def test_fit_battery_with_taps_and_tf_data():
    teacher, student = _pair()
    distiller = tfkd.Distiller(
        teacher, student, [
            tfkd.losses.KDDistillation(),
            tfkd.losses.AttentionDistillation(
                teacher_layer_name=["conv1", "conv2"],
                student_layer_name=["conv1", "conv2"]),
        ])
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    data = tfkd.data.load_digits(image_size=8, batch_size=64)
    history = distiller.fit(data.train, validation_data=data.validation,
                            epochs=1, verbose=0)
    names = {"loss", "student_loss", "distillation_loss", "total_loss",
             "kd_loss", "attention_loss", "accuracy"}
    assert set(history.history) == names | {f"val_{n}" for n in names}
    results = distiller.evaluate(data.test, return_dict=True, verbose=0)
    assert set(results) == names


def test_total_loss_is_weighted_sum_of_terms():
    teacher, student = _pair()
    x, y = testing.random_images(32)
    distiller = tfkd.Distiller(teacher, student, alpha=0.3, temperature=2.0)
    distiller.compile(optimizer="sgd")
    r = distiller.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    assert r["loss"] == pytest.approx(
        0.3 * r["student_loss"] + 0.7 * r["kd_loss"], rel=1e-5)
    t_logits, s_logits = teacher.predict(x, verbose=0), student.predict(
        x, verbose=0)
    ce = keras.losses.sparse_categorical_crossentropy(y, s_logits,
                                                      from_logits=True)
    assert r["student_loss"] == pytest.approx(float(np.mean(ce)), rel=1e-5)
    kd = tfkd.losses.kd_loss(t_logits, s_logits, temperature=2.0)
    assert r["kd_loss"] == pytest.approx(float(np.mean(kd)), rel=1e-5)


def _counted_model(name, width):
    """A model with a counter at its input and one inside, between the
    tapped layers (a second pass through a tapped prefix counts there
    even if it skipped the input)."""
    inputs = keras.Input((8, 8, 1))
    counter = testing.CallCounter(name="counter")
    inner = testing.CallCounter(name="inner_counter")
    x = counter(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                            name="conv1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(inner(x))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x),
                       name=name), (counter, inner)


@pytest.mark.parametrize("taps", [False, True])
def test_each_network_runs_forward_once_per_step(taps):
    teacher, t_counter = _counted_model("teacher", 8)
    student, s_counter = _counted_model("student", 4)
    terms = [tfkd.losses.KDDistillation()]
    if taps:
        # Three terms tapping overlapping layers: still one pass each.
        terms += [
            tfkd.losses.HintDistillation("conv1", "conv1"),
            tfkd.losses.AttentionDistillation(teacher_layer_name="conv1",
                                              student_layer_name="conv1"),
            tfkd.losses.LocalityPreservingDistillation(
                teacher_layer_name="pool", student_layer_name="pool"),
        ]
    distiller = tfkd.Distiller(teacher, student, terms)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(40)
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for counter in t_counter + s_counter:
        assert float(counter.calls) == 5.0, counter.path
    distiller.evaluate(x, y, batch_size=20, verbose=0)
    for counter in t_counter + s_counter:
        assert float(counter.calls) == 7.0, counter.path


def test_one_hot_labels_and_sample_weights():
    teacher, student = _pair()
    x, y = testing.random_images(32)
    distiller = tfkd.Distiller(teacher, student, alpha=1.0)
    distiller.compile(optimizer="sgd")
    sparse = distiller.evaluate(x, y, return_dict=True, verbose=0)
    one_hot = distiller.evaluate(x, keras.utils.to_categorical(y, 10),
                                 return_dict=True, verbose=0)
    assert one_hot["student_loss"] == pytest.approx(sparse["student_loss"],
                                                  rel=1e-5)
    weights = np.zeros(32, "float32")
    weighted = distiller.evaluate(x, y, sample_weight=weights,
                                  return_dict=True, verbose=0)
    assert weighted["loss"] == pytest.approx(0.0, abs=1e-7)


def test_distiller_owned_variables_exclude_teacher():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    ids = {id(v) for v in distiller.step_variables()}
    assert ids == {id(v) for v in student.trainable_weights}
    assert not teacher.trainable
    assert not distiller.teacher.trainable_weights


def test_config_round_trip():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student, alpha=0.2, temperature=3.0)
    config = distiller.get_config()
    clone = tfkd.Distiller.from_config(config)
    assert clone.alpha == 0.2 and clone.temperature == 3.0
    assert clone.get_config()["student"] == config["student"]
    assert keras.saving.get_registered_name(tfkd.Distiller) == \
        "tfkd>Distiller"


def test_keras_round_trip_resumes_training(tmp_path):
    teacher, student = _pair()
    x, y = testing.random_images(32)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "d.keras")
    distiller.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert restored.optimizer.iterations.numpy() == \
        distiller.optimizer.iterations.numpy()
    distiller.fit(x, y, epochs=1, verbose=0, shuffle=False)
    restored.fit(x, y, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(distiller.student.weights, restored.student.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)


class _Recorder(keras.layers.Layer):
    """Identity on `(16, 10)` logits that keeps the last `slots` batches it
    saw (inside compiled steps too)."""

    def __init__(self, slots=4, **kwargs):
        super().__init__(**kwargs)
        self.slots = slots

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(self.slots, 16, 10),
                                    initializer="zeros", trainable=False,
                                    name="seen")
        self.count = self.add_weight(shape=(), initializer="zeros",
                                     dtype="int32", trainable=False,
                                     name="count")

    def call(self, x):
        slot = tf.math.floormod(self.count, self.slots)
        self.seen.assign(tf.tensor_scatter_nd_update(
            self.seen, [[slot]], tf.cast(x, "float32")[None]))
        self.count.assign_add(1)
        return x


def test_teacher_runs_in_inference_mode():
    # Dropout and batch norm behave differently in training mode: the
    # teacher's outputs must be those of `teacher(x, training=False)` at
    # every step, and its moving statistics must not move.
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    h = keras.layers.Dropout(0.5, name="dropout")(h)
    recorder = _Recorder(name="recorder")
    teacher = keras.Model(
        inputs, recorder(keras.layers.Dense(10, name="logits")(h)),
        name="bn_dropout_teacher")
    bn = teacher.get_layer("bn")
    # Moving statistics away from their initial values, so that batch
    # statistics would differ from them.
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 8).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 8).astype("float32"))
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.Distiller(teacher, student, alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = testing.random_images(32, seed=4)
    expected = [np.array(teacher(x[i:i + 16], training=False))
                for i in (0, 16)]
    before = {w.path: np.array(w) for w in teacher.weights
              if "recorder" not in w.path}
    recorder.count.assign(0)
    # Two epochs, unshuffled: steps 0 and 2 see x[:16], 1 and 3 x[16:].
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert int(recorder.count) == 4
    seen = np.array(recorder.seen)
    for step in range(4):
        np.testing.assert_allclose(seen[step], expected[step % 2],
                                   rtol=1e-5, atol=1e-6,
                                   err_msg=f"step {step}")
    np.testing.assert_array_equal(seen[2], seen[0])
    np.testing.assert_array_equal(seen[3], seen[1])
    for w in teacher.weights:
        if w.path in before:
            np.testing.assert_array_equal(np.array(w), before[w.path],
                                          err_msg=w.path)


def _float32_tolerance(terms, steps):
    """A relative tolerance for quantities that two computations reach
    through different float32 summation orders: a sum of `terms` values is
    within `terms * eps` (relative, of the sum of magnitudes) of any other
    order's, once forward and once backward per step, over `steps` steps
    (rounding differences compound additively at first order)."""
    return 2 * steps * terms * float(np.finfo(np.float32).eps)


def test_mirrored_strategy_matches_single_device():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (set up in conftest)")
    x, y = testing.random_images(64, seed=3)
    results = []
    for strategy in (tf.distribute.get_strategy(),
                     _compat.mirrored_strategy(
                         [d.name for d in devices[:2]])):
        with strategy.scope():
            teacher, student = _pair()
            distiller = tfkd.Distiller(teacher, student, [
                tfkd.losses.KDDistillation(),
                tfkd.losses.AttentionDistillation(
                    teacher_layer_name="conv1", student_layer_name="conv1")],
                distillation_loss_weights=[1.0, 100.0])
            distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0,
                                shuffle=False)
        results.append((history.history,
                        [np.array(w) for w in student.weights]))
    (h1, w1), (h2, w2) = results
    # 32 examples a batch (2 × 16 on the replicas), 4 steps.
    rtol = _float32_tolerance(terms=32, steps=4)
    for name in h1:
        np.testing.assert_allclose(h1[name], h2[name], rtol=rtol,
                                   err_msg=name)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=rtol,
                                   atol=rtol * np.abs(a).max())


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_step(policy):
    keras.mixed_precision.set_dtype_policy(policy)
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student, [
        tfkd.losses.KDDistillation(),
        tfkd.losses.AttentionDistillation(teacher_layer_name="conv1",
                                          student_layer_name="conv1")])
    distiller.compile(optimizer="adam")
    if policy == "mixed_float16":
        assert isinstance(distiller.optimizer,
                          keras.optimizers.LossScaleOptimizer)
    x, y = testing.random_images(32)
    before = [np.array(w) for w in student.trainable_weights]
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values())
    assert student.trainable_weights[0].dtype == "float32"
    assert any(not np.array_equal(b, np.array(a))
               for b, a in zip(before, student.trainable_weights))


def test_jit_compile_step():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam", jit_compile=True)
    x, y = testing.random_images(32)
    history = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _linear(name):
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10)], name=name)


def test_nan_in_data_stops_with_named_term():
    # Linear models: ReLU kernels may map NaN to 0 and hide it.
    teacher, student = _linear("teacher"), _linear("student")
    x, y = testing.random_images(32)
    x[3] = np.nan
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    # Arrays are rejected eagerly; a stream reaches the loss and the guard.
    with pytest.raises(ValueError, match="`x` contains NaN"):
        distiller.fit(x, y, epochs=1, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    # The engine's guard stops the bad batch before the weights ...
    with pytest.raises(NonFiniteDataError, match=r"training batch 0 of "
                                                 r"epoch 0.*example 3"):
        distiller.fit(dataset, epochs=1, verbose=0)
    # ... and without it the callback names the term that went bad.
    distiller.check_finite = False
    with pytest.raises(NonFiniteLossError, match="loss term `.*loss`"):
        distiller.fit(dataset, epochs=1, verbose=0,
                      callbacks=[StopOnNonFiniteLoss()])


def test_predict_is_the_student():
    teacher, student = _pair()
    x, _ = testing.random_images(8)
    distiller = tfkd.Distiller(teacher, student)
    np.testing.assert_allclose(distiller.predict(x, verbose=0),
                               student.predict(x, verbose=0), atol=1e-6)


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, name="conv1")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.out = keras.layers.Dense(10)

    def call(self, x):
        return self.out(self.pool(self.conv(x)))


def test_subclassed_student_without_taps_trains():
    teacher, _ = _pair()
    student = _Subclassed(name="sub")
    student(np.zeros((1, 8, 8, 1), "float32"))
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16)
    distiller.fit(x, y, epochs=1, verbose=0)


# ----------------------------------------------------------------------
# Bad input: each a clear error naming the argument, the value, the fix.

def _bad_cases():
    t, s = _pair()
    return t, s


BAD_CONSTRUCTOR_CASES = [
    ("teacher_not_model",
     lambda t, s: tfkd.Distiller("teacher", s), ValueError,
     r"`teacher` must be a `keras.Model`.*Received: teacher='teacher'"),
    ("student_not_model",
     lambda t, s: tfkd.Distiller(t, 3), ValueError,
     r"`student` must be a `keras.Model`.*Received: student=3"),
    ("same_object",
     lambda t, s: tfkd.Distiller(t, t), ValueError, "same model object"),
    ("temperature_zero",
     lambda t, s: tfkd.Distiller(t, s, temperature=0), ValueError,
     r"`temperature` must be a finite number > 0. Received: temperature=0"),
    ("temperature_negative",
     lambda t, s: tfkd.Distiller(t, s, temperature=-2.0), ValueError,
     "temperature=-2.0"),
    ("temperature_string",
     lambda t, s: tfkd.Distiller(t, s, temperature="4"), TypeError,
     "temperature='4'"),
    ("alpha_above_one",
     lambda t, s: tfkd.Distiller(t, s, alpha=1.5), ValueError,
     r"`alpha` must be in \[0, 1\]. Received: alpha=1.5"),
    ("alpha_negative",
     lambda t, s: tfkd.Distiller(t, s, alpha=-0.1), ValueError,
     "alpha=-0.1"),
    ("unknown_teacher_layer",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.HintDistillation(
         "conv9", "conv1")]), ValueError,
     r"teacher_layer`='conv9'.*Existing layers: \['images', 'conv1', "
     r"'conv2', 'pool', 'logits'\]"),
    ("unknown_student_layer",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.HintDistillation(
         "conv1", "nope")]), ValueError,
     r"student_layer`='nope'.*Existing layers"),
    ("unpaired_layers",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.HintDistillation(
         ["conv1", "conv2"], "conv1")]), ValueError,
     "same length"),
    ("layer_not_string",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.HintDistillation(3, 3)]),
     TypeError, "teacher_layer_name=3"),
    ("taps_on_the_engine",
     lambda t, s: tfkd.Distiller(t, s, teacher_layer_name="conv1"), TypeError,
     r"taps layers through its terms.*teacher_layer_name='conv1'"),
    ("not_a_term",
     lambda t, s: tfkd.Distiller(t, s, ["kd"]), TypeError,
     r"`distillation_losses` must hold.*Received item 0: 'kd'"),
    ("weights_length",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.KDDistillation()],
                                 distillation_loss_weights=[1.0, 2.0]),
     ValueError, r"one weight per term \(1: \['kd'\]\)"),
    ("negative_weight",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.KDDistillation()],
                                 distillation_loss_weights=[-1.0]),
     ValueError, r"distillation_loss_weights\['kd'\]` must be"),
    ("student_loss_weight_above_one",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.KDDistillation()],
                                 student_loss_weight=1.5),
     ValueError, r"`student_loss_weight` must be in \[0, 1\]"),
    ("alpha_with_terms",
     lambda t, s: tfkd.Distiller(t, s, [tfkd.losses.KDDistillation()],
                                 alpha=0.5),
     TypeError, r"`alpha` configures Hinton KD.*student_loss_weight"),
    ("input_shape_mismatch",
     lambda t, s: tfkd.Distiller(
         t, testing.tiny_conv_model("s", input_shape=(16, 16, 1))),
     ValueError, r"same inputs.*\(8, 8, 1\).*\(16, 16, 1\)"),
    ("logit_shape_mismatch",
     lambda t, s: tfkd.Distiller(
         t, testing.tiny_conv_model("s", num_classes=7)),
     ValueError, r"teacher outputs 10 logits and the student 7.*\['kd'\]"),
]


@pytest.mark.parametrize(
    "factory, error, match",
    [case[1:] for case in BAD_CONSTRUCTOR_CASES],
    ids=[case[0] for case in BAD_CONSTRUCTOR_CASES],
)
def test_bad_constructor_arguments(factory, error, match):
    teacher, student = _pair()
    with pytest.raises(error, match=match):
        factory(teacher, student)


def test_subclassed_model_cannot_be_tapped():
    teacher, _ = _pair()
    student = _Subclassed(name="sub")
    student(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="subclassed model.*functional API"):
        tfkd.Distiller(teacher, student, [tfkd.losses.HintDistillation(
            "conv1", "conv1")])


def test_labels_out_of_range():
    teacher, student = _pair()
    x, _ = testing.random_images(16)
    y = np.full((16,), 12, "int32")
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    # Arrays are checked eagerly, naming the received range.
    with pytest.raises(ValueError, match=r"`y`.*\[0, 10\).*\[12, 12\]"):
        distiller.fit(x, y, epochs=1, verbose=0)
    # Streams are checked inside the step.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match=r"`y`.*\[0, 10\).*\[12, 12\]"):
        distiller.fit(dataset, epochs=1, verbose=0)


def test_missing_labels():
    teacher, student = _pair()
    x, _ = testing.random_images(16)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="Distillers need labels"):
        distiller.fit(x, epochs=1, verbose=0)


@pytest.mark.parametrize("empty", ["array", "dataset"])
def test_empty_data(empty):
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    x = np.zeros((0, 8, 8, 1), "float32")
    y = np.zeros((0,), "int32")
    with pytest.raises(ValueError, match="empty|no examples"):
        if empty == "array":
            distiller.fit(x, y, epochs=1, verbose=0)
        else:
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
            distiller.fit(ds, epochs=1, verbose=0)


def test_non_finite_callback_names_term_without_raising():
    callback = StopOnNonFiniteLoss(raise_error=False)
    callback.set_model(keras.Sequential([keras.Input((1,))]))
    callback.on_train_batch_end(0, {"loss": 1.0, "kd_loss": float("inf"),
                                    "accuracy": float("nan")})
    assert "`kd_loss` became inf" in callback.message
    assert callback.model.stop_training


# ----------------------------------------------------------------------
# Teacher-output caching.


def test_cached_teacher_outputs_match_live_training():
    data = tfkd.data.load_digits(image_size=8, batch_size=32, seed=0)
    results = []
    for use_cache in (False, True):
        keras.utils.set_random_seed(0)
        teacher, (t_counter, _) = _counted_model("teacher", 8)
        student = testing.tiny_conv_model("student", width=4, seed=2)
        distiller = tfkd.Distiller(
            teacher, student, [tfkd.losses.KDDistillation(),
                               tfkd.losses.HintDistillation("conv1",
                                                            "conv2")])
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
        train = data.validation  # unshuffled: same order in both runs
        if use_cache:
            train = tfkd.data.cache_teacher_outputs(distiller, train,
                                                    shuffle=False)
            calls_after_cache = float(t_counter.calls)
        history = distiller.fit(train, epochs=2, verbose=0)
        if use_cache:
            # Teacher ran once per batch while caching, never in training.
            assert float(t_counter.calls) == calls_after_cache
        results.append((history.history,
                        [np.array(w) for w in student.weights]))
    (h1, w1), (h2, w2) = results
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-5)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cache_refuses_random_augmentation():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    x, y = testing.random_images(16)
    augmented = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).map(
        lambda a, b: (tf.image.random_flip_left_right(a), b))
    with pytest.raises(ValueError, match="random augmentation"):
        tfkd.data.cache_teacher_outputs(distiller, augmented)


def test_cache_rejects_non_dataset_and_non_distiller():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    with pytest.raises(TypeError, match="dataset="):
        tfkd.data.cache_teacher_outputs(distiller, np.zeros((4, 8, 8, 1)))
    ds = tf.data.Dataset.from_tensor_slices(testing.random_images(8)).batch(4)
    with pytest.raises(TypeError, match="tfkd distiller"):
        tfkd.data.cache_teacher_outputs(teacher, ds)


def test_cache_for_other_taps_is_rejected():
    teacher, student = _pair()
    plain = tfkd.Distiller(teacher, student)
    tapped = tfkd.Distiller(teacher, student, [
        tfkd.losses.KDDistillation(),
        tfkd.losses.HintDistillation("conv1", "conv1")])
    ds = tf.data.Dataset.from_tensor_slices(testing.random_images(8)).batch(4)
    cached = tfkd.data.cache_teacher_outputs(plain, ds, shuffle=False)
    tapped.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="Rebuild the cache"):
        tapped.fit(cached, epochs=1, verbose=0)


@pytest.mark.parametrize("kind", ["tfkd", "keras"])
def test_term_names_are_unique_when_one_is_named_like_a_suffix(kind):
    """Two terms of one kind and a third named like the generated suffix
    (`kd`, `kd`, `kd_2`): three distinct names, each term counted once."""
    teacher, student = _pair()
    x, y = testing.random_images(16)
    if kind == "tfkd":
        terms = [tfkd.terms.KDDistillation(temperature=1.0),
                 tfkd.terms.KDDistillation(temperature=2.0),
                 tfkd.terms.KDDistillation(temperature=4.0, name="kd_2")]
        base = "kd"
    else:
        from keras.distillation import LogitsDistillation

        terms = [LogitsDistillation(temperature=1.0),
                 LogitsDistillation(temperature=2.0),
                 tfkd.terms.KDDistillation(temperature=4.0, name="logits_2")]
        base = "logits"
    distiller = tfkd.Distiller(teacher, student, terms, [1.0, 10.0, 100.0],
                               student_loss_weight=0.5)
    names = list(distiller.terms)
    assert names == [base, f"{base}_3", f"{base}_2"]
    assert [distiller.term(n) for n in names] == terms
    distiller.compile(optimizer="sgd")
    r = distiller.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    values = [r[f"{n}_loss"] for n in names]
    assert len(set(values)) == 3, r
    assert r["loss"] == pytest.approx(
        0.5 * r["student_loss"] + 0.5 * (values[0] + 10 * values[1]
                                         + 100 * values[2]), rel=1e-5)


def _ops_softmax_model(name):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.ops.softmax(x), name=name)


def _lambda_softmax_model(name):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Lambda(tf.nn.softmax)(x),
                       name=name)


def _nested_softmax_flatten_model(name):
    inner_in = keras.Input((8, 8, 1))
    inner = keras.Model(inner_in, keras.layers.Dense(10, activation="softmax")(
        keras.layers.Flatten()(inner_in)), name="classifier")
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, keras.layers.Flatten()(inner(inputs)),
                       name=name)


class _SubclassedSoftmax(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(10)

    def call(self, x):
        return tf.nn.softmax(self.head(self.flatten(x)))


@pytest.mark.parametrize("make", [
    _ops_softmax_model, _lambda_softmax_model, _nested_softmax_flatten_model,
    lambda name: _SubclassedSoftmax(name=name)])
@pytest.mark.parametrize("role", ["teacher", "student"])
@pytest.mark.parametrize("source", ["arrays", "dataset"])
def test_probability_outputs_are_refused_by_their_values(make, role,
                                                         source):
    """A softmax the graph does not show as a layer is caught by the values
    of the first batch, for the teacher and the student, from arrays and
    from a pipeline; nothing trains."""
    teacher, student = _pair()
    model = make(f"probs_{role}")
    model(np.zeros((1, 8, 8, 1), "float32"))
    if role == "teacher":
        teacher = model
    else:
        student = model
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    x, y = testing.random_images(16)
    data = (x, y) if source == "arrays" else (
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8),)
    before = [w.numpy().copy() for w in student.weights]
    with pytest.raises(ValueError, match=rf"The {role} 'probs_{role}' "
                                         r"outputs probabilities, not logits"
                                         r".*every row.*non-negative and "
                                         r"sums to 1.*without its final "
                                         r"softmax"):
        distiller.fit(*data, epochs=1, verbose=0)
    assert all(np.array_equal(a, w.numpy())
               for a, w in zip(before, student.weights))
