"""Recipe: the LP paper's Tables I, III and V (locality-preserving loss).

Trains, for each data set and seed: the teacher, then from the same initial
student weights the student with each method of the chosen tables, records
every run with `tfkd.app.reporting.ResultsWriter` and prints test accuracy
(mean ± std over seeds) beside the paper's numbers.

    # Table I: Students 1-4 <- the maxout teacher on CIFAR-10 (FitNet, LP):
    python recipes/lp.py --table 1 --seeds 0 1 2 --data-dir ~/tfds
    # Table V: Student 4 on CIFAR-10 and CIFAR-100 (KD, FitNet, LP):
    python recipes/lp.py --table 5 --seeds 0 1 2 --data-dir ~/tfds
    # Table III: the MNIST maxout pair (scratch, KD, FitNet, LP):
    python recipes/lp.py --table 3 --seeds 0 1 2 --data-dir ~/tfds
    # The same code on the embedded digits with the digits pair, minutes:
    python recipes/lp.py --quick --seeds 0 1 2

Methods (rows):

- `teacher`: the teacher, trained with cross entropy;
- `student`: the student from scratch ("standard back-propagation");
- `kd`: the paper's eq. 2, `CE + lam · H(softmax(t/τ), softmax(s/τ))` with
  `lam = 2, τ = 0.5` (the values the paper takes from Hinton et al.). It is
  run as `LocalityPreservingDistiller(gamma=0)`, so `kd` and `lp` differ
  by the LP term only (and `kd` logs `lp_loss` as a diagnostic);
- `fitnet`: `tfkd.FitNetDistiller` trained in two stages as FitNets and the
  LP paper (§III-A) describe: hints through FitNets' conv regressor
  (a quarter of the epochs), then eq. 2 (the rest). tfkd's stage-2 loss is
  `alpha · CE + (1 − alpha) · τ² · KL`; `alpha = τ² / (τ² + lam) = 1/9`
  makes it eq. 2 divided by 9 (RMSProp and Adam barely feel the factor).
  The paper's Table I instead counts a fully-connected regressor (~35M
  parameters); see `benchmarks/lp_cost.py` for its cost;
- `lp`: `tfkd.LocalityPreservingDistiller`, eq. 8 with the paper's
  `k = 5, gamma = 1, lam = 2, τ = 0.5`.

Taps: `tfkd.models.lp_tap_layers` — `pool2` of teacher and student, the
FitNets hint/guided layers the paper says it reuses (§V-B). Other rows of
Tables IV/V (multiple teachers, FSP, adversarial) have no tfkd distiller
and stay paper-only.

Settings. From the paper: batch 128 (§IV's `m`), RMSProp with decay 0.9,
learning rate 0.005 for the CIFAR teacher (400 epochs) and 0.0005 on
MNIST; CIFAR pad/crop/flip augmentation. Not stated, so chosen here: the
CIFAR students use RMSProp at 0.0005 for 200 epochs, the MNIST runs 200
epochs without augmentation; tfkd standardises CIFAR per channel where the
paper used global contrast normalisation and ZCA whitening. The test split
is the validation set (the papers' protocol); "last" is the final epoch.

`--quick` runs the same code on the embedded digits (16×16) with
`tfkd.models.digits_teacher` / `digits_student`, batch 64, 20 teacher and
30 student epochs, Adam at 3e-3 with a cosine decay to 0 (restarted for
FitNet's second stage), methods `student`, `kd`, `lp` by default. There LP
taps the embedding `gap` (64-d teacher, 16-d student), not
`DIGITS_FEATURE_LAYER` (`block2_relu`, the 8×8 conv maps): on those
`gamma · L_LP` starts ~40× the class loss and collapses the student's
features to chance accuracy. With `--methods fitnet`, FitNet's hints use
`DIGITS_FEATURE_LAYER` (a 1×1 regressor, 16 -> 64 channels); there the hint
stage (hint loss ~1000, summed over the 8×8×64 map) leaves a student whose
class stage learns slowly (49–79 % after 30 epochs in our runs, below
scratch), so it is not a default row: tuning FitNets' hints on digits is
out of this recipe's scope. The digits have no paper numbers; the paper's
MNIST Table III is printed beside them for orientation (compare the
ranking, not the values).
"""

import argparse
import dataclasses
import os
import sys
import time

import keras

import tfkd
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.data import DatasetNotFoundError
from tfkd.app.experiment import compile_classifier
from tfkd.app.experiment import Recorder
from tfkd.app.experiment import steps_per_epoch
from tfkd.app.experiment import train_or_load_teacher
from tfkd.app.reporting import ResultsWriter
from tfkd.app.reporting import markdown_table

