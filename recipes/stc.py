"""Recipe: the STC paper's Tables 1, 2 and 5 (student-teacher collaboration).

Trains, for each student/teacher pair of a table and each seed: the teacher,
the student from scratch, and the student distilled with KD, AT, AT+KD (AT
through `tfkd.AttentionDistiller`; FT is not in tfkd, so its columns stay
paper-only), STC and STC+KD; Table 5 trains STC towards each target (teacher
output, soft target, ground truth). Every run goes to a
`tfkd.app.reporting.ResultsWriter`; the summary prints top-1 accuracy (mean ±
std over seeds) beside the paper's numbers (100 − the paper's error).

    # CIFAR-10 (Table 1) and the target ablation (Table 5), 3 seeds:
    python recipes/stc.py --table 1 5 --seeds 0 1 2 --data-dir ~/tfds
    # CIFAR-100 (Table 2):
    python recipes/stc.py --table 2 --seeds 0 1 2 --data-dir ~/tfds
    # The same code on the embedded digits with the digits pair, minutes:
    python recipes/stc.py --quick --seeds 0 1 2

Settings (paper §4.1): SGD with momentum 0.9, batch 128, weight decay
1e-4, learning rate 0.1 divided by 10 at 30 %, 60 % and 80 % of training
(epochs 150, 300, 400 of 500), the papers' pad-crop-flip augmentation;
`alpha` = 0.3 on CIFAR-10, 0.5 on CIFAR-100; `T` = 1 for `L_STC`. The
teacher and student are cut at the end of their second stage (16×16 maps);
where the widths differ (WRN-16-1 ← WRN-16-2) a 1×1-conv adapter bridges
them. Choices the paper does not state: KD uses `T = 4` with weight 0.5
(the KD row is `0.5·CE + 0.5·KD`, STC+KD adds `0.5·KD` to STC's loss, AT+KD
uses AT's class loss `0.5·CE + 0.5·KD`), and the teacher trains with the
students' schedule for `--teacher-epochs` (200 by default). Use
`--teacher-dir` to train each teacher once and reuse it.

`--quick` runs the same code on the digits (16×16) with
`tfkd.models.digits_teacher` / `digits_student`, cut after `block1_pool`
(8×8×32 vs 8×8×8, so through the adapter), Adam from 3e-3 with the same
step schedule, 20 teacher and 60 student epochs (with 30 the first decay,
at epoch 9, comes before the small student has converged).
"""

import argparse
import dataclasses
import os
import sys
import time

import keras

import tfkd
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.app.experiment import compile_classifier
from tfkd.app.experiment import Recorder
from tfkd.app.experiment import train_or_load_teacher
from tfkd.app.reporting import ResultsWriter
from tfkd.app.reporting import markdown_table

#: Distillation methods of each table (plus "teacher" and "student").
TABLE_METHODS = {
    1: ("student", "kd", "at", "at+kd", "stc", "stc+kd"),
    2: ("student", "kd", "at", "at+kd", "stc", "stc+kd"),
    5: ("student", "stc", "stc-soft", "stc-labels"),
}
TABLE_DATASET = {1: "cifar10", 2: "cifar100", 5: "cifar10"}
#: Paper's alpha (weight of L_STC) per data set; digits follows CIFAR-10.
ALPHA = {"cifar10": 0.3, "cifar100": 0.5, "digits": 0.3}
KD_TEMPERATURE = 4.0
KD_WEIGHT = 0.5
AT_BETA = 500.0


@dataclasses.dataclass(frozen=True)
class Pair:
    """One student/teacher pair: model builders, cut layers, AT taps."""

    student: str
    teacher: str
    student_cut: str
    teacher_cut: str
    student_at: tuple
    teacher_at: tuple

    @property
    def name(self):
        return f"{self.student}<-{self.teacher}"


