"""`tfkd tune`: search distillation hyperparameters with Keras Tuner.

Trains the teacher once (or loads `--teacher T.keras`), searches the
methods' hyperparameters (and the student's width) with a random, Bayesian
or Hyperband tuner, prints a table of the trials best first, and saves the
best student as `.keras`. The tuner's directory holds student checkpoints
and trial records only; the teacher is saved once, beside it.

An `--out` that already holds a search is never silently replaced: pass
`--resume` to continue it (refused if it searched other methods or another
space) or `--overwrite` to delete it and start afresh.
"""

import os
import time

#: Default output directory.
DEFAULT_OUT = "tfkd_runs/tune"


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
    parser.add_argument("--epochs", type=int, default=10,
                        help="epochs per trial; Hyperband's max epochs "
                             "(default: 10)")
    parser.add_argument("--data", default="digits",
                        help="data set (default: digits, embedded)")
    parser.add_argument("--tuner", default="random", choices=TUNERS,
                        help="search algorithm (default: random)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output directory (default: {DEFAULT_OUT})")
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
                        metavar="NAME=SPEC",
                        help="override a range: NAME=LOW:HIGH[:log] or "
                             "NAME=A,B,C (choice), e.g. --space "
                             "temperature=1:8")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images to this side (default: the "
                             "data set's; 16 for digits)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="cap the training batches per epoch")
    parser.add_argument("--seed", type=int, default=0)
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the search in --out (same methods "
                            "and space; reuses its teacher.keras)")
    again.add_argument("--overwrite", action="store_true",
                       help="delete the search in --out and start afresh")
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
    run_tune(methods=args.methods or ["kd"], trials=args.trials,
             epochs=args.epochs, data=args.data, tuner=args.tuner,
             out=args.out, teacher=args.teacher,
             teacher_epochs=args.teacher_epochs, objective=args.objective,
             fixed=parse_fixed(args.fix), search_space=parse_space(args.space),
             image_size=args.image_size, batch_size=args.batch_size,
             steps_per_epoch=args.steps_per_epoch,
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
    teacher.compile(
        optimizer=keras.optimizers.Adam(3e-3),
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


def run_tune(methods=("kd",), trials=10, epochs=10, data="digits",
             tuner="random", out=DEFAULT_OUT, teacher=None, teacher_epochs=20,
             objective="val_accuracy", fixed=None, search_space=None,
             image_size=None, batch_size=64, steps_per_epoch=None, seed=0,
             resume=False, overwrite=False, verbose=2):
    """Runs `tfkd tune` and returns its results as a dict.

    Args:
        methods: Method names to search (one, or several to choose among).
        trials: Trials of random / Bayesian search.
        epochs: Epochs per trial (Hyperband: the largest budget).
        data: Data set name (`tfkd.data.load_dataset`).
        tuner: `"random"`, `"bayesian"` or `"hyperband"`.
        out: Output directory: `teacher.keras` (if trained here), the
            tuner's project `search/`, `best_student.keras`, `trials.json`.
        teacher: Optional path of a trained teacher `.keras` to load.
        teacher_epochs: Epochs to train the teacher when not loaded.
        objective: Student validation metric to optimise.
        fixed: Dict of fixed hyperparameter values.
        search_space: Dict of search-space overrides.
        image_size: Optional image side length (default: the data set's).
        batch_size: Batch size.
        steps_per_epoch: Optional cap on training batches per epoch.
        seed: Seed of the data split, the teacher and the oracle.
        resume: Continue the search in `out` (refused if it searched other
            methods or another space); its `teacher.keras` is reused when
            `teacher` is None.
        overwrite: Delete the search in `out` and start afresh. Without
            `resume` or `overwrite`, an `out` holding a search is refused.
        verbose: Progress output (0 silent, 1 bars, 2 one line per epoch).

    Returns:
        A dict with the trial rows (best first), the best student's path
        and its test accuracy.

    Raises:
        ValueError: For bad arguments, a broken teacher file, or an `out`
            that holds a search (another one when resuming).
    """
    import keras

    import tfkd
    from tfkd import io as tfkd_io
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
    if resume and overwrite:
        raise ValueError("Pass either --resume or --overwrite, not both. "
                         "Received: resume=True, overwrite=True.")
    project_dir = os.path.join(out, "search")
    if not (resume or overwrite) and signature_lib.holds_search(project_dir):
        held = signature_lib.describe_signature(
            signature_lib.read_signature(project_dir))
        raise ValueError(
            f"--out {out!r} already holds {held} (in {project_dir!r}). Pass "
            "--resume to continue it, --overwrite to delete it and start "
            "afresh, or choose another --out."
        )
    teacher_model = None
    if teacher is not None:
        teacher_model = _load_teacher(teacher)
    elif resume and os.path.exists(os.path.join(out, "teacher.keras")):
        # The resumed trials were scored against this teacher.
        teacher = os.path.join(out, "teacher.keras")
        teacher_model = _load_teacher(teacher, option="--out's teacher")
    start = time.time()
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(seed)
    data_kwargs = {"batch_size": batch_size, "seed": seed}
    if image_size is not None:
        data_kwargs["image_size"] = image_size
    dataset = tfkd.data.load_dataset(data, **data_kwargs)

    if teacher is None:
        print(f"[tune] 1/3 teacher: training {teacher_epochs} epochs on "
              f"{data} (once, shared by every trial)")
        teacher_model = _train_teacher(dataset, teacher_epochs, verbose)
        teacher_path = tfkd.saving.save(
            teacher_model, os.path.join(out, "teacher.keras"))
    else:
        print(f"[tune] 1/3 teacher: loaded {teacher}")
        teacher_path = teacher
    teacher_accuracy = _accuracy(teacher_model, dataset.validation)
    print(f"[tune] teacher validation accuracy: {teacher_accuracy:.4f}")

    hypermodel = hypermodel_lib.digits_hypermodel(
        teacher_model, method=methods, num_classes=dataset.num_classes,
        input_shape=dataset.input_shape, fixed=fixed,
        search_space=search_space, seed=seed,
    )
    if resume:
        signature = dict(hypermodel.search_signature(),
                         tuner=search.tuner_kind(tuner))
        signature_lib.check_signature(
            project_dir, signature,
            fix="Pass --overwrite to delete it and start afresh, or "
                "choose another --out.")
    tuner_obj = search.build_tuner(
        hypermodel, tuner, objective=objective, max_trials=trials,
        max_epochs=epochs, directory=out, project_name="search",
        overwrite=overwrite, seed=seed,
    )
    label = ("hyperband brackets" if tuner == "hyperband"
             else f"{trials} trials")
    print(f"[tune] 2/3 search: {tuner}, {label}, methods {methods}, "
          f"objective {objective}")
    fit_kwargs = {"validation_data": dataset.validation, "epochs": epochs,
                  "verbose": verbose, "shuffle": False}
    if steps_per_epoch is not None:
        fit_kwargs["steps_per_epoch"] = steps_per_epoch
        train = dataset.train.repeat()
    else:
        train = dataset.train
    tuner_obj.search(train, **fit_kwargs)

    rows = search.trial_rows(tuner_obj)
    print(f"\n[tune] 3/3 trials, best first ({len(rows)}):")
    print(search.format_trials(rows, objective))
    student = search.best_student(tuner_obj)
    student_path = tfkd.saving.save(
        student, os.path.join(out, "best_student.keras"))
    test_accuracy = _accuracy(student, dataset.test)
    result = {
        "methods": methods,
        "tuner": tuner,
        "objective": objective,
        "teacher": teacher_path,
        "teacher_val_accuracy": teacher_accuracy,
        "best_student": student_path,
        "best_student_params": student.count_params(),
        "best_student_test_accuracy": test_accuracy,
        "trials": rows,
        "seconds": round(time.time() - start, 1),
    }
    tfkd_io.write_json(os.path.join(out, "trials.json"), result,
                       default=str)
    print(f"\nBest student ({student.count_params():,} params, test accuracy "
          f"{test_accuracy:.4f}) saved to {student_path}")
    return result
