"""The embedded default data set: scikit-learn's bundled handwritten digits.

1,797 real 8×8 grey-scale images of the digits 0-9 ship inside
scikit-learn, so tfkd's demo, quick recipes and tests run offline.
"""

import collections

import numpy as np
import tensorflow as tf

from tfkd.data.few_labels import _check_seed
from tfkd.data.few_labels import unlabel

DataSplits = collections.namedtuple(
    "DataSplits", ["train", "validation", "test", "num_classes", "input_shape"]
)
DataSplits.__doc__ = """Train/validation/test data plus what a model needs.

`train`, `validation` and `test` are `tf.data.Dataset`s of `(image, label)`
batches (or `(x, y)` NumPy pairs from `digits_arrays`), `num_classes` an int
and `input_shape` the `(H, W, C)` of one image.
"""


def _check_image_size(image_size):
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, int) and s >= 8 for s in image_size)
    ):
        raise ValueError(
            "`image_size` must be an int or a pair of ints >= 8 (the digits "
            f"are 8x8 and are only ever upsampled). Received: "
            f"image_size={image_size!r}."
        )
    return tuple(image_size)


def _check_fraction(value, name):
    if not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(
            f"`{name}` must be a fraction in (0, 1). Received: {name}={value!r}."
        )


def digits_arrays(image_size=16, channels=1, validation_fraction=0.15,
                  test_fraction=0.2, seed=0, labels_per_class=None):
    """The digits as NumPy arrays, split into train / validation / test.

    Pixels are scaled to `[0, 1]` and bilinearly resized to `image_size`.
    The split is stratified and depends only on `seed`.

    With `labels_per_class=N` the training split keeps the label of `N`
    images of each class (chosen with `seed`, `tfkd.data.unlabel`) and
    marks the others `-1` (unlabelled: transfer data for the knowledge
    terms); validation and test keep all their labels. The images and the
    split are those of `labels_per_class=None`.

    Args:
        image_size: Output side length (int) or `(height, width)`, >= 8.
        channels: 1 (grey) or 3 (grey repeated, for RGB models).
        validation_fraction: Fraction of all images held out for validation.
        test_fraction: Fraction of all images held out for the final test.
        seed: Seed of the split (and of the labels kept), an int in
            `[0, 2**32)`.
        labels_per_class: `None` (every training label), or the number of
            training labels kept in each class, a positive int (the
            training split holds 109-120 images a class).

    Returns:
        A `DataSplits` whose `train`, `validation`, `test` are `(x, y)` pairs:
        `x` float32 `(n, H, W, channels)`, `y` int32 `(n,)` (`-1` for an
        unlabelled training image).

    Example:

    >>> splits = digits_arrays(image_size=8)
    >>> splits.train[0].shape[1:], splits.num_classes
    ((8, 8, 1), 10)
    >>> few = digits_arrays(image_size=8, labels_per_class=6)
    >>> int((few.train[1] >= 0).sum()), len(few.train[1])
    (60, 1167)
    """
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    image_size = _check_image_size(image_size)
    if channels not in (1, 3):
        raise ValueError(
            f"`channels` must be 1 or 3. Received: channels={channels!r}."
        )
    seed = _check_seed(seed)
    _check_fraction(validation_fraction, "validation_fraction")
    _check_fraction(test_fraction, "test_fraction")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            "`validation_fraction + test_fraction` must be < 1 so that some "
            f"images are left to train on. Received: {validation_fraction} + "
            f"{test_fraction}."
        )
    digits = _sk_load_digits()
    x = (digits.images.astype("float32") / 16.0)[..., None]
    y = digits.target.astype("int32")
    if image_size != (8, 8):
        x = tf.image.resize(x, image_size, method="bilinear").numpy()
    if channels == 3:
        x = np.repeat(x, 3, axis=-1)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    val_share = validation_fraction / (1.0 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_share, random_state=seed, stratify=y_rest
    )
    if labels_per_class is not None:
        y_train = unlabel(y_train, labels_per_class, seed=seed)
    return DataSplits(
        train=(x_train, y_train),
        validation=(x_val, y_val),
        test=(x_test, y_test),
        num_classes=10,
        input_shape=tuple(x.shape[1:]),
    )


def load_digits(image_size=16, channels=1, batch_size=64,
                validation_fraction=0.15, test_fraction=0.2, seed=0,
                labels_per_class=None):
    """The digits as batched `tf.data` pipelines.

    The training pipeline is shuffled with `seed` (reshuffled each epoch);
    all three are batched and prefetched. No random augmentation is applied,
    so the pipelines are deterministic and teacher outputs may be cached.

    `labels_per_class=N` gives a few-label split: `N` labelled training
    images a class, every other training image labelled `-1` (unlabelled),
    validation and test fully labelled (see `digits_arrays`). Train the
    teacher on `load_digits()` (same `seed`: same images) and distil on
    this one; `tfkd.data.labelled_only` gives the labelled images alone.

    Args:
        image_size: Output side length (int) or `(height, width)`, >= 8.
        channels: 1 (grey) or 3 (grey repeated, for RGB models).
        batch_size: Batch size, a positive int.
        validation_fraction: Fraction of all images held out for validation.
        test_fraction: Fraction of all images held out for the final test.
        seed: Seed of the split, of the labels kept and of the shuffling,
            an int in `[0, 2**32)`.
        labels_per_class: `None` (every training label) or the training
            labels kept per class (a positive int); the rest are `-1`.

    Returns:
        A `DataSplits` of `tf.data.Dataset`s yielding `(images, labels)`.

    Example:

    >>> data = load_digits(image_size=16, batch_size=32)
    >>> images, labels = next(iter(data.train))
    >>> tuple(images.shape), data.input_shape
    ((32, 16, 16, 1), (16, 16, 1))
    >>> few = load_digits(image_size=8, labels_per_class=6)
    >>> labels = np.concatenate([y for _, y in few.train])
    >>> int((labels >= 0).sum()), int((labels == -1).sum())
    (60, 1107)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or batch_size < 1:
        raise ValueError(
            "`batch_size` must be a positive int. Received: "
            f"batch_size={batch_size!r}."
        )
    arrays = digits_arrays(
        image_size=image_size, channels=channels,
        validation_fraction=validation_fraction, test_fraction=test_fraction,
        seed=seed, labels_per_class=labels_per_class,
    )

    def pipeline(xy, shuffle):
        ds = tf.data.Dataset.from_tensor_slices(xy)
        if shuffle:
            ds = ds.shuffle(len(xy[0]), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return DataSplits(
        train=pipeline(arrays.train, shuffle=True),
        validation=pipeline(arrays.validation, shuffle=False),
        test=pipeline(arrays.test, shuffle=False),
        num_classes=arrays.num_classes,
        input_shape=arrays.input_shape,
    )
