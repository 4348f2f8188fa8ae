"""Recipe: the KTAN paper's Table I (knowledge transfer on CIFAR).

Trains, for each seed: the teacher, the student from scratch, and the
student distilled with KD, FitNet, DLN (KTAN without the adversary), KTAN
and KD+KTAN. Every run goes to a `tfkd.app.reporting.ResultsWriter`; the
summary prints test accuracy (mean ± std over seeds) beside the paper's
Table I.

    # The same code on the embedded digits, a few minutes:
    python recipes/ktan.py --quick --seeds 0 1 2
    # CIFAR-10 / CIFAR-100 (tensorflow-datasets under --data-dir):
    python recipes/ktan.py --dataset cifar10 --seeds 0 1 2 --data-dir ~/tfds
    python recipes/ktan.py --dataset cifar100 --seeds 0 1 2 --data-dir ~/tfds

KTAN (Algorithms 1-2, via `tfkd.AdversarialDistiller`): the teacher's last
conv map goes through the teacher-to-student regressor, pre-trained first
with a temporary linear head on the frozen teacher (`pretrain_regressor`,
once per seed and shared by DLN, KTAN and KD+KTAN), then frozen; the
student first trains `pretrain_steps` steps on `CE + beta·L_MSE`, then
alternates discriminator and student steps. Paper values: `alpha = 0.6`,
`beta = 0.5`; DLN is `alpha = 0`. KD uses `T = 4` and weight 0.9 on the
teacher's soft targets (`alpha = 0.1` on the labels), as the paper states.

Choices the paper leaves open, made here: the phase-1 length `k` is 10 % of
the student's training steps; KD+KTAN adds `0.9 · KD` (the KD row's
weight) to KTAN's loss; FitNet transfers the same last conv maps
(`tfkd.FitNetDistiller`, ReLU regressor) in two separate trainings, the
hint stage for 10 % of the epochs and then the KD row's loss. The paper's
networks (a ResNet-1001 teacher, a shallow Inception student) are not in
the tfkd zoo: full mode uses ResNet-110 → ResNet-20 and taps both
`stage3` outputs (8×8×64, a 1×1 regressor). Full mode: SGD with momentum
0.9 and weight decay 1e-4, batch 32 (the paper's), learning rate 0.1 divided by 10
at 50 % and 75 % of training, pad-crop-flip augmentation, 200 epochs
(teacher and students); the discriminator uses SGD at 1e-2 with weight
decay 1e-4 (the paper's adversarial settings).

The regressor pre-training (Algorithm 1) runs a quarter of the student's
epochs with Adam at 3e-3.

`--quick` runs the same code on the digits (16×16) with
`tfkd.models.digits_teacher` / `digits_student`, tapping `block2_relu`
(8×8×64 → 8×8×16), Adam at 3e-3 with cosine decay to 0 (discriminator:
SGD at 1e-2, weight decay 1e-4, as in full mode), 15 teacher and 20
student epochs, batch 64.
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

METHODS = ("student", "kd", "fitnet", "dln", "ktan", "kd+ktan")
#: KTAN Table I, accuracy % (the paper's results, FitNet included; see
#: docs/methods/ktan.md).
PAPER = {
    "cifar10": {"student": 93.6, "kd": 94.7, "fitnet": 94.4, "dln": 94.4,
                "ktan": 94.7, "kd+ktan": 95.0, "teacher": 95.1},
    "cifar100": {"student": 73.1, "kd": 76.0, "fitnet": 75.2, "dln": 75.3,
                 "ktan": 77.1, "kd+ktan": 77.6, "teacher": 78.0},
}
ALPHA, BETA = 0.6, 0.5          # KTAN paper values.
KD_TEMPERATURE, KD_WEIGHT = 4.0, 0.9
PHASE1_FRACTION = 0.1           # `k`, as a fraction of the student steps.
FITNET_STAGE1_FRACTION = 0.1


@dataclasses.dataclass
class Setting:
    dataset: str
    epochs: int
    teacher_epochs: int
    batch_size: int
    quick: bool
    data_dir: str | None = None

    @property
    def teacher_name(self):
        return "digits_teacher" if self.quick else "resnet110"

    @property
    def student_name(self):
        return "digits_student" if self.quick else "resnet20"

    @property
    def taps(self):
        """(teacher_layer, student_layer): the last conv maps."""
        if self.quick:
            return (tfkd.models.DIGITS_FEATURE_LAYER,
                    tfkd.models.DIGITS_FEATURE_LAYER)
        return "stage3_block18_out", "stage3_block3_out"

    def load(self, seed):
        if self.quick:
            return tfkd.data.load_dataset(
                "digits", image_size=16, batch_size=self.batch_size,
                seed=seed)
        return tfkd.data.load_dataset(
            self.dataset, data_dir=self.data_dir,
            batch_size=self.batch_size, validation_split=None, seed=seed)

    def optimizer(self, epochs, steps_per_epoch):
        if self.quick:
            # Decayed to 0 so that the last epoch's accuracy is stable.
            return keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(
                    3e-3, epochs * steps_per_epoch))
        boundaries = [int(f * epochs * steps_per_epoch) for f in (0.5, 0.75)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [0.1, 0.01, 0.001])
        return keras.optimizers.SGD(schedule, momentum=0.9,
                                    weight_decay=1e-4)

    def discriminator_optimizer(self):
        # The paper's adversarial settings, also on the digits (Adam at 1e-3
        # lets the discriminator win outright there).
        return keras.optimizers.SGD(1e-2, weight_decay=1e-4)

    def regressor_epochs(self):
        """Epochs of Algorithm 1 (the regressor's pre-training)."""
        return max(1, self.epochs // 4)

    def regressor_optimizer(self):
        return keras.optimizers.Adam(3e-3)


def build_model(name, data):
    builder = getattr(tfkd.models, name)
    return builder(num_classes=data.num_classes, input_shape=data.input_shape)


def build_distiller(method, teacher, student, setting, pretrain_steps,
                    stage=None):
    """The distiller of `method` (not compiled); `stage` for FitNet."""
    teacher_layer, student_layer = setting.taps
    if method == "kd":
        return tfkd.Distiller(teacher, student, alpha=1.0 - KD_WEIGHT,
                              temperature=KD_TEMPERATURE)
    if method == "fitnet":
        return tfkd.FitNetDistiller(
            teacher, student, teacher_layer_name=teacher_layer,
            student_layer_name=student_layer, alpha=1.0 - KD_WEIGHT,
            temperature=KD_TEMPERATURE, regressor_activation="relu",
            stage=stage)
    if method in ("dln", "ktan", "kd+ktan"):
        return tfkd.AdversarialDistiller(
            teacher, student, teacher_layer_name=teacher_layer,
            student_layer_name=student_layer,
            alpha=0.0 if method == "dln" else ALPHA, beta=BETA,
            pretrain_steps=pretrain_steps,
            kd_weight=KD_WEIGHT if method == "kd+ktan" else 0.0,
            temperature=KD_TEMPERATURE)
    raise ValueError(f"Unknown method {method!r}.")


def available_methods(methods):
    """Drops the FitNet row if this tfkd has no `FitNetDistiller`."""
    if hasattr(tfkd, "FitNetDistiller"):
        return list(methods)
    print("note: tfkd.FitNetDistiller not found; skipping the FitNet row.")
    return [m for m in methods if m != "fitnet"]


def run_seed(setting, methods, seed, writer, teacher_dir=None, verbose=0):
    data = setting.load(seed)
    steps = int(data.train.cardinality())
    guard = [StopOnNonFiniteLoss()]

    keras.utils.set_random_seed(seed)
    path = teacher_dir and os.path.join(
        teacher_dir, f"{setting.dataset}_{setting.teacher_name}_seed{seed}"
                     ".keras")
    start = time.time()
    teacher, history = train_or_load_teacher(
        lambda: build_model(setting.teacher_name, data), data,
        epochs=setting.teacher_epochs,
        optimizer=setting.optimizer(setting.teacher_epochs, steps),
        path=path, callbacks=guard, verbose=verbose)
    record = Recorder(writer, setting.dataset,
                      validation_is_test=not setting.quick)
    record(history, label=setting.student_name, method="teacher", seed=seed,
           model=teacher, teacher=teacher, test_data=data.test,
           seconds=time.time() - start,
           hyperparameters={"epochs": setting.teacher_epochs},
           teacher_name=setting.teacher_name)

    # Same initial student weights for every method of a seed.
    keras.utils.set_random_seed(seed + 1000)
    initial = build_model(setting.student_name, data).get_weights()
    pretrain_steps = int(PHASE1_FRACTION * setting.epochs * steps)
    regressor_weights = None
    for method in methods:
        keras.utils.set_random_seed(seed)
        student = build_model(setting.student_name, data)
        student.set_weights(initial)
        optimizer = setting.optimizer(setting.epochs, steps)
        hyperparameters = {"epochs": setting.epochs,
                           "batch_size": setting.batch_size}
        start = time.time()
        if method == "student":
            compile_classifier(student, optimizer)
            history = student.fit(data.train, validation_data=data.validation,
                                  epochs=setting.epochs, verbose=verbose,
                                  callbacks=guard, shuffle=False)
        else:
            distiller = None if method == "fitnet" else build_distiller(
                method, teacher, student, setting, pretrain_steps)
            fit_kwargs = dict(validation_data=data.validation,
                              verbose=verbose, callbacks=guard, shuffle=False)
            if isinstance(distiller, tfkd.AdversarialDistiller):
                # Algorithm 1 once per seed; DLN/KTAN/KD+KTAN share R.
                regressor = distiller.term("mse").regressor
                if regressor_weights is None:
                    distiller.pretrain_regressor(
                        data.train, epochs=setting.regressor_epochs(),
                        optimizer=setting.regressor_optimizer())
                    regressor_weights = regressor.get_weights()
                regressor.set_weights(regressor_weights)
                distiller.compile(
                    optimizer=optimizer,
                    discriminator_optimizer=(
                        setting.discriminator_optimizer()),
                    metrics=["accuracy"])
                history = distiller.fit(data.train, epochs=setting.epochs,
                                        **fit_kwargs)
                hyperparameters.update(
                    alpha=distiller.alpha, beta=distiller.beta,
                    kd_weight=distiller.kd_weight,
                    pretrain_steps=pretrain_steps,
                    regressor_kernel=list(regressor.kernel_size))
            elif method == "fitnet":
                # FitNets' two stages, each with its own optimizer (Adam's
                # moments from the hint loss, ~1e3, would throttle stage 2).
                stage1 = max(1, int(FITNET_STAGE1_FRACTION * setting.epochs))
                stage2 = setting.epochs - stage1
                distiller = build_distiller(method, teacher, student,
                                            setting, pretrain_steps, stage=1)
                distiller.compile(optimizer=setting.optimizer(stage1, steps),
                                  metrics=["accuracy"])
                _, history = distiller.fit_two_stage(
                    data.train, stage1_epochs=stage1, stage2_epochs=stage2,
                    stage2_optimizer=setting.optimizer(stage2, steps),
                    **fit_kwargs)
                hyperparameters.update(stage1_epochs=stage1,
                                       alpha=1.0 - KD_WEIGHT)
            else:
                distiller.compile(optimizer=optimizer, metrics=["accuracy"])
                history = distiller.fit(data.train, epochs=setting.epochs,
                                        **fit_kwargs)
                hyperparameters.update(alpha=1.0 - KD_WEIGHT,
                                       temperature=KD_TEMPERATURE)
        record(history, label=setting.student_name, method=method, seed=seed,
               model=student, teacher=teacher, test_data=data.test,
               seconds=time.time() - start, hyperparameters=hyperparameters,
               teacher_name=setting.teacher_name,
               student_name=setting.student_name)


def side_by_side(rows):
    """Markdown: our mean ± std beside both of the paper's columns."""
    lines = ["| method | ours: " + rows[0]["dataset"] + " (%) | "
             "paper CIFAR-10 (%) | paper CIFAR-100 (%) |",
             "| --- | ---: | ---: | ---: |"]
    for row in rows:
        mean, std = row["last_mean"], row["last_std"]
        ours = "n/a" if mean is None else (
            f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}"))
        lines.append(
            f"| {row['method']} | {ours} | "
            f"{PAPER['cifar10'].get(row['method'], '—')} | "
            f"{PAPER['cifar100'].get(row['method'], '—')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="KTAN paper, Table I (see module docstring).")
    parser.add_argument("--quick", action="store_true",
                        help="digits pair on the embedded digits, minutes")
    parser.add_argument("--dataset", choices=("cifar10", "cifar100"),
                        default="cifar10")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=None,
                        choices=METHODS, help="restrict to these methods")
    parser.add_argument("--epochs", type=int, default=None,
                        help="student epochs (default 200; quick 20)")
    parser.add_argument("--teacher-epochs", type=int, default=None,
                        help="teacher epochs (default 200; quick 15)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size (paper 32; quick 64)")
    parser.add_argument("--data-dir", default=None,
                        help="tensorflow-datasets directory")
    parser.add_argument("--teacher-dir", default=None,
                        help="save trained teachers here and reuse them")
    parser.add_argument("--out", default=None,
                        help="run directory (default runs/ktan_<dataset>)")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(argv)

    dataset = "digits" if args.quick else args.dataset
    setting = Setting(
        dataset=dataset,
        epochs=args.epochs or (20 if args.quick else 200),
        teacher_epochs=args.teacher_epochs or (15 if args.quick else 200),
        batch_size=args.batch_size or (64 if args.quick else 32),
        quick=args.quick, data_dir=args.data_dir)
    methods = available_methods(
        [m for m in METHODS if not args.methods or m in args.methods])
    writer = ResultsWriter(args.out or os.path.join("runs",
                                                    f"ktan_{dataset}"))
    print(f"KTAN recipe: {dataset}, {setting.teacher_name} -> "
          f"{setting.student_name}, methods {methods}, seeds {args.seeds}, "
          f"{setting.epochs} epochs -> {writer.run_dir}", flush=True)
    for seed in args.seeds:
        run_seed(setting, methods, seed, writer,
                 teacher_dir=args.teacher_dir, verbose=args.verbose)
    paper = {(d, m): v for d, values in PAPER.items()
             for m, v in values.items()}
    rows = writer.write_summary(paper=paper)
    print("\n" + markdown_table(rows), flush=True)
    print(side_by_side(rows), flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
