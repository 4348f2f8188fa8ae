"""`tfkd tune`: search distillation hyperparameters with Keras Tuner.

Trains the teacher once (or loads `--teacher T.keras`), searches the
methods' hyperparameters (and the student's width) with a random, Bayesian
or Hyperband tuner, prints a table of the trials best first, and saves the
best student as `.keras`. The tuner's directory holds student checkpoints
and trial records only; the teacher is saved once, beside it
(`teacher.keras`, with the settings it was trained with in
`teacher.json`).

Each run writes into a new folder (`tfkd_runs/tune-N`) unless `--out` names
one. An `--out` that already holds files is never silently replaced: pass
`--resume` to continue its search (refused if it searched other methods or
another space, or scored its trials on other data: data set, seed and so
split, image or batch size, teacher) or `--overwrite` to start afresh; both
reuse its trained teacher only when it was trained with the same data,
seed, sizes and epochs. `tfkd
report DIR` turns the folder into a best-first table and one curve plot per
trial.
"""

import json
import os
import time

#: Default output folder: a new `tfkd_runs/tune-N` per run.
DEFAULT_OUT = None
#: Epochs per trial: the demo's student budget, under the same cosine
#: decay (10 left the students short of the demo's accuracy).
DEFAULT_EPOCHS = 30
#: The teacher's file and its settings, in the run folder.
TEACHER_FILE = "teacher.keras"
TEACHER_SETTINGS = "teacher.json"


def register(subparsers):
    # Plain Python: `tfkd tune --help` must not import Keras Tuner.
    from tfkd.tuning.signature import TUNERS

    parser = subparsers.add_parser(
        "tune",
        help="search distillation hyperparameters (Keras Tuner)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--method", action="append", dest="methods", metavar="METHOD",
        help="method to tune; repeat to let the search choose among "
             "several (default: kd; `tfkd methods` lists them)")
    parser.add_argument("--trials", type=int, default=10,
                        help="trials of random/Bayesian search (default: 10;"
                             " Hyperband sizes its own brackets)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help="epochs per trial; Hyperband's max epochs "
                             f"(default: {DEFAULT_EPOCHS})")
    parser.add_argument("--data", default="digits",
                        help="data set (default: digits, embedded; "
                             "fashion_mnist reads its IDX files, see "
                             "tfkd.data.load_fashion_mnist)")
    parser.add_argument("--tuner", default="random", choices=TUNERS,
                        help="search algorithm (default: random)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="output folder (default: a new "
                             "tfkd_runs/tune-N)")
    parser.add_argument("--teacher", default=None, metavar="T.keras",
                        help="load this trained teacher instead of training "
                             "one")
    parser.add_argument("--teacher-epochs", type=int, default=20,
                        help="epochs to train the teacher (default: 20)")
    parser.add_argument("--objective", default="val_accuracy",
                        help="student validation metric to optimise "
                             "(default: val_accuracy)")
    parser.add_argument("--fix", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="fix a hyperparameter, e.g. --fix alpha=0.3")
    parser.add_argument("--space", action="append", default=[],
                        metavar="NAME=RANGE",
                        help="override a range: NAME=LOW:HIGH[:log] or "
                             "NAME=A,B,C (choice), e.g. --space "
                             "temperature=1:8")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images to this side (default: the "
                             "data set's; 16 for digits)")
    parser.add_argument("--labels-per-class", default="all",
                        metavar="N|all",
                        help="training labels the students keep per class; "
                             "the other training images are unlabelled "
                             "transfer data (the teacher always trains on "
                             "every label; digits only; default: all)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="training batch size of the teacher and of "
                             "every trial (default: 64)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap the training batches per epoch")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data split, the teacher's and the "
                             "students' initial weights and the tuner's "
                             "sampling (default: 0)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the search in --out (same methods "
                            "and space; reuses its teacher.keras)")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the search in --out and start afresh "
                            "(keeps its teacher when trained with the same "
                            "settings)")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="progress output (default: 2, a line per "
                             "epoch)")
    parser.set_defaults(func=_run_from_args)


def _parse_scalar(text):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def _split_assignment(item, option):
    name, sep, value = item.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ValueError(
            f"`{option}` takes NAME=VALUE. Received: {option} {item!r}."
        )
    return name.strip(), value.strip()


