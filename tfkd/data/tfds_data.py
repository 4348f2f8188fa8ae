"""tensorflow-datasets loaders for the papers' data sets: CIFAR-10/100, MNIST.

`load_tfds` builds the train / validation / test `tf.data` pipelines the
papers train on (standard pad-and-crop augmentation, per-channel
normalisation); `load_dataset` also reaches the embedded digits set;
`is_deterministic` tells whether a pipeline applies random augmentation, so
that teacher outputs are only ever cached over fixed inputs.

Data sets are never downloaded silently: a data set that is not prepared in
`data_dir` raises a `DatasetNotFoundError` explaining how to provide it.
"""

import inspect
import os

import tensorflow as tf

from tfkd import _compat
from tfkd.data.digits import DataSplits
from tfkd.data.digits import load_digits

# Per-channel mean and (population) standard deviation of the pixels, scaled
# to [0, 1], of the 50,000 training images: the constants the papers' public
# code normalises with. (The often copied std (0.2023, 0.1994, 0.2010) is the
# mean of per-image stds, not the data set's std.)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# What each supported data set needs. `archives` are the files tfds looks for
# in `<data_dir>/downloads/manual` before going to the network.
_DATASETS = {
    "cifar10": dict(
        num_classes=10, shape=(32, 32, 3), mean=CIFAR10_MEAN,
        std=CIFAR10_STD, flip=True, archives=("cifar-10-binary.tar.gz",),
    ),
    "cifar100": dict(
        num_classes=100, shape=(32, 32, 3), mean=CIFAR100_MEAN,
        std=CIFAR100_STD, flip=True, archives=("cifar-100-binary.tar.gz",),
    ),
    "mnist": dict(
        num_classes=10, shape=(28, 28, 1), mean=None, std=None, flip=False,
        archives=(
            "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        ),
    ),
}
TFDS_DATASETS = tuple(_DATASETS)
DATASETS = ("digits", "fashion_mnist") + TFDS_DATASETS

# Augmentation padding, in pixels on every side, as in the papers.
_PAD = 4


class DatasetNotFoundError(FileNotFoundError):
    """A tensorflow-datasets data set is not prepared where tfkd looked.

    A `FileNotFoundError`, so `except FileNotFoundError` catches it. The
    message names the data set, the directory searched and how to provide
    the data.
    """


def _default_data_dir():
    # Same rule as tfds itself, without importing it.
    return os.environ.get(
        "TFDS_DATA_DIR",
        os.path.join(os.path.expanduser("~"), "tensorflow_datasets"),
    )


def _not_found_message(name, data_dir, looked_in, download):
    manual = os.path.join(data_dir, "downloads", "manual")
    archives = ", ".join(_DATASETS[name]["archives"])
    reason = (
        "download=False" if not download
        else "download=True, but downloading and preparing it failed (see "
        "the error above)"
    )
    return (
        f"The tensorflow-datasets data set {name!r} is not prepared in "
        f"data_dir={data_dir!r} (looked for {looked_in}), and {reason}. "
        "To provide it, either:\n"
        f"  1. on a machine with network access run `tfds build {name} "
        f"--data_dir=<dir>` (or `tfds.builder({name!r}, "
        "data_dir=<dir>).download_and_prepare()` in Python), then copy "
        f"<dir>/{name} to {os.path.join(data_dir, name)}; or\n"
        f"  2. place the original archive(s) ({archives}) in {manual} and "
        f"call load_tfds({name!r}, data_dir={data_dir!r}, download=True) "
        "(tfds then prepares it without network access); or\n"
        "  3. pass `data_dir=` pointing at a directory that already holds "
        f"{name}/ (the default is $TFDS_DATA_DIR, else ~/tensorflow_datasets)."
    )


def _prepared_builder(name, data_dir, download):
    """A tfds builder whose data are on disk, or a `DatasetNotFoundError`."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    # `is_prepared` only looks for `dataset_info.json` / `features.json` in
    # the version directory: local file checks, no network.
    if builder.is_prepared():
        return builder
    looked_in = os.path.join(str(builder.data_path), "dataset_info.json")
    if not download:
        raise DatasetNotFoundError(
            _not_found_message(name, data_dir, looked_in, download)
        )
    try:
        builder.download_and_prepare()
    except Exception as error:  # Any failure gets the same guidance.
        raise DatasetNotFoundError(
            f"{type(error).__name__}: {error}\n"
            + _not_found_message(name, data_dir, looked_in, download)
        ) from error
    return builder


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}."
        )


def _check_args(name, batch_size, validation_split, image_size, channels,
                seed, shuffle_buffer):
    """Validates `load_tfds`'s arguments; returns `(name, image_size)`."""
    if not isinstance(name, str) or name.lower() not in _DATASETS:
        raise ValueError(
            f"Unknown data set for `load_tfds`. Received: name={name!r}. "
            f"Expected one of {list(TFDS_DATASETS)} (use `load_dataset` "
            "for 'digits')."
        )
    name = name.lower()
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(shuffle_buffer, "shuffle_buffer")
    if validation_split is not None and (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, (int, float))
        or not 0.0 < validation_split < 1.0
    ):
        raise ValueError(
            "`validation_split` must be a fraction in (0, 1) of the training "
            "split, or None to validate on the test split. Received: "
            f"validation_split={validation_split!r}."
        )
    if image_size is not None:
        if isinstance(image_size, int) and not isinstance(image_size, bool):
            image_size = (image_size, image_size)
        if (
            not isinstance(image_size, (tuple, list))
            or len(image_size) != 2
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 1
                for s in image_size
            )
        ):
            raise ValueError(
                "`image_size` must be None (native size), a positive int or "
                f"a pair of positive ints. Received: image_size={image_size!r}."
            )
        image_size = tuple(image_size)
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise ValueError(
            "`channels` must be None (native), 1 (grey) or 3 (RGB). "
            f"Received: channels={channels!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` must be an int. Received: seed={seed!r}.")
    return name, image_size


