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
page says which was run).
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


def run_table3(args, out):
    setting = FashionSetting(
        dataset="fashion_mnist", epochs=args.epochs,
        teacher_epochs=args.teacher_epochs, batch_size=args.batch_size,
        quick=False, data_dir=args.data_dir, lr=5e-4, teacher_lr=5e-4)
    setting.train_examples = args.train_examples
    writer = ResultsWriter(os.path.join(out, "table3"))
    lp_recipe.run_dataset(setting, {"mnist": list(args.methods or
                                                  TABLE3_METHODS)},
                          args.seeds, writer, verbose=args.verbose,
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


def run_fig2_seed(args, seed, out):
    """Teacher, student alone, FitNets and LP on the LeNet++ pair; returns
    `{row: test accuracy %}` and `{row: test features}` (and the labels)."""
    guard = [StopOnNonFiniteLoss()]
    keras.utils.set_random_seed(seed)
    data = tfkd.data.load_fashion_mnist(
        batch_size=args.batch_size, seed=seed, data_dir=args.data_dir,
        train_examples=args.train_examples)
    steps = steps_per_epoch(data.train)
    # The pipelines shuffle themselves (`shuffle=False` only keeps Keras
    # from warning that it ignores its default `shuffle=True`).
    fit = dict(validation_data=data.validation, verbose=args.verbose,
               callbacks=guard, shuffle=False)
    build = dict(num_classes=data.num_classes, input_shape=data.input_shape,
                 width=args.width)
    accuracy, seconds, models = {}, {}, {}
    start = time.time()
    teacher = tfkd.models.lenetpp_teacher(**build)
    compile_classifier(teacher, _adam(args.teacher_epochs, steps))
    teacher.fit(data.train, epochs=args.teacher_epochs, **fit)
    models["teacher"], seconds["teacher"] = teacher, time.time() - start
    keras.utils.set_random_seed(seed + 1000)
    initial = tfkd.models.lenetpp_student(**build).get_weights()
    for method in args.fig2_methods:
        keras.utils.set_random_seed(seed)
        student = tfkd.models.lenetpp_student(**build)
        student.set_weights(initial)
        start = time.time()
        if method == "student":
            compile_classifier(student, _adam(args.epochs, steps))
            student.fit(data.train, epochs=args.epochs, **fit)
        elif method == "fitnet":
            distiller = tfkd.FitNetDistiller(
                teacher, student, teacher_layer_name="pool2",
                student_layer_name="pool2", alpha=lp_recipe.FITNET_ALPHA,
                temperature=lp_recipe.TAU, stage=1)
            distiller.compile(optimizer=_adam(args.epochs, steps))
            hint = max(1, round(args.epochs / 4))
            distiller.fit_two_stage(
                data.train, stage1_epochs=hint,
                stage2_epochs=max(1, args.epochs - hint),
                stage2_optimizer="shared", **fit)
        else:
            distiller = tfkd.LocalityPreservingDistiller(
                teacher, student,
                teacher_layer_name=tfkd.models.LENETPP_EMBEDDING,
                student_layer_name=tfkd.models.LENETPP_EMBEDDING,
                k=lp_recipe.K, gamma=lp_recipe.GAMMA, lam=lp_recipe.LAM,
                temperature=lp_recipe.TAU)
            distiller.compile(optimizer=_adam(args.epochs, steps))
            distiller.fit(data.train, epochs=args.epochs, **fit)
        models[method], seconds[method] = student, time.time() - start
    labels = np.concatenate([y for _, y in data.test])
    features = {}
    for name, model in models.items():
        accuracy[name] = 100 * test_accuracy(model, data.test)
        features[name] = tfkd.app.plots.layer_features(
            model, tfkd.models.LENETPP_EMBEDDING, data.test)
    return accuracy, seconds, features, labels


def run_fig2(args, out):
    per_seed, times = [], []
    for seed in args.seeds:
        accuracy, seconds, features, labels = run_fig2_seed(args, seed, out)
        per_seed.append(accuracy)
        times.append(seconds)
        print(f"  fig2 seed {seed}: " + ", ".join(
            f"{k} {v:.2f} %" for k, v in accuracy.items()), flush=True)
        if seed == args.seeds[0]:
            names = {"teacher": "teacher (3-d)",
                     "student": "student alone (2-d)",
                     "fitnet": "FitNets (2-d)", "lp": "LP (2-d)"}
            fig = tfkd.app.plots.plot_embedding(
                {names[k]: v for k, v in features.items()}, labels,
                os.path.join(out, "fig2.png"), max_points=2000, seed=seed,
                title="Fashion-MNIST test features (input of the "
                      "classifier)",
                class_names=list(tfkd.data.fashion_mnist.CLASS_NAMES))
            fig.clear()
    lines = ["| network | ours: Fashion-MNIST (%) | paper: MNIST (%) | "
             "s / run |", "| --- | ---: | ---: | ---: |"]
    for name in per_seed[0]:
        values = [a[name] for a in per_seed]
        cell = f"{statistics.fmean(values):.2f}" + (
            f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")
        wall = statistics.fmean(t[name] for t in times)
        lines.append(f"| {name} | {cell} | {PAPER_FIG2[name]:.1f} | "
                     f"{wall:.0f} |")
    return "\n".join(lines) + "\n", per_seed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=("table3", "fig2"),
                        default=["table3", "fig2"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-examples", type=int, default=None,
                        help="stratified training pool (default: all "
                             "54,000 after validation)")
    parser.add_argument("--methods", nargs="+", choices=TABLE3_METHODS,
                        default=None, help="Table III rows")
    parser.add_argument("--fig2-methods", nargs="+", choices=FIG2_METHODS,
                        default=list(FIG2_METHODS))
    parser.add_argument("--width", type=float, default=1.0,
                        help="LeNet++ width multiplier (Fig. 2; 1: the "
                             "paper's)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=os.path.join("runs",
                                                      "lp_fashion_mnist"))
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    command = "python recipes/lp_mnist.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    text = []
    start = time.time()
    results = {}
    if "table3" in args.part:
        table, rows = run_table3(args, args.out)
        results["table3"] = rows
        text += ["Table III protocol (maxout pair), test accuracy after the "
                 "last epoch:", "", table]
    if "fig2" in args.part:
        table, per_seed = run_fig2(args, args.out)
        results["fig2"] = per_seed
        text += ["Fig. 2 protocol (LeNet++ pair), test accuracy:", "", table,
                 f"Figure: {os.path.join(args.out, 'fig2.png')}", ""]
    text.append(f"Command: `{command.strip()}`; wall time "
                f"{(time.time() - start) / 60:.1f} min; seeds {args.seeds}.")
    tfkd_io.write_text(os.path.join(args.out, "lp_mnist.md"),
                       "\n".join(text) + "\n")
    print("\n".join(text), flush=True)
    return results


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