def parse_fixed(items):
    """`["alpha=0.3", "stage=1"]` -> `{"alpha": 0.3, "stage": 1}`."""
    fixed = {}
    for item in items:
        name, value = _split_assignment(item, "--fix")
        fixed[name] = _parse_scalar(value)
    return fixed


def parse_space(items):
    """Parses `--space` entries into search-space specs.

    `NAME=LOW:HIGH` is a range (int if both bounds are ints),
    `NAME=LOW:HIGH:log` a log-sampled range, `NAME=A,B,C` a choice.

    Example:

    >>> parse_space(["temperature=1:8", "k=3,5,7"])
    {'temperature': (1, 8), 'k': [3, 5, 7]}
    """
    space = {}
    for item in items:
        name, value = _split_assignment(item, "--space")
        if ":" in value:
            parts = value.split(":")
            if len(parts) not in (2, 3):
                raise ValueError(
                    "A `--space` range is LOW:HIGH or LOW:HIGH:SAMPLING. "
                    f"Received: --space {item!r}."
                )
            bounds = [_parse_scalar(p) for p in parts[:2]]
            space[name] = tuple(bounds + parts[2:])
        else:
            space[name] = [_parse_scalar(v) for v in value.split(",")]
    return space


def _run_from_args(args):
    from tfkd.cli.demo import parse_labels_per_class

    run_tune(methods=args.methods or ["kd"], trials=args.trials,
             epochs=args.epochs, data=args.data, tuner=args.tuner,
             out=args.out, teacher=args.teacher,
             teacher_epochs=args.teacher_epochs, objective=args.objective,
             fixed=parse_fixed(args.fix), search_space=parse_space(args.space),
             image_size=args.image_size, batch_size=args.batch_size,
             steps_per_epoch=args.steps_per_epoch,
             labels_per_class=parse_labels_per_class(args.labels_per_class),
             seed=args.seed, resume=args.resume, overwrite=args.overwrite,
             verbose=args.verbose)
    return 0


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}."
        )


def _load_teacher(path, option="--teacher"):
    """Loads a teacher file; a broken file is named as such, not missing."""
    from tfkd import saving

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Teacher file not found. Received: {option} {path!r}. Pass "
            "a `.keras` file saved by `tfkd demo` or `tfkd tune`."
        )
    try:
        return saving.load(path, compile=False)
    except (ValueError, TypeError, OSError) as e:
        reason = " ".join(str(e).split())
        raise ValueError(
            f"{option} {path!r} exists but cannot be loaded: {reason}"
        ) from e


def _train_teacher(data, epochs, verbose):
    import keras

    import tfkd

    teacher = tfkd.models.digits_teacher(data.num_classes, data.input_shape)
    steps = max(1, int(data.train.cardinality()))
    # The demo's optimizer: Adam with a cosine decay to 0.
    teacher.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(3e-3, steps * epochs)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # The pipelines shuffle themselves.
    teacher.fit(data.train, validation_data=data.validation, epochs=epochs,
                verbose=verbose, shuffle=False,
                callbacks=[tfkd.callbacks.StopOnNonFiniteLoss()])
    return teacher


def _accuracy(model, dataset):
    import keras

    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return float(model.evaluate(dataset, return_dict=True,
                                verbose=0)["accuracy"])


def _num_examples(dataset):
    import tensorflow as tf

    return int(dataset.reduce(
        tf.constant(0, tf.int64),
        lambda n, b: n + tf.shape(b[1], out_type=tf.int64)[0]))


def _is_unmarked_tune_run(out, project_dir):
    """Whether `out`, without a run marker, is a folder an earlier `tfkd
    tune` wrote: a tfkd search plus `tfkd tune`'s own records, and nothing
    else. A Keras Tuner project made with `build_tuner`, or one beside the
    user's files, is not: `--overwrite` must not empty it."""
    from tfkd.app import runs
    from tfkd.tuning import signature as signature_lib

    if runs.is_run_dir(out) or not signature_lib.holds_search(project_dir):
        return False
    entries = set(os.listdir(out))
    return (bool(entries & {TEACHER_SETTINGS, "trials.json"})
            and runs.tfkd_outputs(out, "tune", entries) == entries)


def teacher_settings(*, data, seed, image_size, batch_size, teacher_epochs):
    """The settings a `tfkd tune` teacher is trained with (`teacher.json`):
    it is reused only by a run with the same."""
    return {"data": data, "seed": seed, "image_size": image_size,
            "batch_size": batch_size, "teacher_epochs": teacher_epochs}


