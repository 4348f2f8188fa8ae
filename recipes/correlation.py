"""Recipe: the correlation paper's Tables 3 and 4 (student-centric learning).

Trains, for each data set and seed, from the same initial student weights:
the rows of Table 3 (Channel, Spatial, Both = correlation-based learning;
Activation = FitNets hints; Attention = attention transfer; each Single,
Single+KD, Two and Two+KD), plus KD, the teacher and the student from
scratch; and the rows of Table 4 (Channel and Activation knowledge, each
Original, Augmented and Augmented+Self-Guided, Single and Single+KD, plus
the student-augmented from scratch). Every run goes to a
`tfkd.app.reporting.ResultsWriter` (`runs.csv`, one JSON per run,
`summary.csv`, `summary.md`); the recipe prints test accuracy (mean ± std
over seeds, last epoch and best epoch) in the layout of the paper's tables
beside the paper's numbers, writes those tables to `tables.md` and draws
accuracy against parameters (`tfkd.app.plots.plot_accuracy_vs_params`).

    # Table 3 on CIFAR-10 and CIFAR-100, Table 4 on CIFAR-100, 3 seeds:
    python recipes/correlation.py --table 3 4 --seeds 0 1 2 --data-dir ~/tfds
    # Some rows only (shell-style patterns over the row keys):
    python recipes/correlation.py --table 3 --dataset cifar10 \\
        --rows "both/*" "channel/two+kd" kd --data-dir ~/tfds
    # The same code on the embedded digits with the digits pair, minutes:
    python recipes/correlation.py --quick --table 4 --seeds 0 1 2
    # The row keys of the chosen tables:
    python recipes/correlation.py --table 3 4 --list-rows

Row keys: `<approach>/<setting>` (Table 3 and Table 4's "Original"), e.g.
`channel/two+kd`; `<knowledge>-augmented/<setting>` and
`<knowledge>-self-guided/<setting>` (Table 4); `kd`, `student`,
`student-augmented`; the teachers (`teacher`, `teacher-augmented`) are
trained whenever a selected row needs them.

What the paper fixes (§3-§4): the VGG networks of Table 1
(`tfkd.models.vgg_teacher` / `vgg_student`, with `augmented` and
`self_taught` variants; parameter counts of Table 2), knowledge tapped at
the bold layer (`VGG_GUIDED_LAYER`, `block4_relu1`: 512 channels, 1024
when augmented, of which 512 guided under self-guided learning);
single-stage `L_Know + beta · L_Class` with `beta = 0.1` (eq. 6);
`L_Class = alpha · CE + (1 − alpha) · KD` with `alpha = 1`, or 0.3 for
"+KD" (eq. 5); two-stage training as FitNets (the student up to the guided
layer with `L_Know`, then the whole student with `L_Class`); "Augmented"
is teacher-augmented → student-augmented, "Augmented+Self-Guided" the
(plain) teacher → student-augmented whose guided layer has 512 guided and
512 self-taught channels.

What it does not state, chosen here: the paper gives NO optimizer, learning
rate, schedule, epochs, batch size, augmentation or KD temperature (§4.1
names only TensorFlow and a GTX-1080). Full mode follows the CIFAR settings
of the attention-transfer code the paper compares with: SGD with momentum
0.9 and weight decay 5e-4 (Keras' form, scaled by the learning rate),
batch 128, learning rate 0.1 multiplied by 0.2 at 30 %, 60 % and 80 % of
the epochs (60/120/160 of 200), 200 epochs for teachers and students,
pad-4 crop + horizontal flip (`tfkd.data.load_dataset`), trained on all
50,000 training images and validated on the test split (the papers'
protocol: "last" is the honest figure, "best" is the maximum over epochs
on the test split). KD: `T = 4`; the KD row is `0.3 · CE + 0.7 · KD` (the
"+KD" weight). Two-stage: `--stage1-epochs` (40) of stage 1, then the full
`--epochs` schedule of stage 2, each stage with a fresh optimizer
(`--two-stage-optimizer fresh`: Adam or momentum state from the knowledge
stage would otherwise carry into the class stage; `shared` uses one
optimizer for both, as `FeatureDistiller.fit_two_stage`). Attention uses
its own paper's objective `L_Class + 500 · L_AT` (`tfkd.AttentionDistiller`
defaults); Activation uses FitNets' 1×1-conv regressor
(`tfkd.FitNetDistiller`, linear). One teacher per data set and teacher
variant (trained with `--teacher-seed`; `--teacher-dir` saves and reuses
it); the seeds change the students' initial weights (shared by every row
of a seed with the same student network), the batch order and the
augmentation.

`--quick` runs the same code on the embedded digits (16×16; split and
shuffling fixed with seed 0, so there the seeds change the initial weights
and the order of the feature rows' cached batches) with
`tfkd.models.digits_teacher` / `digits_student` and their
`augmented` / `self_taught` variants (the guided layer, whose activation
`block2_relu` is tapped, doubled: 64 → 128 channels for the teacher, 16 →
32 for the student, 16 guided + 16 self-taught when self-taught). The
digits teacher is 4× wider than the student at the tap, so Channel, Both
and Activation go through a trainable 1×1-conv adapter / regressor owned
by the distiller (on VGG the widths match and none is built). Adam at
3e-3, batch 64, 20 teacher epochs, 40 student epochs (stage 2 of
two-stage too), 10 stage-1 epochs; no augmentation, so the teacher's
outputs are computed once (`tfkd.data.cache_teacher_outputs`); the test
accuracy of every epoch is logged (`tfkd.callbacks.EvaluateAccuracy`) for
the "best" column, while validation uses the separate validation split.
The paper has no digits numbers: the tables print its CIFAR-100 numbers
for orientation only.
"""

