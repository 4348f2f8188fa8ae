"""Export a student (or a distiller's student) to TFLite / LiteRT and check it.

`to_tflite` converts, optionally quantises, writes the `.tflite` atomically,
checks parity with the Keras model in the LiteRT interpreter and measures
single-image latency; `verify_tflite` is the parity check on its own.

Conversion path (checked on TF 2.21 / Keras 3.15): the model's inference call
(`training=False`) is written to a temporary SavedModel with
`keras.export.ExportArchive`, then converted with
`tf.lite.TFLiteConverter.from_saved_model`. This is the path TensorFlow
documents for Keras 3 models, and the one both `from_keras_model` and
Keras's `model.export(..., format="litert")` use internally. Calling it
directly avoids their drawbacks: `from_keras_model` silently falls back to a
legacy graph-freezing path when the SavedModel step fails, and
`format="litert"` enables `SELECT_TF_OPS` (Flex ops, which the stock LiteRT
runtime on phones lacks). Here only built-in ops are allowed, so an
unsupported layer fails at export time rather than on the device.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import os
import sys
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from tfkd import _compat

logger = logging.getLogger(__name__)

QUANTIZATIONS = (None, "float16", "dynamic", "int8")

# Images per interpreter call in `verify_tflite` (the input is resized to it).
_VERIFY_BATCH = 64


# --------------------------------------------------------------------------
# Argument checks and data handling.


def _unwrap_student(model):
    """Returns the Keras model to export: `model` or a distiller's student."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a `keras.Model` (the student) or a tfkd "
            "distiller (a `keras.Model` with a `student` attribute). "
            f"Received: model={model!r} of type {type(model).__name__}."
        )
    student = getattr(model, "student", None)
    if isinstance(student, keras.Model):
        logger.info(
            "exporting distiller.student only (teacher/adapters/"
            "discriminator are not exported)"
        )
        return student
    return model


def _input_spec(model):
    """The `(shape, dtype)` of the model's single input, batch dim `None`."""
    if not model.built:
        raise ValueError(
            f"The model {model.name!r} is not built, so its input shape is "
            "unknown. Call it once on a batch of images (or use a functional "
            "model with `keras.Input`) before exporting."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        specs = [(tuple(t.shape), t.dtype) for t in inputs]
    else:
        # Subclassed models: Keras records the shapes they were built with.
        specs = [
            (tuple(s.shape), s.dtype)
            for s in keras.tree.flatten(_compat.input_signature(model))
        ]
    if len(specs) != 1:
        raise ValueError(
            "Only single-input image models can be exported. Received a "
            f"model with {len(specs)} inputs: {[s for s, _ in specs]}."
        )
    shape, dtype = specs[0]
    # A dynamic batch lets the same file serve single images (the default
    # allocation, what phones use) and batched verification.
    return (None,) + tuple(shape[1:]), keras.backend.standardize_dtype(dtype)


def _check_path(path, name="path"):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a file path (str or os.PathLike). "
            f"Received: {name}={path!r}."
        )
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(
            f"`{name}` must be a file path, not a directory. Received: "
            f"{name}={path!r}. Pass e.g. {os.path.join(path, 'student.tflite')!r}."
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"The directory of `{name}` does not exist. Received: "
            f"{name}={path!r}. Create it first (os.makedirs({directory!r})) "
            "or choose an existing directory."
        )
    return path


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}."
        )


