"""How many distinct tfkd functions one eager training step enters.

Builds a small conv teacher/student pair, a distiller with a KD term and an
attention term, compiles it with `run_eagerly=True`, runs one warm-up
`train_on_batch`, then profiles a second one with `sys.setprofile`,
collecting the distinct `(file, function)` pairs whose file lies in the
`tfkd/` package. Prints the count and the list.

    python benchmarks/step_functions.py

Target: at most 30 (`tests/distillers/test_step_functions.py`); 30 in 10 files now,
95 before the checks moved to bind time and the taps to one multi-output
model (Keras's own distiller with two losses: 14 in 2 files).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfkd  # noqa: E402
from tfkd import testing  # noqa: E402

PACKAGE = os.path.dirname(os.path.abspath(tfkd.__file__)) + os.sep


def step_functions():
    """The sorted distinct `(file, function)` pairs of tfkd entered by one
    eager KD + attention `train_on_batch`."""
    teacher = testing.tiny_conv_model("teacher", width=8)
    student = testing.tiny_conv_model("student", width=4)
    distiller = tfkd.Distiller(
        teacher, student,
        distillation_losses=[
            tfkd.losses.KDDistillation(temperature=4.0),
            tfkd.losses.AttentionDistillation(
                teacher_layer_name="conv2", student_layer_name="conv2"),
        ],
        distillation_loss_weights=[1.0, 500.0])
    distiller.compile(optimizer="adam", run_eagerly=True)
    x, y = testing.random_images(16)
    distiller.train_on_batch(x, y)  # Warm-up: builds optimizer, metrics.
    seen = set()

    def profile(frame, event, arg):
        if event == "call":
            path = frame.f_code.co_filename
            if path.startswith(PACKAGE):
                seen.add((os.path.relpath(path, os.path.dirname(PACKAGE)),
                          frame.f_code.co_name))

    sys.setprofile(profile)
    try:
        distiller.train_on_batch(x, y)
    finally:
        sys.setprofile(None)
    return sorted(seen)


def main():
    functions = step_functions()
    files = sorted({f for f, _ in functions})
    print(f"{len(functions)} distinct tfkd functions in {len(files)} files")
    for path, name in functions:
        print(f"  {path}:{name}")


if __name__ == "__main__":
    main()
