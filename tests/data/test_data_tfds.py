"""Tests for `tfkd.data.tfds_data`, on tfds's mocked data (no network)."""

import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfkd.data import tfds_data
from tfkd.data.tfds_data import DatasetNotFoundError
from tfkd.data.tfds_data import is_deterministic
from tfkd.data.tfds_data import load_dataset
from tfkd.data.tfds_data import load_tfds

NUM_EXAMPLES = 20


@pytest.fixture
def mocked_tfds():
    # `mock_data` fakes the records but not `is_prepared`, which tfkd checks
    # first; a prepared data set is what the mock stands for.
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES), mock.patch.object(
        tfds.core.DatasetBuilder, "is_prepared", return_value=True
    ):
        yield


def _first(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


@pytest.mark.parametrize(
    "name, shape, num_classes",
    [
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
        ("mnist", (28, 28, 1), 10),
    ],
)
def test_load_tfds_shapes_dtypes_labels(mocked_tfds, name, shape, num_classes):
    data = load_tfds(name, batch_size=8)
    # Batches of 8 over 20 examples: the last, partial batch is kept. Counted
    # first: the mock's generator-backed splits lose elements when read after
    # other partially read, cached splits (a mock artefact, not seen with
    # tfds's real TFRecord readers).
    assert [len(y) for _, y in data.test] == [8, 8, 4]
    assert data.input_shape == shape
    assert data.num_classes == num_classes
    for split in (data.train, data.validation, data.test):
        images, labels = _first(split)
        assert images.shape == (8,) + shape
        assert images.dtype == np.float32
        assert labels.dtype == np.int32
        assert labels.min() >= 0 and labels.max() < num_classes
    # Augmentation on the training split only.
    assert not is_deterministic(data.train)
    assert is_deterministic(data.validation)
    assert is_deterministic(data.test)
    assert not is_deterministic(data)


def test_normalisation_ranges(mocked_tfds):
    images, _ = _first(load_tfds("mnist", batch_size=8, augment=False).test)
    assert images.min() >= 0.0 and images.max() <= 1.0
    images, _ = _first(load_tfds("cifar10", batch_size=8, augment=False).test)
    # Standardised: uint8 0 / 255 map to (0 - mean) / std, (1 - mean) / std.
    low = (0.0 - np.array(tfds_data.CIFAR10_MEAN)) / tfds_data.CIFAR10_STD
    high = (1.0 - np.array(tfds_data.CIFAR10_MEAN)) / tfds_data.CIFAR10_STD
    assert np.all(images >= low - 1e-5) and np.all(images <= high + 1e-5)
    assert images.min() < 0.0 < images.max()


def test_augment_flag_and_same_seed_reproducible(mocked_tfds):
    plain = load_tfds("cifar10", batch_size=4, augment=False, seed=3)
    assert is_deterministic(plain)
    assert not is_deterministic(plain.train, allow_shuffle=False)
    augmented = load_tfds("cifar10", batch_size=4, augment=True, seed=3)
    again = load_tfds("cifar10", batch_size=4, augment=True, seed=3)
    x_plain, y_plain = _first(plain.train)
    x_aug, y_aug = _first(augmented.train)
    x_again, y_again = _first(again.train)
    # Same seed: same order and same augmentation; augmenting changes pixels.
    np.testing.assert_array_equal(y_plain, y_aug)
    np.testing.assert_array_equal(x_aug, x_again)
    assert not np.array_equal(x_plain, x_aug)


def test_validation_split_none_uses_test(mocked_tfds):
    data = load_tfds("cifar10", batch_size=8, validation_split=None)
    assert data.validation is data.test


def test_image_size_and_channels(mocked_tfds):
    data = load_tfds("mnist", batch_size=4, image_size=32, channels=3)
    assert data.input_shape == (32, 32, 3)
    assert _first(data.train)[0].shape == (4, 32, 32, 3)
    data = load_tfds("cifar10", batch_size=4, image_size=(16, 24), channels=1)
    assert data.input_shape == (16, 24, 1)
    assert _first(data.validation)[0].shape == (4, 16, 24, 1)


def _crops(image):
    """Every crop of `image` zero-padded by 4, at the original size."""
    height, width = image.shape[:2]
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    return [padded[i:i + height, j:j + width]
            for i in range(9) for j in range(9)]


@pytest.mark.parametrize("flip", [False, True])
def test_augment_is_pad_crop_and_optional_flip(flip):
    image = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    crops = _crops(image)
    augment = tfds_data._augment_fn((28, 28, 1), flip=flip)
    flips = 0
    for seed in range(24):
        out, label = augment(
            (tf.constant(image), 7), tf.constant(seed, tf.int64)
        )
        out = out.numpy()
        assert label == 7 and out.shape == image.shape
        plain = any(np.array_equal(out, c) for c in crops)
        mirrored = any(np.array_equal(out, c[:, ::-1]) for c in crops)
        assert plain or mirrored
        flips += mirrored
    # 24 draws: some but not all flipped (p of failing = 2 * 2**-24).
    assert (0 < flips < 24) if flip else flips == 0


def test_absent_data_raises_helpful_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="'cifar10'") as info:
        load_tfds("cifar10", data_dir=str(tmp_path))
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "'cifar10'" in message
    assert str(tmp_path) in message
    assert "data_dir=" in message
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    assert "tfds build cifar10" in message
    assert "download_and_prepare" in message
    # Nothing was created or downloaded.
    assert list(tmp_path.iterdir()) == []


