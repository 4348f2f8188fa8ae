"""Recipe: where distillation pays -- few labels plus unlabelled transfer data.

A teacher trained on every training label of the embedded digits teaches a
small student that has only a few labels of its own: 6 or 20 a class,
while the other training images come without labels (label `-1`,
`tfkd.data.load_digits(labels_per_class=N)`). Distillation uses every
image -- the knowledge terms need no labels, the student's cross entropy
averages over the labelled ones only -- whereas the student trained alone
sees only its labelled images. Every method of the registry is run, each
from the same initial student weights, for each seed:

    python recipes/transfer.py --seeds 0 1 2
    python recipes/transfer.py --data fashion_mnist --seeds 0 1 2

`--data fashion_mnist` runs the same protocol on Fashion-MNIST
(`tfkd.data.load_fashion_mnist`, settings in
`tfkd.app.experiment.DATA_SETTINGS`: 14×14 images, a 6,000-image training
pool, 10 and 100 labels a class, batch 128, 5 student and 10 teacher
epochs; the 10,000 test images).

Rows:

- `teacher`: `tfkd.models.digits_teacher`, trained on all training labels
  (once per seed, shared by both label budgets);
- `student`: `tfkd.models.digits_student` trained on its labelled images
  alone (the baseline), for as many optimizer steps as the distilled
  students take (its few images are repeated to fill each epoch), so it
  gets the same compute;
- one row per method of `tfkd.distillers.registry.method_names()`, built
  with `registry.build` on the digits taps (`registry.digits_taps`) with
  the method's defaults, trained with the distiller's `fit` on the few-label
  split (labelled + unlabelled images).

Settings (the demo's): 16×16 images, batch 64, Adam at 3e-3 with a cosine
decay to 0, 20 teacher epochs, 30 student epochs (one epoch = one pass over
the 1,167 training images, 19 steps). Accuracy is measured once, after the
last epoch, on the held-out test split (360 images with their labels); the
validation split (270 images, labelled) is only logged, never used to pick
anything. Results go to a new folder (`tfkd_runs/transfer-N`, or `--out`),
as `tfkd.app.reporting` records (`tfkd report DIR` reads them), plus
`transfer.md` (the table) and `transfer.png` (`tfkd.app.plots`).
`--set METHOD.NAME=VALUE ...` replaces methods' defaults (e.g. `--set
kd.temperature=1`; `registry.build`'s overrides, recorded with each run).
"""

import argparse
import statistics
import sys
import time

import keras

import tfkd
from tfkd.app import runs
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.distillers import registry
from tfkd.app.experiment import Recorder
from tfkd.app.experiment import compile_classifier
from tfkd.app.experiment import data_setting
from tfkd.app.experiment import labelled_repeated
from tfkd.app.experiment import load_data
from tfkd.app.experiment import method_overrides
from tfkd.callbacks import merge_histories
from tfkd.app.experiment import steps_per_epoch
from tfkd.app.experiment import train_or_load_teacher
from tfkd.app.reporting import ResultsWriter

#: The students' labels a class, epochs and batch size: per data set in
#: `tfkd.app.experiment.DATA_SETTINGS` (digits: 6 and 20 labels a class of
#: 109-120 training images a class).
LEARNING_RATE = 3e-3
BASELINE = "student"
#: Test images of the non-digits data sets (for the table's caption).
TEST_IMAGES = {"fashion_mnist": 10000}


def teacher_dataset(data="digits"):
    """The records' dataset name of the teacher."""
    return f"{data_setting(data)['title']}, all labels"


def dataset_name(labels_per_class, data="digits"):
    """The records' dataset name for a label budget."""
    return f"{data_setting(data)['title']}, {labels_per_class} labels/class"


def adam(total_steps):
    """Adam at `LEARNING_RATE` with a cosine decay to 0 over `total_steps`
    (the demo's optimizer: a constant rate makes the tiny student's last
    epoch a lottery)."""
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        LEARNING_RATE, total_steps))