def _stage_ends(model_name):
    """The output layers of the three stages of a zoo model (AT taps)."""
    if model_name.startswith("resnet"):
        n = (int(model_name[len("resnet"):]) - 2) // 6
        return tuple(f"stage{s}_block{n}_out" for s in (1, 2, 3))
    if model_name.startswith("wrn_"):
        n = (int(model_name.split("_")[1]) - 4) // 6
        return tuple(f"stage{s}_block{n}_out" for s in (1, 2, 3))
    if model_name == "vgg13":
        return ("stage1_out", "stage2_out", "stage3_out")
    raise ValueError(f"No stage table for model {model_name!r}.")


def _cifar_pair(student, teacher):
    s, t = _stage_ends(student), _stage_ends(teacher)
    # Cut after stage 2 (16x16 maps on CIFAR).
    return Pair(student, teacher, s[1], t[1], s, t)


#: Pairs of each table, as in the paper (the FT paper's pairs).
PAIRS = {
    1: [_cifar_pair("resnet20", "resnet56"),
        _cifar_pair("resnet20", "wrn_40_1"),
        _cifar_pair("vgg13", "wrn_46_4"),
        _cifar_pair("wrn_16_1", "wrn_16_2")],
    2: [_cifar_pair("resnet20", "resnet110"),
        _cifar_pair("resnet56", "resnet110")],
}
PAIRS[5] = PAIRS[1]
DIGITS_PAIR = Pair("digits_student", "digits_teacher",
                   "block1_pool", "block1_pool",
                   ("block1_relu", "block2_relu"),
                   ("block1_relu", "block2_relu"))

# Paper top-1 *error* (%): Tables 1, 2 (student, teacher, KD, AT, AT+KD,
# FT, FT+KD, STC, STC+KD) and Table 5 (teacher as re-trained there, then
# output tensor / soft target / ground truth). FT has no tfkd distiller.
_T12_COLUMNS = ("student", "teacher", "kd", "at", "at+kd", "ft", "ft+kd",
                "stc", "stc+kd")
PAPER_ERROR = {
    (1, "resnet20<-resnet56"): (7.78, 6.36, 7.19, 7.13, 6.89, 6.85, 7.04,
                                6.53, 6.30),
    (1, "resnet20<-wrn_40_1"): (7.78, 6.52, 7.09, 7.34, 7.00, 6.85, 6.95,
                                6.30, 6.22),
    (1, "vgg13<-wrn_46_4"): (5.99, 4.22, 5.71, 5.54, 5.30, 4.84, 4.65,
                             4.82, 4.63),
    (1, "wrn_16_1<-wrn_16_2"): (8.62, 5.99, 7.64, 8.10, 7.52, 7.64, 7.59,
                                7.15, 7.05),
    (2, "resnet20<-resnet110"): (31.24, 26.99, 33.14, 31.04, 34.78, 29.08,
                                 32.19, 28.75, 28.53),
    (2, "resnet56<-resnet110"): (28.04, 26.99, 27.96, 27.28, 28.01, 25.62,
                                 26.93, 25.33, 24.92),
}
_T5_COLUMNS = ("student", "teacher", "stc", "stc-soft", "stc-labels")
PAPER_ERROR_T5 = {
    "resnet20<-resnet56": (7.78, 6.39, 6.53, 6.59, 6.78),
    "resnet20<-wrn_40_1": (7.78, 6.84, 6.30, 6.55, 6.83),
    "vgg13<-wrn_46_4": (5.99, 4.44, 4.82, 4.80, 5.17),
    "wrn_16_1<-wrn_16_2": (8.62, 6.27, 7.15, 7.39, 8.01),
}


