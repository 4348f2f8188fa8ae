"""Shared checks for tfkd distillers, so every distiller's tests stay uniform.

`run_distiller_test` runs the same battery on any distiller: one `fit` on a
few batches, the teacher's weights unchanged, the student's changed, the
expected metric names in training and validation, a `get_config` round trip
and a `.keras` save/load round trip with identical predictions, and the
student saved alone without the teacher's weights.
"""

import os
import tempfile

import keras
import numpy as np


def tiny_conv_model(name, width=8, num_classes=10, input_shape=(8, 8, 1),
                    depth=2, seed=None):
    """A small functional conv net with stable layer names.

    Layers: `conv{i}` (3×3, ReLU, 'same'), `pool` (global average), `logits`.

    Args:
        name: Model name.
        width: Filters of each conv layer.
        num_classes: Units of the `logits` layer.
        input_shape: `(H, W, C)` of the input.
        depth: Number of conv layers.
        seed: Optional seed for the initialisers (deterministic weights).

    Returns:
        A functional `keras.Model` outputting logits.

    Example:

    >>> model = tiny_conv_model("student", width=4)
    >>> [layer.name for layer in model.layers][1:]
    ['conv1', 'conv2', 'pool', 'logits']
    """
    def init(i):
        if seed is None:
            return "glorot_uniform"
        return keras.initializers.GlorotUniform(seed=seed + i)

    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for i in range(1, depth + 1):
        x = keras.layers.Conv2D(
            width, 3, padding="same", activation="relu", name=f"conv{i}",
            kernel_initializer=init(i),
        )(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_classes, name="logits", kernel_initializer=init(0)
    )(x)
    return keras.Model(inputs, outputs, name=name)


class CallCounter(keras.layers.Layer):
    """Identity layer counting how often it runs (inside compiled graphs
    too): put it in a network to check that a distiller's step runs that
    network forward once.

    Example:

    >>> counter = CallCounter()
    >>> _ = counter(np.zeros((2, 3), "float32"))
    >>> float(counter.calls.numpy())
    1.0
    """

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros",
                                     trainable=False, name="calls")

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