def run_seed(seed, labels, methods, writer, *, epochs, teacher_epochs,
             batch_size, teacher_path, verbose=0, data="digits",
             overrides=None):
    """Trains, for one seed, the teacher and every student of each budget,
    and records each run with `writer` (a
    `tfkd.app.reporting.ResultsWriter`); `overrides` (`{method: {name:
    value}}`, from `--set`) replace methods' defaults."""
    overrides = overrides or {}
    guard = [StopOnNonFiniteLoss()]
    keras.utils.set_random_seed(seed)
    full = load_data(data, batch_size=batch_size, seed=seed)
    steps = steps_per_epoch(full.train)
    start = time.time()
    teacher, history = train_or_load_teacher(
        lambda: tfkd.models.digits_teacher(full.num_classes,
                                           full.input_shape),
        full, epochs=teacher_epochs, optimizer=adam(steps * teacher_epochs),
        path=teacher_path, callbacks=guard, verbose=verbose)
    record = Recorder(writer, teacher_dataset(data), validation_is_test=False)
    record(history, label="teacher (all labels)", method="teacher",
           seed=seed, model=teacher, teacher=teacher, test_data=full.test,
           seconds=time.time() - start,
           hyperparameters={"epochs": teacher_epochs,
                            "batch_size": batch_size})
    for n in labels:
        few = load_data(data, batch_size=batch_size, seed=seed,
                        labels_per_class=n)
        record = Recorder(writer, dataset_name(n, data),
                          validation_is_test=False)
        keras.utils.set_random_seed(seed + 1000)
        initial = tfkd.models.digits_student(
            full.num_classes, full.input_shape).get_weights()
        common = {"epochs": epochs, "batch_size": batch_size,
                  "labels_per_class": n}

        def fresh_student():
            keras.utils.set_random_seed(seed)
            student = tfkd.models.digits_student(full.num_classes,
                                                 full.input_shape)
            student.set_weights(initial)
            return student

        # The baseline: the labelled images alone, repeated so that each
        # epoch has as many steps as the distilled students'.
        student = fresh_student()
        labelled = labelled_repeated(
            few.train, batch_size,
            cache_seed=None if data == "digits" else seed)
        start = time.time()
        compile_classifier(student, adam(steps * epochs))
        history = student.fit(labelled, steps_per_epoch=steps,
                              epochs=epochs, validation_data=few.validation,
                              verbose=verbose, callbacks=guard,
                              shuffle=False)  # the pipeline shuffles itself
        record(history, label=f"student alone ({n}/class)",
               method=BASELINE, seed=seed, model=student, teacher=teacher,
               test_data=few.test, seconds=time.time() - start,
               hyperparameters=dict(common, data="labelled images only"))

        for method in methods:
            student = fresh_student()
            start = time.time()
            distiller = registry.build(
                method, teacher, student,
                feature_layers=registry.digits_taps(method),
                **overrides.get(method, {}))
            distiller.compile(optimizer=adam(steps * epochs),
                              metrics=["accuracy"])
            history = distiller.fit(few.train,
                                    validation_data=few.validation,
                                    epochs=epochs, verbose=verbose,
                                    callbacks=guard)
            record(merge_histories(*(history if isinstance(
                       history, (list, tuple)) else [history])),
                   label=f"{method} ({n}/class)", method=method, seed=seed,
                   model=student, teacher=teacher, test_data=few.test,
                   seconds=time.time() - start,
                   hyperparameters=dict(
                       common, data="labelled + unlabelled images",
                       taps=list(registry.digits_taps(method)),
                       **{**registry.get(method).defaults(),
                          **overrides.get(method, {})}))


def comparison(rows, labels, data="digits"):
    """`{setting: {method: (mean, std)}}` from summary rows, for the table
    and `tfkd.app.plots.plot_method_comparison`."""
    table = {}
    for n in labels:
        name = dataset_name(n, data)
        table[f"{n} labels/class"] = {
            row["method"]: (row["last_mean"], row["last_std"])
            for row in rows if row["dataset"] == name
            and row["last_mean"] is not None}
    return table


def _cell(value, digits=1):
    mean, std = value
    return f"{mean:.{digits}f}" + ("" if std is None else
                                   f" ± {std:.{digits}f}")


