"""Bad input across the public API gives one clear error.

Table-driven: each case is `(callable, expected error type, regex)`; the
regex must find the argument's name and the value received (or, for a
missing file, the path), so the message tells the user what to fix. The
command line is checked separately: a user error exits with code 2 and one
line on stderr, without a traceback.
"""

import functools
import os
import re
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import data
from tfkd import export
from tfkd import layers
from tfkd import losses
from tfkd import models
from tfkd import testing
from tfkd import tuning
from tfkd.callbacks import NonFiniteDataError
from tfkd.callbacks import NonFiniteLossError
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.distillers import registry
from tfkd.layers import FeatureAdapter

_TMP = tempfile.mkdtemp(prefix="tfkd_bad_input_")

LOGITS = np.zeros((4, 10), "float32")
LOGITS_5 = np.zeros((4, 5), "float32")
FEATURES = np.random.default_rng(0).random((2, 4, 4, 8), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _pair():
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    return teacher, student


def _teacher():
    return _pair()[0]


def _student():
    return _pair()[1]


@functools.lru_cache(maxsize=None)
def _images():
    return testing.random_images(8)


def _fit_kd(x, y, *, teacher=None, student=None, check_finite=True,
            **kwargs):
    distiller = tfkd.Distiller(teacher or _teacher(), student or _student())
    distiller.check_finite = check_finite
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, verbose=0, **kwargs)


def _stream(x, y, signature=None):
    """`(x, y)` batches of 4, with static shapes unless `signature` (a
    generator's output signature) hides some."""
    if signature is None:
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    return tf.data.Dataset.from_generator(
        lambda: ((x[i:i + 4], y[i:i + 4]) for i in range(0, len(x), 4)),
        output_signature=signature)


def _one_hot(width):
    return np.eye(width, dtype="float32")[np.arange(8) % width]


