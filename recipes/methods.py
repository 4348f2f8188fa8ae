"""Recipe: every distillation method of the registry on the digits pair.

For each seed: the digits split of that seed (`tfkd.data.load_digits`), a
teacher (`tfkd.models.digits_teacher`), one set of initial student weights
(`tfkd.models.digits_student`), then the same student trained from those
weights alone (cross entropy) and with every method of
`tfkd.distillers.registry` (its default build: `registry.build` with the
method's defaults and `registry.digits_taps(method)`, trained by the
distiller's own `fit`), all with the same budget: `--epochs` epochs, batch 64,
Adam at 3e-3 with a cosine decay to 0, as `tfkd demo` does. Test accuracy
on the held-out split after the last epoch, mean ± sample std over the
seeds. One command:

    python recipes/methods.py --seeds 0 1 2

writes every run under `--out` (`tfkd.app.reporting.ResultsWriter`: one JSON
per run, `runs.csv`, `summary.md`) and the page `--doc`
(`docs/results_methods_digits.md`: the table, the command and its wall
time). `--methods` runs a subset (the smoke test's). `--data fashion_mnist`
runs the same on Fashion-MNIST (`tfkd.data.load_fashion_mnist`, the settings of
`tfkd.app.experiment.DATA_SETTINGS`: 14×14 images, a 6,000-image training
pool, batch 128, 5 student and 10 teacher epochs; page
`docs/results_methods_fashion_mnist.md`):

    python recipes/methods.py --data fashion_mnist --seeds 0 1 2

`--set METHOD.NAME=VALUE ...` replaces methods' defaults (e.g. `--set
kd.temperature=1`); such a variant writes its page into the run folder
unless `--doc` says otherwise.
"""

import argparse
import datetime
import os
import shlex
import sys
import time

import keras

import tfkd
from tfkd import io as tfkd_io
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.distillers import registry
from tfkd.app.experiment import compile_classifier
from tfkd.app.experiment import data_setting
from tfkd.app.experiment import load_data
from tfkd.app.experiment import method_overrides
from tfkd.app.experiment import record_run
from tfkd.app.experiment import steps_per_epoch
from tfkd.app.reporting import ResultsWriter

# Settings: the demo's budget.
IMAGE_SIZE = 16
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
EPOCHS = 30
TEACHER_EPOCHS = 20
DATASET = "digits"
DOC = os.path.join("docs", "results_methods_digits.md")
FASHION_DOC = os.path.join("docs", "results_methods_fashion_mnist.md")

#: What the default builds mean on this pair (printed under the table).
NOTES = (
    "Every row is a method's registry default on this pair, untuned, so "
    "the table compares defaults, not methods at their best:",
    "",
    "- The methods that compare embeddings (LP, RKD, PKT, CC, CRD: "
    "`Method.embedding`) tap the pooled `gap` layer, every other feature "
    "method the last conv block `block2_relu` (`registry.digits_taps`).",
    "- `fitnet` and `correlation` train their papers' two stages "
    "(FitNets' hint stage a sixth of the epochs, correlation's stage 1 "
    "half); KTAN's discriminator runs at 1/100 of the "
    "student's learning rate (each method's page says why).",
    "- `crd` runs its default build, the queue (`dataset_size=None`): "
    "`load_digits`' pipeline carries no example index for the authors' "
    "memory bank (see the method's page).",
    "- `dkd` runs with the authors' 20-epoch warm-up of its weight (the "
    "term's `warmup_epochs`; rows measured before it became the term's "
    "default ran without it).",
    "- The papers' weights were tuned for ResNets on CIFAR/ImageNet; this "
    "1.5K-parameter student is far from that regime.",
)


def adam(epochs, data):
    """Adam with a cosine decay to 0 over the run (as `tfkd demo`)."""
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE, epochs * steps_per_epoch(data.train)))