def random_images(n=32, input_shape=(8, 8, 1), num_classes=10, seed=0):
    """Random images in [0, 1) and integer labels, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + tuple(input_shape), dtype=np.float32)
    y = rng.integers(0, num_classes, size=(n,)).astype("int32")
    return x, y


def _weights(model):
    return [np.array(w) for w in model.weights]


def run_distiller_test(distiller, x, y, *, expected_metrics, batch_size=16,
                       optimizer=None, compile_kwargs=None, epochs=1,
                       check_saving=True):
    """Runs the uniform battery of checks on a constructed distiller.

    Args:
        distiller: A tfkd distiller, not yet compiled.
        x: Training images (NumPy).
        y: Training labels.
        expected_metrics: Metric names expected in `fit`'s history besides
            `loss` (e.g. `["student_loss", "kd_loss"]`); the validation
            versions (`val_...`) are checked too.
        batch_size: Batch size of the fit.
        optimizer: Optimizer for `compile` (SGD(0.05) by default).
        compile_kwargs: Extra `compile` arguments.
        epochs: Epochs to fit.
        check_saving: Also check the config and `.keras` round trips.

    Returns:
        The `keras.callbacks.History` of the fit.
    """
    compile_kwargs = dict(compile_kwargs or {})
    distiller.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.05),
        metrics=["accuracy"], **compile_kwargs,
    )
    teacher_before = _weights(distiller.teacher)
    student_before = _weights(distiller.student)
    history = distiller.fit(
        x, y, batch_size=batch_size, epochs=epochs, verbose=0,
        validation_data=(x, y), shuffle=False,
    )
    names = set(history.history)
    for name in ["loss", "accuracy", *expected_metrics]:
        assert name in names, f"metric {name!r} missing from {sorted(names)}"
        assert f"val_{name}" in names, (
            f"metric 'val_{name}' missing from {sorted(names)}"
        )
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), f"{name} is not finite: {values}"
    for before, after in zip(teacher_before, _weights(distiller.teacher)):
        np.testing.assert_array_equal(before, after)
    changed = [
        not np.array_equal(b, a)
        for b, a in zip(student_before, _weights(distiller.student))
    ]
    assert any(changed), "no student weight changed during fit"
    if check_saving:
        check_round_trips(distiller, x[:batch_size])
    return history


def check_round_trips(distiller, x):
    """Checks config and `.keras` round trips of a (trained) distiller."""
    from tfkd import saving

    config = distiller.get_config()
    clone = distiller.__class__.from_config(config)
    assert type(clone) is type(distiller)
    expected = distiller.predict(x, verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "distiller.keras")
        saving.save(distiller, path)
        restored = keras.models.load_model(path)
        assert type(restored) is type(distiller)
        np.testing.assert_allclose(
            restored.predict(x, verbose=0), expected, atol=1e-6
        )
        student_path = os.path.join(tmp, "student.keras")
        saving.save(distiller.student, student_path)
        student = keras.models.load_model(student_path)
        np.testing.assert_allclose(
            student.predict(x, verbose=0), expected, atol=1e-6
        )
        # The student file holds no teacher weights.
        assert student.count_params() == distiller.student.count_params()
        assert os.path.getsize(student_path) < os.path.getsize(path)


def check_term(make_term, *, reference=None, teacher_width=8,
               student_width=4, taps=("conv2", "conv2"), atol=1e-5,
               rtol=1e-4):
    """Runs the uniform checks on a knowledge term.

    Builds the term with `make_term()` and checks, on a pair of
    `tiny_conv_model`s:

    - its config round trip (`from_config(get_config())`);
    - inside `tfkd.Distiller` with a student loss: `run_distiller_test`
      (one `fit`, the `<name>_loss` metric in training and validation,
      the teacher unchanged, the student changed, `.keras` round trip);
    - its value on one batch against `reference(teacher_features,
      student_features)` (the pure loss function, or an independent
      reference) computed on the tapped layers `taps`, reduced as the
      engine reduces it (the batch mean of per-example values);
    - that its gradient reaches the student's tapped layer and no teacher
      weight.

    Args:
        make_term: A callable building a fresh term tapping `taps`.
        reference: Optional `reference(teacher_features,
            student_features) -> values` to compare with.
        teacher_width: Width of the tiny teacher.
        student_width: Width of the tiny student.
        taps: `(teacher_layer, student_layer)` the term taps.
        atol: Absolute tolerance of the value comparison.
        rtol: Relative tolerance of the value comparison.

    Returns:
        The trained `tfkd.Distiller`.
    """
    import tensorflow as tf

    from tfkd.distillers.base import Distiller

    term = make_term()
    config = term.get_config()
    clone = type(term).from_config(config)
    assert clone.get_config() == config, (clone.get_config(), config)

    teacher = tiny_conv_model("teacher", width=teacher_width, seed=1)
    student = tiny_conv_model("student", width=student_width, seed=11)
    term = make_term()
    distiller = Distiller(teacher, student, [term])
    x, y = random_images(32, seed=3)
    name = distiller._term_names[0]
    if reference is not None:
        t = keras.Model(teacher.inputs,
                        teacher.get_layer(taps[0]).output)(x[:16])
        s = keras.Model(student.inputs,
                        student.get_layer(taps[1]).output)(x[:16])
        want = float(tf.reduce_mean(tf.cast(reference(t, s), tf.float32)))
        got = float(tf.reduce_mean(distiller.compute_terms(
            x[:16], y[:16])[f"{name}_loss"]))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(distiller.compute_terms(
            x[:16], y[:16], training=True)[f"{name}_loss"])
    tapped = student.get_layer(taps[1]).trainable_weights
    grads = tape.gradient(value, tapped + teacher.weights)
    assert any(g is not None and np.any(np.array(g) != 0)
               for g in grads[:len(tapped)]), "no gradient reaches the student"
    assert all(g is None for g in grads[len(tapped):]), "teacher gradient"
    run_distiller_test(distiller, x, y, expected_metrics=[f"{name}_loss"])
    return distiller


def write_fashion_mnist(folder, n_train=200, n_test=50, *, gz=True, seed=0):
    """Writes the four IDX files of a tiny fake Fashion-MNIST into `folder`.

    For tests of `tfkd.data.load_fashion_mnist` and the recipes that read
    it, on machines without the real files. Classes are balanced; each
    28×28 image's pixels are `20 · label` plus noise in `[0, 5)`, so a test
    can check that images and labels stay paired.

    Args:
        folder: Folder to write (created if missing).
        n_train: Training images.
        n_test: Test images.
        gz: Gzip the files (as distributed) or write them raw.
        seed: Seed of the label order and the noise.

    Returns:
        `{"train": (images, labels), "t10k": (images, labels)}`, uint8.

    Example:

    >>> folder = tempfile.mkdtemp()
    >>> written = write_fashion_mnist(folder, n_train=20, n_test=10)
    >>> sorted(os.listdir(folder))[0], written["train"][0].shape
    ('t10k-images-idx3-ubyte.gz', (20, 28, 28))
    """
    import gzip

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = (20 * labels[:, None, None].astype(int)
                  + rng.integers(0, 5, (n, 28, 28))).astype(np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(
                int(d).to_bytes(4, "big") for d in array.shape)
            path = os.path.join(folder, f"{split}-{kind}-ubyte")
            if gz:
                with gzip.open(path + ".gz", "wb") as f:
                    f.write(header + array.tobytes())
            else:
                with open(path, "wb") as f:
                    f.write(header + array.tobytes())
        out[split] = (images, labels)
    return out