import argparse
import dataclasses
import datetime
import fnmatch
import os
import sys
import time

import keras

import tfkd
from tfkd.app import plots
from tfkd.callbacks import EvaluateAccuracy
from tfkd.callbacks import StopOnNonFiniteLoss
from tfkd.app.experiment import Recorder
from tfkd.app.experiment import compile_classifier
from tfkd.callbacks import merge_histories
from tfkd.app.experiment import steps_per_epoch
from tfkd.app.experiment import train_or_load_teacher
from tfkd.layers import find_guided_channels
from tfkd.app.reporting import ResultsWriter
from tfkd.app.reporting import markdown_table

APPROACHES = ("channel", "spatial", "both", "activation", "attention")
SETTINGS = ("single", "single+kd", "two", "two+kd")
TABLE4_KNOWLEDGE = ("channel", "activation")
VARIANTS = ("original", "augmented", "self-guided")
TABLE4_SETTINGS = ("single", "single+kd")
LABELS = {"channel": "Channel", "spatial": "Spatial", "both": "Both",
          "activation": "Activation", "attention": "Attention",
          "single": "Single", "single+kd": "Single+KD", "two": "Two",
          "two+kd": "Two+KD", "original": "Original",
          "augmented": "Augmented", "self-guided": "Augmented+Self-Guided"}
TABLE_DATASETS = {3: ("cifar10", "cifar100"), 4: ("cifar100",)}

KD_ALPHA = 0.3          # "+KD" rows and the KD row (paper §4.2).
BETA = 0.1              # Single-stage weight of L_Class (paper §4.2).
TEMPERATURE = 4.0       # Not stated in the paper.
AT_BETA = 500.0         # Attention transfer's own weight (its code).

# Paper's Table 3 (accuracy %): Single, Single+KD, Two, Two+KD.
PAPER_TABLE3 = {
    "cifar10": {
        "channel": (90.68, 90.27, 91.03, 91.62),
        "spatial": (91.27, 90.92, 90.77, 91.27),
        "both": (89.78, 89.26, 91.11, 91.67),
        "activation": (90.37, 90.06, 91.04, 91.32),
        "attention": (90.52, 90.58, 90.40, 90.97),
        "kd": 89.73, "teacher": 92.02, "student": 89.18,
    },
    "cifar100": {
        "channel": (67.10, 68.37, 66.99, 69.25),
        "spatial": (66.88, 68.36, 67.41, 68.73),
        "both": (67.11, 68.59, 67.70, 69.21),
        "activation": (66.58, 67.23, 67.48, 69.38),
        "attention": (66.99, 67.77, 66.46, 68.78),
        "kd": 67.36, "teacher": 68.68, "student": 64.66,
    },
}
# Paper's Table 4 (CIFAR-100 only): Single, Single+KD per variant.
PAPER_TABLE4 = {
    ("channel", "original"): (67.10, 68.37),
    ("channel", "augmented"): (67.67, 69.10),
    ("channel", "self-guided"): (68.21, 69.58),
    ("activation", "original"): (66.58, 67.23),
    ("activation", "augmented"): (68.04, 68.03),
    ("activation", "self-guided"): (67.89, 68.40),
    "student-augmented": 66.26,
}