def paper_accuracy():
    """`{(dataset, "<pair>/<method>"): paper accuracy %}` for `summarize`.

    Tables 1 and 2 first; Table 5 adds its soft-target and ground-truth
    rows (its other columns repeat Table 1, up to a re-trained teacher).
    """
    paper = {}
    for (table, pair), errors in PAPER_ERROR.items():
        for method, error in zip(_T12_COLUMNS, errors):
            paper[(TABLE_DATASET[table], f"{pair}/{method}")] = 100.0 - error
    for pair, errors in PAPER_ERROR_T5.items():
        for method, error in zip(_T5_COLUMNS, errors):
            paper.setdefault(("cifar10", f"{pair}/{method}"), 100.0 - error)
    return paper


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

    def load(self, seed):
        if self.quick:
            return tfkd.data.load_dataset(
                "digits", image_size=16, batch_size=self.batch_size,
                seed=seed)
        return tfkd.data.load_dataset(
            self.dataset, data_dir=self.data_dir,
            batch_size=self.batch_size, validation_split=None, seed=seed)

    def optimizer(self, epochs, steps_per_epoch):
        # The paper's step schedule: /10 at 30 %, 60 %, 80 % of training
        # (epochs 150, 300, 400 of 500), from 0.1 (SGD) or 3e-3 (quick, Adam).
        boundaries = [int(f * epochs * steps_per_epoch)
                      for f in (0.3, 0.6, 0.8)]
        base = 3e-3 if self.quick else 0.1
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [base * 0.1**i for i in range(4)])
        if self.quick:
            return keras.optimizers.Adam(schedule)
        return keras.optimizers.SGD(schedule, momentum=0.9,
                                    weight_decay=1e-4)


def build_model(name, data):
    builder = getattr(tfkd.models, name)
    return builder(num_classes=data.num_classes, input_shape=data.input_shape)


def build_distiller(method, teacher, student, pair, alpha):
    """The distiller of `method` on `pair` (not compiled)."""
    if method == "kd":
        return tfkd.Distiller(teacher, student, alpha=1.0 - KD_WEIGHT,
                              temperature=KD_TEMPERATURE)
    if method in ("at", "at+kd"):
        return tfkd.AttentionDistiller(
            teacher, student, teacher_layer_name=list(pair.teacher_at),
            student_layer_name=list(pair.student_at), beta=AT_BETA,
            alpha=1.0 if method == "at" else 1.0 - KD_WEIGHT,
            temperature=KD_TEMPERATURE)
    if method.startswith("stc"):
        target = {"stc": "teacher", "stc+kd": "teacher", "stc-soft": "soft",
                  "stc-labels": "labels"}[method]
        return tfkd.CollaborationDistiller(
            teacher, student, teacher_layer_name=pair.teacher_cut,
            student_layer_name=pair.student_cut, alpha=alpha, temperature=1.0,
            kd_weight=KD_WEIGHT if method == "stc+kd" else 0.0,
            kd_temperature=KD_TEMPERATURE, target=target, adapter=True)
    raise ValueError(f"Unknown method {method!r}.")


def available_methods(methods):
    """Drops AT rows if this tfkd has no `AttentionDistiller`."""
    if hasattr(tfkd, "AttentionDistiller"):
        return list(methods)
    return [m for m in methods if not m.startswith("at")]