def _as_arrays(data, input_shape, dtype, name, limit=None):
    """Reads `data` into `(images, labels_or_None)` NumPy arrays.

    `data` is a NumPy array of images, an `(images, labels)` pair of arrays,
    or a `tf.data.Dataset` of images or `(images, labels[, weights])`,
    batched or not. At most `limit` images are read.
    """
    rank = len(input_shape)
    if isinstance(data, tf.data.Dataset):
        if limit is None:
            from tfkd.data.tfds_data import require_finite

            require_finite(data, name, what="the check reads every image")
        images, labels = [], []
        count = 0
        for element in data.as_numpy_iterator():
            if isinstance(element, dict):
                raise TypeError(
                    f"`{name}` must yield images or (images, labels); dict "
                    f"elements are not supported. Received: {element.keys()}."
                )
            if isinstance(element, (tuple, list)):
                x = np.asarray(element[0])
                y = np.asarray(element[1]) if len(element) > 1 else None
            else:
                x, y = np.asarray(element), None
            if x.ndim == rank - 1:  # An unbatched dataset: one image each.
                x = x[None]
                y = None if y is None else y[None]
            images.append(x)
            if y is not None:
                labels.append(y)
            count += len(x)
            if limit is not None and count >= limit:
                break
        if not images:
            raise ValueError(f"`{name}` is an empty dataset.")
        x = np.concatenate(images)
        y = np.concatenate(labels) if len(labels) == len(images) else None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    elif isinstance(data, (np.ndarray, tf.Tensor)) or hasattr(data, "__array__"):
        x, y = np.asarray(data), None
    else:
        raise TypeError(
            f"`{name}` must be a NumPy array of images, an (images, labels) "
            "pair or a `tf.data.Dataset` of images or (images, labels). "
            f"Received: {name} of type {type(data).__name__}."
        )
    expected = tuple(input_shape)
    compatible = x.ndim == rank and all(
        e is None or e == a for e, a in zip(expected[1:], x.shape[1:])
    )
    if not compatible:
        raise ValueError(
            f"`{name}` must hold images of the model's input shape "
            f"{expected} (a batch axis first). Received images of shape "
            f"{x.shape}. Resize the data (or the model input) to match."
        )
    if y is not None and len(y) != len(x):
        raise ValueError(
            f"`{name}` has {len(x)} images but {len(y)} labels; they must "
            "match."
        )
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    return x.astype(dtype, copy=False), y


def _class_ids(labels):
    labels = np.asarray(labels)
    if labels.ndim > 1 and labels.shape[-1] > 1:  # One-hot or soft labels.
        return labels.argmax(-1)
    return labels.reshape(len(labels)).astype("int64")


# --------------------------------------------------------------------------
# Conversion.


@contextlib.contextmanager
def _quiet_native_logs():
    """Keeps TensorFlow's and LiteRT's C++ log lines off the terminal.

    The converter prints a dozen lines per export from C++ ("Reading
    SavedModel from ...", "fully_quantize: 0, inference_type: 6, ...") and
    the interpreter "Created TensorFlow Lite XNNPACK delegate"; they tell a
    user nothing. They go to file descriptor 2 directly, so the descriptor
    is pointed at a temporary file meanwhile. If the block fails, the lines
    are written out after all, so no error detail is lost.
    """
    # The native code writes to descriptor 2 whatever `sys.stderr` is.
    fd = 2
    try:
        os.fstat(fd)
    except OSError:
        yield  # No descriptor 2: nothing to hide.
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    failed = True
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), fd)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode("utf-8", "replace"))
                sys.stderr.flush()


def _convert(model, input_shape, dtype, quantization, calibration, int8_io):
    """Returns the `.tflite` flatbuffer bytes of `model`'s inference call."""
    with _quiet_native_logs():
        return _convert_quietly(model, input_shape, dtype, quantization,
                                calibration, int8_io)


def _convert_quietly(model, input_shape, dtype, quantization, calibration,
                     int8_io):
    with tempfile.TemporaryDirectory(prefix="tfkd_export_") as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            functools.partial(model.__call__, training=False),
            input_signature=[tf.TensorSpec(input_shape, dtype, name="images")],
        )
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            # One image per calibration step, as the converter expects.
            converter.representative_dataset = lambda: (
                [calibration[i:i + 1]] for i in range(len(calibration))
            )
            # Integer-only ops: a layer that cannot be quantised fails here
            # instead of silently running in float on the device.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            ]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        return converter.convert()


def _write_atomically(path, content):
    """Writes bytes or text to `path` all or nothing (see `tfkd.io`)."""
    from tfkd import io as tfkd_io

    with tfkd_io.atomic_write(
        path, "wb" if isinstance(content, bytes) else "w"
    ) as f:
        f.write(content)


def _flatbuffer_counts(content):
    """`(tensors, operators)` summed over all subgraphs of a `.tflite`."""
    from ai_edge_litert import schema_py_generated as schema

    flat = schema.Model.GetRootAs(content, 0)
    subgraphs = [flat.Subgraphs(i) for i in range(flat.SubgraphsLength())]
    return (
        sum(g.TensorsLength() for g in subgraphs),
        sum(g.OperatorsLength() for g in subgraphs),
    )


# --------------------------------------------------------------------------
# Running the interpreter.


