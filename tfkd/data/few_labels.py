"""Few-label training data: keep N labels a class, mark the rest unlabelled.

Distillation needs no labels for its knowledge terms: a teacher trained on
a labelled set can teach a student on images nobody labelled. tfkd marks an
unlabelled example with the label `-1` (`UNLABELLED`); `tfkd.Distiller`
averages the student loss over the labelled examples of a batch only and
applies its knowledge terms to every example.

- `unlabel(data, labels_per_class, seed=...)` keeps `labels_per_class`
  labels of each class (chosen at random with `seed`, the same number in
  every class) and sets the others to `-1`, on label arrays, `(images,
  labels)` pairs or `tf.data` pipelines;
- `labelled_only(data)` keeps the labelled examples alone (the baseline:
  the student trained on those labels without the unlabelled rest);
- `tfkd.data.load_digits(labels_per_class=N)` builds such a split of the
  embedded digits (validation and test keep all their labels).
"""

import numpy as np

#: The label of an unlabelled example.
UNLABELLED = -1


def _check_labels_per_class(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(
            "`labels_per_class` must be a positive int (labels kept in each "
            f"class). Received: labels_per_class={value!r}. Pass None to "
            "keep every label."
        )
    return int(value)


def _check_seed(seed):
    """`seed` as an int in [0, 2³²), the range of NumPy's and
    scikit-learn's seeds: the same seed, the same split and labels kept."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(
            seed, (int, np.integer)):
        raise TypeError(
            f"`seed` must be an int. Received: seed={seed!r} of type "
            f"{type(seed).__name__}.")
    if not 0 <= seed < 2 ** 32:
        raise ValueError(
            f"`seed` must be in [0, 2**32). Received: seed={seed}.")
    return int(seed)


def keep_mask(labels, labels_per_class, *, seed=0):
    """Which examples keep their label: `labels_per_class` of each class.

    The choice is stratified (the same count in every class) and depends
    only on `labels` and `seed`. Examples already unlabelled (`-1`) stay so.

    Args:
        labels: Integer class ids, shape `(n,)` (`-1` allowed).
        labels_per_class: Labels to keep in each class, a positive int.
        seed: Seed of the choice, an int in `[0, 2**32)`.

    Returns:
        A boolean NumPy array of shape `(n,)`.

    Raises:
        ValueError: If a class has fewer than `labels_per_class` labelled
            examples (naming the class and its count).

    Example:

    >>> int(keep_mask([0, 0, 0, 1, 1, 1], 1, seed=0).sum())
    2
    """
    labels_per_class = _check_labels_per_class(labels_per_class)
    seed = _check_seed(seed)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or (
        np.issubdtype(labels.dtype, np.floating)
        and np.all(labels == np.round(labels))
    )):
        raise ValueError(
            "`labels` must be a 1-D array of integer class ids (-1 for an "
            f"unlabelled example). Received: an array of shape "
            f"{labels.shape} and dtype {labels.dtype}. One-hot labels: pass "
            "`labels.argmax(-1)`."
        )
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < UNLABELLED:
        raise ValueError(
            "`labels` must be class ids >= 0, or -1 for an unlabelled "
            f"example. Received a label {int(labels.min())}."
        )
    rng = np.random.default_rng(seed)
    keep = np.zeros(labels.shape, dtype=bool)
    for cls in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == cls)
        if len(members) < labels_per_class:
            raise ValueError(
                f"Class {int(cls)} has only {len(members)} labelled examples,"
                f" fewer than labels_per_class={labels_per_class}. Lower "
                "`labels_per_class` or use more training data."
            )
        keep[rng.choice(members, labels_per_class, replace=False)] = True
    return keep


def unlabel(data, labels_per_class, *, seed=0):
    """Keeps `labels_per_class` labels of each class; the rest become `-1`.

    The kept examples are chosen at random with `seed`, the same number in
    each class (stratified). Images are never dropped: the unlabelled ones
    are the transfer data the knowledge terms learn from (`tfkd.Distiller`
    trains the student's loss on the labelled examples only).

    Args:
        data: One of
            - a 1-D array (or list) of integer class ids: returns the new
              labels;
            - an `(images, labels)` pair of arrays: returns `(images, new
              labels)`;
            - a `tf.data.Dataset` of `(images, labels)` elements, batched
              or not, whose order is the same on every pass (apply
              `unlabel` before `shuffle`): returns a pipeline yielding the
              same elements with the new labels. It reads the labels once
              to choose, and checks each element's label as it goes, so a
              pipeline whose order changed fails instead of mislabelling.
        labels_per_class: Labels kept per class, a positive int.
        seed: Seed of the choice, an int in `[0, 2**32)`.

    Returns:
        `data` with every label but `labels_per_class` per class set to
        `UNLABELLED` (`-1`), of the same kind as `data`.

    Raises:
        ValueError: For a class with fewer labelled examples than
            `labels_per_class`, labels that are not class ids, or a dataset
            that repeats forever (take the first `n` batches with
            `data.take(n)` first, `.repeat()` after).

    Example:

    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    >>> new = unlabel(y, 1, seed=0)
    >>> int((new >= 0).sum()), sorted(set(new[new >= 0].tolist()))
    (3, [0, 1, 2])
    >>> x = np.zeros((9, 4, 4, 1), "float32")
    >>> images, labels = unlabel((x, y), 2, seed=0)
    >>> int((labels == -1).sum())
    3
    """
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        return _unlabel_dataset(data, labels_per_class, seed)
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
        if len(images) != len(labels):
            raise ValueError(
                "`data` must be an (images, labels) pair of the same length."
                f" Received {len(images)} images and {len(labels)} labels."
            )
        return images, unlabel(labels, labels_per_class, seed=seed)
    if isinstance(data, tuple):
        raise ValueError(
            "`data` must be labels, an (images, labels) pair or a "
            f"`tf.data.Dataset`. Received: a tuple of {len(data)} items."
        )
    labels = np.asarray(data)
    keep = keep_mask(labels, labels_per_class, seed=seed)
    dtype = labels.dtype if np.issubdtype(labels.dtype, np.signedinteger) \
        or np.issubdtype(labels.dtype, np.floating) else np.int64
    return np.where(keep, labels.astype(dtype), UNLABELLED).astype(dtype)


def _is_batched(dataset):
    """Whether a dataset of `(x, y)` elements with class-id labels yields
    batches (labels `(batch,)`) or single examples (labels `()`)."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) >= 2):
        raise ValueError(
            "`data` must yield (images, labels) pairs. Received a dataset "
            f"with element_spec={spec!r}."
        )
    label_spec = spec[1]
    if not label_spec.dtype.is_integer and not label_spec.dtype.is_floating:
        raise ValueError(
            "The dataset's labels must be integer class ids. Received "
            f"labels of dtype {label_spec.dtype.name}."
        )
    rank = label_spec.shape.rank
    if rank not in (0, 1):
        raise ValueError(
            "The dataset's labels must be class ids, one per example "
            "(shape () unbatched, (batch,) batched). Received labels of "
            f"shape {label_spec.shape}; one-hot labels: map them with "
            "`tf.argmax(y, -1)` first."
        )
    return rank == 1


def _dataset_labels(dataset):
    """All labels of a dataset of `(x, y)` elements, in order, and whether
    its elements are batches."""
    import tensorflow as tf

    from tfkd.data.tfds_data import require_finite

    require_finite(dataset, "data", what="`unlabel` reads its labels to "
                   "the end to choose which to keep")
    batched = _is_batched(dataset)
    labels = dataset.map(lambda *e: tf.reshape(e[1], [-1]))
    values = [v.numpy() for v in labels]
    if not values:
        raise ValueError("`data` is an empty dataset (no elements).")
    return np.concatenate(values), batched


def _unlabel_dataset(dataset, labels_per_class, seed):
    import tensorflow as tf

    labels, _ = _dataset_labels(dataset)
    keep = keep_mask(labels, labels_per_class, seed=seed)
    expected = tf.constant(labels.astype(np.int64))
    kept = tf.constant(keep)

    def relabel(offset, element):
        x, y = element[0], element[1]
        flat = tf.reshape(y, [-1])
        n = tf.shape(flat, out_type=tf.int64)[0]
        index = offset + tf.range(n)
        check = tf.debugging.assert_equal(
            tf.cast(flat, tf.int64), tf.gather(expected, index),
            message=(
                "tfkd.data.unlabel: the pipeline's order changed since its "
                "labels were read (a shuffle or random op before `unlabel`?)."
                " Apply `unlabel` to a pipeline in a fixed order, then "
                "shuffle."))
        with tf.control_dependencies([check]):
            new = tf.where(tf.gather(kept, index), flat,
                           tf.cast(UNLABELLED, flat.dtype))
        new = tf.reshape(new, tf.shape(y))
        return offset + n, (x, new) + tuple(element[2:])

    # `scan` passes the element as one structure (not unpacked).
    return dataset.scan(tf.constant(0, tf.int64), relabel)


def labelled_only(data, *, batch_size=None, seed=None):
    """The labelled examples alone (labels `>= 0`).

    The baseline of a few-label experiment: the student trained on the
    labels it has, without the unlabelled rest.

    A dataset is read once, now (one whole pass; the labelled examples of
    a few-label split are few, so they are kept in memory), and the result
    is a pipeline of its own that reshuffles them each pass with `seed`.
    Filtering `data` lazily instead would share its reshuffling: each pass
    over the result would draw `data`'s next shuffle order, so another fit
    on `data` (the distiller's) would see orders that depend on how far
    this one read ahead, which `tf.data`'s prefetching makes
    timing-dependent, and the runs would not be reproducible.

    Args:
        data: An `(images, labels)` pair of arrays, or a finite
            `tf.data.Dataset` of `(images, labels)` elements (batched or
            not; more components, e.g. sample weights, are kept).
        batch_size: For a batched dataset, the batch size of the result
            (required there: the filtered examples are re-batched).
        seed: For a dataset, the seed of the result's reshuffling (`None`:
            TensorFlow's global seed, which `keras.utils.set_random_seed`
            sets). Arrays keep their order: pass no seed with them.

    Returns:
        The same kind as `data`: arrays of the labelled examples in their
        order, or a dataset of them reshuffled each pass.

    Raises:
        ValueError: If `data` holds no labelled example, is an infinite
            dataset, or `batch_size` or `seed` does not fit `data`.

    Example:

    >>> import numpy as np
    >>> x = np.arange(4.0)[:, None]
    >>> images, labels = labelled_only((x, np.array([3, -1, -1, 1])))
    >>> images[:, 0].tolist(), labels.tolist()
    ([0.0, 3.0], [3, 1])
    """
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        if seed is not None:
            seed = _check_seed(seed)
        batched = _is_batched(data)
        if batched:
            if isinstance(batch_size, bool) or not isinstance(
                    batch_size, int) or batch_size < 1:
                raise ValueError(
                    "`data` is a batched dataset: pass the `batch_size` of "
                    "the filtered batches (a positive int). Received: "
                    f"batch_size={batch_size!r}.")
            data = data.unbatch()
        if int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise ValueError(
                "`data` is an infinite dataset (e.g. ends in `.repeat()`): "
                "`labelled_only` reads one whole pass. Pass the finite "
                "pipeline and repeat the result instead.")
        filtered = data.filter(lambda x, y, *rest: y >= 0)
        # All of one pass in one element: exactly one iteration of `data`.
        everything = list(filtered.batch(np.iinfo(np.int32).max).take(1))
        if not everything:
            raise ValueError("`data` holds no labelled example (every label "
                             "is -1).")
        result = tf.data.Dataset.from_tensor_slices(everything[0])
        count = int(tf.shape(tf.nest.flatten(everything[0])[0])[0])
        result = result.shuffle(count, seed=seed,
                                reshuffle_each_iteration=True)
        return result.batch(batch_size) if batched else result
    if seed is not None:
        raise ValueError(
            "`seed` reshuffles a dataset's labelled examples; arrays are "
            f"returned in their order. Received: seed={seed!r} with arrays. "
            "Drop `seed`, or shuffle the arrays yourself.")
    if not (isinstance(data, tuple) and len(data) == 2):
        raise ValueError(
            "`data` must be an (images, labels) pair of arrays or a "
            f"`tf.data.Dataset`. Received: {type(data).__name__}.")
    images, labels = data
    labels = np.asarray(labels)
    keep = labels >= 0
    if not keep.any():
        raise ValueError("`data` holds no labelled example (every label is "
                         "-1).")
    return np.asarray(images)[keep], labels[keep]
