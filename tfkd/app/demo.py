"""The demo: where distillation pays, on the embedded digits.

Trains a teacher on every training label of scikit-learn's bundled digits
(real, offline data), then the same small student twice from the same
initial weights: once alone on the few labelled images it has
(`--labels-per-class`, default 6 a class), once distilled from the teacher
on those plus every other training image, unlabelled (label `-1`: the
knowledge terms need no labels). It prints one held-out test accuracy per
model and the parameter counts, saves the distilled student as a `.keras`
file (only if training finished cleanly) and exports it to TFLite with a
size/latency report. `--labels-per-class all` runs the full-label
comparison instead (every student sees every label).

Each run writes into a new folder (`tfkd_runs/demo-N`, or `--out`; a
non-empty `--out` is refused unless `--overwrite`). The `tfkd demo`
command (`tfkd.cli.demo`) runs `run_demo`.
"""

import os
import statistics
import time

#: The demo's default method and label budget: with 6 labels a class plus
#: the unlabelled rest, this method is the one that gains most over the
#: student alone on the digits (`recipes/transfer.py`, 3 seeds, see
#: docs/results_transfer_digits.md).
DEFAULT_METHOD = "lp"
DEFAULT_LABELS_PER_CLASS = 6


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}."
        )


def run_demo(method=DEFAULT_METHOD,
             labels_per_class=DEFAULT_LABELS_PER_CLASS, epochs=None,
             teacher_epochs=None, seeds=(0,), out=None, overwrite=False,
             batch_size=64, export=True, verbose=1, data="digits"):
    """Runs the demo and returns its results as a dict.

    Args:
        method: A method name from `tfkd.distillers.registry.method_names()`.
        labels_per_class: Training labels the students keep per class (the
            other training images are unlabelled transfer data for the
            distilled student; the student alone trains on its labelled
            images only, for as many steps), or `None` for every label.
            The teacher always trains on every label.
        epochs: Training epochs of each student (`None`: the data set's
            default, 30 on digits).
        teacher_epochs: Training epochs of the teacher (`None`: 20 on
            digits).
        seeds: Seeds to run; each trains its own teacher and students.
        out: Output folder (default: a new `tfkd_runs/demo-N`); a
            non-empty one is refused unless `overwrite`.
        overwrite: Replace the contents of a non-empty `out` (one a tfkd
            run made).
        batch_size: Batch size.
        export: Export the last distilled student to TFLite and report.
        verbose: Keras progress output (0, 1 = bars, 2 = one line/epoch).
        data: `"digits"` (embedded) or `"fashion_mnist"` (its IDX files,
            `tfkd.data.load_fashion_mnist`; loaded as
            `tfkd.app.experiment.DATA_SETTINGS` says). `epochs` or
            `teacher_epochs` `None`: the data set's defaults there.

    Returns:
        A dict with one entry per seed (`runs`), the mean/std `summary`
        and the run folder `out`.
    """
    import keras

    import tfkd
    from tfkd import io as tfkd_io
    from tfkd.app import runs as runs_lib
    from tfkd.callbacks import StopOnNonFiniteLoss
    from tfkd.distillers import registry
    from tfkd.app.experiment import compile_classifier
    from tfkd.app.experiment import data_setting
    from tfkd.app.experiment import labelled_repeated
    from tfkd.app.experiment import load_data
    from tfkd.app.experiment import test_accuracy

    data_name = data
    setting = data_setting(data_name)
    epochs = setting["epochs"] if epochs is None else epochs
    teacher_epochs = (setting["teacher_epochs"] if teacher_epochs is None
                      else teacher_epochs)

    _positive_int(epochs, "epochs")
    _positive_int(teacher_epochs, "teacher_epochs")
    _positive_int(batch_size, "batch_size")
    if labels_per_class is not None:
        _positive_int(labels_per_class, "labels_per_class")
    if not seeds:
        raise ValueError("`seeds` must name at least one seed. Received: "
                         f"seeds={seeds!r}.")
    registry.get(method)  # Validates the name before any training.
    out = runs_lib.prepare_run_dir(out, kind="demo", overwrite=overwrite)
    where = runs_lib.display_path(out)
    print(f"tfkd demo: writing to {where}")
    dataset = (setting["title"] if labels_per_class is None
               else f"{setting['title']}, {labels_per_class} labels/class")
    runs = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        full = load_data(data_name, batch_size=batch_size, seed=seed)
        data = full if labels_per_class is None else load_data(
            data_name, batch_size=batch_size, seed=seed,
            labels_per_class=labels_per_class)
        guard = [StopOnNonFiniteLoss()]
        # Every fit below reads a `tf.data` pipeline that shuffles itself:
        # `shuffle=False` keeps Keras from warning that it ignores its
        # default `shuffle=True`.
        start = time.time()
        n_train = _num_examples(full.train)
        steps = int(full.train.cardinality())

        print(f"\n[seed {seed}] 1/3 teacher: all {n_train:,} training "
              f"labels, {teacher_epochs} epochs")
        teacher = tfkd.models.digits_teacher(full.num_classes,
                                             full.input_shape)

        def adam(epochs_):
            # Cosine decay to 0: with a constant rate the tiny student's
            # accuracy swings by several points between epochs, which would
            # make the last-epoch comparison a lottery.
            return keras.optimizers.Adam(
                keras.optimizers.schedules.CosineDecay(3e-3, steps * epochs_))

        compile_classifier(teacher, adam(teacher_epochs))
        teacher_history = teacher.fit(
            full.train, validation_data=full.validation,
            epochs=teacher_epochs, verbose=verbose, callbacks=guard, shuffle=False)

        student_init = tfkd.models.digits_student(full.num_classes,
                                                  full.input_shape)
        initial_weights = student_init.get_weights()

        scratch = keras.models.clone_model(student_init)
        scratch.set_weights(initial_weights)
        compile_classifier(scratch, adam(epochs))
        if labels_per_class is None:
            print(f"\n[seed {seed}] 2/3 student alone: all {n_train:,} "
                  f"training labels, {epochs} epochs")
            scratch_history = scratch.fit(
                full.train, validation_data=full.validation, epochs=epochs,
                verbose=verbose, callbacks=guard, shuffle=False)
        else:
            labelled = labels_per_class * full.num_classes
            print(f"\n[seed {seed}] 2/3 student alone: its {labelled} "
                  f"labelled images only, {epochs} epochs of {steps} steps "
                  "(as many as the distilled student's)")
            scratch_history = scratch.fit(
                labelled_repeated(
                    data.train, batch_size,
                    cache_seed=None if data_name == "digits" else seed),
                steps_per_epoch=steps, validation_data=data.validation,
                epochs=epochs, verbose=verbose, callbacks=guard, shuffle=False)

        what = (f"all {n_train:,} training labels" if labels_per_class is None
                else f"{labelled} labelled + {n_train - labelled:,} "
                     "unlabelled images")
        print(f"\n[seed {seed}] 3/3 student distilled with {method!r}: "
              f"{what}, {epochs} epochs")
        student = keras.models.clone_model(student_init)
        student.set_weights(initial_weights)
        distiller = registry.build(method, teacher, student,
                                   feature_layers=registry.digits_taps(method))
        distiller.compile(optimizer=adam(epochs),
                          metrics=["accuracy"])
        distilled_history = distiller.fit(
            data.train, validation_data=data.validation,
            epochs=epochs, verbose=verbose, callbacks=guard, shuffle=False)

        def record(model, history):
            return {"accuracy": test_accuracy(model, full.test),
                    "params": model.count_params(),
                    "history": _plain_history(history)}

        run = {
            "seed": seed,
            "method": method,
            "dataset": dataset,
            "labels_per_class": labels_per_class,
            "hyperparameters": _hyperparameters(distiller),
            "teacher": record(teacher, teacher_history),
            "scratch": record(scratch, scratch_history),
            "distilled": record(student, distilled_history),
            "seconds": round(time.time() - start, 1),
        }
        runs.append(run)
        # Saved only after every fit finished: the NaN guard raises before
        # this line, so nothing half-trained is written.
        tfkd.saving.save(
            student, os.path.join(out, f"student_{method}_seed{seed}.keras"))
        tfkd.saving.save(teacher,
                         os.path.join(out, f"teacher_seed{seed}.keras"))

    summary = _summarise(runs)
    labelled = (None if labels_per_class is None
                else labels_per_class * full.num_classes)
    print("\n" + format_table(summary, method, seeds, labelled,
                               test_size=_num_examples(full.test),
                               images=("digits" if data_name == "digits"
                                       else f"{setting['title']} images")))
    result = {"runs": runs, "summary": summary, "out": out}
    tfkd_io.write_json(os.path.join(out, "results.json"),
                       {"runs": runs, "summary": summary})
    student_path = os.path.join(out, f"student_{method}_seed{seeds[-1]}.keras")
    print(f"\nDistilled student saved to "
          f"{runs_lib.display_path(student_path)}")
    if export:
        _export(student, teacher, full, out)
    quoted = runs_lib.shell_quote(out)
    steps_next = [f"tfkd report {quoted}",
                  f"tfkd export {runs_lib.shell_quote(student_path)} "
                  f"--quantization int8 --data {data_name} --out "
                  f"{runs_lib.shell_quote(os.path.join(out, 'student_int8.tflite'))}"]
    if labels_per_class is not None:
        steps_next.append("tfkd demo --labels-per-class all   # every "
                          "student sees every label")
    steps_next.append("python recipes/transfer.py --seeds 0 1 2   # every "
                      "method, 6 and 20 labels/class")
    print("\n" + runs_lib.next_steps(steps_next))
    return result