def run_pair(setting, pair, methods, seeds, writer, teacher_dir=None,
             verbose=0):
    """Trains the teacher and every method of `methods` on `pair`."""
    alpha = ALPHA[setting.dataset]
    record = Recorder(writer, setting.dataset,
                      validation_is_test=not setting.quick)
    for seed in seeds:
        data = setting.load(seed)
        steps = int(data.train.cardinality())
        guard = [StopOnNonFiniteLoss()]

        # Teacher: trained here, or reused from --teacher-dir.
        keras.utils.set_random_seed(seed)
        path = teacher_dir and os.path.join(
            teacher_dir, f"{setting.dataset}_{pair.teacher}_seed{seed}.keras")
        start = time.time()
        teacher, history = train_or_load_teacher(
            lambda: build_model(pair.teacher, data), data,
            epochs=setting.teacher_epochs,
            optimizer=setting.optimizer(setting.teacher_epochs, steps),
            path=path, callbacks=guard, verbose=verbose)
        record(history, label=pair.name, method=f"{pair.name}/teacher",
               seed=seed, model=teacher, teacher=teacher, test_data=data.test,
               seconds=time.time() - start,
               hyperparameters={"epochs": setting.teacher_epochs},
               teacher_name=pair.teacher, student_name=pair.teacher)

        # Students: the same initial weights for every method of a seed.
        keras.utils.set_random_seed(seed + 1000)
        initial = build_model(pair.student, data).get_weights()
        for method in methods:
            keras.utils.set_random_seed(seed)
            student = build_model(pair.student, data)
            student.set_weights(initial)
            optimizer = setting.optimizer(setting.epochs, steps)
            if method == "student":
                model = student
                compile_classifier(model, optimizer)
            else:
                model = build_distiller(method, teacher, student, pair, alpha)
                model.compile(optimizer=optimizer, metrics=["accuracy"])
            start = time.time()
            # shuffle=False: the training pipeline shuffles itself.
            history = model.fit(data.train, validation_data=data.validation,
                                epochs=setting.epochs, verbose=verbose,
                                callbacks=guard, shuffle=False)
            hyperparameters = {
                "epochs": setting.epochs, "batch_size": setting.batch_size,
                "alpha": alpha, "kd_weight": KD_WEIGHT,
                "kd_temperature": KD_TEMPERATURE,
                "teacher_cut": pair.teacher_cut,
                "student_cut": pair.student_cut,
            }
            record(history, label=pair.name, method=f"{pair.name}/{method}",
                   seed=seed, model=student, teacher=teacher,
                   test_data=data.test, seconds=time.time() - start,
                   hyperparameters=hyperparameters,
                   teacher_name=pair.teacher, student_name=pair.student)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="STC paper, Tables 1, 2 and 5 (see module docstring).")
    parser.add_argument("--table", type=int, nargs="+", choices=(1, 2, 5),
                        default=None,
                        help="tables to run (default: 1 5; with --quick the "
                             "methods of tables 1 and 5 on digits)")
    parser.add_argument("--quick", action="store_true",
                        help="digits pair on the embedded digits, minutes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="restrict to these methods (e.g. student kd "
                             "stc)")
    parser.add_argument("--pairs", nargs="+", default=None,
                        help="restrict to these pairs, e.g. "
                             "resnet20<-resnet56")
    parser.add_argument("--epochs", type=int, default=None,
                        help="student epochs (paper 500; quick 60)")
    parser.add_argument("--teacher-epochs", type=int, default=None,
                        help="teacher epochs (default 200; quick 20)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size (paper 128; quick 64)")
    parser.add_argument("--data-dir", default=None,
                        help="tensorflow-datasets directory")
    parser.add_argument("--teacher-dir", default=None,
                        help="save trained teachers here and reuse them")
    parser.add_argument("--out", default=None,
                        help="run directory (default runs/stc_<dataset>)")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(argv)

    tables = args.table or [1, 5]
    if args.quick:
        jobs = [("digits", [DIGITS_PAIR], tables)]
    else:
        jobs = []
        for dataset in dict.fromkeys(TABLE_DATASET[t] for t in tables):
            ts = [t for t in tables if TABLE_DATASET[t] == dataset]
            pairs = list({p.name: p for t in ts for p in PAIRS[t]}.values())
            jobs.append((dataset, pairs, ts))

    paper = paper_accuracy()
    all_rows = []
    for dataset, pairs, ts in jobs:
        methods = list(dict.fromkeys(
            m for t in ts for m in TABLE_METHODS[t]))
        if args.methods:
            methods = [m for m in methods if m in args.methods]
        methods = available_methods(methods)
        if args.pairs:
            pairs = [p for p in pairs if p.name in args.pairs]
        setting = Setting(
            dataset=dataset,
            epochs=args.epochs or (60 if args.quick else 500),
            teacher_epochs=args.teacher_epochs or (20 if args.quick else 200),
            batch_size=args.batch_size or (64 if args.quick else 128),
            quick=args.quick, data_dir=args.data_dir)
        writer = ResultsWriter(args.out or os.path.join(
            "runs", f"stc_{dataset}"))
        print(f"STC recipe: {dataset}, tables {ts}, pairs "
              f"{[p.name for p in pairs]}, methods {methods}, seeds "
              f"{args.seeds}, {setting.epochs} epochs -> {writer.run_dir}",
              flush=True)
        for pair in pairs:
            run_pair(setting, pair, methods, args.seeds, writer,
                     teacher_dir=args.teacher_dir, verbose=args.verbose)
        rows = writer.write_summary(paper=paper)
        all_rows.extend(rows)
        print("\n" + markdown_table(rows), flush=True)
    return all_rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