def paper_accuracy():
    """`{(dataset, row key): paper accuracy %}` of Tables 3 and 4.

    Example:

    >>> paper_accuracy()[("cifar100", "channel-self-guided/single+kd")]
    69.58
    """
    paper = {}
    for dataset, table in PAPER_TABLE3.items():
        for approach, values in table.items():
            if isinstance(values, float):
                paper[(dataset, approach)] = values
                continue
            for setting, value in zip(SETTINGS, values):
                paper[(dataset, f"{approach}/{setting}")] = value
    for key, values in PAPER_TABLE4.items():
        if isinstance(values, float):
            paper[("cifar100", key)] = values
            continue
        knowledge, variant = key
        for setting, value in zip(TABLE4_SETTINGS, values):
            paper[("cifar100", row_key(knowledge, variant, setting))] = value
    return paper


# --------------------------------------------------------------------------
# Rows.


def row_key(approach, variant, setting):
    if variant == "original":
        return f"{approach}/{setting}"
    return f"{approach}-{variant}/{setting}"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the tables: what to train and with which networks."""

    key: str
    approach: str       # an APPROACHES entry, "kd" or "student"
    variant: str = "original"
    setting: str | None = None

    @property
    def teacher_variant(self):
        return "augmented" if self.variant == "augmented" else "original"

    @property
    def alpha(self):
        if self.approach == "kd":
            return KD_ALPHA
        return KD_ALPHA if (self.setting or "").endswith("+kd") else 1.0

    @property
    def two_stage(self):
        return (self.setting or "").startswith("two")

    @property
    def distilled(self):
        return self.approach != "student"


def table_rows(table):
    """The rows of Table 3 or 4, in the paper's order."""
    if table == 3:
        rows = [Row(f"{a}/{s}", a, "original", s)
                for a in APPROACHES for s in SETTINGS]
        return rows + [Row("kd", "kd"), Row("student", "student")]
    if table == 4:
        rows = [Row(row_key(k, v, s), k, v, s) for k in TABLE4_KNOWLEDGE
                for v in VARIANTS for s in TABLE4_SETTINGS]
        return rows + [Row("student", "student"),
                       Row("student-augmented", "student", "augmented")]
    raise ValueError(f"No table {table!r}: the paper's tables are 3 and 4.")


def select_rows(tables, patterns=None):
    """The rows of `tables` (deduplicated) whose keys match `patterns`."""
    rows = list({r.key: r for t in tables for r in table_rows(t)}.values())
    if not patterns:
        return rows
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(r.key, pattern) for r in rows):
            raise SystemExit(
                f"--rows: {pattern!r} matches no row of tables {tables}. "
                f"Rows: {' '.join(r.key for r in rows)}")
    return [r for r in rows
            if any(fnmatch.fnmatchcase(r.key, p) for p in patterns)]


# --------------------------------------------------------------------------
# Settings: what differs between the CIFAR runs and the quick digits run.


@dataclasses.dataclass
class Setting:
    dataset: str
    quick: bool
    epochs: int
    stage1_epochs: int
    teacher_epochs: int
    batch_size: int
    learning_rate: float
    two_stage_optimizer: str = "fresh"
    data_dir: str | None = None

    @property
    def layer(self):
        if self.quick:
            return tfkd.models.DIGITS_FEATURE_LAYER
        return tfkd.models.VGG_GUIDED_LAYER

    def load(self, seed):
        if self.quick:
            # The split stays fixed (seed 0): no seed's test images were
            # seen by the teacher.
            return tfkd.data.load_dataset(
                "digits", image_size=16, batch_size=self.batch_size, seed=0)
        return tfkd.data.load_dataset(
            self.dataset, data_dir=self.data_dir, batch_size=self.batch_size,
            validation_split=None, seed=seed)

    def optimizer(self, epochs, steps_per_epoch):
        if self.quick:
            return keras.optimizers.Adam(self.learning_rate)
        boundaries = [int(f * epochs * steps_per_epoch)
                      for f in (0.3, 0.6, 0.8)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [self.learning_rate * 0.2**i for i in range(4)])
        return keras.optimizers.SGD(schedule, momentum=0.9,
                                    weight_decay=5e-4)

    def describe_optimizer(self):
        if self.quick:
            return f"Adam({self.learning_rate:g})"
        return ("SGD(momentum=0.9, weight_decay=5e-4, "
                f"lr={self.learning_rate:g} x0.2 at 30/60/80 %)")

    def teacher(self, variant, data):
        augmented = variant == "augmented"
        builder = (tfkd.models.digits_teacher if self.quick
                   else tfkd.models.vgg_teacher)
        return builder(data.num_classes, data.input_shape,
                       augmented=augmented)

    def student(self, variant, data):
        builder = (tfkd.models.digits_student if self.quick
                   else tfkd.models.vgg_student)
        return builder(data.num_classes, data.input_shape,
                       augmented=variant != "original",
                       self_taught=variant == "self-guided")


