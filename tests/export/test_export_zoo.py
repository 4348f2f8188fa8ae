"""Every zoo student family exports to TFLite, float32 and int8, with parity.

Training these students takes too long for the suite, and a freshly
initialised one is a poor parity test: its logits are all near zero and it
predicts one class for every image, so an all-zero output or a wrong
argmax would pass. Each student is therefore made a real classifier of
real images cheaply:

1. its batch-norm statistics are set from a batch of digits (upsampled to
   32×32 RGB), as if it had been trained on them, so that every layer's
   activations keep the differences between images instead of the
   differences collapsing with depth;
2. its final `logits` layer is fitted in closed form (ridge regression of
   the one-hot labels on the penultimate features, a linear probe).

Its logits then span several units and its predictions cover all classes.
The test runs the LiteRT interpreter directly (`_litert.py`) on the images
the probe was fitted on and bounds the errors relative to the logits'
spread. (Those images, not held-out ones: there the probe is confident,
while on held-out images a linear probe of random features makes many
near-ties that any rounding flips, which would say nothing about the
export.) The trained digits student, on held-out digits, is covered in
`test_export.py`.
"""

import keras
import numpy as np
import pytest

import _litert
import tfkd
from tfkd.export import to_tflite

ZOO_STUDENTS = {
    "vgg_student_self_taught": lambda: tfkd.models.vgg_student(
        10, augmented=True, self_taught=True),
    "resnet20": lambda: tfkd.models.resnet20(10),
    "wrn_16_1": lambda: tfkd.models.wrn_16_1(10),
    "lp_student_1": lambda: tfkd.models.lp_student(1, 10),
}
MODES = [None, "int8"]
# Every family in float32 and int8 (the two ends: int8's calibration and
# folding of batch norm depend on the architecture). float16 and dynamic
# range only rewrite weights, whatever the layers: their parity, dtypes and
# sizes are tested on the trained digits student in `test_export.py`,
# which keeps this file's conversions to 8 (about 5 s each).
CASES = [(name, mode) for name in sorted(ZOO_STUDENTS) for mode in MODES]
NUM_IMAGES = 96  # For batch-norm statistics, the probe and parity.
NUM_CALIBRATION = 48  # Of those, the images calibrating int8.


@pytest.fixture(scope="module")
def digits():
    x, y = tfkd.data.digits_arrays(image_size=32, channels=3, seed=0).train
    return x[:NUM_IMAGES], y[:NUM_IMAGES]


def _set_batch_norm_statistics(model, images):
    """Moving mean / variance of every batch norm := those of `images`."""
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def _fit_logits(model, images, labels, scale=4.0):
    """Fits the `logits` Dense layer by ridge regression (a linear probe)."""
    head = model.get_layer("logits")
    features = keras.Model(model.inputs, head.input).predict(
        images, batch_size=len(images), verbose=0).astype("float64")
    mean = features.mean(0)
    std = features.std(0) + 1e-6 * features.std()
    z = (features - mean) / std
    targets = scale * (np.eye(head.units)[labels] - 1.0 / head.units)
    w = np.linalg.solve(z.T @ z + len(z) * np.eye(z.shape[1]), z.T @ targets)
    head.set_weights([(w / std[:, None]).astype("float32"),
                      (-(mean / std) @ w).astype("float32")])


@pytest.fixture(scope="module")
def figures(digits, tmp_path_factory):
    """`{(name, mode): parity figures}` of every family and mode."""
    x, y = digits
    out = tmp_path_factory.mktemp("zoo_exports")
    result = {}
    for name, build in ZOO_STUDENTS.items():
        keras.utils.set_random_seed(0)
        model = build()
        _set_batch_norm_statistics(model, x)
        _fit_logits(model, x, y)
        reference = keras.ops.convert_to_numpy(model(x, training=False))
        for mode in [m for n, m in CASES if n == name]:
            path = out / f"{name}_{mode or 'float32'}.tflite"
            to_tflite(model, str(path), quantization=mode,
                      representative_data=x[:NUM_CALIBRATION],
                      verify=False, latency_runs=0)
            result[name, mode] = _litert.compare(
                _litert.run(path, x), reference, y)
    return result


@pytest.mark.parametrize("name", sorted(ZOO_STUDENTS))
def test_zoo_student_is_a_classifier(figures, name):
    # What makes the bounds below mean something.
    f = figures[name, None]
    assert f["spread"] >= 2.0
    assert f["keras_classes"] == 10
    assert f["keras_accuracy"] >= 0.8  # Its logits follow the images.


@pytest.mark.parametrize("name, mode", CASES,
                         ids=[f"{n}-{m or 'float32'}" for n, m in CASES])
def test_zoo_student_exports(figures, name, mode):
    f = figures[name, mode]
    spread = f["spread"]
    if mode is None:
        assert f["max_abs_diff"] <= 1e-4 * spread
        assert f["top1_agreement"] == 1.0
        return
    # Fewer bits really were used: the outputs are not Keras's.
    assert f["max_abs_diff"] > 1e-5 * spread
    assert f["mean_abs_diff"] <= 0.05 * spread
    assert f["max_abs_diff"] <= 0.3 * spread
    assert f["top1_agreement"] >= 0.9
    assert abs(f["tflite_accuracy"] - f["keras_accuracy"]) <= 0.05
