"""Recipe: the LP paper's MNIST experiments (Table III, Fig. 2) on
Fashion-MNIST.

The paper's MNIST files are not available offline here; Fashion-MNIST has
MNIST's format, size and 28×28 grey images (and is harder), so both
protocols run on it (`tfkd.data.load_fashion_mnist`; validation carved from
the training images with the seed, the 10,000 test images for the numbers).

Table III (`--part table3`): FitNets' MNIST pair, the 3-layer maxout
teacher `tfkd.models.lp_mnist_teacher` and the 6-layer thinner maxout
student `lp_mnist_student`; rows the student alone, KD (the paper's eq. 2),
FitNets (hints on `pool2`, then eq. 2) and LP (eq. 8 on `pool2`), built and
trained by `recipes/lp.py`'s `run_dataset` (RMSProp 5e-4 as the paper's
MNIST runs, batch 128, no augmentation), every row of a seed from the same
initial student weights.

Fig. 2 (`--part fig2`): a LeNet++-style teacher with a 3-unit feature layer
(`tfkd.models.lenetpp_teacher`) and a student with half its filters and a
2-unit one (`lenetpp_student`); the student alone, FitNets (hints from the
teacher's `pool2` to the student's through a 1×1 regressor, then eq. 2) and
LP (eq. 8 tapping the feature layers, `k = 5, γ = 1, λ = 2, τ = 0.5`), all
with Adam 1e-3 and a cosine decay; the test images' features (the input of
the classifier) plotted coloured by class with `tfkd.app.plots.plot_embedding`.

    python recipes/lp_mnist.py --seeds 0 1 2
    python recipes/lp_mnist.py --part fig2 --epochs 5 --teacher-epochs 5

The paper trains 200+ epochs on the 60,000 images; `--epochs`,
`--teacher-epochs` and `--train-examples` size a shorter run (the results
page says which was run). Fig. 2 takes them too unless `--fig2-epochs`,
`--fig2-teacher-epochs`, `--fig2-train-examples` give its own budget (its
LeNet++ pair costs a fraction of the maxout pair's per image), and
`--fig2-width` scales the LeNet++ widths. The seeds are the outer loop:
each seed runs the parts in `--part`'s order (`--part fig2 table3`: the
cheap Fig. 2 first), and the results (`table3/`,
`fig2.json`, `fig2.png`, `lp_mnist.md`) are rewritten, atomically, as each
part of a seed finishes, so an interrupted run keeps the seeds it did.
"""

import argparse
import os
import statistics
import sys
import time

import keras
import numpy as np

import tfkd
from tfkd import io as tfkd_io
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.app.experiment import compile_classifier
from tfkd.app.experiment import steps_per_epoch
from tfkd.app.experiment import test_accuracy
from tfkd.app.reporting import ResultsWriter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lp as lp_recipe  # noqa: E402

#: The paper's MNIST numbers: Table III (100 − error %) and Fig. 2's text.
PAPER_TABLE3 = {"teacher": 99.45, "student": 98.10, "kd": 99.35,
                "fitnet": 99.49, "lp": 99.52}
PAPER_FIG2 = {"teacher": 99.3, "student": 97.5, "fitnet": 98.5, "lp": 99.2}
TABLE3_METHODS = ("student", "kd", "fitnet", "lp")
FIG2_METHODS = ("student", "fitnet", "lp")


class FashionSetting(lp_recipe.Setting):
    """`recipes/lp.py`'s setting, loading Fashion-MNIST."""

    train_examples = None

    def load(self, seed):
        return tfkd.data.load_fashion_mnist(
            batch_size=self.batch_size, seed=seed, data_dir=self.data_dir,
            train_examples=self.train_examples)


def run_table3(args, seed, out):
    """Table III's rows for `seed`, added to `out/table3`; returns the
    markdown table and the summary rows of every seed run so far."""
    setting = FashionSetting(
        dataset="fashion_mnist", epochs=args.epochs,
        teacher_epochs=args.teacher_epochs, batch_size=args.batch_size,
        quick=False, data_dir=args.data_dir, lr=5e-4, teacher_lr=5e-4)
    setting.train_examples = args.train_examples
    writer = ResultsWriter(os.path.join(out, "table3"))
    lp_recipe.run_dataset(setting, {"mnist": list(args.methods or
                                                  TABLE3_METHODS)},
                          [seed], writer, verbose=args.verbose,
                          validation_is_test=False)
    rows = writer.write_summary()
    lines = ["| row | ours: Fashion-MNIST (%) | paper: MNIST (%) | s / run |",
             "| --- | ---: | ---: | ---: |"]
    for row in rows:
        method = row["method"].split("/")[-1]
        mean, std = row["last_mean"], row["last_std"]
        cell = "n/a" if mean is None else (
            f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}"))
        lines.append(f"| {method} | {cell} | "
                     f"{PAPER_TABLE3.get(method, float('nan')):.2f} | "
                     f"{row['wall_time_mean'] or 0:.0f} |")
    return "\n".join(lines) + "\n", rows