def _batch_len(batch):
    import tensorflow as tf

    return tf.shape(batch[1])[0]


def _num_examples(dataset):
    return int(dataset.reduce(0, lambda n, b: n + _batch_len(b)))


def _plain_history(history):
    """A Keras `History` (or a two-stage list of them) as JSON-able lists."""
    histories = history if isinstance(history, (list, tuple)) else [history]
    merged = {}
    for h in histories:
        for name, values in getattr(h, "history", {}).items():
            merged.setdefault(name, []).extend(float(v) for v in values)
    return merged


def _hyperparameters(distiller):
    config = distiller.get_config()
    return {k: v for k, v in config.items()
            if isinstance(v, (int, float, str, bool)) and k not in (
                "name", "trainable")}


def _summarise(runs):
    summary = {}
    for role in ("teacher", "scratch", "distilled"):
        accs = [r[role]["accuracy"] * 100 for r in runs]
        summary[role] = {
            "mean": statistics.fmean(accs),
            "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "params": runs[0][role]["params"],
        }
    return summary


def format_table(summary, method, seeds, labelled=None, test_size=None,
                 images="digits"):
    """Formats the demo's summary as a plain-text table: one held-out test
    accuracy per model, with what each model trained on.

    Args:
        summary: The demo's `summary` (`{role: {mean, std, params}}`).
        method: The distillation method's name.
        seeds: The seeds run.
        labelled: Labelled training images of the students (`None`: all).
        test_size: Images of the test split, for the header.
        images: What the test images are, for the header.

    Returns:
        The table as a string.

    Example:

    >>> summary = {r: {"mean": m, "std": 0.0, "params": p} for r, m, p in (
    ...     ("teacher", 99.0, 66218), ("scratch", 70.0, 1490),
    ...     ("distilled", 85.0, 1490))}
    >>> print(format_table(summary, "kd", [0], labelled=60, test_size=360))
    Held-out test accuracy (test split: 360 digits; seed [0])
    model                                   trained on                   params   accuracy %
    ----------------------------------------------------------------------------------------
    teacher                                 all training labels          66,218        99.00
    student alone                           60 labelled images            1,490        70.00
    student distilled (kd)                  60 labelled + unlabelled      1,490        85.00
    """
    names = {"teacher": "teacher", "scratch": "student alone",
             "distilled": f"student distilled ({method})"}
    if labelled is None:
        trained = {"teacher": "all training labels",
                   "scratch": "all training labels",
                   "distilled": "all training labels"}
    else:
        trained = {"teacher": "all training labels",
                   "scratch": f"{labelled} labelled images",
                   "distilled": f"{labelled} labelled + unlabelled"}
    size = f": {test_size:,} {images}" if test_size else ""
    lines = [
        f"Held-out test accuracy (test split{size}; seed"
        f"{'s' if len(seeds) > 1 else ''} {list(seeds)})",
        f"{'model':<39} {'trained on':<26} {'params':>8} {'accuracy %':>12}",
        "-" * 88,
    ]
    for role in ("teacher", "scratch", "distilled"):
        s = summary[role]
        acc = f"{s['mean']:.2f}"
        if len(seeds) > 1:
            acc += f" ± {s['std']:.2f}"
        lines.append(f"{names[role]:<39} {trained[role]:<26} "
                     f"{s['params']:>8,} {acc:>12}")
    return "\n".join(lines)


def _export(student, teacher, data, out):
    from tfkd.app import runs as runs_lib

    try:
        from tfkd import export
    except ImportError:  # pragma: no cover - the export module ships.
        return
    images = data.test.map(lambda x, y: x)
    path = os.path.join(out, "student.tflite")
    # Verified on the whole test split, the images of the accuracy table
    # above: one accuracy per model, not a second one on a subset.
    test_size = _num_examples(data.test)
    report = export.to_tflite(student, path, representative_data=images,
                              verify_data=data.test, teacher=teacher,
                              num_samples=test_size)
    report.save_json(os.path.join(out, "student.json"))
    print()
    # The path as the user would type it, like every other path printed.
    print(report.to_table().replace(
        f"TFLite export: {report.path}",
        f"TFLite export: {runs_lib.display_path(path)}", 1))
    print(f"(keras/tflite accuracy: the {test_size:,} held-out test images "
          "of the table above, for the last seed's student)")
