"""Tests for `tfkd.data.digits`: the embedded scikit-learn digits."""

import re

import numpy as np
import pytest

from tfkd.data.digits import digits_arrays
from tfkd.data.digits import load_digits

NUM_IMAGES = 1797


def test_arrays_shapes_dtypes_ranges():
    splits = digits_arrays(image_size=8)
    assert splits.num_classes == 10
    assert splits.input_shape == (8, 8, 1)
    for x, y in (splits.train, splits.validation, splits.test):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert x.shape[1:] == (8, 8, 1) and len(x) == len(y)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))


def test_split_sizes_add_up_and_are_stratified():
    splits = digits_arrays(image_size=8, validation_fraction=0.15,
                           test_fraction=0.2)
    sizes = [len(s[1]) for s in (splits.train, splits.validation, splits.test)]
    assert sum(sizes) == NUM_IMAGES
    # sklearn rounds the test share up: ceil(0.2 * 1797) = 360, then
    # ceil(0.15 / 0.8 * 1437) = 270 of the rest.
    assert sizes == [1437 - 270, 270, 360]
    # Stratified: every split has each class at ~its overall frequency
    # (classes hold 174-183 images, i.e. ~10 % each).
    for x, y in (splits.train, splits.validation, splits.test):
        shares = np.bincount(y, minlength=10) / len(y)
        assert np.all(np.abs(shares - 0.1) < 0.015)


def test_split_depends_only_on_seed():
    a = digits_arrays(image_size=8, seed=1)
    b = digits_arrays(image_size=8, seed=1)
    c = digits_arrays(image_size=8, seed=2)
    np.testing.assert_array_equal(a.test[0], b.test[0])
    np.testing.assert_array_equal(a.train[1], b.train[1])
    assert not np.array_equal(a.test[0], c.test[0])


def test_resize_and_channels():
    splits = digits_arrays(image_size=(16, 12), channels=3)
    assert splits.input_shape == (16, 12, 3)
    x = splits.train[0]
    assert x.shape[1:] == (16, 12, 3)
    # Grey repeated into RGB.
    np.testing.assert_array_equal(x[..., 0], x[..., 2])


def test_load_digits_pipelines():
    data = load_digits(image_size=16, channels=3, batch_size=32, seed=0)
    assert data.input_shape == (16, 16, 3)
    images, labels = next(iter(data.train))
    assert tuple(images.shape) == (32, 16, 16, 3)
    assert images.dtype.name == "float32" and labels.dtype.name == "int32"
    arrays = digits_arrays(image_size=16, channels=3, seed=0)
    # Every example is seen once per epoch; the last batch is kept.
    assert sum(len(y) for _, y in data.test) == len(arrays.test[1])
    assert sum(len(y) for _, y in data.train) == len(arrays.train[1])
    # Validation/test are not shuffled: same order as the arrays.
    first_val = next(iter(data.validation))[1].numpy()
    np.testing.assert_array_equal(first_val, arrays.validation[1][:32])


def test_load_digits_shuffle_is_seeded():
    def first_labels(seed):
        return next(iter(load_digits(image_size=8, seed=seed).train))[1]

    np.testing.assert_array_equal(first_labels(3), first_labels(3))
    assert not np.array_equal(first_labels(3), first_labels(4))


@pytest.mark.parametrize(
    "kwargs, received",
    [
        (dict(image_size=(4, 16)), "image_size=(4, 16)"),
        (dict(image_size=(16,)), "image_size=(16,)"),
        (dict(image_size="16"), "image_size='16'"),
        (dict(channels=2), "channels=2"),
        (dict(validation_fraction=0.0), "validation_fraction=0.0"),
        (dict(test_fraction=1.5), "test_fraction=1.5"),
        (dict(validation_fraction=0.5, test_fraction=0.5), "0.5 + 0.5"),
    ],
)
def test_bad_arguments(kwargs, received):
    with pytest.raises(ValueError, match=re.escape(received)):
        digits_arrays(**kwargs)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, None])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        load_digits(batch_size=batch_size)


@pytest.mark.parametrize("seed, error", [
    ("0", TypeError), (1.5, TypeError), (True, TypeError), (None, TypeError),
    (-1, ValueError), (2 ** 32, ValueError)])
def test_bad_seed_is_named(seed, error):
    # scikit-learn's own message would name `random_state`, not `seed`.
    for load in (digits_arrays, load_digits):
        with pytest.raises(error, match=re.escape(f"seed={seed!r}")
                           if error is TypeError else "seed"):
            load(seed=seed)
