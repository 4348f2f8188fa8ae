"""Fashion-MNIST from its four IDX files, offline.

Zalando's Fashion-MNIST (60,000 training + 10,000 test grey-scale 28×28
images of 10 kinds of clothing, MNIST's file format) is read from the
original IDX files, gzipped or not. tfkd never downloads them; it looks, in
order, in `data_dir=` (when given, only there), in Keras's dataset cache
(`$KERAS_HOME/datasets/fashion-mnist`, `~/.keras/datasets/fashion-mnist`:
where `keras.datasets.fashion_mnist.load_data()` puts them) and where the
Debian package `dataset-fashion-mnist` installs them
(`/usr/share/datasets/fashion-mnist`).
"""

import gzip
import os

import numpy as np
import tensorflow as tf

from tfkd.data.digits import DataSplits
from tfkd.data.digits import _check_fraction
from tfkd.data.few_labels import _check_seed

#: The four files, by split and kind (each may also end in `.gz`).
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
#: Where the Debian package `dataset-fashion-mnist` installs the files.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10
#: Class names, by label.
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# IDX magic numbers: 0x08 (unsigned byte) then the number of dimensions.
_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


def search_dirs():
    """The folders searched when no `data_dir` is given, in order.

    Returns:
        A list of folder paths: Keras's dataset cache, then the Debian
        package's folder.

    Example:

    >>> search_dirs()[-1]
    '/usr/share/datasets/fashion-mnist'
    """
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras")
    return [os.path.join(keras_home, "datasets", "fashion-mnist"), DEBIAN_DIR]


