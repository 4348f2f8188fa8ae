"""Tests for `tfkd.data.fashion_mnist` on tiny IDX files the tests write
(never the installed data set: CI machines do not have it)."""

import gzip

import numpy as np
import pytest

from tfkd.data import fashion_mnist as fm
from tfkd.data.fashion_mnist import fashion_mnist_arrays
from tfkd.data.fashion_mnist import load_fashion_mnist
from tfkd.data.fashion_mnist import read_idx
from tfkd.testing import write_fashion_mnist as write_fashion


def _idx_bytes(array):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


@pytest.fixture
def fashion_dir(tmp_path):
    folder = tmp_path / "fashion"
    write_fashion(str(folder))
    return str(folder)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path, gz):
    written = write_fashion(str(tmp_path), n_train=30, n_test=20, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(str(tmp_path / f"train-images-idx3-ubyte{suffix}"),
                      "images")
    labels = read_idx(str(tmp_path / f"t10k-labels-idx1-ubyte{suffix}"),
                      "labels")
    np.testing.assert_array_equal(images, written["train"][0])
    np.testing.assert_array_equal(labels, written["t10k"][1])


def test_splits_sizes_scaling_and_pairing(fashion_dir):
    splits = fashion_mnist_arrays(data_dir=fashion_dir,
                                  validation_fraction=0.25, seed=0)
    assert splits.num_classes == 10 and splits.input_shape == (28, 28, 1)
    sizes = [len(s[1]) for s in (splits.train, splits.validation,
                                 splits.test)]
    # Validation carved from the 200 training images; test untouched.
    assert sizes == [150, 50, 50]
    for x, y in (splits.train, splits.validation, splits.test):
        assert x.dtype == np.float32 and y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0
        # Each image still carries its label (pixels ~ 20 k / 255).
        np.testing.assert_array_equal(
            np.floor(x.mean(axis=(1, 2, 3)) * 255 / 20 + 0.01).astype(int), y)
    # Stratified: 5 validation images a class.
    assert np.bincount(splits.validation[1], minlength=10).tolist() == [5] * 10


def test_split_depends_only_on_seed(fashion_dir):
    a = fashion_mnist_arrays(data_dir=fashion_dir, seed=1)
    b = fashion_mnist_arrays(data_dir=fashion_dir, seed=1)
    c = fashion_mnist_arrays(data_dir=fashion_dir, seed=2)
    np.testing.assert_array_equal(a.train[0], b.train[0])
    assert not np.array_equal(a.train[0], c.train[0])
    np.testing.assert_array_equal(a.test[0], c.test[0])  # Test: untouched.


def test_few_labels_stratified_seeded_rest_unlabelled(fashion_dir):
    full = fashion_mnist_arrays(data_dir=fashion_dir, seed=3)
    few = fashion_mnist_arrays(data_dir=fashion_dir, seed=3,
                               labels_per_class=4)
    np.testing.assert_array_equal(few.train[0], full.train[0])
    kept = few.train[1] >= 0
    assert np.bincount(few.train[1][kept], minlength=10).tolist() == [4] * 10
    assert set(np.unique(few.train[1][~kept])) == {-1}
    np.testing.assert_array_equal(few.train[1][kept], full.train[1][kept])
    np.testing.assert_array_equal(few.validation[1], full.validation[1])
    again = fashion_mnist_arrays(data_dir=fashion_dir, seed=3,
                                 labels_per_class=4)
    np.testing.assert_array_equal(again.train[1], few.train[1])
    other = fashion_mnist_arrays(data_dir=fashion_dir, seed=4,
                                 labels_per_class=4)
    assert not np.array_equal(np.sort(np.flatnonzero(other.train[1] >= 0)),
                              np.sort(np.flatnonzero(kept)))


def test_train_examples_keeps_a_stratified_subset(fashion_dir):
    splits = fashion_mnist_arrays(data_dir=fashion_dir, train_examples=60)
    assert np.bincount(splits.train[1], minlength=10).tolist() == [6] * 10
    with pytest.raises(ValueError, match=r"train_examples.*Received: "
                                         r"train_examples=0"):
        fashion_mnist_arrays(data_dir=fashion_dir, train_examples=0)


def test_pipelines_match_arrays_and_cifar_shape(fashion_dir):
    data = load_fashion_mnist(data_dir=fashion_dir, batch_size=32,
                              image_size=32, channels=3, seed=0)
    assert data.input_shape == (32, 32, 3)
    arrays = fashion_mnist_arrays(data_dir=fashion_dir, image_size=32,
                                  channels=3, seed=0)
    images = np.concatenate([x for x, _ in data.test])
    assert images.shape == (50, 32, 32, 3)
    np.testing.assert_allclose(images, arrays.test[0], atol=1e-6)
    x, y = next(iter(data.train))
    assert tuple(x.shape) == (32, 32, 32, 3) and x.dtype.name == "float32"
    # Shuffled with the seed, reshuffled each epoch, same images.
    first = np.concatenate([y for _, y in data.train])
    second = np.concatenate([y for _, y in data.train])
    assert not np.array_equal(first, second)
    assert sorted(first) == sorted(arrays.train[1])


def test_missing_files_error_says_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError,
                       match=r"(?s)Fashion-MNIST not found.*"
                             r"apt-get install dataset-fashion-mnist.*"
                             r"load_data\(\).*data_dir="):
        load_fashion_mnist(data_dir=str(tmp_path))
    # Without `data_dir`: Keras's cache, then the Debian folder.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "debian"))
    with pytest.raises(FileNotFoundError, match="keras/datasets/"
                                                "fashion-mnist"):
        fashion_mnist_arrays()
    write_fashion(str(tmp_path / "keras" / "datasets" / "fashion-mnist"),
                  gz=False)
    assert len(fashion_mnist_arrays().test[1]) == 50