def build_distiller(row, teacher, student, layer):
    """The (uncompiled) distiller of a distilled `row`."""
    if row.approach == "kd":
        return tfkd.Distiller(teacher, student, alpha=KD_ALPHA,
                              temperature=TEMPERATURE)
    # stage=None: `Runner._fit` drives the stages itself (one `fit` for a
    # single-stage row, `fit_two_stage` for a two-stage one), not the
    # `stage="both"` default of FitNet / correlation.
    common = dict(teacher_layer_name=layer, student_layer_name=layer,
                  alpha=row.alpha,
                  temperature=TEMPERATURE, stage=None)
    if row.approach == "activation":
        return tfkd.FitNetDistiller(teacher, student, beta=BETA, **common)
    if row.approach == "attention":
        return tfkd.AttentionDistiller(teacher, student, beta=AT_BETA,
                                       **common)
    return tfkd.CorrelationDistiller(teacher, student, mode=row.approach,
                                     beta=BETA, adapter=True, **common)


# --------------------------------------------------------------------------
# Training.


class Runner:
    """Trains the rows of one data set and records them."""

    def __init__(self, setting, writer, teacher_seed=0, teacher_dir=None,
                 verbose=0):
        self.setting = setting
        self.writer = writer
        self.teacher_seed = teacher_seed
        self.teacher_dir = teacher_dir
        self.verbose = verbose
        self.teachers = {}

    def _callbacks(self, data, model):
        callbacks = [StopOnNonFiniteLoss()]
        if data.test is not data.validation:
            # Digits: validation is its own split; log the test accuracy of
            # every epoch for the "best" column.
            callbacks.append(EvaluateAccuracy(data.test, model=model))
        return callbacks

    def _record(self, key, seed, history, model, data, seconds,
                hyperparameters, teacher=None):
        return Recorder(self.writer, self.setting.dataset,
                        validation_is_test=data.test is data.validation)(
            history, label=key, method=key, seed=seed, model=model,
            teacher=teacher or model, test_data=data.test, seconds=seconds,
            hyperparameters=hyperparameters,
            teacher_name=None if teacher is None else teacher.name)

    def teacher(self, variant):
        """The trained teacher of `variant` (trained or loaded once)."""
        if variant in self.teachers:
            return self.teachers[variant]
        setting, seed = self.setting, self.teacher_seed
        # Seed first: a tf.data shuffle's order depends on the global seed
        # when the pipeline is built.
        keras.utils.set_random_seed(seed)
        data = setting.load(seed)
        teacher = setting.teacher(variant, data)
        path = self.teacher_dir and os.path.join(
            self.teacher_dir,
            f"{setting.dataset}_{teacher.name}_seed{seed}.keras")
        start = time.time()
        teacher, history = train_or_load_teacher(
            lambda: setting.teacher(variant, data), data,
            epochs=setting.teacher_epochs,
            optimizer=setting.optimizer(setting.teacher_epochs,
                                        steps_per_epoch(data.train)),
            path=path, callbacks=self._callbacks(data, None),
            verbose=self.verbose)
        key = "teacher" if variant == "original" else "teacher-augmented"
        self._record(key, seed, history, teacher, data, time.time() - start,
                     {"epochs": setting.teacher_epochs,
                      "batch_size": setting.batch_size,
                      "optimizer": setting.describe_optimizer()})
        self.teachers[variant] = teacher
        return teacher

    def run_seed(self, rows, seed):
        setting = self.setting
        teachers = {row.teacher_variant for row in rows if row.distilled}
        for variant in ["original"] + sorted(teachers - {"original"}):
            self.teacher(variant)
        print(f"seed {seed}", flush=True)
        # The same initial weights for every row with the same student
        # network, whichever rows are selected.
        keras.utils.set_random_seed(seed)
        data = setting.load(seed)
        initial = {}
        for variant in VARIANTS:
            if any(row.variant == variant for row in rows):
                keras.utils.set_random_seed(seed)
                initial[variant] = setting.student(variant, data).get_weights()

        for row in rows:
            # Fresh pipelines per row, built after seeding: a row's batch
            # order (the pipelines reshuffle on every pass, from the global
            # seed at build time) does not depend on the rows before.
            keras.utils.set_random_seed(seed)
            data = setting.load(seed)
            steps = steps_per_epoch(data.train)
            keras.utils.set_random_seed(seed)
            student = setting.student(row.variant, data)
            student.set_weights(initial[row.variant])
            hyperparameters = {
                "epochs": setting.epochs, "batch_size": setting.batch_size,
                "optimizer": setting.describe_optimizer(),
            }
            start = time.time()
            callbacks = self._callbacks(data, student)
            teacher = None
            if not row.distilled:
                compile_classifier(student, setting.optimizer(setting.epochs,
                                                              steps))
                history = student.fit(
                    data.train, validation_data=data.validation,
                    epochs=setting.epochs, verbose=self.verbose,
                    callbacks=callbacks, shuffle=False).history
            else:
                teacher = self.teachers[row.teacher_variant]
                distiller = build_distiller(row, teacher, student,
                                            setting.layer)
                train, validation = data.train, data.validation
                if row.approach != "kd" and tfkd.data.is_deterministic(
                        data.train):
                    # No augmentation: the teacher's outputs, once.
                    train = tfkd.data.cache_teacher_outputs(
                        distiller, data.train, seed=seed)
                    validation = tfkd.data.cache_teacher_outputs(
                        distiller, data.validation, shuffle=False)
                history = self._fit(row, distiller, train, validation, steps,
                                    callbacks)
                hyperparameters.update(
                    alpha=row.alpha, temperature=TEMPERATURE,
                    distiller=type(distiller).__name__)
                if row.approach != "kd":
                    hyperparameters.update(
                        beta=distiller.beta, layer=setting.layer,
                        guided_channels=find_guided_channels(
                            student, setting.layer),
                        adapters=len(distiller.knowledge.adapters),
                        stage1_epochs=(setting.stage1_epochs
                                       if row.two_stage else 0),
                        two_stage_optimizer=(setting.two_stage_optimizer
                                             if row.two_stage else None))
            self._record(row.key, seed, history, student, data,
                         time.time() - start, hyperparameters,
                         teacher=teacher)

    def _fit(self, row, distiller, train, validation, steps, callbacks):
        setting = self.setting
        # shuffle=False: the training pipelines shuffle themselves.
        fit_kwargs = dict(validation_data=validation, verbose=self.verbose,
                          callbacks=callbacks, shuffle=False)
        if not row.two_stage:
            distiller.compile(optimizer=setting.optimizer(setting.epochs,
                                                          steps),
                              metrics=["accuracy"])
            return distiller.fit(train, epochs=setting.epochs,
                                 **fit_kwargs).history
        first = setting.stage1_epochs
        if setting.two_stage_optimizer == "shared":
            # One optimizer and schedule over both stages.
            optimizer, stage2 = setting.optimizer(first + setting.epochs,
                                                  steps), "shared"
        else:
            optimizer = setting.optimizer(first, steps)
            stage2 = setting.optimizer(setting.epochs, steps)
        distiller.compile(optimizer=optimizer, metrics=["accuracy"])
        return merge_histories(*distiller.fit_two_stage(
            train, stage1_epochs=first, stage2_epochs=setting.epochs,
            stage2_optimizer=stage2, **fit_kwargs))