def _interpreter(path, num_threads):
    from ai_edge_litert.interpreter import Interpreter

    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No .tflite file at {path!r}. Export one with "
            f"`tfkd.export.to_tflite` first. Received: path={path!r}."
        )
    try:
        with _quiet_native_logs():
            interpreter = Interpreter(model_path=path,
                                      num_threads=num_threads)
            # Allocating reads every tensor's buffer: damage beyond the
            # flatbuffer header shows here rather than mid-measurement.
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise _damaged_tflite(path, e) from e
    return interpreter


def _damaged_tflite(path, error):
    """The `ValueError` for a `.tflite` the interpreter cannot load."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        size, head = None, b""
    if size == 0:
        reason = "the file is empty"
    elif head[:4] == b"PK\x03\x04":
        reason = ("it is a zip archive (a `.keras` model?), not a TFLite "
                  "flatbuffer")
    elif head[4:8] != b"TFL3":
        reason = (f"it lacks the TFLite file identifier 'TFL3' ({size} "
                  "bytes)")
    else:
        detail = " ".join(str(error).split()) or type(error).__name__
        reason = f"its flatbuffer is damaged or cut short ({size} bytes: " \
                 f"{detail})"
    return ValueError(
        f"Cannot load {path!r} as a TFLite model: {reason}. It was "
        "probably truncated by an interrupted copy or download, damaged, or "
        "is another kind of file. Export the model again with "
        f"`tfkd.export.to_tflite(model, {path!r})` (or `tfkd export`), or "
        f"copy the file again. Received: path={path!r}."
    )


def _quantize(x, detail):
    """Maps float inputs to the tensor's dtype with its scale / zero point."""
    if not np.issubdtype(detail["dtype"], np.integer):
        return x.astype(detail["dtype"], copy=False)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def _dequantize(q, detail):
    if not np.issubdtype(detail["dtype"], np.integer):
        return q.astype("float32", copy=False)
    scale, zero_point = detail["quantization"]
    return (q.astype("float32") - zero_point) * scale


def _run(interpreter, x):
    """Runs the interpreter on a batch, in chunks; returns float outputs."""
    # Re-allocating after a resize may print LiteRT's delegate line again.
    with _quiet_native_logs():
        return _run_quietly(interpreter, x)


def _run_quietly(interpreter, x):
    (inp,) = interpreter.get_input_details()
    out = interpreter.get_output_details()
    if len(out) != 1:
        raise ValueError(
            "Only single-output models can be verified. The .tflite has "
            f"{len(out)} outputs."
        )
    dynamic_batch = inp["shape_signature"][0] == -1
    step = _VERIFY_BATCH if dynamic_batch else int(inp["shape"][0])
    allocated = None
    outputs = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        n = len(chunk)
        if dynamic_batch and n != allocated:
            interpreter.resize_tensor_input(inp["index"], [n, *x.shape[1:]])
            interpreter.allocate_tensors()
            allocated = n
        elif not dynamic_batch:
            if allocated is None:
                interpreter.allocate_tensors()
                allocated = step
            # A fixed batch size: pad the last chunk, drop the padding after.
            chunk = np.concatenate(
                [chunk, np.repeat(chunk[-1:], step - n, axis=0)]
            )
        interpreter.set_tensor(inp["index"], _quantize(chunk, inp))
        interpreter.invoke()
        y = interpreter.get_tensor(out[0]["index"])[:n]
        outputs.append(_dequantize(y, out[0]))
    return np.concatenate(outputs)