def markdown(rows, labels, seeds, data="digits"):
    """The results table: one row per method, one column per label budget
    (mean ± std test accuracy %, and the gain over the student alone),
    best first; the teacher last; the mean wall time of a run per
    method."""
    table = comparison(rows, labels, data)
    seconds = {}
    for row in rows:
        if row.get("wall_time_mean") is not None:
            seconds.setdefault(row["method"], []).append(
                row["wall_time_mean"])
    settings = list(table)
    methods = []
    for values in table.values():
        methods += [m for m in values if m not in methods]

    def mean_over(method):
        means = [table[s][method][0] for s in settings if method in table[s]]
        return statistics.fmean(means) if means else float("-inf")

    methods.sort(key=mean_over, reverse=True)
    header = ["method"] + [f"{s} (%)" for s in settings] + [
        f"gain, {s}" for s in settings] + ["s / run"]
    lines = ["| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (2 * len(settings) + 1)]

    def wall(method):
        return (f"{statistics.fmean(seconds[method]):.0f}"
                if method in seconds else "")

    for method in methods:
        cells = [f"`{method}`" if method != BASELINE
                 else "student alone (its labels only)"]
        gains = []
        for s in settings:
            value = table[s].get(method)
            base = table[s].get(BASELINE)
            cells.append("n/a" if value is None else _cell(value))
            if value is None or base is None or method == BASELINE:
                gains.append("")
            else:
                gains.append(f"{value[0] - base[0]:+.1f}")
        lines.append("| " + " | ".join(cells + gains + [wall(method)]) + " |")
    teacher = [r for r in rows if r["dataset"] == teacher_dataset(data)]
    if teacher:
        value = (teacher[0]["last_mean"], teacher[0]["last_std"])
        lines.append("| teacher (all training labels) | "
                     + " | ".join([_cell(value)] * len(settings)
                                  + [""] * len(settings)
                                  + [wall("teacher")]) + " |")
    seeds_text = ", ".join(str(s) for s in seeds)
    test = ("360 digits" if data == "digits"
            else f"{TEST_IMAGES[data]:,} {data_setting(data)['title']} "
                 "images")
    lines.append("")
    lines.append(f"Held-out test accuracy ({test}), mean ± std over "
                 f"seeds {seeds_text}; gain = method − student alone, in "
                 "points; s / run: mean wall time of one run (one budget, "
                 "one seed).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Few labels + unlabelled transfer data: every registry "
                    "method vs the student alone (see the module "
                    "docstring).")
    parser.add_argument("--data", default="digits",
                        choices=["digits", "fashion_mnist"],
                        help="data set (default: digits, embedded; "
                             "fashion_mnist reads its IDX files, see "
                             "tfkd.data.load_fashion_mnist)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels-per-class", type=int, nargs="+",
                        default=None,
                        help="label budgets (default: 6 20 on digits, "
                             "10 100 on fashion_mnist)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="methods to run (default: every method of the "
                             "registry)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="student epochs (default: the data set's, "
                             "tfkd.app.experiment.DATA_SETTINGS)")
    parser.add_argument("--teacher-epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", default=None,
                        help="run folder (default: a new "
                             "tfkd_runs/transfer-N)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the contents of a non-empty --out "
                             "(one a tfkd run made)")
    parser.add_argument("--teacher-dir", default=None,
                        help="folder of trained teachers to reuse "
                             "(teacher_seed<N>.keras, as a run folder holds "
                             "them; default: the run folder)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--set", nargs="+", default=[], dest="overrides",
                        metavar="METHOD.NAME=VALUE",
                        help="replace a method's default, e.g. --set "
                             "kd.temperature=1 (registry.build's overrides)")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    setting = data_setting(args.data)
    labels = args.labels_per_class or list(setting["labels_per_class"])
    epochs = args.epochs or setting["epochs"]
    teacher_epochs = args.teacher_epochs or setting["teacher_epochs"]
    batch_size = args.batch_size or setting["batch_size"]
    methods = args.methods or registry.method_names()
    for method in methods:
        registry.get(method)  # A clear error before any training.
    overrides = method_overrides(args.overrides, methods)
    if BASELINE in methods:
        raise ValueError(f"{BASELINE!r} is the baseline, always run; not a "
                         "method.")
    out = runs.prepare_run_dir(args.out, kind="transfer",
                               overwrite=args.overwrite)
    where = runs.display_path(out)
    print(f"Transfer recipe: {setting['title']}, {labels} labels/class "
          f"+ the rest unlabelled, methods {methods}, seeds {args.seeds}, "
          f"{epochs} epochs (teacher {teacher_epochs}) -> {where}",
          flush=True)
    writer = ResultsWriter(out)
    command = "python recipes/transfer.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    start = time.time()
    for i, seed in enumerate(args.seeds):
        run_seed(seed, labels, methods, writer,
                 epochs=epochs, teacher_epochs=teacher_epochs,
                 batch_size=batch_size,
                 teacher_path=f"{args.teacher_dir or out}/"
                              f"teacher_seed{seed}.keras",
                 verbose=args.verbose, data=args.data,
                 overrides=overrides)
        # The table after every seed: an interrupted run leaves the seeds
        # it finished.
        wall = time.time() - start
        rows = writer.write_summary()
        done = args.seeds[:i + 1]
        text = markdown(rows, labels, done, args.data)
        partial = "" if len(done) == len(args.seeds) else (
            f" (partial: seeds {done} of {args.seeds})")
        tfkd.io.write_text(f"{out}/transfer.md", text + (
            f"\nCommand: `{command.strip()}`; wall time {wall / 60:.1f} "
            f"min{partial}.\n"))
        written = [f"{where}/transfer.md", f"{where}/summary.md"]
        if not args.no_plot:
            fig = tfkd.app.plots.plot_method_comparison(
                comparison(rows, labels, args.data), f"{out}/transfer.png",
                title=f"{setting['title']}: few labels + unlabelled "
                      "transfer data")
            fig.clear()
            written.append(f"{where}/transfer.png")
    print("\n" + text, flush=True)
    print(f"Wall time {wall / 60:.1f} min. Wrote: " + ", ".join(written))
    print(runs.next_steps([f"tfkd report {runs.shell_quote(out)}"]))
    return rows


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