def test_absent_data_default_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="mnist"):
        load_dataset("mnist")


def test_failed_download_is_wrapped(tmp_path):
    def fail(*args, **kwargs):
        raise ConnectionError("no network")

    with mock.patch.object(
        tfds.core.DatasetBuilder, "download_and_prepare", fail
    ):
        with pytest.raises(DatasetNotFoundError,
                           match="ConnectionError: no network") as info:
            load_tfds("cifar100", data_dir=str(tmp_path), download=True)
    message = str(info.value)
    assert "ConnectionError: no network" in message
    assert "'cifar100'" in message and str(tmp_path) in message
    assert isinstance(info.value.__cause__, ConnectionError)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(name="imagenet"), "name='imagenet'"),
        (dict(name="cifar10", batch_size=0), "batch_size=0"),
        (dict(name="cifar10", validation_split=1.0), "validation_split=1.0"),
        (dict(name="cifar10", image_size=(32,)), "image_size=(32,)"),
        (dict(name="cifar10", channels=2), "channels=2"),
        (dict(name="cifar10", shuffle_buffer=-1), "shuffle_buffer=-1"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument.replace("(", r"\(")
                       .replace(")", r"\)")):
        load_tfds(**kwargs)


def test_load_dataset_bad_name_lists_valid_names():
    with pytest.raises(ValueError, match="Received: name='cifar-10'") as info:
        load_dataset("cifar-10")
    for name in ("digits", "cifar10", "cifar100", "mnist"):
        assert name in str(info.value)


def test_load_dataset_digits():
    data = load_dataset("Digits", image_size=8, batch_size=16)
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    images, labels = _first(data.train)
    assert images.shape == (16, 8, 8, 1)
    assert is_deterministic(data)
    with pytest.raises(TypeError, match="augment"):
        load_dataset("digits", augment=True)


def test_load_dataset_dispatches_to_tfds(mocked_tfds):
    data = load_dataset("mnist", batch_size=4)
    assert data.input_shape == (28, 28, 1)


def test_is_deterministic_rejects_non_datasets():
    with pytest.raises(TypeError, match="dataset="):
        is_deterministic([1, 2, 3])


def test_is_deterministic_sees_random_maps():
    ds = tf.data.Dataset.range(4).map(lambda x: tf.cast(x, tf.float32))
    assert is_deterministic(ds)
    noisy = ds.map(lambda x: x + tf.random.uniform(()))
    assert not is_deterministic(noisy)