def data_signature(settings, teacher=None):
    """What `tfkd tune`'s trials are scored on, recorded with the search:
    the data set, its split (the seed draws it), image and batch size, and
    the teacher (a `--teacher` file, or the one trained with `settings`).

    Example:

    >>> data_signature(teacher_settings(data="digits", seed=0,
    ...     image_size=None, batch_size=64, teacher_epochs=20))["teacher"]
    'trained: 20 epochs'
    """
    scored_on = {k: settings[k] for k in ("data", "seed", "image_size",
                                          "batch_size")}
    scored_on["teacher"] = (
        os.path.abspath(teacher) if teacher is not None
        else f"trained: {settings['teacher_epochs']} epochs")
    return scored_on


def _read_teacher_settings(out):
    try:
        with open(os.path.join(out, TEACHER_SETTINGS), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_tune(methods=("kd",), trials=10, epochs=DEFAULT_EPOCHS,
             data="digits", tuner="random", out=DEFAULT_OUT, teacher=None,
             teacher_epochs=20, objective="val_accuracy", fixed=None,
             search_space=None, image_size=None, batch_size=64,
             steps_per_epoch=None, labels_per_class=None, seed=0,
             resume=False, overwrite=False, verbose=2):
    """Runs `tfkd tune` and returns its results as a dict.

    Args:
        methods: Method names to search (one, or several to choose among).
        trials: Trials of random / Bayesian search.
        epochs: Epochs per trial (Hyperband: the largest budget). The
            learning rate decays to 0 along a cosine over them.
        data: Data set name (`tfkd.data.load_dataset`).
        tuner: `"random"`, `"bayesian"` or `"hyperband"`.
        out: Output folder (default: a new `tfkd_runs/tune-N`):
            `teacher.keras` and `teacher.json` (if trained here), the
            tuner's project `search/`, `best_student.keras`, `trials.json`
            (every trial, best first, with its per-epoch history; `tfkd
            report` reads it).
        teacher: Optional path of a trained teacher `.keras` to load.
        teacher_epochs: Epochs to train the teacher when not loaded.
        objective: Student validation metric to optimise.
        fixed: Dict of fixed hyperparameter values.
        search_space: Dict of search-space overrides.
        image_size: Optional image side length (default: the data set's).
        batch_size: Batch size.
        steps_per_epoch: Optional cap on training batches per epoch.
        labels_per_class: `None` (every label), or the training labels the
            students keep per class (the others are unlabelled transfer
            data, `tfkd.data.load_digits(labels_per_class=...)`); the
            teacher trains on every label. Digits only.
        seed: Seed of the data split, the teacher and the oracle.
        resume: Continue the search in `out` (refused if it searched other
            methods or another space, or scored its trials on other data:
            data set, seed (the split), image or batch size, teacher); its
            `teacher.keras` is reused when `teacher` is None and it was
            trained with the same settings.
        overwrite: Delete the search in `out` and start afresh (a
            `teacher.keras` trained there with the same data, seed, batch
            size and epochs is reused). Without `resume` or `overwrite`, an
            `out` holding files is refused.
        verbose: Progress output (0 silent, 1 bars, 2 one line per epoch).

    Returns:
        A dict with the trial rows (best first), the run folder, the best
        student's path and its test accuracy.

    Raises:
        ValueError: For bad arguments, a broken teacher file, or an `out`
            that holds files (another search when resuming).
    """
    import keras

    import tfkd
    from tfkd import io as tfkd_io
    from tfkd.app import runs
    from tfkd.distillers import registry
    from tfkd.tuning import hypermodel as hypermodel_lib
    from tfkd.tuning import search
    from tfkd.tuning import signature as signature_lib

    methods = list(methods)
    for name in methods:
        registry.get(name)
    _positive_int(trials, "trials")
    _positive_int(epochs, "epochs")
    _positive_int(teacher_epochs, "teacher_epochs")
    _positive_int(batch_size, "batch_size")
    if steps_per_epoch is not None:
        _positive_int(steps_per_epoch, "steps_per_epoch")
    if image_size is not None:
        _positive_int(image_size, "image_size")
    if tuner not in search.TUNERS:
        raise ValueError(f"Unknown tuner. Received: tuner={tuner!r}. Choose "
                         f"one of {list(search.TUNERS)}.")
    if labels_per_class is not None:
        _positive_int(labels_per_class, "labels_per_class")
        if str(data).lower() != "digits":
            raise ValueError(
                "--labels-per-class is available with --data digits only "
                f"(`tfkd.data.load_digits`). Received: --data {data!r}, "
                f"--labels-per-class {labels_per_class}. Use --data digits, "
                "or drop --labels-per-class.")
    # Every search setting is checked now, before a teacher trains for
    # minutes: the same hypermodel is built later on the trained teacher.
    # Its checks (methods, space, fixed values, feature layers) do not
    # read the teacher's weights, so an untrained digits teacher stands in.
    hypermodel_lib.digits_hypermodel(
        tfkd.models.digits_teacher(10, (image_size or 16,) * 2 + (1,)),
        method=methods, fixed=fixed, search_space=search_space, seed=seed,
        input_shape=(image_size or 16,) * 2 + (1,))
    if resume and overwrite:
        raise ValueError("Pass either --resume or --overwrite, not both. "
                         "Received: resume=True, overwrite=True.")
    if out is None:
        if resume:
            raise ValueError(
                "--resume continues the search in --out: name the folder "
                "(e.g. --out tfkd_runs/tune-1). Received: no --out.")
        out = runs.new_run_dir("tune")
    project_dir = os.path.join(out, "search")
    if not (resume or overwrite) and signature_lib.holds_search(project_dir):
        held = signature_lib.describe_signature(
            signature_lib.read_signature(project_dir))
        raise ValueError(
            f"--out {out!r} already holds {held} (in {project_dir!r}). Pass "
            "--resume to continue it, --overwrite to delete it and start "
            "afresh, or choose another --out."
        )
    teacher_path = os.path.join(out, TEACHER_FILE)
    if resume:
        os.makedirs(out, exist_ok=True)
    else:
        if overwrite and _is_unmarked_tune_run(out, project_dir):
            # A folder an earlier `tfkd tune` wrote, before run markers.
            tfkd_io.write_json(os.path.join(out, runs.MARKER),
                               {"kind": "tune"})
        runs.prepare_run_dir(out, kind="tune", overwrite=overwrite,
                             keep=(TEACHER_FILE, TEACHER_SETTINGS))
    where = runs.display_path(out)
    settings = teacher_settings(data=data, seed=seed, image_size=image_size,
                                batch_size=batch_size,
                                teacher_epochs=teacher_epochs)
    scored_on = data_signature(settings, teacher)
    if resume:
        # Before any training: trials scored on another split, seed or
        # teacher cannot be ranked with new ones.
        old = signature_lib.read_signature(project_dir)
        if old is not None and (old.get("data") or {}) != scored_on:
            signature_lib.check_signature(
                project_dir, dict(old, data=scored_on),
                fix="Resume with the settings it was run with, pass "
                    "--overwrite to delete it and start afresh, or choose "
                    "another --out.")
    teacher_model = None
    reused = None
    if teacher is not None:
        teacher_model = _load_teacher(teacher)
        reused = teacher
    elif os.path.exists(teacher_path):
        saved = _read_teacher_settings(out)
        if saved == settings:
            # Trained here with these settings: resumed trials were scored
            # against it, an overwritten search would train it again.
            teacher_model = _load_teacher(teacher_path,
                                          option="--out's teacher")
            reused = teacher_path
        elif resume:
            raise ValueError(
                f"--resume: {runs.display_path(teacher_path)} was trained "
                f"with other settings ({saved}) than this run's "
                f"({settings}), and the search's trials were scored "
                "against it. Resume with its settings, pass --overwrite to "
                "start afresh, or choose another --out."
            )
        else:
            print(f"[tune] {runs.display_path(teacher_path)} was trained "
                  f"with other settings ({saved}); training a new teacher "
                  f"({settings}).")
    start = time.time()
    keras.utils.set_random_seed(seed)
    from tfkd.app.experiment import DATA_SETTINGS

    # The recipes' loading of the data set (Fashion-MNIST: 14×14, a
    # 6,000-image pool), then this run's arguments.
    data_kwargs = dict(DATA_SETTINGS.get(data, {}).get("kwargs", {}),
                       batch_size=batch_size, seed=seed)
    if image_size is not None:
        data_kwargs["image_size"] = image_size
    dataset = tfkd.data.load_dataset(data, **data_kwargs)
    # The students' training split: every label, or a few a class (the
    # teacher still learns from every label of `dataset`).
    students = dataset if labels_per_class is None else \
        tfkd.data.load_dataset(data, labels_per_class=labels_per_class,
                               **data_kwargs)
    test_size = _num_examples(dataset.test)
    print(f"[tune] writing to {where}")

    if teacher_model is None:
        print(f"[tune] 1/3 teacher: training on the {data} training "
              f"labels, {teacher_epochs} epoch"
              f"{'s' if teacher_epochs != 1 else ''} (once, shared by every "
              "trial)")
        teacher_model = _train_teacher(dataset, teacher_epochs, verbose)
        teacher_path = tfkd.saving.save(teacher_model, teacher_path)
        tfkd_io.write_json(os.path.join(out, TEACHER_SETTINGS), settings)
    else:
        print(f"[tune] 1/3 teacher: reusing {runs.display_path(reused)} "
              "(not retrained)")
        teacher_path = reused
    teacher_accuracy = _accuracy(teacher_model, dataset.test)
    print(f"[tune] teacher: {teacher_accuracy * 100:.2f} % test accuracy "
          f"(held-out test split, {test_size} images)")

    train_steps = steps_per_epoch or max(1, int(students.train.cardinality()))
    hypermodel = hypermodel_lib.digits_hypermodel(
        teacher_model, method=methods, num_classes=dataset.num_classes,
        input_shape=dataset.input_shape, fixed=fixed,
        search_space=search_space, seed=seed,
        decay_steps=train_steps * epochs,
    )
    if resume:
        signature = dict(hypermodel.search_signature(),
                         tuner=search.tuner_kind(tuner), data=scored_on)
        signature_lib.check_signature(
            project_dir, signature,
            fix="Pass --overwrite to delete it and start afresh, or "
                "choose another --out.")
    tuner_obj = search.build_tuner(
        hypermodel, tuner, objective=objective, max_trials=trials,
        max_epochs=epochs, directory=out, project_name="search",
        overwrite=overwrite, seed=seed, data_signature=scored_on,
    )
    label = ("hyperband brackets" if tuner == "hyperband"
             else f"{trials} trials")
    print(f"[tune] 2/3 search: {tuner}, {label} of {epochs} epochs, "
          f"methods {methods}, objective {objective} (validation split)"
          + ("" if labels_per_class is None else
             f"; students keep {labels_per_class} training labels a class, "
             "the other training images are unlabelled"))
    fit_kwargs = {"validation_data": dataset.validation, "epochs": epochs,
                  "verbose": verbose, "shuffle": False}
    if steps_per_epoch is not None:
        fit_kwargs["steps_per_epoch"] = steps_per_epoch
        train = students.train.repeat()
    else:
        train = students.train
    tuner_obj.search(train, **fit_kwargs)

    rows = search.trial_rows(tuner_obj)
    print(f"\n[tune] 3/3 trials, best first ({len(rows)}; trial numbers as "
          f"Keras Tuner printed them; {objective}: the best epoch's, on the "
          "validation split):")
    print(search.format_trials(rows, objective))
    student = search.best_student(tuner_obj)
    student_path = tfkd.saving.save(
        student, os.path.join(out, "best_student.keras"))
    test_accuracy = _accuracy(student, dataset.test)
    result = {
        "methods": methods,
        "tuner": tuner,
        "objective": objective,
        "dataset": data,
        "epochs": epochs,
        "labels_per_class": labels_per_class,
        "out": out,
        "teacher": teacher_path,
        "teacher_params": teacher_model.count_params(),
        "teacher_test_accuracy": teacher_accuracy,
        "best_student": student_path,
        "best_trial": rows[0]["trial"] if rows else None,
        "best_student_params": student.count_params(),
        "best_student_test_accuracy": test_accuracy,
        "test_size": test_size,
        "trials": rows,
        "seconds": round(time.time() - start, 1),
    }
    tfkd_io.write_json(os.path.join(out, "trials.json"), result,
                       default=str)
    best = rows[0]["trial"] if rows else "?"
    print(f"\nBest student (trial {best}, {student.count_params():,} "
          f"params): {test_accuracy * 100:.2f} % test accuracy (held-out "
          f"test split, {test_size} images), saved to "
          f"{runs.display_path(student_path)}")
    quoted = runs.shell_quote(out)
    print("\n" + runs.next_steps([
        f"tfkd report {quoted}",
        f"tfkd export {runs.shell_quote(student_path)} --quantization int8 "
        f"--data {data} --out "
        f"{runs.shell_quote(os.path.join(out, 'best_student_int8.tflite'))}",
    ]))
    return result