# --------------------------------------------------------------------------
# Output (formatting only).


def _cell(row, which, paper):
    if row is None or row[f"{which}_mean"] is None:
        ours = "—"
    else:
        std = row[f"{which}_std"]
        ours = f"{row[f'{which}_mean']:.2f}"
        if std is not None:
            ours += f" ± {std:.2f}"
    return ours if paper is None else f"{ours} ({paper:.2f})"


def table3(rows, reference, which="last"):
    """Table 3's layout: our mean ± std (paper's number in brackets)."""
    cells = {row["method"]: row for row in rows}
    paper = paper_accuracy()
    lines = ["| Approach | " + " | ".join(LABELS[s] for s in SETTINGS) + " |",
             "| --- | " + " | ".join(["---:"] * len(SETTINGS)) + " |"]
    for approach in APPROACHES:
        keys = [f"{approach}/{s}" for s in SETTINGS]
        if any(k in cells for k in keys):
            lines.append(f"| {LABELS[approach]} | " + " | ".join(
                _cell(cells.get(k), which, paper.get((reference, k)))
                for k in keys) + " |")
    for key, label in (("kd", "KD"), ("teacher", "Teacher"),
                       ("student", "Student")):
        if key in cells:
            lines.append(f"| {label} (n={cells[key]['n']}) | " + _cell(
                cells[key], which, paper.get((reference, key)))
                + " | | | |")
    return "\n".join(lines) + "\n"


