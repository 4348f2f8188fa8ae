"""Recipe: the correlation paper's Table 3, on the embedded digits.

For each knowledge form of the paper's Table 3 (Channel, Spatial, Both,
Activation = FitNets hints, Attention = attention transfer) and each
setting (Single, Single+KD, Two, Two+KD), trains the student on the digits
(16×16) from the same initial weights per seed, beside the scratch student,
Hinton KD and the teacher; every run goes to a `tfkd.reporting
.ResultsWriter` and the summary prints test accuracy (mean ± std over
seeds) in the layout of Table 3.

    python recipes/correlation_digits.py --seeds 0 1 2

Models: `tfkd.models.digits_teacher` (32-32 / 64-64 convs) and
`digits_student` (8 / 16 convs), tapped at `block2_relu` (8×8×64 vs
8×8×16): Channel, Both and Activation go through a trainable 1×1-conv
adapter / FitNets regressor owned by the distiller; Spatial and Attention
need none. Settings (paper §4.2): "+KD" is `alpha = 0.3` (else 1), `T = 4`;
single-stage `L_Know + 0.1 · L_Class` (Attention: `L_Class + 500 · L_AT`);
two-stage trains the student up to the guided layer with `L_Know` for
`--stage1-epochs`, then the whole student with `L_Class` for `--epochs`
(as long as the single-stage runs). The KD row is `0.3 · CE + 0.7 · KD`.
Adam at 3e-3, batch 64. One teacher (seed 0) serves every run; the data
split is fixed (seed 0) so that no seed's test images were seen by the
teacher; the seeds change the student's initial weights and the order of
batches. The teacher's outputs are computed once
(`tfkd.data.cache_teacher_outputs`). Accuracies are on the held-out test
split after the last epoch.
"""

import argparse
import datetime
import os
import sys
import time

import keras

import tfkd
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.reporting import ResultsWriter
from tfkd.reporting import RunResult
from tfkd.reporting import markdown_table

METHODS = ("channel", "spatial", "both", "activation", "attention")
SETTINGS = ("single", "single+kd", "two", "two+kd")
LABELS = {"channel": "Channel", "spatial": "Spatial", "both": "Both",
          "activation": "Activation", "attention": "Attention"}
KD_ALPHA = 0.3
TEMPERATURE = 4.0
DATASET = "digits"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        choices=METHODS)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS),
                        choices=SETTINGS)
    parser.add_argument("--epochs", type=int, default=40,
                        help="single-stage epochs = stage-2 epochs")
    parser.add_argument("--stage1-epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--run-dir", default=None,
                        help="default: tfkd_runs/correlation_digits/<time>")
    return parser.parse_args(argv)


def build(method, teacher, student, alpha):
    layer = tfkd.models.DIGITS_FEATURE_LAYER
    common = dict(teacher_layer=layer, student_layer=layer, alpha=alpha,
                  temperature=TEMPERATURE)
    if method == "activation":
        return tfkd.FitNetDistiller(teacher, student, **common)
    if method == "attention":
        return tfkd.AttentionDistiller(teacher, student, **common)
    return tfkd.CorrelationDistiller(teacher, student, mode=method,
                                     adapter=True, **common)


def merge(*histories):
    merged = {}
    for history in histories:
        for key, values in history.history.items():
            merged.setdefault(key, []).extend(values)
    return merged