def _adam(epochs, steps):
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        1e-3, max(1, epochs * steps)))


def run_fig2_seed(args, seed):
    """Teacher, student alone, FitNets and LP on the LeNet++ pair, with the
    Fig. 2 budget (`args.fig2_*`).

    Returns:
        `(record, features, labels)`: `record` holds, per network, the test
        accuracy (%), the seconds, the epochs run and the parameter count,
        and the number of training images; `features` maps each network to
        its test features.
    """
    guard = [StopOnNonFiniteLoss()]
    keras.utils.set_random_seed(seed)
    data = tfkd.data.load_fashion_mnist(
        batch_size=args.batch_size, seed=seed, data_dir=args.data_dir,
        train_examples=args.fig2_train_examples)
    steps = steps_per_epoch(data.train)
    train_examples = sum(int(len(y)) for _, y in data.train)
    # The pipelines shuffle themselves (`shuffle=False` only keeps Keras
    # from warning that it ignores its default `shuffle=True`).
    fit = dict(validation_data=data.validation, verbose=args.verbose,
               callbacks=guard, shuffle=False)
    build = dict(num_classes=data.num_classes, input_shape=data.input_shape,
                 width=args.fig2_width)
    accuracy, seconds, models, epochs = {}, {}, {}, {}
    start = time.time()
    teacher = tfkd.models.lenetpp_teacher(**build)
    compile_classifier(teacher, _adam(args.fig2_teacher_epochs, steps))
    history = teacher.fit(data.train, epochs=args.fig2_teacher_epochs, **fit)
    models["teacher"], seconds["teacher"] = teacher, time.time() - start
    epochs["teacher"] = len(history.history["loss"])
    keras.utils.set_random_seed(seed + 1000)
    initial = tfkd.models.lenetpp_student(**build).get_weights()
    for method in args.fig2_methods:
        keras.utils.set_random_seed(seed)
        student = tfkd.models.lenetpp_student(**build)
        student.set_weights(initial)
        start = time.time()
        if method == "student":
            compile_classifier(student, _adam(args.fig2_epochs, steps))
            histories = [student.fit(data.train, epochs=args.fig2_epochs,
                                     **fit)]
        elif method == "fitnet":
            distiller = tfkd.FitNetDistiller(
                teacher, student, teacher_layer_name="pool2",
                student_layer_name="pool2", alpha=lp_recipe.FITNET_ALPHA,
                temperature=lp_recipe.TAU, stage=1)
            distiller.compile(optimizer=_adam(args.fig2_epochs, steps))
            hint = max(1, round(args.fig2_epochs / 4))
            histories = distiller.fit_two_stage(
                data.train, stage1_epochs=hint,
                stage2_epochs=max(1, args.fig2_epochs - hint),
                stage2_optimizer="shared", **fit)
        else:
            distiller = tfkd.LocalityPreservingDistiller(
                teacher, student,
                teacher_layer_name=tfkd.models.LENETPP_EMBEDDING,
                student_layer_name=tfkd.models.LENETPP_EMBEDDING,
                k=lp_recipe.K, gamma=lp_recipe.GAMMA, lam=lp_recipe.LAM,
                temperature=lp_recipe.TAU)
            distiller.compile(optimizer=_adam(args.fig2_epochs, steps))
            histories = [distiller.fit(data.train, epochs=args.fig2_epochs,
                                       **fit)]
        models[method], seconds[method] = student, time.time() - start
        epochs[method] = sum(len(h.history["loss"]) for h in histories)
    labels = np.concatenate([y for _, y in data.test])
    features = {}
    for name, model in models.items():
        accuracy[name] = 100 * test_accuracy(model, data.test)
        features[name] = tfkd.app.plots.layer_features(
            model, tfkd.models.LENETPP_EMBEDDING, data.test)
    record = {"seed": seed, "train_examples": train_examples,
              "accuracy": accuracy, "seconds": seconds, "epochs": epochs,
              "parameters": {name: int(model.count_params())
                             for name, model in models.items()}}
    return record, features, labels


FIG2_NAMES = {"teacher": "teacher (3-d)", "student": "student alone (2-d)",
              "fitnet": "FitNets (2-d)", "lp": "LP (2-d)"}