def run_seed(seed, methods, args, writer):
    """Teacher, scratch student and one distilled student per method."""
    keras.utils.set_random_seed(seed)
    data = load_data(args.data, batch_size=args.batch_size, seed=seed)
    guard = [StopOnNonFiniteLoss()]
    # The pipelines shuffle themselves (`shuffle=False` only keeps Keras
    # from warning that it ignores its default `shuffle=True`).
    fit = dict(validation_data=data.validation, verbose=args.verbose,
               callbacks=guard, shuffle=False)

    def record(label, method, history, model, seconds, settings):
        record_run(writer, history, label=label, method=method,
                   dataset=data_setting(args.data)["title"], seed=seed,
                   model=model, teacher=teacher,
                   test_data=data.test, seconds=seconds,
                   hyperparameters={"epochs": args.epochs,
                                    "batch_size": args.batch_size,
                                    **settings},
                   validation_is_test=False)

    start = time.time()
    teacher = tfkd.models.digits_teacher(data.num_classes, data.input_shape)
    compile_classifier(teacher, adam(args.teacher_epochs, data))
    history = teacher.fit(data.train, epochs=args.teacher_epochs, **fit)
    record("teacher", "teacher", history, teacher, time.time() - start,
           {"epochs": args.teacher_epochs})

    initial = tfkd.models.digits_student(data.num_classes, data.input_shape)
    for method in ["student"] + list(methods):
        start = time.time()
        student = keras.models.clone_model(initial)
        student.set_weights(initial.get_weights())
        if method == "student":
            compile_classifier(student, adam(args.epochs, data))
            history = student.fit(data.train, epochs=args.epochs, **fit)
            settings = {}
        else:
            taps = registry.digits_taps(method)
            distiller = registry.build(method, teacher, student,
                                       feature_layers=taps,
                                       **args.overrides.get(method, {}))
            distiller.compile(optimizer=adam(args.epochs, data),
                              metrics=["accuracy"])
            history = distiller.fit(data.train, epochs=args.epochs, **fit)
            settings = {"taps": list(taps) if registry.get(
                method).uses_features else None,
                **registry.get(method).defaults(),
                **args.overrides.get(method, {})}
        record("student", method, history, student, time.time() - start,
               settings)


def _epochs(n):
    return f"{n} epoch{'' if n == 1 else 's'}"


