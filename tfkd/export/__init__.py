"""Export: students to TFLite / LiteRT, with parity and latency reports."""

from typing import TYPE_CHECKING

from tfkd import _lazy

if TYPE_CHECKING:
    # Imported on first use (see `tfkd._lazy`).
    from tfkd.export.tflite import ExportReport  # noqa: F401
    from tfkd.export.tflite import measure_latency  # noqa: F401
    from tfkd.export.tflite import to_tflite  # noqa: F401
    from tfkd.export.tflite import verify_tflite  # noqa: F401

__getattr__, __dir__, __all__ = _lazy.attach(__name__)