class _TwoOutputs(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(10)

    def call(self, x):
        logits = self.head(self.pool(x))
        return logits, tf.nn.softmax(logits)


class _FlatTeacher(keras.Model):
    """A subclassed teacher whose weights fix its input size."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(10)

    def call(self, x):
        return self.head(self.flatten(x))


class _AnySizeStudent(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(10)

    def call(self, x):
        return self.head(self.pool(x))


def _flat_teacher():
    teacher = _FlatTeacher(name="flat_teacher")
    teacher(np.zeros((1, 8, 8, 1), "float32"))
    return teacher


def _two_output_teacher():
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, [logits, keras.layers.Softmax()(logits)],
                       name="two_heads")


def _reshaped_softmax_teacher():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, keras.layers.Reshape((10,), name="flat")(x),
                       name="reshaped")


def _nested_teacher(inner):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D()(inner(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="wrapper")


def _backbone():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    return keras.Model(inputs, x, name="backbone")


class _SubclassedBackbone(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv1")

    def call(self, x):
        return self.conv(x)


def _fitnet(**kwargs):
    return tfkd.FitNetDistiller(*_pair(), teacher_layer_name="conv1",
                                student_layer_name="conv1", **kwargs)


def _adversarial(**kwargs):
    options = dict(teacher_layer_name="conv2", student_layer_name="conv2",
                   discriminator_width=4)
    options.update(kwargs)
    return tfkd.AdversarialDistiller(*_pair(), **options)


def _hypermodel(**kwargs):
    return tuning.DistillerHyperModel(*_pair(), **kwargs)


def _truncated_keras_file():
    path = os.path.join(_TMP, "truncated.keras")
    _student().save(path)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])
    return path


@functools.lru_cache(maxsize=None)
def _tflite_bytes():
    path = os.path.join(_TMP, "good.tflite")
    export.to_tflite(_student(), path, verify=False, latency_runs=0)
    with open(path, "rb") as f:
        return f.read()


def _bad_tflite(name):
    """A damaged `.tflite`: cut in half, garbage, empty, or a `.keras`."""
    if name == "truncated":
        data = _tflite_bytes()[: len(_tflite_bytes()) // 2]
    elif name == "garbage":
        data = b"not a model" * 100
    elif name == "empty":
        data = b""
    else:
        with open(_truncated_keras_file(), "rb") as f:
            data = f.read()
    path = os.path.join(_TMP, f"{name}.tflite")
    with open(path, "wb") as f:
        f.write(data)
    return path


def case(name, fn, error, pattern, marks=()):
    return pytest.param(fn, error, pattern, id=name, marks=marks)


CASES = [
    # ---------------------------------------------------------------- losses
    case("kd_loss_temperature_zero",
         lambda: losses.kd_loss(LOGITS, LOGITS, temperature=0),
         ValueError, r"`temperature`.*temperature=0"),
    case("kd_loss_temperature_string",
         lambda: losses.kd_loss(LOGITS, LOGITS, temperature="hot"),
         TypeError, r"`temperature`.*temperature='hot'"),
    case("kd_loss_temperature_nan",
         lambda: losses.kd_loss(LOGITS, LOGITS, temperature=float("nan")),
         ValueError, r"`temperature`.*temperature=nan"),
    case("kd_loss_shape_mismatch",
         lambda: losses.kd_loss(LOGITS, LOGITS_5),
         ValueError, r"`teacher_logits`.*`student_logits`.*\(4, 10\).*"
                     r"\(4, 5\)"),
    case("kd_loss_none", lambda: losses.kd_loss(None, LOGITS),
         TypeError, r"`teacher_logits`.*teacher_logits=None"),
    case("kd_loss_string_tensor", lambda: losses.kd_loss("abc", LOGITS),
         TypeError, r"`teacher_logits`.*dtype string"),
    case("soft_cross_entropy_negative_temperature",
         lambda: losses.soft_cross_entropy(LOGITS, LOGITS, temperature=-1),
         ValueError, r"`temperature`.*temperature=-1"),
    case("class_loss_alpha_above_one",
         lambda: losses.class_loss(np.zeros(4, "int32"), LOGITS, LOGITS,
                                   alpha=1.5),
         ValueError, r"`alpha`.*alpha=1\.5"),
    case("cross_entropy_label_rank",
         lambda: losses.cross_entropy(np.zeros((4, 3, 2)), LOGITS),
         ValueError, r"labels\.shape=\(4, 3, 2\)"),
    case("KDLoss_temperature", lambda: losses.KDLoss(temperature=-1),
         ValueError, r"`temperature`.*temperature=-1"),
    case("correlation_mode",
         lambda: losses.correlation_loss(FEATURES, FEATURES, mode="diag"),
         ValueError, r"`mode`.*mode='diag'"),
    case("correlation_rank",
         lambda: losses.correlation_loss(FEATURES[0], FEATURES[0]),
         ValueError, r"`teacher_features`.*rank 4.*\(4, 4, 8\)"),
    case("correlation_channel_mismatch",
         lambda: losses.correlation_loss(FEATURES, FEATURES[..., :4],
                                         mode="channel"),
         ValueError, r"mode='channel'.*teacher_features\.shape=\(2, 4, 4, 8\)"
                     r".*student_features\.shape=\(2, 4, 4, 4\).*adapter"),
    case("standardize_negative_epsilon",
         lambda: losses.standardize(FEATURES, epsilon=-1.0),
         ValueError, r"`epsilon`.*epsilon=-1\.0"),
    case("attention_p_zero",
         lambda: losses.attention_transfer_loss(FEATURES, FEATURES, p=0),
         ValueError, r"`p`.*p=0"),
    case("attention_mode",
         lambda: losses.attention_transfer_loss(FEATURES, FEATURES,
                                                mode="pap"),
         ValueError, r"`mode`.*mode='pap'"),
    case("attention_spatial_mismatch",
         lambda: losses.attention_transfer_loss(FEATURES, FEATURES[:, :2]),
         ValueError, r"spatial size.*\(2, 4, 4, 8\).*\(2, 2, 4, 8\)"),
    case("lp_k_zero",
         lambda: losses.locality_preserving_loss(FEATURES, FEATURES, k=0),
         ValueError, r"`k`.*k=0"),
    case("lp_k_float",
         lambda: losses.locality_preserving_loss(FEATURES, FEATURES, k=2.5),
         TypeError, r"`k`.*k=2\.5"),
    case("lp_sigma_negative",
         lambda: losses.locality_preserving_loss(FEATURES, FEATURES,
                                                 sigma=-1.0),
         ValueError, r"`sigma`.*sigma=-1\.0"),
    case("lp_batch_mismatch",
         lambda: losses.locality_preserving_loss(
             FEATURES, np.zeros((3, 4, 4, 8), "float32")),
         ValueError, r"batch size.*\(2, 4, 4, 8\).*\(3, 4, 4, 8\)"),
    case("hint_shape_mismatch",
         lambda: losses.hint_loss(FEATURES, FEATURES[..., :4]),
         ValueError, r"`teacher_features`.*\(2, 4, 4, 8\).*\(2, 4, 4, 4\)"),
    case("ktan_mse_shape_mismatch",
         lambda: losses.ktan_mse_loss(FEATURES, FEATURES[..., :4]),
         ValueError, r"`teacher_features`.*\(2, 4, 4, 8\).*\(2, 4, 4, 4\)"),
    # ---------------------------------------------------------------- layers
    case("self_taught_guided_filters",
         lambda: layers.SelfTaughtConv2D(0, 4, 3),
         ValueError, r"`guided_filters`.*guided_filters=0"),
    case("self_taught_kernel_size",
         lambda: layers.SelfTaughtConv2D(4, 4, "x"),
         ValueError, r"`kernel_size`.*kernel_size='x'"),
    case("maxout_pieces", lambda: layers.Maxout(0),
         ValueError, r"`num_pieces`.*num_pieces=0"),
    case("maxout_indivisible",
         lambda: layers.Maxout(3)(np.zeros((2, 4), "float32")),
         ValueError, r"`num_pieces`.*4 channels.*num_pieces=3"),
    case("teacher_to_student_channels",
         lambda: layers.TeacherToStudent(0, teacher_size=(4, 4),
                                         student_size=(2, 2)),
         ValueError, r"`student_channels`.*student_channels=0"),
    case("teacher_to_student_size",
         lambda: layers.TeacherToStudent(4, teacher_size=(4,),
                                         student_size=(2, 2)),
         ValueError, r"`teacher_size`.*teacher_size=\(4,\)"),
    case("feature_adapter_filters", lambda: FeatureAdapter(filters=-1),
         ValueError, r"`filters`.*filters=-1"),
    case("feature_adapter_target_size",
         lambda: FeatureAdapter(target_size=(0, 2)),
         ValueError, r"`target_size`.*target_size=\(0, 2\)"),
    # ------------------------------------------------------------ distillers
    case("distiller_teacher_path",
         lambda: tfkd.Distiller("teacher.keras", _student()),
         ValueError, r"`teacher`.*teacher='teacher\.keras'"),
    case("distiller_student_none",
         lambda: tfkd.Distiller(_teacher(), None),
         ValueError, r"`student`.*student=None"),
    case("distiller_alpha", lambda: tfkd.Distiller(*_pair(), alpha=2),
         ValueError, r"`alpha`.*alpha=2"),
    case("distiller_temperature",
         lambda: tfkd.Distiller(*_pair(), temperature=0),
         ValueError, r"`temperature`.*temperature=0"),
    case("distiller_same_model",
         lambda: tfkd.Distiller(_teacher(), _teacher()),
         ValueError, r"`teacher` and `student` are the same model"),
    case("distiller_mismatched_logits",
         lambda: tfkd.Distiller(_teacher(), testing.tiny_conv_model(
             "student5", width=4, num_classes=5)),
         ValueError, r"teacher outputs 10 logits and the student 5.*teacher "
                     r"logits of shape \(None, 10\).*student logits of shape "
                     r"\(None, 5\).*same number of classes"),
    case("distiller_mismatched_inputs",
         lambda: tfkd.Distiller(_teacher(), testing.tiny_conv_model(
             "student16", width=4, input_shape=(16, 16, 1))),
         ValueError, r"same inputs.*\(8, 8, 1\).*\(16, 16, 1\)"),
    case("distiller_unknown_layer",
         lambda: tfkd.Distiller(*_pair(), [tfkd.losses.HintDistillation(
             "nope", "conv1")]),
         ValueError, r"`teacher_layer`='nope'.*Existing layers"),
    case("distiller_layer_lists",
         lambda: tfkd.Distiller(*_pair(), [tfkd.losses.HintDistillation(
             ["conv1", "conv2"], "conv1")]),
         ValueError, r"paired in order.*teacher_layer_name=\['conv1', "
                     r"'conv2'\]"),
    case("distiller_two_output_teacher",
         lambda: tfkd.Distiller(_two_output_teacher(), _student()),
         ValueError, r"`teacher` must output one logits tensor.*'two_heads' "
                     r"has 2 outputs.*keras\.Model\(teacher\.inputs, "
                     r"teacher\.outputs\[0\]\)"),
    case("distiller_unreachable_softmax",
         lambda: tfkd.Distiller(_reshaped_softmax_teacher(), _student()),
         ValueError, r"teacher 'reshaped' ends in a softmax that tfkd cannot "
                     r"unwrap: layer 'predictions'.*classifier_activation="
                     r"None"),
    case("distiller_nested_layer_missing",
         lambda: tfkd.Distiller(_nested_teacher(_backbone()), _student(), [
             tfkd.losses.HintDistillation("backbone/nope", "conv1")]),
         ValueError, r"`teacher_layer`='backbone/nope'.*Existing layers: "
                     r"\[.*'backbone/conv1'"),
    case("distiller_tap_inside_subclassed",
         lambda: tfkd.Distiller(
             _nested_teacher(_SubclassedBackbone(name="sub")), _student(), [
                 tfkd.losses.HintDistillation("sub/conv1", "conv1")]),
         ValueError, r"`teacher_layer`='sub/conv1': 'sub' is a "
                     r"_SubclassedBackbone, not a functional model.*"
                     r"Existing layers"),
    case("distiller_nested_prefix_forgotten",
         lambda: tfkd.Distiller(_nested_teacher(_backbone()), _student(), [
             tfkd.losses.HintDistillation("conv1", "conv1")]),
         ValueError, r"`teacher_layer`='conv1'.*Did you mean "
                     r"'backbone/conv1'\?"),
    case("distiller_nested_wrong_prefix",
         lambda: tfkd.Distiller(_nested_teacher(_backbone()), _student(), [
             tfkd.losses.HintDistillation("trunk/conv1", "conv1")]),
         ValueError, r"`teacher_layer`='trunk/conv1'.*Did you mean "
                     r"'backbone/conv1'\?"),
    case("distiller_layer_typo",
         lambda: tfkd.Distiller(*_pair(), [tfkd.losses.HintDistillation(
             "conv_2", "conv1")]),
         ValueError, r"`teacher_layer`='conv_2'.*Did you mean 'conv2'"),
    case("distiller_taps_subclassed_student",
         lambda: tfkd.Distiller(_teacher(), _AnySizeStudent(name="sub"), [
             tfkd.losses.HintDistillation("conv1", "conv1")]),
         ValueError, r"layers \['conv1'\] of the student 'sub'.*"
                     r"subclassed model.*functional API"),
    case("distiller_taps_without_terms",
         lambda: tfkd.Distiller(*_pair(), teacher_layer="conv1"),
         TypeError,
         r"taps layers through its terms.*teacher_layer='conv1'"),
    case("distiller_layer_type",
         lambda: tfkd.Distiller(*_pair(), [tfkd.losses.HintDistillation(
             3, "conv1")]),
         TypeError, r"`teacher_layer_name` must be a layer name.*"
                    r"teacher_layer_name=3"),
    case("correlation_distiller_mode",
         lambda: tfkd.CorrelationDistiller(
             *_pair(), teacher_layer_name="conv1", student_layer_name="conv1",
             mode="x"),
         ValueError, r"`mode`.*mode='x'"),
    case("correlation_distiller_needs_adapter",
         lambda: tfkd.CorrelationDistiller(
             *_pair(), teacher_layer_name="conv1", student_layer_name="conv1",
             mode="channel"),
         ValueError, r"channel counts.*\(None, 8, 8, 8\).*\(None, 8, 8, 4\)"
                     r".*adapter=True"),
    case("feature_distiller_stage", lambda: _fitnet(stage=3),
         ValueError, r"`stage`.*stage=3"),
    case("feature_distiller_logits_layer",
         lambda: tfkd.FitNetDistiller(*_pair(), teacher_layer_name="conv1",
                                      student_layer_name="logits"),
         ValueError, r"4D feature maps.*student layer 'logits' outputs "
                     r"shape \(None, 10\)"),
    case("two_stage_epochs",
         lambda: _fitnet().fit_two_stage(*_images(), stage1_epochs=0,
                                         stage2_epochs=1),
         ValueError, r"`stage1_epochs`.*stage1_epochs=0"),
    case("adversarial_pretrain_steps",
         lambda: _adversarial(pretrain_steps=-1),
         ValueError, r"`pretrain_steps`.*pretrain_steps=-1"),
    case("adversarial_two_layers",
         lambda: _adversarial(teacher_layer_name=["conv1", "conv2"]),
         ValueError,
         r"`teacher_layer_name`.*teacher_layer_name=\['conv1', 'conv2'\]"),
    case("adversarial_discriminator_width",
         lambda: _adversarial(discriminator_width=0),
         ValueError, r"`discriminator_width`.*discriminator_width=0"),
    case("lp_distiller_k",
         lambda: tfkd.LocalityPreservingDistiller(
             *_pair(), teacher_layer_name="conv2", student_layer_name="conv2",
             k=0),
         ValueError, r"`k`.*k=0"),
    case("stc_alpha",
         lambda: tfkd.CollaborationDistiller(
             *_pair(), teacher_layer_name="conv1", student_layer_name="conv1",
             alpha=2.0),
         ValueError, r"`alpha`.*alpha=2\.0"),
    case("stc_target",
         lambda: tfkd.CollaborationDistiller(
             *_pair(), teacher_layer_name="conv1", student_layer_name="conv1",
             target="x"),
         ValueError, r"`target`.*target='x'"),
    case("registry_unknown_method",
         lambda: registry.build("bogus", *_pair()),
         ValueError, r"method='bogus'"),
    case("registry_missing_feature_layers",
         lambda: registry.build("lp", *_pair()),
         ValueError, r"`feature_layers.*feature_layers=None"),
    case("callback_raise_error_type",
         lambda: StopOnNonFiniteLoss(raise_error="yes"),
         TypeError, r"`raise_error`.*raise_error='yes'"),
    # ------------------------------------------------------- data to fit
    case("fit_empty_arrays",
         lambda: _fit_kd(_images()[0][:0], _images()[1][:0]),
         ValueError, r"`x`.*\(0, 8, 8, 1\)"),
    case("fit_empty_dataset",
         lambda: _fit_kd(tf.data.Dataset.from_tensor_slices(
             _images()).batch(4).take(0), None),
         ValueError, r"`x` is an empty `tf\.data\.Dataset`"),
    case("fit_without_labels", lambda: _fit_kd(_images()[0], None),
         ValueError, r"labels.*y=None"),
    case("fit_wrong_image_shape",
         lambda: _fit_kd(np.zeros((8, 9, 9, 1), "float32"), _images()[1]),
         ValueError, r"'images'.*expected shape=\(None, 8, 8, 1\).*"
                     r"found shape=\((None|8), 9, 9"),
    case("fit_nan_loss_stops",
         lambda: _fit_kd(*_images(), callbacks=[StopOnNonFiniteLoss()],
                         sample_weight=np.full(8, np.nan, "float32"),
                         check_finite=False,
                         # Its NaN reaches the weights: not the shared pair.
                         student=testing.tiny_conv_model("nan_student")),
         NonFiniteLossError, r"loss term `\w+` became nan"),
    case("fit_nan_gradients_guarded",
         lambda: _fit_kd(*_images(),
                         sample_weight=np.full(8, np.nan, "float32")),
         NonFiniteDataError, r"Non-finite gradients at training batch 0 of "
                             r"epoch 0.*check_finite = False"),
    case("fit_nan_images_stream",
         lambda: _fit_kd(_stream(np.where(np.arange(8)[:, None, None, None]
                                          == 5, np.nan, _images()[0]),
                                 _images()[1]), None),
         NonFiniteDataError, r"NaN or Inf in the images of training batch 1 "
                             r"of epoch 0.*first in example 1 of the batch"),
    case("check_finite_type",
         lambda: _fit_kd(*_images(), check_finite="yes"),
         TypeError, r"`check_finite`.*check_finite='yes'"),
    case("fit_one_hot_width_arrays",
         lambda: _fit_kd(_images()[0], _one_hot(5)),
         ValueError, r"`y` holds one-hot labels with 5 columns.*10 logits.*"
                     r"y\.shape=\(8, 5\)"),
    case("fit_one_hot_width_stream",
         lambda: _fit_kd(_stream(_images()[0], _one_hot(5)), None),
         ValueError, r"One-hot labels `y` have 5 columns.*10 logits.*"
                     r"\(None, 5\)"),
    case("fit_one_hot_width_stream_unknown",
         lambda: _fit_kd(_stream(_images()[0], _one_hot(5), (
             tf.TensorSpec((None, 8, 8, 1), tf.float32),
             tf.TensorSpec((None, None), tf.float32))), None),
         ValueError, r"One-hot labels `y` have 5 columns but the student "
                     r"outputs 10 logits"),
    case("fit_fractional_labels_arrays",
         lambda: _fit_kd(_images()[0], _images()[1] + np.float32(0.5)),
         ValueError, r"`y` holds fractional.*0\.5.*index 0"),
    case("fit_fractional_labels_stream",
         lambda: _fit_kd(_stream(_images()[0],
                                 _images()[1] + np.float32(0.5)), None),
         ValueError, r"Labels `y` hold fractional or non-finite floats "
                     r"\(e\.g\. \d\.5\)"),
    case("fit_labels_out_of_range_stream",
         lambda: _fit_kd(_stream(_images()[0], _images()[1] + 20), None),
         ValueError, r"`y` must be class ids in \[0, 10\).*Received labels "
                     r"in \[2\d, 2\d\]"),
    case("fit_subclassed_teacher_wrong_input",
         lambda: _fit_kd(np.zeros((8, 9, 9, 1), "float32"), _images()[1],
                         teacher=_flat_teacher(),
                         student=_AnySizeStudent(name="any")),
         ValueError, r"teacher 'flat_teacher' failed on a batch of shape "
                     r"\(None, 9, 9, 1\); it was built for inputs of shape "
                     r"\(None, 8, 8, 1\).*Details: Input 0 .*of layer "
                     r"'dense.*\(None, 81\)"),
    case("fit_subclassed_student_two_outputs",
         lambda: _fit_kd(*_images(), student=_TwoOutputs(name="two")),
         ValueError, r"`student` must output one logits tensor.*'two' "
                     r"returned 2 outputs \(tuple\)"),
    case("fit_labels_out_of_range",
         lambda: _fit_kd(_images()[0], _images()[1] + 20),
         ValueError, r"`y`.*\[0, 10\).*2\d"),
    case("fit_nan_images",
         lambda: _fit_kd(np.full((8, 8, 8, 1), np.nan, "float32"),
                         _images()[1]),
         ValueError, r"`x`.*(NaN|nan)"),
    # ------------------------------------------------------------------ data
    case("digits_image_size", lambda: data.load_digits(image_size=0),
         ValueError, r"`image_size`.*image_size=\(0, 0\)"),
    case("digits_validation_fraction",
         lambda: data.load_digits(validation_fraction=1.5),
         ValueError, r"`validation_fraction`.*validation_fraction=1\.5"),
    case("digits_channels", lambda: data.load_digits(channels=2),
         ValueError, r"`channels`.*channels=2"),
    case("digits_batch_size", lambda: data.load_digits(batch_size=0),
         ValueError, r"`batch_size`.*batch_size=0"),
    case("dataset_name", lambda: data.load_dataset("imagenet"),
         ValueError, r"name='imagenet'"),
    case("tfds_not_prepared",
         lambda: data.load_tfds("cifar10",
                                data_dir=os.path.join(_TMP, "no_data"),
                                download=False),
         FileNotFoundError, r"'cifar10'.*data_dir='.*no_data'"),
    case("cache_not_a_distiller",
         lambda: data.cache_teacher_outputs(
             "x", tf.data.Dataset.from_tensor_slices(_images())),
         TypeError, r"`distiller`.*Received: str"),
    # ---------------------------------------------------------------- export
    case("tflite_quantization",
         lambda: export.to_tflite(_student(), os.path.join(_TMP, "s.tflite"),
                                  quantization="int4"),
         ValueError, r"`quantization`.*quantization='int4'"),
    case("tflite_int8_without_data",
         lambda: export.to_tflite(_student(), os.path.join(_TMP, "s.tflite"),
                                  quantization="int8"),
         ValueError, r"quantization='int8'.*`representative_data` is None"),
    case("tflite_model_path",
         lambda: export.to_tflite("student.keras",
                                  os.path.join(_TMP, "s.tflite")),
         TypeError, r"`model`.*model='student\.keras'"),
    case("tflite_missing_directory",
         lambda: export.to_tflite(_student(),
                                  os.path.join(_TMP, "nodir", "s.tflite")),
         FileNotFoundError, r"`path`.*path='.*nodir/s\.tflite'"),
    case("verify_missing_file",
         lambda: export.verify_tflite(os.path.join(_TMP, "none.tflite"),
                                      _student(), _images()[0]),
         FileNotFoundError, r"path='.*none\.tflite'"),
    case("latency_runs",
         lambda: export.measure_latency(os.path.join(_TMP, "none.tflite"),
                                        runs=0),
         ValueError, r"`runs`.*runs=0"),
    case("verify_truncated_file",
         lambda: export.verify_tflite(_bad_tflite("truncated"), _student(),
                                      _images()[0]),
         ValueError, r"Cannot load '.*truncated\.tflite'.*damaged or cut "
                     r"short.*to_tflite"),
    case("latency_truncated_file",
         lambda: export.measure_latency(_bad_tflite("truncated")),
         ValueError, r"'.*truncated\.tflite'.*damaged or cut short"),
    case("latency_garbage_file",
         lambda: export.measure_latency(_bad_tflite("garbage")),
         ValueError, r"'.*garbage\.tflite'.*lacks the TFLite file "
                     r"identifier.*Export the model again"),
    case("verify_empty_file",
         lambda: export.verify_tflite(_bad_tflite("empty"), _student(),
                                      _images()[0]),
         ValueError, r"'.*empty\.tflite'.*the file is empty"),
    case("latency_keras_file",
         lambda: export.measure_latency(_bad_tflite("keras")),
         ValueError, r"'.*keras\.tflite'.*zip archive \(a `\.keras` "
                     r"model\?\)"),
    # ---------------------------------------------------------------- tuning
    case("hypermodel_method", lambda: _hypermodel(method="bogus"),
         ValueError, r"method='bogus'"),
    case("hypermodel_fixed_out_of_range",
         lambda: _hypermodel(method="kd", fixed={"alpha": 2.0}),
         ValueError, r"'alpha'.*fixed=\{'alpha': 2\.0\}"),
    case("hypermodel_truncated_teacher",
         lambda: tuning.DistillerHyperModel(_truncated_keras_file(),
                                            _student()),
         ValueError, r"'.*truncated\.keras'.*corrupt or truncated"),
    case("hypermodel_student_type",
         lambda: tuning.DistillerHyperModel(_teacher(), 3),
         TypeError, r"`student`.*student=3"),
    case("tuner_kind",
         lambda: tuning.build_tuner(_hypermodel(), tuner="grid",
                                    directory=_TMP),
         ValueError, r"tuner='grid'"),
    case("tuner_max_trials",
         lambda: tuning.build_tuner(_hypermodel(), max_trials=0,
                                    directory=_TMP),
         ValueError, r"`max_trials`.*max_trials=0"),
    case("search_space_inverted_range",
         lambda: tuning.normalize_spec("alpha", (0.9, 0.1)),
         ValueError, r"'alpha'.*alpha=\(0\.9, 0\.1\)"),
    # ---------------------------------------------------------------- models
    case("resnet_depth", lambda: models.cifar_resnet(depth=21),
         ValueError, r"`depth`.*depth=21"),
    case("wrn_depth", lambda: models.wide_resnet(depth=15, width=1),
         ValueError, r"`depth`.*depth=15"),
    case("lp_student_index", lambda: models.lp_student(7),
         ValueError, r"`index`.*index=7"),
    case("vgg_self_taught_needs_augmented",
         lambda: models.vgg_student(self_taught=True, augmented=False),
         ValueError, r"augmented=False, self_taught=True"),
    case("digits_num_classes",
         lambda: models.digits_student(num_classes=0),
         ValueError, r"`num_classes`.*num_classes=0"),
    case("split_model_layer", lambda: models.split_model(_teacher(), "nope"),
         ValueError, r"layer_name='nope'"),
    # ---------------------------------------------------------------- saving
    case("load_missing_file",
         lambda: tfkd.load(os.path.join(_TMP, "none.keras")),
         FileNotFoundError, r"'.*none\.keras'"),
    case("load_truncated_file", lambda: tfkd.load(_truncated_keras_file()),
         ValueError, r"truncated\.keras.*corrupt or truncated"),
]

# A helper that reads a whole pipeline refuses one that repeats forever,
# instead of hanging.
_FOREVER = "repeats forever .*cardinality INFINITE.*it would never return"
CASES += [
    case("unlabel_infinite_dataset",
         lambda: data.unlabel(_stream(*testing.random_images(8)).repeat(),
                              1),
         ValueError, r"`data` " + _FOREVER + r".*`data\.take\(n\)`"),
    case("unlabel_infinite_unbatched_dataset",
         lambda: data.unlabel(tf.data.Dataset.from_tensor_slices(
             testing.random_images(8)).repeat(), 1),
         ValueError, r"`data` " + _FOREVER),
    case("cache_teacher_outputs_infinite_dataset",
         lambda: data.cache_teacher_outputs(
             tfkd.Distiller(_teacher(), _student()),
             _stream(*testing.random_images(8)).repeat()),
         ValueError, r"`dataset` " + _FOREVER),
    case("verify_tflite_infinite_dataset",
         lambda: export.verify_tflite(
             os.path.join(_TMP, "none.tflite"), _student(),
             _stream(*testing.random_images(8)).repeat()),
         ValueError, r"`data` " + _FOREVER),
]


def test_missing_layer_in_a_large_nested_backbone_is_short_and_helpful():
    """MobileNetV3Small nested as a layer has ~160 paths: the error
    suggests the prefixed name and the closest ones, and stays short
    instead of listing every path."""
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, include_top=False)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(10)(x), name="teacher")
    student = testing.tiny_conv_model("student", input_shape=(32, 32, 3))
    for name, suggestion in [
            ("expanded_conv_2_add", "MobileNetV3Small/expanded_conv_2_add"),
            ("MobileNetV3Small/expanded_conv_2_ad",
             "MobileNetV3Small/expanded_conv_2_add")]:
        with pytest.raises(ValueError) as info:
            tfkd.Distiller(teacher, student, [tfkd.losses.HintDistillation(
                name, "conv1")])
        message = str(info.value)
        assert f"Did you mean {suggestion!r}" in message, message
        assert "layer_paths(model)" in message
        assert len(message) < 700, (len(message), message)


def test_mse_on_class_ids_names_the_loss_and_both_shapes():
    teacher, student = _pair()
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam", loss="mse")
    x, y = testing.random_images(16)
    with pytest.raises(ValueError, match=(
            r"student loss 'mse'.*labels of shape \(8,\).*logits of shape "
            r"\(8, 10\).*SparseCategoricalCrossentropy.*to_categorical")):
        distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    # One-hot labels are what the message says mse needs: they train.
    distiller.fit(x, np.eye(10, dtype="float32")[y], batch_size=8, epochs=1,
                  verbose=0)


def test_enough_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("fn, error, pattern", CASES)
def test_bad_input(fn, error, pattern):
    with pytest.raises(error, match=re.compile(pattern, re.DOTALL)):
        fn()


# ------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def student_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "student.keras"
    _student().save(path)
    return str(path)


@pytest.fixture(scope="module")
def truncated_file():
    return _truncated_keras_file()


def _run_cli(argv):
    from tfkd import cli

    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        return e.code


CLI_CASES = [
    pytest.param(["export", "{tmp}/missing.keras"], r"missing\.keras",
                 id="export_missing_file"),
    pytest.param(["export", "{truncated}"],
                 r"truncated\.keras.*corrupt or truncated",
                 id="export_truncated_file"),
    pytest.param(["export", "{student}", "--int8-io"],
                 r"--int8-io.*--quantization none", id="export_int8_io"),
    pytest.param(["export", "{student}", "--out", "{tmp}/no/dir/s.tflite"],
                 r"--out.*no/dir/s\.tflite", id="export_out_directory"),
    pytest.param(["demo", "--epochs", "0", "--out", "{tmp}/demo"],
                 r"`epochs`.*epochs=0", id="demo_epochs"),
    pytest.param(["tune", "--method", "bogus", "--out", "{tmp}/tune"],
                 r"method='bogus'", id="tune_method"),
    pytest.param(["tune", "--data", "bogus", "--out", "{tmp}/tune"],
                 r"name='bogus'", id="tune_data"),
    pytest.param(["tune", "--teacher", "{truncated}", "--out", "{tmp}/tune"],
                 r"--teacher '.*truncated\.keras' exists but cannot be "
                 r"loaded: .*corrupt or truncated", id="tune_broken_teacher"),
    pytest.param(["tune", "--teacher", "{tmp}/missing.keras", "--out",
                  "{tmp}/tune"], r"not found.*--teacher '.*missing\.keras'",
                 id="tune_missing_teacher"),
    pytest.param(["export", "{student}", "--quantization", "int4"],
                 r"--quantization.*'int4'", id="export_quantization"),
    pytest.param(["export", "{student}", "--data", "imagenet"],
                 r"--data.*'imagenet'", id="export_data_name"),
    pytest.param(["demo", "--method", "bogus"],
                 r"method='bogus'\. Choose one of \[.*'kd'",
                 id="demo_method"),
    pytest.param(["demo", "--epochs", "many"], r"--epochs.*'many'",
                 id="demo_epochs_not_int"),
    pytest.param(["bogus"], r"'bogus'", id="unknown_command"),
]


@pytest.mark.parametrize("argv, pattern", CLI_CASES)
def test_cli_user_error(argv, pattern, student_file, truncated_file,
                        tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, student=student_file,
                     truncated=truncated_file) for a in argv]
    code = _run_cli(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert "Traceback" not in captured.err + captured.out
    assert len(err.splitlines()) == 1, err
    assert re.match(r"tfkd( \w+)?: error: ", err), err
    assert re.search(pattern, err), err
