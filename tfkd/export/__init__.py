"""Export: students to TFLite / LiteRT, with parity and latency reports."""

from tfkd.export.tflite import ExportReport  # noqa: F401
from tfkd.export.tflite import measure_latency  # noqa: F401
from tfkd.export.tflite import to_tflite  # noqa: F401
from tfkd.export.tflite import verify_tflite  # noqa: F401
