"""Small building blocks shared by the demo and the paper recipes.

Recipes hold no library logic: the steps every one of them repeats —
compiling a plain classifier baseline, measuring held-out accuracy and
recording a run — live here, once.
"""

import keras
import numpy as np

from tfkd.app.reporting import RunResult


def compile_classifier(model, optimizer):
    """Compiles a logits model for plain supervised training.

    Sparse categorical cross entropy from logits, plus accuracy: the
    teacher and scratch-student baselines of every recipe.

    Args:
        model: A `keras.Model` that outputs logits.
        optimizer: An optimizer instance or name.

    Returns:
        The model, compiled.

    Example:

    >>> from tfkd import testing
    >>> model = compile_classifier(testing.tiny_conv_model("m"), "sgd")
    >>> model.compiled
    True
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_accuracy(model, dataset):
    """Top-1 accuracy (a fraction) of a logits model on a batched dataset.

    Runs the model in inference mode batch by batch and counts correct
    top-1 predictions; the model is never compiled or otherwise changed
    (its optimizer, loss and metrics stay as they were), so it measures a
    student taken out of a distiller, or a model still being trained.
    Examples labelled `-1` (unlabelled) are not counted.

    Args:
        model: A `keras.Model` that outputs logits (or probabilities: the
            top-1 class is the same).
        dataset: A batched `tf.data.Dataset` (or any iterable of batches)
            of `(images, labels)`, labels as class ids or one-hot rows.

    Returns:
        The accuracy as a Python float in `[0, 1]`; NaN if no example is
        labelled.

    Example:

    >>> from tfkd import testing
    >>> model = testing.tiny_conv_model("m")
    >>> x, y = testing.random_images(8)
    >>> 0.0 <= test_accuracy(model, [(x, y)]) <= 1.0
    True
    """
    correct = total = 0
    for batch in dataset:
        x, y = batch[0], batch[1]
        logits = keras.ops.convert_to_numpy(model(x, training=False))
        y = np.asarray(y)
        if y.ndim == logits.ndim and y.shape[-1] == logits.shape[-1] > 1:
            y = y.argmax(-1)  # One-hot labels.
        y = y.reshape(-1)
        labelled = y >= 0
        correct += int((logits.argmax(-1).reshape(-1) == y)[labelled].sum())
        total += int(labelled.sum())
    return correct / total if total else float("nan")


# Not a pytest test despite the name.
test_accuracy.__test__ = False


def steps_per_epoch(dataset, default=1000):
    """Batches per epoch of `dataset`, or `default` if unknown (for LR
    schedules that need a total step count)."""
    steps = int(dataset.cardinality())
    return steps if steps > 0 else default


def record_run(writer, history, *, label, method, dataset, seed, model,
               teacher, test_data, seconds, hyperparameters,
               validation_is_test, teacher_name=None, student_name=None):
    """Measures test accuracy, records a run with `writer`, prints a line.

    Args:
        writer: A `tfkd.app.reporting.ResultsWriter`.
        history: The run's `keras.callbacks.History` (or its dict).
        label: The printed name of the run's model (e.g. the student).
        method: The method name stored with the run.
        dataset: The data set's name.
        seed: The seed of the run.
        model: The trained model whose test accuracy is measured.
        teacher: The teacher model (for its parameter count).
        test_data: The batched held-out `tf.data.Dataset`.
        seconds: Wall time of the run.
        hyperparameters: Dict of the run's settings.
        validation_is_test: Whether the validation split is the test split.
        teacher_name: Stored teacher name (default: `teacher.name`).
        student_name: Stored student name (default: `model.name`).

    Returns:
        The recorded `tfkd.app.reporting.RunResult`.
    """
    result = RunResult.from_history(
        history, method=method, dataset=dataset, seed=seed,
        test_accuracy=test_accuracy(model, test_data),
        validation_is_test=validation_is_test,
        teacher=teacher_name or teacher.name,
        student=student_name or model.name,
        teacher_params=teacher.count_params(),
        student_params=model.count_params(), wall_time=seconds,
        hyperparameters=hyperparameters)
    writer.add(result)
    print(f"  {label:<28} {method:<12} seed {seed}: test "
          f"{result.test_accuracy_last * 100:6.2f} % ({seconds:.0f} s)",
          flush=True)
    return result


def train_or_load_teacher(build, data, *, epochs, optimizer, path=None,
                          callbacks=None, verbose=0):
    """A trained teacher: loaded from `path` when it exists, else built,
    trained and (with a `path`) saved there atomically.

    Args:
        build: `build() -> keras.Model`, the teacher (outputting logits).
        data: A `tfkd.data` split with `train` and `validation`.
        epochs: Training epochs.
        optimizer: An optimizer (instance or name).
        path: Optional `.keras` file caching the trained teacher.
        callbacks: Optional `fit` callbacks.
        verbose: `fit` verbosity.

    Returns:
        `(teacher, history)`; `history` is `{}` for a loaded teacher.
    """
    import os

    from tfkd import saving

    if path and os.path.exists(path):
        print(f"  loaded {path}", flush=True)
        return saving.load(path), {}
    teacher = build()
    compile_classifier(teacher, optimizer)
    history = teacher.fit(data.train, validation_data=data.validation,
                          epochs=epochs, verbose=verbose,
                          callbacks=callbacks, shuffle=False)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        saving.save(teacher, path)
    return teacher, history


class Recorder:
    """`record_run` bound to one recipe's writer, data set and split.

    Args:
        writer: A `tfkd.app.reporting.ResultsWriter`.
        dataset: The data set's name.
        validation_is_test: Whether the validation split is the test split.

    Example:

    >>> import tempfile
    >>> from tfkd.app.reporting import ResultsWriter
    >>> recorder = Recorder(ResultsWriter(tempfile.mkdtemp()), "digits",
    ...                     validation_is_test=False)
    >>> recorder.dataset
    'digits'
    """

    def __init__(self, writer, dataset, *, validation_is_test):
        self.writer = writer
        self.dataset = dataset
        self.validation_is_test = validation_is_test

    def __call__(self, history, *, label, method, seed, model, teacher,
                 test_data, seconds, hyperparameters, teacher_name=None,
                 student_name=None):
        """Records one run (see `record_run`); returns its `RunResult`."""
        return record_run(
            self.writer, history, label=label, method=method,
            dataset=self.dataset, seed=seed, model=model, teacher=teacher,
            test_data=test_data, seconds=seconds,
            hyperparameters=hyperparameters,
            validation_is_test=self.validation_is_test,
            teacher_name=teacher_name, student_name=student_name)


#: How the recipes, `tfkd demo` and `tfkd tune` run each data set: the
#: loader's arguments, the few-label budgets, epochs and batch size. Digits:
#: the embedded default at 16×16. Fashion-MNIST: sized so that every method
#: × 3 label budgets × 3 seeds runs in about an hour on two CPU cores --
#: images at 14×14 (the digits pair's teacher forward costs 4× less than at
#: 28×28), a 6,000-image stratified training pool (of the 54,000 left
#: after validation), the full 10,000-image test split.
DATA_SETTINGS = {
    "digits": {
        "title": "digits", "loader": "load_digits",
        "kwargs": {"image_size": 16}, "labels_per_class": (6, 20),
        "epochs": 30, "teacher_epochs": 20, "batch_size": 64,
    },
    "fashion_mnist": {
        "title": "Fashion-MNIST", "loader": "load_fashion_mnist",
        "kwargs": {"image_size": 14, "train_examples": 6000},
        "labels_per_class": (10, 100),
        "epochs": 5, "teacher_epochs": 10, "batch_size": 128,
    },
}


def data_setting(name):
    """The `DATA_SETTINGS` entry of `name`, or a clear error.

    Example:

    >>> data_setting("fashion_mnist")["title"]
    'Fashion-MNIST'
    """
    if name not in DATA_SETTINGS:
        raise ValueError(
            f"Unknown data set. Received: data={name!r}. Expected one of "
            f"{list(DATA_SETTINGS)}.")
    return DATA_SETTINGS[name]


def load_data(name, **kwargs):
    """Loads data set `name` with its `DATA_SETTINGS` arguments.

    Args:
        name: A key of `DATA_SETTINGS` (`"digits"`, `"fashion_mnist"`).
        **kwargs: Loader arguments (`seed`, `batch_size`,
            `labels_per_class`, ...); they override the setting's.

    Returns:
        The loader's `DataSplits`.

    Example:

    >>> load_data("digits", batch_size=32).input_shape
    (16, 16, 1)
    """
    import tfkd.data

    setting = data_setting(name)
    loader = getattr(tfkd.data, setting["loader"])
    return loader(**{**setting["kwargs"], **kwargs})


def labelled_repeated(train, batch_size, *, cache_seed=None):
    """The labelled examples of a few-label pipeline, batched, repeated.

    The training data of the student-alone baseline of a few-label run.

    Args:
        train: A batched pipeline of `(images, labels)`, labels `-1` for
            unlabelled examples.
        batch_size: Batch size of the result.
        cache_seed: `None`: the pipeline is filtered again on every pass
            (how the digits' recorded runs were made). An int: the labelled
            examples are kept in memory after the first pass and reshuffled
            with this seed on each pass -- on a large unlabelled pool (a
            few hundred labels among thousands of images) filtering every
            pass costs more than the training steps.

    Returns:
        An infinite batched `tf.data.Dataset` (pass `steps_per_epoch`).

    Example:

    >>> import tfkd
    >>> few = tfkd.data.load_digits(image_size=8, labels_per_class=2)
    >>> x, y = next(iter(labelled_repeated(few.train, 8, cache_seed=0)))
    >>> int((y.numpy() >= 0).sum())
    8
    """
    from tfkd.data.few_labels import labelled_only

    if cache_seed is None:
        return labelled_only(train, batch_size=batch_size).repeat()
    examples = labelled_only(train.unbatch()).cache()
    count = int(examples.reduce(0, lambda n, _: n + 1))
    return (examples.shuffle(count, seed=cache_seed,
                             reshuffle_each_iteration=True)
            .repeat().batch(batch_size))


def method_overrides(items, methods):
    """Parses a recipe's `--set METHOD.NAME=VALUE` entries.

    Each entry replaces one default of one method's build
    (`registry.build`'s overrides), so a recipe can measure a variant
    with the command that documents it. Checked before any training.

    Args:
        items: Strings `"METHOD.NAME=VALUE"` (a value is parsed as a
            bool, int or float where it is one, else kept as text).
        methods: The methods the run builds.

    Returns:
        `{method: {name: value}}`.

    Raises:
        ValueError: If an entry is malformed, names a method the run does
            not build, or an argument the method does not take.

    Example:

    >>> method_overrides(["kd.temperature=1"], ["kd", "lp"])
    {'kd': {'temperature': 1}}
    """
    # The `tfkd tune --fix` parser: one meaning of a value on every
    # command line.
    from tfkd.cli.tune import _parse_scalar as parse_scalar
    from tfkd.distillers import registry

    overrides = {}
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, name = target.strip().partition(".")
        if not (sep and dot and method and name and value.strip()):
            raise ValueError(
                "`--set` takes METHOD.NAME=VALUE, e.g. "
                f"`--set kd.temperature=1`. Received: --set {item!r}.")
        if method not in methods:
            raise ValueError(
                f"`--set {item}` names method {method!r}, which this run "
                f"does not build. Received: methods={list(methods)}; add it "
                "to `--methods` or drop the entry.")
        record = registry.get(method)
        allowed = set(record.arguments()) | {"unlabelled_weight"}
        if record.method.soft_targets:
            allowed |= {"soft_target_weight", "soft_target_temperature"}
        if name not in allowed:
            raise ValueError(
                f"Method {method!r} takes no argument {name!r}. Received: "
                f"--set {item!r}. Its arguments: {sorted(allowed)}.")
        overrides.setdefault(method, {})[name] = parse_scalar(value)
    return overrides
