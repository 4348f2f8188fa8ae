"""Writes files over and over until killed (for tests/test_io.py).

    python _atomic_save_worker.py keras DIRECTORY COUNT [--direct]
    python _atomic_save_worker.py bytes DIRECTORY [--direct]

`keras`: imports Keras once, then forks COUNT writers one after the other
(each forked only when the previous one has died), so several writers can
be killed for the price of one TensorFlow import. Writer `i` builds a model
of ~3.4M parameters (13 MB) and saves it to DIRECTORY/i/model.keras with
`tfkd.io.save_keras_model` in a loop, every weight equal to the generation
number. It prints `pid i PID` when it starts and `gen i G` after each
complete save; the parent prints `dead i` once it has reaped it (a killed
writer not yet reaped would still count as running).

`bytes`: writes DIRECTORY/data.bin in a loop with `tfkd.io.atomic_write`:
an 8-byte header holding the generation, then 4 MB of the generation's
low byte; prints `gen 0 G` after each complete write.

`--direct` writes in place instead (plain `model.save` / `open`): the test
fails against it, which shows it catches a non-atomic writer.

`--kill-at=P1,P2,...` gives writer `i` the fixed kill point `Pi` instead of
writing until killed at a random moment: it completes generation 1, then
stops generation 2 at the point, prints `ready i` and waits to be killed:

- `write`: part of the new content is in the temporary file (bytes: half
  the payload, flushed; keras: the archive's metadata and config, the
  weights not yet);
- `fsynced`: the temporary file is complete and `fsync`ed, not renamed;
- `replaced`: renamed over the target, the folder not yet `fsync`ed.

`tfkd/io.py` is loaded from its file, not through the `tfkd` package, so
the `bytes` worker starts without TensorFlow and the `keras` worker imports
Keras only. The fork happens before any TensorFlow op has run in the parent.
"""

import importlib.util
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BYTES = 4 << 20


def _tfkd_io():
    spec = importlib.util.spec_from_file_location(
        "tfkd_io_standalone", os.path.join(ROOT, "tfkd", "io.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stop(index):
    """Signals the kill point and waits to be killed."""
    print(f"ready {index}", flush=True)
    while True:
        time.sleep(60)


def _arm(index, point, generation):
    """Makes generation 2 stop at `point` (see the module docstring)."""
    replace = os.replace

    def hooked_replace(source, target, **kwargs):
        if generation() == 2 and point == "fsynced":
            _stop(index)
        replace(source, target, **kwargs)
        if generation() == 2 and point == "replaced":
            _stop(index)

    os.replace = hooked_replace


def _save_models(tfkd_io, index, directory, direct, point=None):
    import zipfile

    import keras
    import numpy as np

    inputs = keras.Input((512,))
    x = inputs
    for _ in range(3):
        x = keras.layers.Dense(1024)(x)
    model = keras.Model(inputs, keras.layers.Dense(512)(x))
    shapes = [w.shape for w in model.get_weights()]
    path = os.path.join(directory, "model.keras")
    generation = 0
    if point is not None:
        _arm(index, point, lambda: generation)
        def hook(method):
            def hooked(self, first, *args, **kwargs):
                name = str(getattr(first, "filename", first))
                if generation == 2 and point == "write" and \
                        name.endswith(".h5"):
                    self.fp.flush()
                    _stop(index)
                return method(self, first, *args, **kwargs)
            return hooked

        # Keras adds the weights to the archive in one call.
        zipfile.ZipFile.writestr = hook(zipfile.ZipFile.writestr)
        zipfile.ZipFile.write = hook(zipfile.ZipFile.write)
    while True:
        generation += 1
        model.set_weights([np.full(s, generation, "float32")
                           for s in shapes])
        if direct:
            model.save(path)
        else:
            tfkd_io.save_keras_model(model, path)
        print(f"gen {index} {generation}", flush=True)


def keras_writers(directory, count, direct, points=None):
    tfkd_io = _tfkd_io()
    import keras  # noqa: F401  (imported once, before forking)

    for index in range(count):
        folder = os.path.join(directory, str(index))
        os.makedirs(folder, exist_ok=True)
        pid = os.fork()
        if pid == 0:
            try:
                _save_models(tfkd_io, index, folder, direct,
                             points[index] if points else None)
            finally:
                os._exit(1)
        print(f"pid {index} {pid}", flush=True)
        os.waitpid(pid, 0)
        print(f"dead {index}", flush=True)


def bytes_writer(directory, direct, point=None):
    tfkd_io = _tfkd_io()
    path = os.path.join(directory, "data.bin")
    generation = 0
    if point is not None:
        _arm(0, point, lambda: generation)
    while True:
        generation += 1
        data = generation.to_bytes(8, "little") + bytes(
            [generation % 256]) * BYTES
        stop = generation == 2 and point == "write"
        if direct:
            with open(path, "wb") as f:
                f.write(data[:len(data) // 2] if stop else data)
                if stop:
                    f.flush()
                    _stop(0)
        else:
            with tfkd_io.atomic_write(path) as f:
                f.write(data[:len(data) // 2] if stop else data)
                if stop:
                    f.flush()
                    _stop(0)
        print(f"gen 0 {generation}", flush=True)


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    points = next((f.split("=", 1)[1].split(",") for f in flags
                   if f.startswith("--kill-at=")), None)
    if args[0] == "keras":
        keras_writers(args[1], int(args[2]), "--direct" in flags, points)
    else:
        bytes_writer(args[1], "--direct" in flags,
                     points[0] if points else None)
