"""Few-label splits: `tfkd.data.unlabel`, `labelled_only`, and
`load_digits(labels_per_class=N)`, down to a distiller trained on one."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd import testing
from tfkd.data import labelled_only
from tfkd.data import unlabel
from tfkd.data.digits import digits_arrays
from tfkd.data.digits import load_digits


def test_digits_keep_n_labels_per_class_and_every_image():
    full = digits_arrays(image_size=8, seed=1)
    few = digits_arrays(image_size=8, seed=1, labels_per_class=6)
    y = few.train[1]
    # Same images, same split; labels either kept or -1.
    np.testing.assert_array_equal(few.train[0], full.train[0])
    assert np.all((y == -1) | (y == full.train[1]))
    assert np.bincount(y[y >= 0], minlength=10).tolist() == [6] * 10
    assert int((y == -1).sum()) == len(y) - 60
    # Validation and test keep every label.
    np.testing.assert_array_equal(few.validation[1], full.validation[1])
    np.testing.assert_array_equal(few.test[1], full.test[1])
    assert y.dtype == np.int32


def test_choice_is_seeded_and_nested_in_nothing_else():
    a = digits_arrays(image_size=8, labels_per_class=20, seed=0).train[1]
    b = digits_arrays(image_size=8, labels_per_class=20, seed=0).train[1]
    c = unlabel(digits_arrays(image_size=8, seed=0).train[1], 20, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a >= 0, c >= 0)


def test_load_digits_pipeline_carries_the_few_labels():
    data = load_digits(image_size=8, batch_size=100, labels_per_class=6,
                       seed=0)
    labels = np.concatenate([y.numpy() for _, y in data.train])
    assert (labels >= 0).sum() == 60 and (labels == -1).sum() == 1167 - 60
    test_labels = np.concatenate([y.numpy() for _, y in data.test])
    assert test_labels.min() >= 0


def test_unlabel_pairs_lists_and_errors():
    x = np.zeros((6, 2), "float32")
    images, labels = unlabel((x, [0, 0, 1, 1, 2, 2]), 1, seed=0)
    assert images is x
    assert sorted(labels[labels >= 0].tolist()) == [0, 1, 2]
    # uint8 labels cannot hold -1: the result is a signed int array.
    assert unlabel(np.array([0, 1, 1], np.uint8), 1).min() == -1
    with pytest.raises(ValueError, match=r"Class 2 has only 1 labelled"):
        unlabel([0, 0, 1, 1, 2], 2)
    with pytest.raises(ValueError, match=r"labels_per_class=0"):
        unlabel([0, 1], 0)
    with pytest.raises(ValueError, match=r"labels_per_class=True"):
        unlabel([0, 1], True)
    with pytest.raises(ValueError, match=r"1-D array of integer class ids"):
        unlabel(np.eye(3), 1)
    with pytest.raises(ValueError, match=r"4 images and 3 labels"):
        unlabel((np.zeros((4, 2)), [0, 1, 2]), 1)
    with pytest.raises(ValueError, match=r"labels_per_class=0"):
        digits_arrays(image_size=8, labels_per_class=0)
    with pytest.raises(ValueError, match=r"fewer than labels_per_class=500"):
        digits_arrays(image_size=8, labels_per_class=500)


@pytest.mark.parametrize("batch", [None, 7])
def test_unlabel_dataset_matches_arrays(batch):
    x, y = testing.random_images(40, num_classes=4, seed=3)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if batch:
        ds = ds.batch(batch)
    out = unlabel(ds, 3, seed=2)
    got = np.concatenate([np.reshape(b[1].numpy(), [-1]) for b in out])
    np.testing.assert_array_equal(got, unlabel(y, 3, seed=2))
    # Images pass through unchanged, in order.
    images = np.concatenate([np.reshape(b[0].numpy(), (-1, 8, 8, 1))
                             for b in out])
    np.testing.assert_array_equal(images, x)


def test_unlabel_dataset_refuses_a_reshuffled_pipeline():
    x, y = testing.random_images(64, num_classes=4, seed=3)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        64, seed=1, reshuffle_each_iteration=True)
    out = unlabel(ds, 3, seed=2)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="order changed since its labels were read"):
        for _ in out:
            pass


def test_labelled_only_arrays_and_datasets():
    x, y = testing.random_images(40, num_classes=4, seed=3)
    y = unlabel(y, 2, seed=0)
    images, labels = labelled_only((x, y))
    assert len(labels) == 8 and labels.min() >= 0
    np.testing.assert_array_equal(images, x[y >= 0])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    batches = list(labelled_only(ds, batch_size=3, seed=1))
    assert [len(b) for _, b in batches] == [3, 3, 2]
    got_x = np.concatenate([a.numpy() for a, _ in batches])
    got_y = np.concatenate([b.numpy() for _, b in batches])
    # The same examples, reshuffled (each image with its label).
    order = np.argsort(got_x.reshape(8, -1)[:, 0])
    expected = np.argsort(images.reshape(8, -1)[:, 0])
    np.testing.assert_array_equal(got_x[order], images[expected])
    np.testing.assert_array_equal(got_y[order], labels[expected])
    with pytest.raises(ValueError, match=r"pass the `batch_size`"):
        labelled_only(ds)
    with pytest.raises(ValueError, match=r"no labelled example"):
        labelled_only((x, np.full(40, -1)))
    with pytest.raises(ValueError, match=r"no labelled example"):
        labelled_only(tf.data.Dataset.from_tensor_slices(
            (x, np.full(40, -1))))
    with pytest.raises(ValueError, match=r"infinite dataset.*repeat"):
        labelled_only(ds.repeat(), batch_size=3)
    with pytest.raises(ValueError, match=r"seed=3 with arrays"):
        labelled_only((x, y), seed=3)


def test_labelled_only_leaves_the_source_reshuffling_alone():
    # The README's pattern: the student alone reads
    # `labelled_only(few.train).repeat()` (how far ahead depends on
    # prefetching, i.e. on timing), then the distiller reads `few.train`.
    # Its shuffle order must not depend on how far the first one read.
    def distiller_order(reads):
        few = load_digits(image_size=8, batch_size=64, labels_per_class=2,
                          seed=0)
        labelled = iter(labelled_only(few.train, batch_size=8).repeat())
        for _ in range(reads):
            next(labelled)
        return np.concatenate([y.numpy() for _, y in few.train])

    np.testing.assert_array_equal(distiller_order(1), distiller_order(20))


def test_distiller_trains_on_a_few_label_split():
    """A distiller trains on labelled + unlabelled digits; a batch with no
    label at all gives a student loss of 0 and still moves the student
    through the knowledge term."""
    few = digits_arrays(image_size=8, labels_per_class=2, seed=0)
    x, y = few.train
    keras.utils.set_random_seed(0)
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=2)
    distiller = tfkd.Distiller(teacher, student, alpha=0.5, temperature=4.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2),
                      metrics=["accuracy"])
    history = distiller.fit(x[:256], y[:256], batch_size=64, epochs=1,
                            verbose=0, validation_data=few.validation)
    assert np.isfinite(history.history["loss"]).all()
    assert np.isfinite(history.history["val_accuracy"]).all()

    unlabelled = np.flatnonzero(y == -1)[:32]
    before = [w.numpy().copy() for w in student.trainable_weights]
    logs = distiller.train_on_batch(x[unlabelled], y[unlabelled],
                                    return_dict=True)
    assert logs["student_loss"] == 0.0
    assert logs["kd_loss"] > 0.0
    after = [w.numpy() for w in student.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("as_dataset", [False, True])
def test_ktan_regressor_pretraining_skips_unlabelled(as_dataset):
    """KTAN's Algorithm 1 trains a probe with the labels: unlabelled
    examples get weight 0 (a label -1 used to fail in the cross entropy)."""
    from tfkd.layers.teacher_to_student import TeacherToStudent
    from tfkd.layers.teacher_to_student import pretrain_regressor

    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    x, y = testing.random_images(64, seed=4)
    y = unlabel(y, 1, seed=0)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16) \
        if as_dataset else (x, y)
    regressor = TeacherToStudent(4, teacher_size=8, student_size=8)
    history = pretrain_regressor(teacher, "conv2", regressor, data,
                                 num_classes=10, epochs=1)
    assert np.isfinite(history.history["loss"]).all()
    # Every label -1: nothing to learn from, and a loss of 0, not a crash.
    unlabelled = (x, np.full(64, -1, np.int32))
    history = pretrain_regressor(teacher, "conv2", regressor, unlabelled,
                                 num_classes=10, epochs=1)
    assert history.history["loss"] == [0.0]


def test_evaluate_without_labels_reports_nan_accuracy():
    """Data whose labels are all -1 has no accuracy: NaN, not Keras's 0.0
    (a metric that saw no weight); labelled data is unaffected."""
    from tfkd import testing

    teacher = testing.tiny_conv_model("teacher", seed=0)
    student = testing.tiny_conv_model("student", width=4, seed=1)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    x, y = testing.random_images(16)
    unlabelled = distiller.evaluate(x, np.full(16, -1, "int32"), verbose=0,
                                    return_dict=True)
    assert np.isnan(unlabelled["accuracy"])
    assert np.isfinite(unlabelled["kd_loss"])
    labelled = distiller.evaluate(x, y, verbose=0, return_dict=True)
    expected = np.mean(np.argmax(student.predict(x, verbose=0), -1) == y)
    assert labelled["accuracy"] == pytest.approx(expected)


_IDS = np.array([3, -1, 0, -1, 7, 2, -1, 9])


def _as_form(form):
    if form == "int":
        return _IDS.astype("int32")
    if form == "float":
        return _IDS.astype("float32")
    # One-hot: an all-zero row marks an unlabelled example.
    return np.where((_IDS >= 0)[:, None],
                    np.eye(10, dtype="float32")[np.maximum(_IDS, 0)], 0.0)


def _student_loss(y, *, stream, loss=None):
    x = testing.random_images(8)[0]
    distiller = tfkd.Distiller(
        testing.tiny_conv_model("teacher", width=8, seed=1),
        testing.tiny_conv_model("student", width=4, seed=2))
    distiller.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    if stream:
        # A generator hides the shapes: the checks run in the step.
        data = tf.data.Dataset.from_generator(
            lambda: iter([(x, y)]), output_signature=(
                tf.TensorSpec((None,) + x.shape[1:], tf.float32),
                tf.TensorSpec((None,) * y.ndim, tf.as_dtype(y.dtype))))
        logs = distiller.evaluate(data, return_dict=True, verbose=0)
    else:
        logs = distiller.evaluate(x, y, batch_size=8, return_dict=True,
                                  verbose=0)
    logits = distiller.student.predict(x, verbose=0)
    return logs, logits


@pytest.mark.parametrize("form, stream, loss", [
    ("int", False, None), ("float", True, None), ("one_hot", False, None),
    ("one_hot", True, None), ("int", True, "sparse_custom"),
    ("float", False, "sparse_custom")])
def test_unlabelled_examples_are_masked_in_every_label_form(form, stream,
                                                            loss):
    """`-1` class ids (int or float) and all-zero one-hot rows mark
    unlabelled examples: the student loss and the accuracy average over the
    labelled ones, with the default loss and with a custom sparse loss in
    `compile(loss=...)`, from arrays and from streams."""
    if loss == "sparse_custom":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    logs, logits = _student_loss(_as_form(form), stream=stream, loss=loss)
    kept = _IDS >= 0
    expected = keras.losses.sparse_categorical_crossentropy(
        _IDS[kept], logits[kept], from_logits=True)
    assert logs["student_loss"] == pytest.approx(float(np.mean(expected)),
                                                 rel=1e-5)
    accuracy = np.mean(logits[kept].argmax(-1) == _IDS[kept])
    assert logs["accuracy"] == pytest.approx(accuracy)


@pytest.mark.parametrize("stream, loss", [
    (False, None), (True, None), (True, "categorical_crossentropy")])
def test_one_hot_rows_of_minus_one_are_refused(stream, loss):
    y = _as_form("one_hot")
    y[_IDS < 0] = -1.0
    if loss is not None:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match=r"(negative values|smallest value "
                                         r"-1).*-1. marks an unlabelled "
                                         r"example only in class-id labels"
                                         r".*all-zero row"):
        _student_loss(y, stream=stream, loss=loss)


def test_soft_labels_must_sum_to_one():
    y = _as_form("one_hot") * 0.5
    with pytest.raises(ValueError, match=r"summing to 1.*sum 0\.5"):
        _student_loss(y, stream=True)


def test_fit_on_a_dataset_does_not_warn_about_shuffle(recwarn):
    """Keras warns that it ignores its default `shuffle=True` for a
    `tf.data` pipeline; a distiller's `fit` on one (as the demo and the
    recipes run) does not trigger it."""
    from tfkd import testing

    teacher = testing.tiny_conv_model("teacher", seed=0)
    student = testing.tiny_conv_model("student", width=4, seed=1)
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(optimizer="adam")
    x, y = testing.random_images(16)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    distiller.fit(data, epochs=1, verbose=0)
    messages = [str(w.message) for w in recwarn]
    assert not [m for m in messages if "shuffle" in m], messages


def test_a_teacher_at_chance_is_warned_about_once():
    """An untrained teacher (or one fed inputs it was not trained on, as a
    `keras.applications` model fed [0, 1] pixels) is at chance on the first
    batch: `fit` warns once, naming the [0, 255] pitfall; a teacher that
    knows the labels does not warn."""
    import warnings

    from tfkd import testing

    teacher = testing.tiny_conv_model("teacher", seed=0)
    x, _ = testing.random_images(64)
    known = np.argmax(teacher.predict(x, verbose=0), -1).astype("int32")
    chance = (known + 1) % 10  # Every teacher prediction is wrong.
    distiller = tfkd.Distiller(
        teacher, testing.tiny_conv_model("student", width=4, seed=1))
    distiller.compile(optimizer="adam")
    with pytest.warns(UserWarning, match=r"teacher 'teacher' is at chance.*"
                                         r"0% top-1 on its 64 labelled.*"
                                         r"\[0, 255\]"):
        distiller.fit(x, chance, batch_size=64, epochs=1, verbose=0)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        distiller.fit(x, chance, batch_size=64, epochs=1, verbose=0)
    assert not [w for w in again if "at chance" in str(w.message)]

    fresh = tfkd.Distiller(
        teacher, testing.tiny_conv_model("student", width=4, seed=1))
    fresh.compile(optimizer="adam")
    data = tf.data.Dataset.from_tensor_slices((x, known)).batch(64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.fit(data, epochs=1, verbose=0)
    assert not [w for w in caught if "at chance" in str(w.message)]