def table4(rows, reference, which="last"):
    """Table 4's layout: our mean ± std (paper's number in brackets)."""
    cells = {row["method"]: row for row in rows}
    paper = paper_accuracy()
    lines = ["| Knowledge | Setting | "
             + " | ".join(LABELS[s] for s in TABLE4_SETTINGS) + " |",
             "| --- | --- | ---: | ---: |"]
    for knowledge in TABLE4_KNOWLEDGE:
        for variant in VARIANTS:
            keys = [row_key(knowledge, variant, s) for s in TABLE4_SETTINGS]
            if any(k in cells for k in keys):
                lines.append(
                    f"| {LABELS[knowledge]} | {LABELS[variant]} | "
                    + " | ".join(_cell(cells.get(k), which,
                                       paper.get((reference, k)))
                                 for k in keys) + " |")
    for key, label in (("student-augmented", "Student-Augmented"),
                       ("student", "Student"), ("teacher", "Teacher"),
                       ("teacher-augmented", "Teacher-Augmented")):
        if key in cells:
            lines.append(f"| {label} (n={cells[key]['n']}) | | " + _cell(
                cells[key], which, paper.get((reference, key))) + " | |")
    return "\n".join(lines) + "\n"


def plot_points(rows, results):
    """Points for `tfkd.app.plots.plot_accuracy_vs_params`: teachers, scratch
    students, KD and the best setting of each approach/variant."""
    params = {r.method: r.student_params for r in results}
    best = {}
    for row in rows:
        group = row["method"].split("/")[0]
        if row["last_mean"] is None:
            continue
        if group not in best or row["last_mean"] > best[group]["last_mean"]:
            best[group] = row
    points = []
    for group, row in best.items():
        method = row["method"]
        role = ("teacher" if group.startswith("teacher") else
                "scratch" if group.startswith("student") else "distilled")
        label = group
        if "/" in method:
            label = f"{group} {LABELS[method.split('/')[1]]}"
        points.append({"label": label, "role": role,
                       "accuracy": row["last_mean"],
                       "accuracy_std": row["last_std"],
                       "params": params.get(method)})
    return points


def report(writer, dataset, tables, quick):
    """Writes the summary, `tables.md` and the plot; returns the rows."""
    paper = paper_accuracy()
    rows = writer.write_summary(paper=paper)
    reference = "cifar100" if quick else dataset
    note = (f"Paper numbers in brackets: {reference.upper()}"
            + (" (the paper has no digits numbers)." if quick else "."))
    parts = []
    for table in tables:
        layout = table3 if table == 3 else table4
        if table == 4 and reference != "cifar100":
            note_t = "Table 4 is CIFAR-100 only: no paper numbers here."
        else:
            note_t = note
        for which in ("last", "best"):
            parts.append(f"Table {table} on {dataset}, test accuracy % "
                         f"({which} epoch), mean ± std over seeds. {note_t}"
                         f"\n\n{layout(rows, reference, which)}")
    text = "\n".join(parts) + "\nAll runs:\n\n" + markdown_table(rows)
    tfkd.io.write_text(os.path.join(writer.run_dir, "tables.md"), text)
    print("\n" + text, flush=True)
    points = [p for p in plot_points(rows, writer.results())
              if p["params"] is not None]
    if points:
        path = os.path.join(writer.run_dir, "accuracy_vs_params.png")
        plots.plot_accuracy_vs_params(
            points, path,
            title=f"Correlation paper, Table "
                  f"{', '.join(map(str, tables))}, {dataset}")
        print(f"Plot: {path}", flush=True)
    return rows