def _cell(mean, std):
    if mean is None:
        return "n/a"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def results_page(rows, command, seconds, seeds, epochs, teacher_epochs,
                 data="digits", batch_size=BATCH_SIZE, partial="",
                 overrides=None):
    """The results page: the table, the command and its wall time (and
    the `--set` overrides of methods' defaults, if any)."""
    by_method = {row["method"]: row for row in rows}
    scratch = by_method.get("student", {}).get("last_mean")
    kwargs = data_setting(data)["kwargs"]
    if data == "digits":
        title = "# Every method on the digits pair"
        setting = (f"digits at {IMAGE_SIZE}×{IMAGE_SIZE} "
                   "(`tfkd.data.load_digits`, the seed's split)")
    else:
        size = kwargs["image_size"]
        title = "# Every method on Fashion-MNIST, all labels"
        setting = (f"Fashion-MNIST at {size}×{size} "
                   "(`tfkd.data.load_fashion_mnist`: a stratified "
                   f"{kwargs['train_examples']:,}-image training pool and "
                   "the validation split drawn with the seed; the 10,000 "
                   "test images)")
    lines = [
        title,
        "",
        "Command (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        f"Wall time: {seconds / 60:.1f} min on this machine (2 shared CPU "
        f"cores); written {datetime.date.today().isoformat()} by "
        f"`recipes/methods.py`{partial}.",
        "",
        f"Setting: {setting}, "
        "`tfkd.models.digits_teacher` → `digits_student`; per seed one "
        f"teacher ({_epochs(teacher_epochs)}) and one set of initial student "
        f"weights shared by every row; each student {_epochs(epochs)}, batch "
        f"{batch_size}, Adam {LEARNING_RATE:g} with a cosine decay to 0. "
        "Each method is its registry default (`registry.build` with the "
        "method's defaults, the paper's weights mapped to `w_s · CE + "
        "(1 − w_s) · Σ w_i · L_i`; see each method's page), tapping "
        "`registry.digits_taps(method)`, trained by the distiller's `fit`. No "
        "tuning.",
        "",
    ]
    if overrides:
        lines += [
            "Defaults replaced (`--set`): " + ", ".join(
                f"`{m}.{k}={v!r}`" for m, values in overrides.items()
                for k, v in values.items()) + ".",
            "",
        ]
    lines += [
        f"Test accuracy (%) after the last epoch, mean ± sample std over "
        f"seeds {', '.join(map(str, seeds))}:",
        "",
        "| method | test accuracy (%) | vs student (points) | taps | "
        "s / run |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for row in rows:
        method = row["method"]
        if method in ("teacher", "student"):
            taps = "—"
        else:
            spec = registry.get(method)
            taps = "logits" if not spec.uses_features else " / ".join(
                f"`{t}`" for t in registry.digits_taps(method))
        delta = "" if scratch is None or method in ("teacher", "student") \
            or row["last_mean"] is None else \
            f"{row['last_mean'] - scratch:+.2f}"
        lines.append(
            f"| {method} | {_cell(row['last_mean'], row['last_std'])} | "
            f"{delta} | {taps} | {row['wall_time_mean'] or 0:.0f} |")
    return "\n".join(lines + [""] + list(NOTES)) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None,
                        choices=registry.method_names(),
                        help="methods to run (default: every method)")
    parser.add_argument("--data", default="digits",
                        choices=["digits", "fashion_mnist"],
                        help="data set (default: digits, embedded)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"student epochs (default: {EPOCHS} on digits; "
                             "tfkd.app.experiment.DATA_SETTINGS)")
    parser.add_argument("--teacher-epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", default=None,
                        help="run directory (default: "
                             "tfkd_runs/methods_digits/<time>)")
    parser.add_argument("--doc", default=None,
                        help=f"results page to write (default: {DOC}, "
                             f"{FASHION_DOC} with --data fashion_mnist)")
    parser.add_argument("--set", nargs="+", default=[], dest="overrides",
                        metavar="METHOD.NAME=VALUE",
                        help="replace a method's default, e.g. --set "
                             "kd.temperature=1 (registry.build's overrides)")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    setting = data_setting(args.data)
    args.epochs = args.epochs or setting["epochs"]
    args.teacher_epochs = args.teacher_epochs or setting["teacher_epochs"]
    args.batch_size = args.batch_size or setting["batch_size"]
    methods = args.methods or registry.method_names()
    args.overrides = method_overrides(args.overrides, methods)
    out = args.out or os.path.join(
        "tfkd_runs", f"methods_{args.data}",
        datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y%m%d-%H%M%S"))
    # A variant (`--set`) never replaces the defaults' page unless asked.
    args.doc = args.doc or (
        os.path.join(out, "methods.md") if args.overrides
        else DOC if args.data == "digits" else FASHION_DOC)
    writer = ResultsWriter(out)
    command = "python recipes/methods.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    print(f"{len(methods)} methods x seeds {args.seeds}, {args.epochs} "
          f"epochs -> {out}", flush=True)
    start = time.time()
    order = ["teacher", "student"] + list(methods)
    for i, seed in enumerate(args.seeds):
        run_seed(seed, methods, args, writer)
        # The page after every seed: an interrupted run leaves the seeds it
        # finished.
        seconds = time.time() - start
        rows = sorted(writer.write_summary(), key=lambda row: (
            order.index(row["method"]) if row["method"] in order
            else len(order)))
        done = args.seeds[:i + 1]
        partial = "" if len(done) == len(args.seeds) else (
            f"; partial: seeds {done} of {args.seeds}")
        page = results_page(rows, command.strip(), seconds, done,
                            args.epochs, args.teacher_epochs, args.data,
                            args.batch_size, partial, args.overrides)
        tfkd_io.write_text(args.doc, page)
    print("\n" + page, flush=True)
    return rows


if __name__ == "__main__":
    main()
