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

`tfkd/io.py` is loaded from its file, not through the `tfkd` package, so
the `bytes` worker starts without TensorFlow and the `keras` worker imports
Keras only. The fork happens before any TensorFlow op has run in the parent.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BYTES = 4 << 20


def _tfkd_io():
    spec = importlib.util.spec_from_file_location(
        "tfkd_io_standalone", os.path.join(ROOT, "tfkd", "io.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save_models(tfkd_io, index, directory, direct):
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
    while True:
        generation += 1
        model.set_weights([np.full(s, generation, "float32")
                           for s in shapes])
        if direct:
            model.save(path)
        else:
            tfkd_io.save_keras_model(model, path)
        print(f"gen {index} {generation}", flush=True)


def keras_writers(directory, count, direct):
    tfkd_io = _tfkd_io()
    import keras  # noqa: F401  (imported once, before forking)

    for index in range(count):
        folder = os.path.join(directory, str(index))
        os.makedirs(folder, exist_ok=True)
        pid = os.fork()
        if pid == 0:
            try:
                _save_models(tfkd_io, index, folder, direct)
            finally:
                os._exit(1)
        print(f"pid {index} {pid}", flush=True)
        os.waitpid(pid, 0)
        print(f"dead {index}", flush=True)


def bytes_writer(directory, direct):
    tfkd_io = _tfkd_io()
    path = os.path.join(directory, "data.bin")
    generation = 0
    while True:
        generation += 1
        data = generation.to_bytes(8, "little") + bytes(
            [generation % 256]) * BYTES
        if direct:
            with open(path, "wb") as f:
                f.write(data)
        else:
            with tfkd_io.atomic_write(path) as f:
                f.write(data)
        print(f"gen 0 {generation}", flush=True)


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if args[0] == "keras":
        keras_writers(args[1], int(args[2]), "--direct" in flags)
    else:
        bytes_writer(args[1], "--direct" in flags)