#: Methods of each table (besides "teacher"), its data sets and students.
TABLES = {
    1: {"datasets": ("cifar10",), "students": (1, 2, 3, 4),
        "methods": ("fitnet", "lp")},
    3: {"datasets": ("mnist",), "students": ("mnist",),
        "methods": ("student", "kd", "fitnet", "lp")},
    5: {"datasets": ("cifar10", "cifar100"), "students": (4,),
        "methods": ("kd", "fitnet", "lp")},
}
METHODS = ("student", "kd", "fitnet", "lp")
#: `--quick` default: LP against its two references. `--methods ... fitnet`
#: also runs FitNet (see the module docstring for how it fares on digits).
QUICK_METHODS = ("student", "kd", "lp")

# The paper's hyperparameters (eq. 8, §V-A).
K, GAMMA, LAM, TAU = 5, 1.0, 2.0, 0.5
#: Stage-2 `alpha` of FitNet that turns `alpha·CE + (1-alpha)·τ²·KL` into
#: eq. 2 divided by (1 + lam / τ²).
FITNET_ALPHA = TAU**2 / (TAU**2 + LAM)

# Paper accuracies (%). Table I (CIFAR-10; teacher 90.21), Table V (Student
# 4), Table III (MNIST error -> 100 - error).
PAPER = {
    ("cifar10", "lp_teacher/teacher"): 90.21,
    ("cifar10", "lp_student_1/fitnet"): 89.03,
    ("cifar10", "lp_student_1/lp"): 89.56,
    ("cifar10", "lp_student_2/fitnet"): 91.01,
    ("cifar10", "lp_student_2/lp"): 91.33,
    ("cifar10", "lp_student_3/fitnet"): 91.14,
    ("cifar10", "lp_student_3/lp"): 91.57,
    ("cifar10", "lp_student_4/fitnet"): 91.55,
    ("cifar10", "lp_student_4/lp"): 91.91,
    ("cifar10", "lp_student_4/kd"): 91.04,
    ("cifar100", "lp_teacher/teacher"): 62.78,
    ("cifar100", "lp_student_4/lp"): 65.13,
    ("cifar100", "lp_student_4/fitnet"): 64.89,
    ("cifar100", "lp_student_4/kd"): 63.07,
    ("mnist", "lp_mnist_teacher/teacher"): 100.0 - 0.55,
    ("mnist", "lp_mnist_student/student"): 100.0 - 1.90,
    ("mnist", "lp_mnist_student/kd"): 100.0 - 0.65,
    ("mnist", "lp_mnist_student/fitnet"): 100.0 - 0.51,
    ("mnist", "lp_mnist_student/lp"): 100.0 - 0.48,
}


@dataclasses.dataclass(frozen=True)
class Pair:
    """A student and its teacher: builder names and tapped layers."""

    teacher: str
    student: str
    lp_taps: tuple  # (teacher_layer, student_layer) of the LP term.
    hint_taps: tuple  # (hint layer, guided layer) of FitNet.


def pair_for(dataset, student):
    """The `Pair` of `student` (1-4, "mnist" or "digits") on `dataset`."""
    if dataset == "digits":
        layer = tfkd.models.DIGITS_FEATURE_LAYER
        return Pair("digits_teacher", "digits_student", ("gap", "gap"),
                    (layer, layer))
    if student == "mnist":
        teacher, name = "lp_mnist_teacher", "lp_mnist_student"
    else:
        teacher, name = "lp_teacher", f"lp_student_{student}"
    t, s = tfkd.models.lp_tap_layers(teacher), tfkd.models.lp_tap_layers(
        name)
    return Pair(teacher, name, (t["lp"], s["lp"]), (t["hint"], s["hint"]))


def build_model(name, data):
    kwargs = dict(num_classes=data.num_classes,
                  input_shape=data.input_shape)
    if name.startswith("lp_student_"):
        return tfkd.models.lp_student(int(name.rsplit("_", 1)[1]), **kwargs)
    return getattr(tfkd.models, name)(**kwargs)


# --------------------------------------------------------------------------
# Settings: what differs between the paper's runs and the quick digits run.