# --------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Correlation paper, Tables 3 and 4 (see the module "
                    "docstring).")
    parser.add_argument("--table", type=int, nargs="+", choices=(3, 4),
                        default=[3, 4])
    parser.add_argument("--quick", action="store_true",
                        help="digits pair on the embedded digits, minutes")
    parser.add_argument("--dataset", nargs="+", default=None,
                        choices=("cifar10", "cifar100"),
                        help="default: CIFAR-10 and CIFAR-100 for Table 3, "
                             "CIFAR-100 for Table 4 (ignored with --quick)")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="row keys or shell patterns, e.g. 'channel/*' "
                             "kd (see --list-rows)")
    parser.add_argument("--list-rows", action="store_true",
                        help="print the row keys of --table and exit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="student epochs, also stage 2 of two-stage "
                             "(default 200; quick 40)")
    parser.add_argument("--stage1-epochs", type=int, default=None,
                        help="stage-1 epochs of two-stage (default 40; "
                             "quick 10)")
    parser.add_argument("--teacher-epochs", type=int, default=None,
                        help="teacher epochs (default 200; quick 20)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="batch size (default 128; quick 64)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="initial learning rate (default SGD 0.1; "
                             "quick Adam 3e-3)")
    parser.add_argument("--two-stage-optimizer", default="fresh",
                        choices=("fresh", "shared"),
                        help="a new optimizer for stage 2 (default), or "
                             "one for both stages")
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--teacher-dir", default=None,
                        help="save trained teachers here and reuse them")
    parser.add_argument("--data-dir", default=None,
                        help="tensorflow-datasets directory")
    parser.add_argument("--out", default=None,
                        help="run directory (default runs/correlation_"
                             "<dataset>_<UTC time>); with several data sets "
                             "one sub-directory each")
    parser.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2))
    args = parser.parse_args(argv)
    for name in ("epochs", "stage1_epochs", "teacher_epochs", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1. "
                         f"Received: {value}.")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tables = sorted(set(args.table))
    if args.list_rows:
        print("\n".join(r.key for r in select_rows(tables)))
        return []
    if args.quick:
        jobs = [("digits", tables)]
    else:
        datasets = args.dataset or list(dict.fromkeys(
            d for t in tables for d in TABLE_DATASETS[t]))
        jobs = [(d, [t for t in tables
                     if args.dataset or d in TABLE_DATASETS[t]])
                for d in datasets]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y%m%d-%H%M%S")
    all_rows = []
    for dataset, ts in jobs:
        rows = select_rows(ts, args.rows)
        setting = Setting(
            dataset=dataset, quick=args.quick,
            epochs=args.epochs or (40 if args.quick else 200),
            stage1_epochs=args.stage1_epochs or (10 if args.quick else 40),
            teacher_epochs=args.teacher_epochs or (20 if args.quick else 200),
            batch_size=args.batch_size or (64 if args.quick else 128),
            learning_rate=args.learning_rate or (3e-3 if args.quick else 0.1),
            two_stage_optimizer=args.two_stage_optimizer,
            data_dir=args.data_dir)
        if args.out and len(jobs) > 1:
            out = os.path.join(args.out, dataset)
        else:
            out = args.out or os.path.join(
                "runs", f"correlation_{dataset}_{stamp}")
        writer = ResultsWriter(out)
        print(f"Correlation recipe: {dataset}, tables {ts}, "
              f"{len(rows)} rows, seeds {args.seeds}, {setting.epochs} "
              f"epochs ({setting.stage1_epochs} + {setting.epochs} "
              f"two-stage), {setting.describe_optimizer()} -> "
              f"{writer.run_dir}", flush=True)
        runner = Runner(setting, writer, teacher_seed=args.teacher_seed,
                        teacher_dir=args.teacher_dir, verbose=args.verbose)
        for seed in args.seeds:
            runner.run_seed(rows, seed)
        all_rows.extend(report(writer, dataset, ts, args.quick))
    return all_rows


if __name__ == "__main__":
    main()
