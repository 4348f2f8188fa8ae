"""Regenerates the example figures under docs/img/ (about 2 minutes on CPU).

    python docs/_make_images.py            # curves, Gram, embedding figures
    python docs/_make_images.py --demo     # also runs `tfkd demo` + report

Real runs on the embedded digits data: a digits teacher, a small student
(one conv per block, 8 and 64 filters, so its tapped layer has the
teacher's 64 channels and Gram matrices compare directly) trained from
scratch and by channel-correlation distillation from the same initial
weights.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
IMG = os.path.join(HERE, "img")


def _student():
    import keras

    inputs = keras.Input((16, 16, 1), name="images")
    x = inputs
    for block, width in enumerate((8, 64), start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                name=f"block{block}_conv1")(x)
        x = keras.layers.BatchNormalization(momentum=0.9,
                                            name=f"block{block}_bn1")(x)
        x = keras.layers.ReLU(name=f"block{block}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="student")


def examples():
    import keras

    import tfkd
    from tfkd.app import plots

    keras.utils.set_random_seed(0)
    data = tfkd.data.load_digits(image_size=16, batch_size=64, seed=0)
    x_test, y_test = tfkd.data.digits_arrays(image_size=16, seed=0).test
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = tfkd.models.digits_teacher()
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3), loss=ce,
                    metrics=["accuracy"])
    teacher.fit(data.train, epochs=15, verbose=0)

    initial = _student()
    weights = initial.get_weights()
    scratch = keras.models.clone_model(initial)
    scratch.set_weights(weights)
    scratch.compile(optimizer=keras.optimizers.Adam(3e-3), loss=ce,
                    metrics=["accuracy"])
    scratch.fit(data.train, validation_data=data.validation, epochs=20,
                verbose=0)

    student = keras.models.clone_model(initial)
    student.set_weights(weights)
    layer = "block2_relu"
    distiller = tfkd.CorrelationDistiller(
        teacher, student, teacher_layer_name=layer, student_layer_name=layer,
        mode="channel", alpha=0.3)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-3),
                      metrics=["accuracy"])
    history = distiller.fit(data.train, validation_data=data.validation,
                            epochs=20, verbose=0)

    plots.plot_history(history, os.path.join(IMG, "example_curves.png"),
                       title="CorrelationDistiller (channel, +KD) on digits")
    x = x_test[:256]
    plots.plot_gram_matrices(
        {"teacher": plots.layer_features(teacher, layer, x),
         "student at init": plots.layer_features(initial, layer, x),
         "student from scratch": plots.layer_features(scratch, layer, x),
         "student distilled": plots.layer_features(student, layer, x)},
        os.path.join(IMG, "example_gram.png"),
        title=f"Channel Gram matrices of `{layer}` (64 channels), digits "
              "test images")
    plots.plot_embedding(
        {"teacher": plots.layer_features(teacher, "gap", x_test),
         "student from scratch": plots.layer_features(scratch, "gap",
                                                      x_test),
         "student distilled": plots.layer_features(student, "gap", x_test)},
        y_test, os.path.join(IMG, "example_embedding.png"),
        title="PCA of the classifier's input features, digits test set")


def demo():
    out = tempfile.mkdtemp(prefix="tfkd_demo_")
    try:
        subprocess.run([sys.executable, "-m", "tfkd.cli", "demo", "--seeds",
                        "0", "1", "2", "--out", out, "--verbose", "0"],
                       check=True)
        subprocess.run([sys.executable, "-m", "tfkd.cli", "report", out],
                       check=True)
        shutil.copy(os.path.join(out, "plots", "accuracy_vs_params.png"),
                    os.path.join(IMG, "demo_accuracy_vs_params.png"))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true",
                        help="also run the demo for the README figure")
    args = parser.parse_args()
    os.makedirs(IMG, exist_ok=True)
    examples()
    if args.demo:
        demo()