def run_fig2(args, seed, out, records):
    """Fig. 2 for `seed`: appends its record to `records`, rewrites
    `out/fig2.json` (and, for the first seed, `out/fig2.png`); returns the
    markdown table of every seed run so far."""
    record, features, labels = run_fig2_seed(args, seed)
    records.append(record)
    print(f"  fig2 seed {seed}: " + ", ".join(
        f"{k} {v:.2f} %" for k, v in record["accuracy"].items()), flush=True)
    tfkd_io.write_json(os.path.join(out, "fig2.json"), records)
    if seed == args.seeds[0]:
        fig = tfkd.app.plots.plot_embedding(
            {FIG2_NAMES[k]: v for k, v in features.items()}, labels,
            os.path.join(out, "fig2.png"), max_points=2000, seed=seed,
            title="Fashion-MNIST test features (input of the classifier)",
            class_names=list(tfkd.data.fashion_mnist.CLASS_NAMES))
        fig.clear()
    lines = ["| network | ours: Fashion-MNIST (%) | paper: MNIST (%) | "
             "s / run |", "| --- | ---: | ---: | ---: |"]
    for name in records[0]["accuracy"]:
        values = [r["accuracy"][name] for r in records]
        cell = f"{statistics.fmean(values):.2f}" + (
            f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
        wall = statistics.fmean(r["seconds"][name] for r in records)
        lines.append(f"| {name} | {cell} | {PAPER_FIG2[name]:.1f} | "
                     f"{wall:.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    """The recipe's arguments, the Fig. 2 budget defaulting to Table III's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=("table3", "fig2"),
                        default=["table3", "fig2"],
                        help="parts to run, in this order for each seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10,
                        help="student epochs (Fig. 2 too, unless "
                             "--fig2-epochs)")
    parser.add_argument("--teacher-epochs", type=int, default=10,
                        help="teacher epochs (Fig. 2 too, unless "
                             "--fig2-teacher-epochs)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-examples", type=int, default=None,
                        help="stratified training pool (default: all "
                             "54,000 after validation; Fig. 2 too, unless "
                             "--fig2-train-examples)")
    parser.add_argument("--fig2-epochs", type=int, default=None,
                        help="Fig. 2 student epochs (default: --epochs)")
    parser.add_argument("--fig2-teacher-epochs", type=int, default=None,
                        help="Fig. 2 teacher epochs (default: "
                             "--teacher-epochs)")
    parser.add_argument("--fig2-train-examples", type=int, default=None,
                        help="Fig. 2 training pool (default: "
                             "--train-examples)")
    parser.add_argument("--methods", nargs="+", choices=TABLE3_METHODS,
                        default=None, help="Table III rows")
    parser.add_argument("--fig2-methods", nargs="+", choices=FIG2_METHODS,
                        default=list(FIG2_METHODS))
    parser.add_argument("--fig2-width", "--width", dest="fig2_width",
                        type=float, default=1.0,
                        help="LeNet++ width multiplier (Fig. 2; 1: the "
                             "paper's)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=os.path.join("runs",
                                                      "lp_fashion_mnist"))
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    for name in ("epochs", "teacher_epochs", "train_examples"):
        if getattr(args, f"fig2_{name}") is None:
            setattr(args, f"fig2_{name}", getattr(args, name))
    for name in ("epochs", "teacher_epochs", "fig2_epochs",
                 "fig2_teacher_epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _page(args, command, start, finished, table3, fig2):
    text = []
    if table3 is not None:
        text += ["Table III protocol (maxout pair), test accuracy after the "
                 f"last epoch ({args.epochs} student, {args.teacher_epochs} "
                 f"teacher epochs, training pool "
                 f"{args.train_examples or 'all'}):", "", table3]
    if fig2 is not None:
        text += ["Fig. 2 protocol (LeNet++ pair, width "
                 f"{args.fig2_width:g}), test accuracy ({args.fig2_epochs} "
                 f"student, {args.fig2_teacher_epochs} teacher epochs, "
                 f"training pool {args.fig2_train_examples or 'all'}):", "",
                 fig2, f"Figure: {os.path.join(args.out, 'fig2.png')}", ""]
    parts = list(dict.fromkeys(args.part))
    done = "" if len(finished) == len(parts) * len(args.seeds) else (
        " (partial, finished so far: " + (", ".join(finished) or "nothing")
        + ")")
    text.append(f"Command: `{command.strip()}`; wall time "
                f"{(time.time() - start) / 60:.1f} min; seeds "
                f"{args.seeds}{done}.")
    return "\n".join(text) + "\n"


def main(argv=None):
    args = parse_args(argv)
    command = "python recipes/lp_mnist.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    results, table3, fig2, records, finished = {}, None, None, [], []
    page = os.path.join(args.out, "lp_mnist.md")
    # Seeds outer: each finished part of a seed is on disk at once.
    for seed in args.seeds:
        for part in dict.fromkeys(args.part):  # In the order given.
            if part == "table3":
                table3, results["table3"] = run_table3(args, seed, args.out)
            else:
                fig2 = run_fig2(args, seed, args.out, records)
                results["fig2"] = [r["accuracy"] for r in records]
                results["fig2_records"] = records
            finished.append(f"{part} of seed {seed}")
            tfkd_io.write_text(page, _page(args, command, start, finished,
                                           table3, fig2))
    text = open(page, encoding="utf-8").read()
    print(text, flush=True)
    return results


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