@dataclasses.dataclass
class Setting:
    dataset: str
    epochs: int
    teacher_epochs: int
    batch_size: int
    quick: bool
    data_dir: str | None = None
    lr: float | None = None
    teacher_lr: float | None = None

    def load(self, seed):
        if self.quick:
            return tfkd.data.load_dataset(
                "digits", image_size=16, batch_size=self.batch_size,
                seed=seed)
        return tfkd.data.load_dataset(
            self.dataset, data_dir=self.data_dir, batch_size=self.batch_size,
            validation_split=None, augment=self.dataset != "mnist",
            seed=seed)

    def optimizer(self, teacher=False, total_steps=None, restart=None):
        """Quick: Adam with a cosine decay over `total_steps`, restarted
        after `restart` steps (FitNet's two stages get one cycle each)."""
        if self.quick:
            # Cosine decay to 0: with a constant 3e-3 the small batch-norm
            # student's accuracy swings by ~10 points between epochs, so
            # the last epoch's value would be a noisy draw.
            if restart:
                schedule = keras.optimizers.schedules.CosineDecayRestarts(
                    3e-3, restart, t_mul=(total_steps - restart) / restart,
                    m_mul=1.0)
            else:
                schedule = keras.optimizers.schedules.CosineDecay(
                    3e-3, total_steps)
            return keras.optimizers.Adam(schedule)
        if teacher:
            lr = self.teacher_lr or (5e-3 if self.dataset != "mnist"
                                     else 5e-4)
        else:
            lr = self.lr or 5e-4
        return keras.optimizers.RMSprop(lr, rho=0.9)


def build_distiller(method, teacher, student, pair):
    """The distiller of `method` (not compiled)."""
    if method in ("kd", "lp"):
        return tfkd.LocalityPreservingDistiller(
            teacher, student, teacher_layer_name=pair.lp_taps[0],
            student_layer_name=pair.lp_taps[1], k=K,
            gamma=GAMMA if method == "lp" else 0.0, lam=LAM,
            temperature=TAU)
    if method == "fitnet":
        return tfkd.FitNetDistiller(
            teacher, student, teacher_layer_name=pair.hint_taps[0],
            student_layer_name=pair.hint_taps[1], alpha=FITNET_ALPHA,
            temperature=TAU, stage=1)
    raise ValueError(f"Unknown method {method!r}; expected one of {METHODS}.")


def _teacher(setting, pair, data, seed, teacher_dir, guard, verbose, record):
    keras.utils.set_random_seed(seed)
    path = teacher_dir and os.path.join(
        teacher_dir, f"{setting.dataset}_{pair.teacher}_seed{seed}.keras")
    start = time.time()
    teacher, history = train_or_load_teacher(
        lambda: build_model(pair.teacher, data), data,
        epochs=setting.teacher_epochs,
        optimizer=setting.optimizer(
            teacher=True,
            total_steps=setting.teacher_epochs * steps_per_epoch(data.train)),
        path=path, callbacks=guard, verbose=verbose)
    record(history, label=pair.teacher, method=f"{pair.teacher}/teacher",
           seed=seed, model=teacher, teacher=teacher, test_data=data.test,
           seconds=time.time() - start,
           hyperparameters={"epochs": setting.teacher_epochs,
                            "batch_size": setting.batch_size})
    return teacher


def run_dataset(setting, plan, seeds, writer, teacher_dir=None, verbose=0,
                validation_is_test=None):
    """Trains, per seed, the teacher(s) and every run of `plan`.

    `plan` maps each student (1-4, "mnist" or "digits") to its methods.
    `validation_is_test`: whether `setting.load`'s validation split is the
    test split (default: unless `setting.quick`).
    """
    if validation_is_test is None:
        validation_is_test = not setting.quick
    record = Recorder(writer, setting.dataset,
                      validation_is_test=validation_is_test)
    for seed in seeds:
        data = setting.load(seed)  # Raises DatasetNotFoundError first.
        guard = [StopOnNonFiniteLoss()]
        teachers = {}
        for student_key, methods in plan.items():
            pair = pair_for(setting.dataset, student_key)
            if pair.teacher not in teachers:
                teachers[pair.teacher] = _teacher(
                    setting, pair, data, seed, teacher_dir, guard, verbose,
                    record)
            teacher = teachers[pair.teacher]
            # The same initial student weights for every method of a seed.
            keras.utils.set_random_seed(seed + 1000)
            initial = build_model(pair.student, data).get_weights()
            for method in methods:
                keras.utils.set_random_seed(seed)
                student = build_model(pair.student, data)
                student.set_weights(initial)
                hyperparameters = {
                    "epochs": setting.epochs,
                    "batch_size": setting.batch_size,
                }
                start = time.time()
                fit_kwargs = dict(validation_data=data.validation,
                                  verbose=verbose, callbacks=guard,
                                  shuffle=False)
                steps = steps_per_epoch(data.train)
                hint_epochs = max(1, round(setting.epochs / 4))
                kd_epochs = max(1, setting.epochs - hint_epochs)
                if method == "fitnet":
                    optimizer = setting.optimizer(
                        total_steps=(hint_epochs + kd_epochs) * steps,
                        restart=hint_epochs * steps)
                else:
                    optimizer = setting.optimizer(
                        total_steps=setting.epochs * steps)
                if method == "student":
                    compile_classifier(student, optimizer)
                    history = student.fit(data.train, epochs=setting.epochs,
                                          **fit_kwargs)
                else:
                    distiller = build_distiller(method, teacher, student,
                                                pair)
                    distiller.compile(optimizer=optimizer,
                                      metrics=["accuracy"])
                    if method == "fitnet":
                        # One optimizer whose cosine schedule restarts at
                        # stage 2 (the results pages were made so).
                        _, history = distiller.fit_two_stage(
                            data.train, stage1_epochs=hint_epochs,
                            stage2_epochs=kd_epochs,
                            stage2_optimizer="shared", **fit_kwargs)
                        hyperparameters.update(
                            hint_epochs=hint_epochs, alpha=FITNET_ALPHA,
                            temperature=TAU, taps=list(pair.hint_taps))
                    else:
                        history = distiller.fit(
                            data.train, epochs=setting.epochs, **fit_kwargs)
                        hyperparameters.update(
                            k=K, gamma=distiller.gamma, lam=LAM,
                            temperature=TAU, taps=list(pair.lp_taps))
                record(history, label=pair.student,
                       method=f"{pair.student}/{method}", seed=seed,
                       model=student, teacher=teacher, test_data=data.test,
                       seconds=time.time() - start,
                       hyperparameters=hyperparameters)