def _augment_fn(shape, flip):
    """Zero-pad by `_PAD`, random crop back to `shape`, optional h-flip."""
    height, width, depth = shape

    def augment(example, random_int):
        image, label = example
        # Stateless ops seeded per element from a seeded random stream:
        # reproducible for a given `seed`, yet different every epoch.
        crop_seed = tf.stack([random_int, tf.constant(0, tf.int64)])
        flip_seed = tf.stack([random_int, tf.constant(1, tf.int64)])
        # Zero-pad the raw uint8 image (black borders), as the papers'
        # torchvision `RandomCrop(32, padding=4)` does.
        image = tf.pad(image, [[_PAD, _PAD], [_PAD, _PAD], [0, 0]])
        image = tf.image.stateless_random_crop(
            image, size=(height, width, depth), seed=crop_seed
        )
        if flip:
            image = tf.image.stateless_random_flip_left_right(
                image, seed=flip_seed
            )
        return image, label

    return augment


def _preprocess_fn(spec, image_size, channels):
    """Batched uint8 -> normalised float32, resized, channel-converted."""
    mean = None if spec["mean"] is None else tf.constant(spec["mean"])
    std = None if spec["std"] is None else tf.constant(spec["std"])
    native_size = spec["shape"][:2]
    native_channels = spec["shape"][2]

    def preprocess(images, labels):
        images = tf.cast(images, tf.float32) / 255.0
        if image_size is not None and tuple(image_size) != native_size:
            images = tf.image.resize(images, image_size, method="bilinear")
        if mean is not None:
            images = (images - mean) / std
        # Channel conversion after normalisation: grey is then a weighted sum
        # of zero-mean channels and stays (close to) standardised.
        if channels == 1 and native_channels == 3:
            images = tf.image.rgb_to_grayscale(images)
        elif channels == 3 and native_channels == 1:
            images = tf.repeat(images, 3, axis=-1)
        return images, tf.cast(labels, tf.int32)

    return preprocess


