"""Recipe alias: the correlation paper's Table 3 on the embedded digits.

Kept so that `docs/results_correlation_digits.md` stays reproducible with
its command; the work is done by `recipes/correlation.py --quick --table 3`
(see its docstring), with this page's settings:

    python recipes/correlation_digits.py --seeds 0 1 2

which runs

    python recipes/correlation.py --quick --table 3 --seeds 0 1 2 \\
        --two-stage-optimizer shared --out tfkd_runs/correlation_digits/<time>

Settings (paper §4.2 where it gives them): the five knowledge forms of
Table 3 (Channel, Spatial, Both, Activation = FitNets hints, Attention =
attention transfer) × Single, Single+KD, Two, Two+KD, beside the scratch
student, Hinton KD and the teacher. `tfkd.models.digits_teacher` (32-32 /
64-64 convs) → `digits_student` (8 / 16 convs), both tapped at
`block2_relu` (8×8×64 vs 8×8×16): Channel, Both and Activation go through a
trainable 1×1-conv adapter / FitNets regressor owned by the distiller;
Spatial and Attention need none. "+KD" is `alpha = 0.3` (else 1), `T = 4`;
single-stage `L_Know + 0.1 · L_Class` (Attention: `L_Class + 500 · L_AT`);
two-stage trains the student up to the guided layer with `L_Know` for
`--stage1-epochs` (10), then the whole student with `L_Class` for
`--epochs` (40, as long as the single-stage runs), with ONE optimizer for
both stages (`FeatureDistiller.fit_two_stage`; `recipes/correlation.py`
defaults to a fresh one per stage). The KD row is `0.3 · CE + 0.7 · KD`.
Adam at 3e-3, batch 64, teacher 20 epochs. One teacher (seed 0) serves
every run; the data split is fixed (seed 0) so that no seed's test images
were seen by the teacher; the seeds change the student's initial weights
and the order of batches. The teacher's outputs are computed once
(`tfkd.data.cache_teacher_outputs`). Accuracies are on the held-out test
split after the last epoch ("last"; "best" is the best epoch's).
"""

import argparse
import datetime
import importlib.util
import os
import sys

METHODS = ("channel", "spatial", "both", "activation", "attention")
SETTINGS = ("single", "single+kd", "two", "two+kd")


def _recipe():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "correlation.py")
    spec = importlib.util.spec_from_file_location("recipe_correlation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_dir = args.run_dir or os.path.join(
        "tfkd_runs", "correlation_digits",
        datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y%m%d-%H%M%S"))
    rows = [f"{m}/{s}" for m in args.methods for s in args.settings]
    return _recipe().main([
        "--quick", "--table", "3", "--two-stage-optimizer", "shared",
        "--seeds", *map(str, args.seeds), "--rows", *rows, "kd", "student",
        "--epochs", str(args.epochs),
        "--stage1-epochs", str(args.stage1_epochs),
        "--teacher-epochs", str(args.teacher_epochs),
        "--batch-size", str(args.batch_size),
        "--learning-rate", str(args.learning_rate), "--out", run_dir,
    ])


if __name__ == "__main__":
    main()
