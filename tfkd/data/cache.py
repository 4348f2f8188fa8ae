"""Teacher-output caching: run the frozen teacher once, not every epoch.

When the input pipeline is deterministic (no random augmentation), the
teacher's logits and tapped features are the same every epoch. Caching them
alongside the data turns each training step into a student-only step.
"""

import tensorflow as tf

from tfkd.data.tfds_data import is_deterministic
from tfkd.data.tfds_data import require_finite

# Kept in sync with tfkd.checks (the distillers read these keys).
_IMAGES = "images"
_LOGITS = "teacher_logits"
_FEATURES = "teacher_features"


def _images_of(x):
    """The images of a batch's inputs: `x`, or `x["images"]` for a dict
    carrying per-example data too."""
    return x[_IMAGES] if isinstance(x, dict) else x


def cache_teacher_outputs(distiller, dataset, *, batch_size=None,
                          shuffle=True, seed=0, cache_path="",
                          precompute=True):
    """Streams a data set together with the teacher's outputs, computed once.

    The returned pipeline yields `({"images", "teacher_logits",
    "teacher_features"}, labels)` batches (plus any per-example entries
    the input's dicts carry beside `"images"`, such as CRD's `"index"`
    from `tfkd.methods.crd.with_example_index`); every tfkd distiller recognises
    such batches and skips its teacher forward pass. `predict` on such a
    batch runs the student on the images.

    The cache is built over the examples (then reshuffled each epoch if
    `shuffle`), so shuffling the input does not invalidate it; random
    augmentation would, so it is refused.

    Args:
        distiller: The tfkd distiller that will train on the data (its
            teacher and tapped layers define what is cached).
        dataset: A batched `tf.data.Dataset` of `(images, labels)` or
            `(images, labels, sample_weights)`, without random augmentation;
            `images` may be a dict holding them under `"images"` with
            per-example data beside them.
        batch_size: Batch size of the output (default: the input's).
        shuffle: Reshuffle the cached examples every epoch.
        seed: Shuffle seed.
        cache_path: `""` caches in memory; a file path caches on disk (for
            data sets whose features do not fit in memory).
        precompute: Fill the cache now (one pass of the teacher), so the
            first epoch is already student-only.

    Returns:
        A `tf.data.Dataset` for `distiller.fit` / `evaluate`.

    Example:

    >>> import tfkd
    >>> from tfkd import testing
    >>> d = tfkd.Distiller(testing.tiny_conv_model("t"),
    ...                    testing.tiny_conv_model("s"))
    >>> data = tfkd.data.load_digits(image_size=8, batch_size=32)
    >>> cached = cache_teacher_outputs(d, data.validation, shuffle=False)
    >>> sorted(next(iter(cached))[0])
    ['images', 'teacher_features', 'teacher_logits']
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "`dataset` must be a batched `tf.data.Dataset` of (images, "
            f"labels). Received: dataset={dataset!r} of type "
            f"{type(dataset).__name__}."
        )
    if not hasattr(distiller, "teacher_forward"):
        raise TypeError(
            "`distiller` must be a tfkd distiller (it defines which teacher "
            f"outputs to cache). Received: {type(distiller).__name__}."
        )
    # The cache holds one pass: it is complete only at the data's end.
    require_finite(dataset, "dataset", what="the cache runs the teacher over "
                   "every example once")
    if not is_deterministic(dataset, allow_shuffle=True):
        raise ValueError(
            "Refusing to cache teacher outputs over a pipeline with random "
            "augmentation: the teacher would see different images than the "
            "student in later epochs. Build the data with augmentation off "
            "(e.g. `load_dataset(..., augment=False)`) or train without the "
            "cache."
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            "`dataset` must yield `(images, labels)` or `(images, labels, "
            f"sample_weights)` batches. Received element_spec={spec}."
        )
    if isinstance(spec[0], dict) and _IMAGES not in spec[0]:
        raise ValueError(
            "`dataset` yields dict inputs without an 'images' entry "
            f"(keys {sorted(spec[0])}). tfkd's dict batches hold the images "
            "under 'images' and per-example data (e.g. CRD's 'index', "
            "`tfkd.methods.crd.with_example_index`) beside them."
        )
    if batch_size is None:
        batch_size = _images_of(spec[0]).shape[0]
    if batch_size is None:
        for first in dataset.take(1):
            batch_size = int(tf.shape(_images_of(first[0]))[0])
    if batch_size is None:
        raise ValueError("Cannot infer `batch_size` from an empty dataset; "
                         "pass batch_size=.")

    @tf.function
    def teacher_outputs(images):
        logits, features = distiller.teacher_forward(images)
        return logits, tuple(features)

    def attach(x, labels, *weights):
        logits, features = teacher_outputs(_images_of(x))
        # Per-example data beside the images (CRD's example index) stays
        # at the top of the dict, where the terms read it.
        inputs = dict(x) if isinstance(x, dict) else {_IMAGES: x}
        inputs.update({_LOGITS: logits, _FEATURES: features})
        return (inputs, labels) + tuple(weights)

    cached = dataset.map(attach).unbatch().cache(cache_path)
    count = None
    if precompute:
        count = sum(1 for _ in cached)
        # unbatch() loses the cardinality; restoring it lets Keras size
        # its epochs (and progress bars) from the first epoch on.
        cached = cached.apply(tf.data.experimental.assert_cardinality(count))
    if shuffle:
        cached = cached.shuffle(count or 10000, seed=seed,
                                reshuffle_each_iteration=True)
    return cached.batch(batch_size).prefetch(tf.data.AUTOTUNE)