def verify_tflite(path, model, data, labels=None, num_threads=1):
    """Compares a `.tflite` file with its Keras model on the same images.

    The file runs in the LiteRT interpreter (`ai_edge_litert`), the model in
    Keras (inference mode). Integer inputs/outputs (int8 I/O) are quantised /
    dequantised with the tensor's scale and zero point, so outputs are
    compared in float.

    Args:
        path: Path of the `.tflite` file.
        model: The Keras model it was exported from, or a distiller (its
            `student` is used).
        data: Images as a NumPy array, an `(images, labels)` pair, or a
            `tf.data.Dataset` of images or `(images, labels)`.
        labels: Optional class ids (or one-hot) for `data`; overrides labels
            found in `data`.
        num_threads: CPU threads of the interpreter.

    Returns:
        A dict with `num_samples`, `max_abs_diff` and `mean_abs_diff` (of the
        outputs, e.g. logits), `top1_agreement` (fraction of images whose
        arg-max class is the same) and, when labels are known,
        `keras_accuracy` and `tflite_accuracy` (else `None`).

    Example:

    >>> report = to_tflite(student, "student.tflite",
    ...                    verify=False)  # doctest: +SKIP
    >>> verify_tflite("student.tflite", student, x_test,
    ...               y_test)  # doctest: +SKIP
    {'num_samples': 360, 'max_abs_diff': 4.7e-07, 'top1_agreement': 1.0, ...}
    """
    model = _unwrap_student(model)
    _check_positive_int(num_threads, "num_threads")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a file path. Received: path={path!r}."
        )
    path = os.fspath(path)
    input_shape, dtype = _input_spec(model)
    x, found_labels = _as_arrays(data, input_shape, dtype, "data")
    if labels is None:
        labels = found_labels
    elif len(labels) != len(x):
        raise ValueError(
            f"`labels` must have one entry per image: {len(x)} images, "
            f"received {len(labels)} labels."
        )
    interpreter = _interpreter(path, num_threads)
    lite = _run(interpreter, x)
    reference = keras.ops.convert_to_numpy(
        model.predict(x, batch_size=_VERIFY_BATCH, verbose=0)
    ).astype("float32")
    if lite.shape != reference.shape:
        raise ValueError(
            f"The .tflite output shape {lite.shape} differs from the Keras "
            f"model's {reference.shape}: was {path!r} exported from this "
            "model?"
        )
    diff = np.abs(lite - reference)
    lite_top1 = lite.reshape(len(x), -1).argmax(-1)
    keras_top1 = reference.reshape(len(x), -1).argmax(-1)
    result = {
        "num_samples": int(len(x)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(lite_top1 == keras_top1)),
        "keras_accuracy": None,
        "tflite_accuracy": None,
    }
    if labels is not None:
        y = _class_ids(labels)
        result["keras_accuracy"] = float(np.mean(keras_top1 == y))
        result["tflite_accuracy"] = float(np.mean(lite_top1 == y))
    return result


def measure_latency(path, num_threads=1, runs=50, warmup=5, image=None):
    """Median single-image latency of a `.tflite` in the LiteRT interpreter.

    Args:
        path: Path of the `.tflite` file.
        num_threads: CPU threads of the interpreter (fixed for comparisons).
        runs: Timed runs; the median is returned.
        warmup: Untimed runs first (allocation, caches, delegate set-up).
        image: Optional float input of shape `(1, H, W, C)`; zeros if `None`.

    Returns:
        The median wall time of one `invoke()` in milliseconds.

    Example:

    >>> measure_latency("student.tflite", num_threads=1)  # doctest: +SKIP
    0.021
    """
    _check_positive_int(num_threads, "num_threads")
    _check_positive_int(runs, "runs")
    interpreter = _interpreter(os.fspath(path), num_threads)
    (inp,) = interpreter.get_input_details()
    shape = [1, *inp["shape_signature"][1:]]
    with _quiet_native_logs():  # Outside the timed runs.
        if inp["shape_signature"][0] == -1:
            interpreter.resize_tensor_input(inp["index"], shape)
        interpreter.allocate_tensors()
        if image is None:
            image = np.zeros(shape, "float32")
        interpreter.set_tensor(inp["index"],
                               _quantize(np.asarray(image), inp))
        for _ in range(warmup):
            interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


# --------------------------------------------------------------------------
# Report.


