"""Small building blocks shared by the demo and the paper recipes.

Recipes hold no library logic: the steps every one of them repeats —
compiling a plain classifier baseline, measuring held-out accuracy and
recording a run — live here, once.
"""

import keras

from tfkd.reporting import RunResult


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

    Recompiles `model` for evaluation only, so it works on a student taken
    out of a distiller.

    Args:
        model: A `keras.Model` that outputs logits.
        dataset: A batched `tf.data.Dataset` of `(images, labels)`.

    Returns:
        The accuracy as a Python float in `[0, 1]`.
    """
    compile_classifier(model, "sgd")
    return float(model.evaluate(dataset, return_dict=True,
                                verbose=0)["accuracy"])


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
        writer: A `tfkd.reporting.ResultsWriter`.
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
        The recorded `tfkd.reporting.RunResult`.
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