def main(argv=None):
    args = parse_args(argv)
    run_dir = args.run_dir or os.path.join(
        "tfkd_runs", "correlation_digits",
        datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y%m%d-%H%M%S"))
    writer = ResultsWriter(run_dir)
    guard = [StopOnNonFiniteLoss()]
    data = tfkd.data.load_digits(image_size=16, batch_size=args.batch_size,
                                 seed=0)

    def optimizer():
        return keras.optimizers.Adam(args.learning_rate)

    def record(method, seed, history, accuracy, start, **hyperparameters):
        result = RunResult.from_history(
            history, method=method, dataset=DATASET, seed=seed,
            test_accuracy=accuracy, hyperparameters=hyperparameters,
            teacher=teacher.name, student="digits_student",
            teacher_params=teacher.count_params(),
            student_params=student_params, wall_time=time.time() - start,
        )
        writer.add(result)
        print(f"  {method:<22} seed {seed}: {100 * accuracy:6.2f} % "
              f"({result.wall_time:5.1f} s)", flush=True)

    # The teacher, once.
    keras.utils.set_random_seed(0)
    start = time.time()
    teacher = tfkd.models.digits_teacher(data.num_classes, data.input_shape)
    teacher.compile(
        optimizer=optimizer(), metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = teacher.fit(data.train, validation_data=data.validation,
                          epochs=args.teacher_epochs, verbose=0,
                          callbacks=guard)
    student_params = tfkd.models.digits_student(
        data.num_classes, data.input_shape).count_params()
    accuracy = teacher.evaluate(data.test, return_dict=True,
                                verbose=0)["accuracy"]
    record("teacher", 0, history, accuracy, start,
           epochs=args.teacher_epochs)

    # Teacher outputs at block2_relu, computed once for every feature run.
    probe = build("attention", teacher, tfkd.models.digits_student(
        data.num_classes, data.input_shape), 1.0)
    validation = tfkd.data.cache_teacher_outputs(probe, data.validation,
                                                 shuffle=False)
    test = tfkd.data.cache_teacher_outputs(probe, data.test, shuffle=False)

    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        keras.utils.set_random_seed(seed)
        initial = tfkd.models.digits_student(data.num_classes,
                                             data.input_shape)
        weights = initial.get_weights()
        train = tfkd.data.cache_teacher_outputs(probe, data.train, seed=seed)

        def fresh_student():
            student = keras.models.clone_model(initial)
            student.set_weights(weights)
            return student

        # Student from scratch.
        start = time.time()
        scratch = fresh_student()
        scratch.compile(
            optimizer=optimizer(), metrics=["accuracy"],
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = scratch.fit(data.train, validation_data=data.validation,
                              epochs=args.epochs, verbose=0, callbacks=guard)
        accuracy = scratch.evaluate(data.test, return_dict=True,
                                    verbose=0)["accuracy"]
        record("student", seed, history, accuracy, start, epochs=args.epochs)

        # Hinton KD (no tapped features, so no feature cache).
        start = time.time()
        kd = tfkd.Distiller(teacher, fresh_student(), alpha=KD_ALPHA,
                            temperature=TEMPERATURE)
        kd.compile(optimizer=optimizer(), metrics=["accuracy"])
        history = kd.fit(data.train, validation_data=data.validation,
                         epochs=args.epochs, verbose=0, callbacks=guard)
        accuracy = kd.evaluate(data.test, return_dict=True,
                               verbose=0)["accuracy"]
        record("kd", seed, history, accuracy, start, alpha=KD_ALPHA,
               temperature=TEMPERATURE, epochs=args.epochs)

        for method in args.methods:
            for setting in args.settings:
                start = time.time()
                alpha = KD_ALPHA if setting.endswith("+kd") else 1.0
                distiller = build(method, teacher, fresh_student(), alpha)
                distiller.compile(optimizer=optimizer(), metrics=["accuracy"])
                fit_kwargs = dict(validation_data=validation, verbose=0,
                                  callbacks=guard)
                if setting.startswith("two"):
                    histories = distiller.fit_two_stage(
                        train, stage1_epochs=args.stage1_epochs,
                        stage2_epochs=args.epochs, **fit_kwargs)
                else:
                    histories = [distiller.fit(train, epochs=args.epochs,
                                               **fit_kwargs)]
                accuracy = distiller.evaluate(test, return_dict=True,
                                              verbose=0)["accuracy"]
                record(f"{method}-{setting}", seed, merge(*histories),
                       accuracy, start, alpha=alpha,
                       temperature=TEMPERATURE, stage1_epochs=(
                           args.stage1_epochs if setting.startswith("two")
                           else 0), epochs=args.epochs,
                       distiller=type(distiller).__name__)

    rows = writer.write_summary()
    print(f"\nRuns and summary in {run_dir}\n")
    print(table3(rows))
    print(markdown_table(rows), end="")
    return rows


def table3(rows):
    """The summary in the layout of the paper's Table 3 (formatting only)."""
    cells = {row["method"]: row for row in rows}

    def cell(method):
        row = cells.get(method)
        if row is None or row["last_mean"] is None:
            return "—"
        std = row["last_std"]
        return (f"{row['last_mean']:.2f}" if std is None
                else f"{row['last_mean']:.2f} ± {std:.2f}")

    header = ["Approach", "Single", "Single+KD", "Two", "Two+KD"]
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join(["---:"] * 4) + " |"]
    for method in METHODS:
        if any(f"{method}-{s}" in cells for s in SETTINGS):
            lines.append(f"| {LABELS[method]} | " + " | ".join(
                cell(f"{method}-{s}") for s in SETTINGS) + " |")
    for method, label in (("kd", "KD"), ("teacher", "Teacher"),
                          ("student", "Student")):
        if method in cells:
            n = cells[method]["n"]
            lines.append(f"| {label} (n={n}) | {cell(method)} | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