def _find(folder, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_files(data_dir=None):
    """The paths of the four IDX files.

    Args:
        data_dir: A folder holding the four files (gzipped or not), or
            `None` to search `search_dirs()`.

    Returns:
        `{(split, kind): path}` for `split` in `train`/`test` and `kind` in
        `images`/`labels`.

    Raises:
        FileNotFoundError: If no searched folder holds all four files; the
            message says where tfkd looked and how to get them.
    """
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError("`data_dir` must be a folder path or None. Received: "
                        f"data_dir={data_dir!r}.")
    folders = [os.fspath(data_dir)] if data_dir is not None else search_dirs()
    for folder in folders:
        paths = {key: _find(folder, name) for key, name in FILES.items()}
        if all(paths.values()):
            return paths
    names = ", ".join(f"{name}[.gz]" for name in FILES.values())
    raise FileNotFoundError(
        f"Fashion-MNIST not found: no folder among {folders} holds all four "
        f"IDX files ({names}). tfkd never downloads data. Get them with one "
        "of: `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, "
        f"installs them in {DEBIAN_DIR}); "
        "`python -c \"import keras; keras.datasets.fashion_mnist.load_data()"
        "\"` on a connected machine (fills Keras's cache, "
        "~/.keras/datasets/fashion-mnist, which you can copy); or download "
        "them from https://github.com/zalandoresearch/fashion-mnist and pass "
        "`data_dir=` (`--data-dir`) naming their folder.")


def read_idx(path, kind):
    """Reads one IDX file of unsigned bytes (gzipped or not).

    Args:
        path: The file's path.
        kind: `"images"` (3-D: count, rows, columns) or `"labels"` (1-D).

    Returns:
        A `uint8` NumPy array of the file's shape.

    Raises:
        ValueError: If the file is not such an IDX file (bad magic number,
            truncated or too long), naming the path.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 7]))
    >>> read_idx(path, "labels").tolist()
    [3, 7]
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
        raise ValueError(f"Cannot read the IDX file {path}: {e}. The file is "
                         "damaged; fetch it again.") from e
    ndim = 3 if kind == "images" else 1
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != _MAGIC[kind]:
        raise ValueError(
            f"{path} is not an IDX file of {kind}: its magic number is "
            f"{magic if magic is None else hex(magic)}, expected "
            f"{hex(_MAGIC[kind])}. The file is damaged or not Fashion-MNIST; "
            "fetch it again.")
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, shorter "
                         "than its IDX header. Fetch it again.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big")
                  for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(
            f"{path} holds {len(raw)} bytes but its header declares shape "
            f"{shape} ({expected} bytes): the file is truncated or damaged. "
            "Fetch it again.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


_CACHE = {}


def _read_all(data_dir):
    """`{split: (images uint8 (n, 28, 28), labels int32)}`, read once per
    set of files and process (the 60,000 images take a second to decode)."""
    paths = find_files(data_dir)
    key = tuple(sorted((k, os.path.abspath(p), os.stat(p).st_mtime_ns,
                        os.path.getsize(p))
                       for k, p in paths.items()))
    if key not in _CACHE:
        out = {}
        for split in ("train", "test"):
            images = read_idx(paths[(split, "images")], "images")
            labels = read_idx(paths[(split, "labels")], "labels")
            if len(images) != len(labels):
                raise ValueError(
                    f"{paths[(split, 'images')]} holds {len(images)} images "
                    f"but {paths[(split, 'labels')]} {len(labels)} labels: "
                    "the files do not belong together. Fetch them again.")
            if labels.size and labels.max() >= NUM_CLASSES:
                raise ValueError(
                    f"{paths[(split, 'labels')]} holds the label "
                    f"{int(labels.max())}; Fashion-MNIST has classes 0-9. "
                    "The file is damaged; fetch it again.")
            out[split] = (images, labels.astype("int32"))
        _CACHE.clear()
        _CACHE[key] = out
    return _CACHE[key]


def _check_image_size(received):
    image_size = received
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool)
                       and s >= 8 for s in image_size)):
        raise ValueError(
            "`image_size` must be an int or a pair of ints >= 8 (28 is the "
            f"native size, 32 for the CIFAR zoo). Received: "
            f"image_size={received!r}.")
    return tuple(image_size)


def _split(data_dir, validation_fraction, seed, labels_per_class,
           train_examples):
    """The uint8 splits: validation carved from the training images,
    stratified with `seed` (as `digits_arrays`); the test split untouched."""
    from sklearn.model_selection import train_test_split

    _check_fraction(validation_fraction, "validation_fraction")
    seed = _check_seed(seed)
    raw = _read_all(data_dir)
    x, y = raw["train"]
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=validation_fraction, random_state=seed, stratify=y)
    if train_examples is not None:
        if isinstance(train_examples, bool) or not isinstance(
                train_examples, int) or not 0 < train_examples <= len(y_train):
            raise ValueError(
                "`train_examples` must be None (every training image) or an "
                f"int in [1, {len(y_train)}] (the training split's size). "
                f"Received: train_examples={train_examples!r}.")
        if train_examples < len(y_train):
            x_train, _, y_train, _ = train_test_split(
                x_train, y_train, train_size=train_examples,
                random_state=seed, stratify=y_train)
    if labels_per_class is not None:
        from tfkd.data.few_labels import unlabel

        y_train = unlabel(y_train, labels_per_class, seed=seed)
    return {"train": (x_train, y_train), "validation": (x_val, y_val),
            "test": raw["test"]}


def _check_channels(channels):
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(
            f"`channels` must be 1 or 3. Received: channels={channels!r}.")


def _preprocess(images, image_size, channels):
    """uint8 `(n, 28, 28)` -> float32 `(n, H, W, channels)` in [0, 1]."""
    x = tf.cast(images, tf.float32)[..., None] / 255.0
    if tuple(image_size) != (28, 28):
        x = tf.image.resize(x, image_size, method="bilinear")
        x = tf.clip_by_value(x, 0.0, 1.0)
    if channels == 3:
        x = tf.repeat(x, 3, axis=-1)
    return x


def fashion_mnist_arrays(image_size=28, channels=1, validation_fraction=0.1,
                         seed=0, labels_per_class=None, data_dir=None,
                         train_examples=None):
    """Fashion-MNIST as NumPy arrays: train / validation / test.

    Pixels are scaled to `[0, 1]` (and bilinearly resized to `image_size`).
    The validation split is carved from the 60,000 training images,
    stratified, depending only on `seed`; the test split is the original
    10,000 images, untouched.

    Args:
        image_size: Output side length (int) or `(height, width)`, >= 8
            (28: native; 32 for the CIFAR zoo).
        channels: 1 (grey) or 3 (grey repeated, for RGB models).
        validation_fraction: Fraction of the training images held out for
            validation.
        seed: Seed of the split (and of the labels kept), an int in
            `[0, 2**32)`.
        labels_per_class: `None` (every training label) or the training
            labels kept per class (stratified, chosen with `seed`); the
            others become `-1` (unlabelled).
        data_dir: Folder of the four IDX files (default: search
            `search_dirs()`).
        train_examples: `None` (all) or the number of training images kept
            (a stratified subset chosen with `seed`), for smaller budgets.

    Returns:
        A `DataSplits` of `(x, y)` pairs: `x` float32 `(n, H, W, channels)`,
        `y` int32 `(n,)`.

    Raises:
        FileNotFoundError: If the files are not found (the message says how
            to get them).
        ValueError: For a damaged file or a bad argument.
    """
    image_size = _check_image_size(image_size)
    _check_channels(channels)
    splits = _split(data_dir, validation_fraction, seed, labels_per_class,
                    train_examples)
    arrays = {name: (_preprocess(x, image_size, channels).numpy(), y)
              for name, (x, y) in splits.items()}
    return DataSplits(num_classes=NUM_CLASSES,
                      input_shape=image_size + (channels,), **arrays)


def load_fashion_mnist(image_size=28, channels=1, batch_size=64,
                       validation_fraction=0.1, seed=0, labels_per_class=None,
                       data_dir=None, train_examples=None):
    """Fashion-MNIST as batched `tf.data` pipelines, as `load_digits`.

    The training pipeline is shuffled with `seed` (reshuffled each epoch);
    all three are batched, scaled to `[0, 1]` batch by batch (the images
    stay `uint8` in memory) and prefetched. No random augmentation, so
    teacher outputs may be cached (`tfkd.data.cache_teacher_outputs`).

    With `labels_per_class=N`, `N` training images a class keep their
    label and the others are labelled `-1` (unlabelled transfer data);
    validation and test keep every label. The images and the split are
    those of `labels_per_class=None` with the same `seed`, so a teacher
    trained on the full split never saw the validation or test images.

    Args:
        image_size: Output side length (int) or `(height, width)`, >= 8
            (28: native; 32 with `channels=3` for the CIFAR zoo).
        channels: 1 (grey) or 3 (grey repeated).
        batch_size: Batch size, a positive int.
        validation_fraction: Fraction of the 60,000 training images held
            out for validation (stratified, with `seed`).
        seed: Seed of the split, of the labels kept and of the shuffling,
            an int in `[0, 2**32)`.
        labels_per_class: `None` (every training label) or the training
            labels kept per class; the rest are `-1`.
        data_dir: Folder of the four IDX files, gzipped or not (default:
            Keras's cache, then the Debian package's folder).
        train_examples: `None` (every training image) or the number kept,
            a stratified subset chosen with `seed`.

    Returns:
        A `DataSplits` of `tf.data.Dataset`s yielding `(images, labels)`.

    Raises:
        FileNotFoundError: If the files are not found (the message says how
            to get them: `apt-get install dataset-fashion-mnist`, Keras's
            downloader on a connected machine, or `data_dir`).
        ValueError: For a damaged file (naming it) or a bad argument.

    Example:

    ```python
    data = tfkd.data.load_fashion_mnist(batch_size=128, labels_per_class=10)
    images, labels = next(iter(data.train))  # (128, 28, 28, 1), -1 or 0-9
    ```
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) \
            or batch_size < 1:
        raise ValueError(
            "`batch_size` must be a positive int. Received: "
            f"batch_size={batch_size!r}.")
    image_size = _check_image_size(image_size)
    _check_channels(channels)
    splits = _split(data_dir, validation_fraction, seed, labels_per_class,
                    train_examples)

    def pipeline(xy, shuffle):
        ds = tf.data.Dataset.from_tensor_slices(xy)
        if shuffle:
            ds = ds.shuffle(len(xy[0]), seed=seed,
                            reshuffle_each_iteration=True)
        # Scaling whole batches: one op per batch, not per image.
        ds = ds.batch(batch_size).map(
            lambda x, y: (_preprocess(x, image_size, channels), y),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    return DataSplits(
        train=pipeline(splits["train"], shuffle=True),
        validation=pipeline(splits["validation"], shuffle=False),
        test=pipeline(splits["test"], shuffle=False),
        num_classes=NUM_CLASSES,
        input_shape=image_size + (channels,),
    )