def test_damaged_files_name_the_path(tmp_path):
    write_fashion(str(tmp_path))
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels, "rb") as f:
        raw = f.read()
    with gzip.open(labels, "wb") as f:  # Truncated.
        f.write(raw[:-3])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz holds "
                                         r"55 bytes.*truncated"):
        fashion_mnist_arrays(data_dir=str(tmp_path))
    labels.write_bytes(b"not a gzip file at all")
    with pytest.raises(ValueError, match="Cannot read the IDX file .*"
                                         "t10k-labels-idx1-ubyte.gz"):
        fashion_mnist_arrays(data_dir=str(tmp_path))
    with gzip.open(labels, "wb") as f:  # An images file as labels.
        f.write(_idx_bytes(np.zeros((50, 28, 28))))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz is not "
                                         r"an IDX file of labels.*0x803"):
        fashion_mnist_arrays(data_dir=str(tmp_path))


def test_bad_arguments(fashion_dir):
    with pytest.raises(ValueError, match="image_size.*Received: "
                                         "image_size=4"):
        load_fashion_mnist(data_dir=fashion_dir, image_size=4)
    with pytest.raises(ValueError, match="channels=2"):
        load_fashion_mnist(data_dir=fashion_dir, channels=2)
    with pytest.raises(ValueError, match="batch_size=0"):
        load_fashion_mnist(data_dir=fashion_dir, batch_size=0)
    with pytest.raises(TypeError, match="data_dir=3"):
        load_fashion_mnist(data_dir=3)


def test_labelled_repeated_keeps_each_labelled_example_once_a_pass(
        fashion_dir):
    from tfkd.app.experiment import labelled_repeated

    few = load_fashion_mnist(data_dir=fashion_dir, batch_size=16, seed=0,
                             labels_per_class=2)
    kept = np.concatenate([y for _, y in few.train])
    kept = np.sort(kept[kept >= 0])
    for cache_seed in (None, 0):
        stream = labelled_repeated(few.train, 20, cache_seed=cache_seed)
        passes = [np.concatenate([y for _, y in stream.unbatch().batch(
            20).take(1)]) for _ in range(2)]
        for labels in passes:  # 20 labelled examples: one pass each.
            np.testing.assert_array_equal(np.sort(labels), kept)
        images, labels = (t.numpy() for t in next(iter(stream)))
        assert images.shape == (20, 28, 28, 1)
        # Images stay with their labels (pixels ~ 20 * label / 255).
        np.testing.assert_array_equal(np.floor(
            images.mean(axis=(1, 2, 3)) * 255 / 20 + 0.01).astype(int),
            labels)


@pytest.mark.parametrize("seed, error", [
    ("0", TypeError), (True, TypeError), (-1, ValueError),
    (2 ** 32, ValueError)])
def test_bad_seed_is_named(fashion_dir, seed, error):
    for load in (fashion_mnist_arrays, load_fashion_mnist):
        with pytest.raises(error, match=r"`seed` must be"):
            load(data_dir=fashion_dir, seed=seed)
