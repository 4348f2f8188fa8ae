"""Data: the embedded digits set, Fashion-MNIST from its IDX files, tensorflow-datasets loaders and few-label
splits (label `-1` marks an unlabelled example)."""

from typing import TYPE_CHECKING

from tfkd import _lazy

if TYPE_CHECKING:
    # Imported on first use (see `tfkd._lazy`).
    from tfkd.data.cache import cache_teacher_outputs  # noqa: F401
    from tfkd.data.digits import DataSplits  # noqa: F401
    from tfkd.data.digits import digits_arrays  # noqa: F401
    from tfkd.data.digits import load_digits  # noqa: F401
    from tfkd.data.fashion_mnist import fashion_mnist_arrays  # noqa: F401
    from tfkd.data.fashion_mnist import load_fashion_mnist  # noqa: F401
    from tfkd.data.few_labels import UNLABELLED  # noqa: F401
    from tfkd.data.few_labels import labelled_only  # noqa: F401
    from tfkd.data.few_labels import unlabel  # noqa: F401
    from tfkd.data.tfds_data import DATASETS  # noqa: F401
    from tfkd.data.tfds_data import DatasetNotFoundError  # noqa: F401
    from tfkd.data.tfds_data import is_deterministic  # noqa: F401
    from tfkd.data.tfds_data import load_dataset  # noqa: F401
    from tfkd.data.tfds_data import load_tfds  # noqa: F401
    from tfkd.data.tfds_data import require_finite  # noqa: F401

__getattr__, __dir__, __all__ = _lazy.attach(__name__)