def _paper_table3_text():
    rows = [("teacher", 0.55), ("student (standard BP)", 1.90),
            ("kd", 0.65), ("fitnet", 0.51), ("lp", 0.48)]
    lines = ["Paper, Table III (MNIST, for orientation only; accuracy = "
             "100 - error):"]
    lines += [f"  {name:<22} {100 - err:.2f} %" for name, err in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="LP paper, Tables I, III and V (see module docstring).")
    parser.add_argument("--table", type=int, nargs="+", choices=(1, 3, 5),
                        default=None, help="tables to run (default: 1 5)")
    parser.add_argument("--quick", action="store_true",
                        help="digits pair on the embedded digits, minutes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS,
                        default=None,
                        help="run these methods instead of the tables'")
    parser.add_argument("--students", nargs="+", default=None,
                        help="restrict Table I to these students (1-4)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="student epochs (default 200; quick 30)")
    parser.add_argument("--teacher-epochs", type=int, default=None,
                        help="teacher epochs (default 400; quick 20)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size (paper 128; quick 64)")
    parser.add_argument("--lr", type=float, default=None,
                        help="student RMSProp learning rate (default 5e-4)")
    parser.add_argument("--teacher-lr", type=float, default=None,
                        help="teacher RMSProp learning rate (default 5e-3 "
                             "CIFAR, 5e-4 MNIST)")
    parser.add_argument("--data-dir", default=None,
                        help="tensorflow-datasets directory")
    parser.add_argument("--teacher-dir", default=None,
                        help="save trained teachers here and reuse them")
    parser.add_argument("--out", default=None,
                        help="run directory (default runs/lp_<dataset>)")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(argv)

    # jobs: [(dataset, {student: [methods]})], tables merged per data set.
    if args.quick:
        jobs = [("digits", {"digits": list(args.methods or QUICK_METHODS)})]
    else:
        merged = {}
        wanted = args.students and {int(s) for s in args.students}
        for table in args.table or [1, 5]:
            spec = TABLES[table]
            for dataset in spec["datasets"]:
                for s in spec["students"]:
                    if wanted and s != "mnist" and s not in wanted:
                        continue
                    methods = merged.setdefault(dataset, {}).setdefault(
                        s, {})
                    methods.update(dict.fromkeys(
                        args.methods or spec["methods"]))
        jobs = [(d, {s: list(m) for s, m in students.items()})
                for d, students in merged.items()]

    all_rows = []
    for dataset, plan in jobs:
        setting = Setting(
            dataset=dataset,
            epochs=args.epochs or (30 if args.quick else 200),
            teacher_epochs=args.teacher_epochs or (20 if args.quick
                                                   else 400),
            batch_size=args.batch_size or (64 if args.quick else 128),
            quick=args.quick, data_dir=args.data_dir, lr=args.lr,
            teacher_lr=args.teacher_lr)
        writer = ResultsWriter(args.out or os.path.join(
            "runs", f"lp_{dataset}"))
        print(f"LP recipe: {dataset}, methods per student {plan}, seeds "
              f"{args.seeds}, {setting.epochs} epochs "
              f"(teacher {setting.teacher_epochs}) -> {writer.run_dir}",
              flush=True)
        run_dataset(setting, plan, args.seeds, writer,
                    teacher_dir=args.teacher_dir, verbose=args.verbose)
        rows = writer.write_summary(paper=PAPER)
        all_rows.extend(rows)
        print("\n" + markdown_table(rows), flush=True)
        if args.quick:
            print(_paper_table3_text(), flush=True)
    return all_rows


if __name__ == "__main__":
    try:
        main()
    except DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
