"""Runs a `.tflite` file in the LiteRT interpreter, independently of tfkd.

The export tests compare the interpreter's outputs with Keras through this
module, not through `tfkd.export.verify_tflite`, so a bug in tfkd's own
parity check (e.g. comparing Keras with Keras, or a wrong scale / zero
point) cannot hide a bad export: it is tested against these numbers.
"""

import collections

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def run(path, images):
    """The float outputs of the `.tflite` at `path` on `images`, one batch.

    Integer (int8 I/O) inputs are quantised and outputs dequantised with the
    tensor's own scale and zero point: `q = round(x / scale) + zero_point`,
    `x = (q - zero_point) * scale`.
    """
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    x = np.asarray(images, "float32")
    if inp["dtype"] == np.int8:
        scale, zero_point = inp["quantization"]
        assert scale > 0, inp
        x = np.clip(np.round(x / scale) + zero_point, -128, 127)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero_point = out["quantization"]
        assert scale > 0, out
        y = (y.astype("float32") - zero_point) * scale
    assert y.dtype == np.float32, y.dtype
    return y


def io_details(path):
    """`(input_detail, output_detail)` of the `.tflite` at `path`."""
    interpreter = Interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    return inp, out


def tensor_dtypes(path):
    """`{dtype name: number of tensors}` of the `.tflite` at `path`."""
    interpreter = Interpreter(model_path=str(path))
    return collections.Counter(
        np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details())


def compare(lite, reference, labels=None):
    """Parity figures of `lite` against `reference` logits, in NumPy.

    `spread` is the range of the reference logits over all images and
    classes: error bounds are stated relative to it, so they mean the same
    for a model whose logits span 0.04 and one whose logits span 40.
    """
    diff = np.abs(lite - reference)
    lite_top1 = lite.argmax(-1)
    keras_top1 = reference.argmax(-1)
    result = {
        "spread": float(np.ptp(reference)),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(lite_top1 == keras_top1)),
        "keras_classes": int(len(np.unique(keras_top1))),
        "keras_accuracy": None,
        "tflite_accuracy": None,
    }
    if labels is not None:
        result["keras_accuracy"] = float(np.mean(keras_top1 == labels))
        result["tflite_accuracy"] = float(np.mean(lite_top1 == labels))
    return result