@dataclasses.dataclass
class ExportReport:
    """What an export produced: size, structure, parity and speed.

    Parity fields are `None` when no data was available to verify on;
    accuracies are `None` without labels. `teacher` is the same report for
    the teacher (exported with the same settings to a temporary file) when
    one was given; `size_ratio` and `latency_ratio` are then student /
    teacher (below 1 means the student is smaller / faster).
    """

    path: str
    quantization: str
    int8_io: bool
    size_bytes: int
    num_params: int
    num_tensors: int
    num_ops: int
    input_shape: list
    num_threads: int
    latency_ms: float = None
    latency_runs: int = 0
    num_verified: int = 0
    max_abs_diff: float = None
    mean_abs_diff: float = None
    top1_agreement: float = None
    keras_accuracy: float = None
    tflite_accuracy: float = None
    teacher: "ExportReport" = None
    size_ratio: float = None
    latency_ratio: float = None

    def _rows(self):
        def fmt(value, spec):
            return "-" if value is None else format(value, spec)

        return [
            ("file size (bytes)", f"{self.size_bytes:,}"),
            ("parameters", f"{self.num_params:,}"),
            ("tensors / ops", f"{self.num_tensors} / {self.num_ops}"),
            ("quantization", self.quantization
             + (" (int8 I/O)" if self.int8_io else "")),
            (f"latency ms (median, {self.num_threads} thr)",
             fmt(self.latency_ms, ".4g")),
            ("verified images", str(self.num_verified)),
            ("max |tflite - keras|", fmt(self.max_abs_diff, ".2e")),
            ("top-1 agreement", fmt(self.top1_agreement, ".2%")),
            ("keras accuracy", fmt(self.keras_accuracy, ".2%")),
            ("tflite accuracy", fmt(self.tflite_accuracy, ".2%")),
        ]

    def to_table(self):
        """The report as a plain-text table (student and teacher columns)."""
        header = ["", "student"]
        rows = [[k, v] for k, v in self._rows()]
        if self.teacher is not None:
            header.append("teacher")
            for row, (_, v) in zip(rows, self.teacher._rows()):
                row.append(v)
            rows.append(["size student/teacher", f"{self.size_ratio:.3f}", ""])
            if self.latency_ratio is not None:
                rows.append([
                    "latency student/teacher", f"{self.latency_ratio:.3f}", ""
                ])
        rows.insert(0, header)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths))
            ).rstrip()
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        return f"TFLite export: {self.path}\n" + "\n".join(lines)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self, indent=2):
        """The report as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def save_json(self, path):
        """Writes `to_json()` to `path` (atomically) and returns `path`."""
        path = _check_path(path)
        _write_atomically(path, self.to_json() + "\n")
        return path


# --------------------------------------------------------------------------
# Export.


def _export(model, path, quantization, calibration, int8_io, verify_x,
            verify_y, num_threads, latency_runs):
    """Converts, writes and measures one model; returns its `ExportReport`."""
    input_shape, dtype = _input_spec(model)
    content = _convert(
        model, input_shape, dtype, quantization, calibration, int8_io
    )
    _write_atomically(path, content)
    num_tensors, num_ops = _flatbuffer_counts(content)
    report = ExportReport(
        path=os.path.abspath(path),
        quantization=quantization or "none",
        int8_io=bool(int8_io),
        size_bytes=len(content),
        num_params=int(model.count_params()),
        num_tensors=num_tensors,
        num_ops=num_ops,
        input_shape=[None, *input_shape[1:]],
        num_threads=num_threads,
    )
    if verify_x is not None:
        parity = verify_tflite(path, model, verify_x, verify_y, num_threads)
        report.num_verified = parity["num_samples"]
        for key in ("max_abs_diff", "mean_abs_diff", "top1_agreement",
                    "keras_accuracy", "tflite_accuracy"):
            setattr(report, key, parity[key])
    if latency_runs:
        image = None if verify_x is None else verify_x[:1]
        report.latency_ms = measure_latency(
            path, num_threads, runs=latency_runs, image=image
        )
        report.latency_runs = latency_runs
    return report


def to_tflite(model, path, *, quantization=None, representative_data=None,
              int8_io=False, verify=True, verify_data=None, num_samples=256,
              teacher=None, num_threads=1, min_agreement=0.97,
              calibration_samples=500, latency_runs=50):
    """Exports a student (or a distiller's student) to a `.tflite` file.

    The model's inference call is saved as a SavedModel with
    `keras.export.ExportArchive` and converted with
    `tf.lite.TFLiteConverter.from_saved_model` using built-in ops only (see
    the module docstring for why this path). The batch dimension is kept
    dynamic: the interpreter allocates a single image by default (what a
    phone runs, and what the latency is measured on) and batched
    verification resizes the input.

    Distillers are recognised as any `keras.Model` with a `student` attribute
    that is a `keras.Model`; only the student is exported (teacher, adapters,
    regressors and discriminators are not).

    The file is written to a temporary file in the same directory and then
    renamed, so `path` never holds a half-written model.

    Args:
        model: The student `keras.Model` (built, one image input), or a
            distiller.
        path: Output `.tflite` path; its directory must exist.
        quantization: `None` (float32), `"float16"` (float16 weights),
            `"dynamic"` (int8 weights, float activations) or `"int8"` (full
            integer, calibrated on `representative_data`).
        representative_data: Calibration images for `"int8"`: a NumPy array,
            an `(images, labels)` pair or a `tf.data.Dataset` of images or
            `(images, labels)`, batched or not. Up to `calibration_samples`
            images are used. Also verified on when `verify_data` is `None`.
        int8_io: With `"int8"`, make the model's input and output int8 (use
            the tensors' scale / zero point); else they stay float32.
        verify: Whether to check parity with the Keras model after export.
        verify_data: Held-out images (same forms as `representative_data`)
            to verify on; labels in it give accuracies.
        num_samples: Maximum number of images verified.
        teacher: Optional teacher `keras.Model`, exported the same way to a
            temporary file so the report can compare size and latency.
        num_threads: CPU threads of the LiteRT interpreter.
        min_agreement: Top-1 agreement below which a warning is raised
            (`warnings.warn` and logging).
        calibration_samples: Maximum number of calibration images.
        latency_runs: Timed single-image runs (after 5 warm-up runs); `0`
            skips the latency measurement.

    Returns:
        An `ExportReport`.

    Example:

    >>> import keras, tfkd
    >>> student = keras.models.load_model("student.keras")  # doctest: +SKIP
    >>> splits = tfkd.data.digits_arrays(image_size=16)
    >>> report = to_tflite(student, "student.tflite", quantization="int8",
    ...                    representative_data=splits.train[0],
    ...                    verify_data=splits.test)  # doctest: +SKIP
    >>> print(report.to_table())  # doctest: +SKIP

    Reference:
        [Post-training quantization](
        https://ai.google.dev/edge/litert/models/post_training_quantization)
    """
    student = _unwrap_student(model)
    if isinstance(quantization, str) and quantization.lower() == "none":
        quantization = None
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            "`quantization` must be one of None (or 'none'), 'float16', "
            f"'dynamic', 'int8'. Received: quantization={quantization!r}."
        )
    if int8_io and quantization != "int8":
        raise ValueError(
            "`int8_io=True` needs full-integer quantization. Received: "
            f"quantization={quantization!r}. Pass quantization='int8' (with "
            "representative_data) or int8_io=False."
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' calibrates activation ranges on sample "
            "inputs, but `representative_data` is None. Pass a few hundred "
            "training images (a NumPy array or a tf.data.Dataset), or use "
            "quantization='dynamic' which needs no data."
        )
    path = _check_path(path)
    for value, name in ((num_samples, "num_samples"),
                        (num_threads, "num_threads"),
                        (calibration_samples, "calibration_samples")):
        _check_positive_int(value, name)
    if teacher is not None and not isinstance(teacher, keras.Model):
        raise TypeError(
            "`teacher` must be a `keras.Model` or None. Received: "
            f"teacher of type {type(teacher).__name__}."
        )

    input_shape, dtype = _input_spec(student)
    calibration = None
    if representative_data is not None:
        calibration, _ = _as_arrays(
            representative_data, input_shape, dtype, "representative_data",
            limit=calibration_samples,
        )
    verify_x = verify_y = None
    if verify:
        if verify_data is not None:
            verify_x, verify_y = _as_arrays(
                verify_data, input_shape, dtype, "verify_data",
                limit=num_samples,
            )
        elif representative_data is not None:
            logger.info(
                "verifying on representative_data (the calibration images); "
                "pass verify_data= for held-out numbers"
            )
            verify_x, verify_y = _as_arrays(
                representative_data, input_shape, dtype,
                "representative_data", limit=num_samples,
            )
        else:
            logger.info("no verify_data or representative_data: parity "
                        "with Keras is not checked")

    report = _export(student, path, quantization, calibration, int8_io,
                     verify_x, verify_y, num_threads, latency_runs)
    if report.top1_agreement is not None \
            and report.top1_agreement < min_agreement:
        message = (
            f"TFLite export {path!r} (quantization={report.quantization}) "
            f"agrees with the Keras model on only {report.top1_agreement:.1%} "
            f"of {report.num_verified} images (threshold {min_agreement:.0%}; "
            f"max abs diff {report.max_abs_diff:.3g}). Calibrate on more "
            "representative data or use a lighter quantization."
        )
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)

    if teacher is not None:
        with tempfile.TemporaryDirectory(prefix="tfkd_teacher_") as tmp:
            report.teacher = _export(
                teacher, os.path.join(tmp, "teacher.tflite"), quantization,
                calibration, int8_io, verify_x, verify_y, num_threads,
                latency_runs,
            )
        report.teacher.path = None  # Temporary: not kept.
        report.size_ratio = report.size_bytes / report.teacher.size_bytes
        if report.latency_ms and report.teacher.latency_ms:
            report.latency_ratio = report.latency_ms / report.teacher.latency_ms
    logger.info("exported %s (%d bytes)", path, report.size_bytes)
    return report