def load_tfds(name, *, data_dir=None, batch_size=128, augment=True,
              validation_split=0.1, image_size=None, channels=None, seed=0,
              download=False, shuffle_buffer=10000, cache=True):
    """CIFAR-10, CIFAR-100 or MNIST as batched `tf.data` pipelines.

    Pixels are scaled to `[0, 1]`; CIFAR images are then standardised per
    channel with the training set's mean and std (`CIFAR10_MEAN`,
    `CIFAR10_STD`, `CIFAR100_MEAN`, `CIFAR100_STD`); MNIST stays in
    `[0, 1]`. Labels are int32.

    With `augment=True` the training split only gets the papers' standard
    augmentation: zero-padding by 4 pixels (black borders on the raw image,
    as torchvision's `RandomCrop(32, padding=4)`), a random crop back to the
    native size, and for CIFAR a random horizontal flip (never for MNIST,
    whose digits are not mirror-symmetric). Augmentation is seeded by `seed`
    and differs every epoch; it happens at native resolution, before any
    resize to `image_size`.

    The training pipeline is shuffled (seeded, reshuffled every epoch); all
    three pipelines are batched (last batch kept) and prefetched.

    Validation: with a fraction, the *last* `validation_split` of the
    training split (tfds slicing, e.g. `train[:90%]` / `train[90%:]`) is held
    out, un-augmented. With `validation_split=None` the test split doubles as
    validation set: the papers train on all 50,000 training images and
    report test accuracy, so use `None` to reproduce their tables (and do not
    tune hyperparameters on it).

    Args:
        name: `"cifar10"`, `"cifar100"` or `"mnist"`.
        data_dir: tfds data directory. Default: `$TFDS_DATA_DIR`, else
            `~/tensorflow_datasets`.
        batch_size: Batch size, a positive int.
        augment: Whether to augment the training split.
        validation_split: Fraction in (0, 1) of the training split held out
            for validation, or None to validate on the test split.
        image_size: None (native), or an int or `(height, width)` to resize
            to (bilinear).
        channels: None (native), 1 or 3. RGB -> grey uses luminance weights,
            grey -> RGB repeats the channel; applied after normalisation.
        seed: Seed of file order, shuffling and augmentation.
        download: Whether to download and prepare a data set missing from
            `data_dir`. Off by default: tfkd never touches the network
            unasked.
        shuffle_buffer: Size of the shuffle buffer, a positive int.
        cache: Whether to keep the decoded uint8 images in memory after the
            first epoch (about 150 MB for CIFAR, 50 MB for MNIST).

    Returns:
        A `DataSplits` whose `train`, `validation` and `test` are
        `tf.data.Dataset`s of `(images, labels)` batches, float32
        `(batch, H, W, C)` and int32 `(batch,)`, plus `num_classes` and
        `input_shape`. `is_deterministic(splits.train)` is False when it is
        augmented.

    Raises:
        DatasetNotFoundError: (a `FileNotFoundError`) the data set is not
            prepared in `data_dir` and `download` is off or failed.

    Example:

    >>> data = load_tfds("cifar10", data_dir="/data/tfds")  # doctest: +SKIP
    >>> data.input_shape, data.num_classes  # doctest: +SKIP
    ((32, 32, 3), 10)

    Reference:
        - [He et al., 2016](https://arxiv.org/abs/1512.03385), §4.2: the
          pad-4 / crop / flip CIFAR augmentation.
    """
    name, image_size = _check_args(
        name, batch_size, validation_split, image_size, channels, seed,
        shuffle_buffer,
    )
    import tensorflow_datasets as tfds

    spec = _DATASETS[name]
    data_dir = os.path.expanduser(
        str(data_dir) if data_dir is not None else _default_data_dir()
    )
    builder = _prepared_builder(name, data_dir, download)

    if validation_split is None:
        train_split, val_split = "train", "test"
    else:
        # Percent slices may be fractional (`train[:87.5%]`) in tfds >= 4.
        cut = f"{100.0 * (1.0 - validation_split):g}%"
        train_split, val_split = f"train[:{cut}]", f"train[{cut}:]"

    def read(split, shuffle_files):
        ds = builder.as_dataset(
            split=split, as_supervised=True, shuffle_files=shuffle_files,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        return ds.cache() if cache else ds

    preprocess = _preprocess_fn(spec, image_size, channels)

    def finish(ds):
        ds = ds.batch(batch_size).map(
            preprocess, num_parallel_calls=tf.data.AUTOTUNE
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    train = read(train_split, shuffle_files=True).shuffle(
        shuffle_buffer, seed=seed, reshuffle_each_iteration=True
    )
    if augment:
        randoms = tf.data.Dataset.random(
            seed=seed, rerandomize_each_iteration=True
        )
        train = tf.data.Dataset.zip((train, randoms)).map(
            _augment_fn(spec["shape"], spec["flip"]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    validation = finish(read(val_split, shuffle_files=False))
    test = validation if val_split == "test" else finish(
        read("test", shuffle_files=False)
    )

    height, width = image_size or spec["shape"][:2]
    return DataSplits(
        train=finish(train),
        validation=validation,
        test=test,
        num_classes=spec["num_classes"],
        input_shape=(height, width, channels or spec["shape"][2]),
    )


def load_dataset(name, **kwargs):
    """Loads any data set tfkd knows by name.

    `"digits"` goes to `tfkd.data.load_digits` (embedded, offline),
    `"fashion_mnist"` to `tfkd.data.load_fashion_mnist` (local IDX files),
    `"cifar10"`, `"cifar100"` and `"mnist"` to `load_tfds`.

    Args:
        name: One of `DATASETS`: `"digits"`, `"fashion_mnist"`, `"cifar10"`, `"cifar100"`,
            `"mnist"` (case-insensitive).
        **kwargs: Keyword arguments of the chosen loader.

    Returns:
        The loader's `DataSplits`.

    Example:

    >>> data = load_dataset("digits", image_size=8, batch_size=16)
    >>> data.input_shape
    (8, 8, 1)
    """
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(
            f"Unknown data set. Received: name={name!r}. Expected one of "
            f"{list(DATASETS)}."
        )
    name = name.lower()
    if name in ("digits", "fashion_mnist"):
        from tfkd.data.fashion_mnist import load_fashion_mnist

        loader = load_digits if name == "digits" else load_fashion_mnist
        accepted = inspect.signature(loader).parameters
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise TypeError(
                f"`load_dataset({name!r})` got arguments it does not take: "
                f"{unknown}. Received: {kwargs!r}. It accepts "
                f"{list(accepted)} (see `tfkd.data.{loader.__name__}`)."
            )
        return loader(**kwargs)
    return load_tfds(name, **kwargs)


# Op types that only reorder elements; randomness, but not of their values.
_SHUFFLE_OPS = (
    "ShuffleDataset", "ShuffleDatasetV2", "ShuffleDatasetV3",
    "ShuffleAndRepeatDataset", "ShuffleAndRepeatDatasetV2",
)


def _is_random_op(op_type):
    return (
        "Random" in op_type       # RandomUniform, StatelessRandom*, ...
        or "Multinomial" in op_type
        or op_type.startswith("Rng")  # tf.random.Generator state ops.
    )


def is_deterministic(dataset, *, allow_shuffle=True):
    """Whether a `tf.data` pipeline yields the same values every epoch.

    Looks through the pipeline's graph (including the functions of its
    `map`s) for random ops: random augmentation (tf.image.random_*,
    stateless ops fed by `Dataset.random`, Keras preprocessing layers),
    `sample_from_datasets` choices, etc. Use it before caching teacher
    outputs: a cache is only valid over fixed inputs.

    Randomness hidden inside Python code (`py_function`,
    `from_generator`) is invisible to this check.

    Args:
        dataset: A `tf.data.Dataset`, or a `DataSplits` (then all of its
            splits must be deterministic).
        allow_shuffle: If True (default), shuffling counts as deterministic
            (it reorders examples without changing them); if False, a
            shuffled pipeline is reported non-deterministic too, as needed
            by caches keyed by position in the stream.

    Returns:
        True if no random op was found.

    Example:

    >>> data = load_dataset("digits", image_size=8)
    >>> is_deterministic(data.train), is_deterministic(
    ...     data.train, allow_shuffle=False)
    (True, False)
    """
    if isinstance(dataset, DataSplits):
        return all(
            is_deterministic(ds, allow_shuffle=allow_shuffle)
            for ds in (dataset.train, dataset.validation, dataset.test)
        )
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "`dataset` must be a `tf.data.Dataset` or a `DataSplits`. "
            f"Received: dataset={dataset!r} of type {type(dataset).__name__}."
        )
    graph_def = _compat.dataset_graph_def(dataset)
    op_types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        op_types.update(node.op for node in function.node_def)
    for op_type in op_types:
        if _is_random_op(op_type):
            return False
        if not allow_shuffle and op_type in _SHUFFLE_OPS:
            return False
    return True


def require_finite(dataset, name, *, what="this helper reads it to the end"):
    """Raises unless `dataset` has a known end.

    A helper that reads a whole pipeline (to choose labels, fill a cache,
    collect arrays) never returns from one that repeats forever
    (`ds.repeat()`: `tf.data.INFINITE_CARDINALITY`), so it refuses it. A
    pipeline whose length tf.data cannot tell (`filter`, generators) passes.

    Args:
        dataset: A `tf.data.Dataset`.
        name: The argument's name, quoted in the error.
        what: What the caller does with it, for the message.

    Raises:
        ValueError: For an infinite dataset; the message names the argument
            and the fix (`.take(n)` first, `.repeat()` after).

    Example:

    >>> ds = tf.data.Dataset.range(3)
    >>> require_finite(ds, "data")
    >>> require_finite(ds.repeat(), "data")
    Traceback (most recent call last):
    ...
    ValueError: `data` repeats forever (tf.data cardinality INFINITE, e.g. ...
    """
    if int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            f"`{name}` repeats forever (tf.data cardinality INFINITE, e.g. "
            f"after `.repeat()`), and {what}: it would never return. "
            f"Pass a finite pipeline: take the first examples with "
            f"`{name}.take(n)` (n batches), or apply `.repeat()` after this "
            "call."
        )
