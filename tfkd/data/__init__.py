"""Data: the embedded digits set and tensorflow-datasets loaders."""

from typing import TYPE_CHECKING

from tfkd import _lazy

if TYPE_CHECKING:
    # Imported on first use (see `tfkd._lazy`).
    from tfkd.data.cache import cache_teacher_outputs  # noqa: F401
    from tfkd.data.digits import DataSplits  # noqa: F401
    from tfkd.data.digits import digits_arrays  # noqa: F401
    from tfkd.data.digits import load_digits  # noqa: F401
    from tfkd.data.tfds_data import DATASETS  # noqa: F401
    from tfkd.data.tfds_data import DatasetNotFoundError  # noqa: F401
    from tfkd.data.tfds_data import is_deterministic  # noqa: F401
    from tfkd.data.tfds_data import load_dataset  # noqa: F401
    from tfkd.data.tfds_data import load_tfds  # noqa: F401

__getattr__, __dir__, __all__ = _lazy.attach(__name__)
