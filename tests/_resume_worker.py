"""Training script for `test_resume.py`: distiller runs, killed and resumed.

Run as a script in a fresh process:

    python tests/_resume_worker.py DIR NAME=CASE=POINT [...] [--jobs N]

`CASE` is `kd` (Hinton KD), `two_stage` (a correlation distiller trained
with `fit_two_stage`), `ktan` (the adversarial distiller: two optimizers,
a phase switch at step 6), `crd` (its memory bank) or `lp` (a batch-level
term), the last two as `tfkd.distillers.registry` builds them.

The script imports TensorFlow once, without starting its runtime, and
forks every process below from that state (TensorFlow is not fork-safe
once its runtime runs; before, only OpenBLAS's idle threads exist, and
OpenBLAS re-creates them in the child). Each fork is a new process that
starts TensorFlow's runtime of its own, as a fresh interpreter would, but
does not pay the import (several seconds of CPU each):

1. For each `NAME` (`N` at a time), a process trains `CASE` with
   `tfkd.callbacks.BackupAndRestore(DIR/NAME)` (a backup at the end of each
   epoch) and, at the kill point `POINT`, sends itself SIGKILL: it dies
   there, with no clean-up, as a crashed or killed process does. Kill
   points:

   - `step:E:B`: after batch `B` of epoch `E`, between two training steps;
   - `backup:K:start`: the `K`-th backup (written at the end of epoch
     `K - 1`) is about to be written; nothing of it is on disk yet;
   - `backup:K:weights`: half of the `K`-th backup's weights are written
     into `latest.weights.h5` (the file is open, the rest not written);
   - `backup:K:weights_written`: the weights file is complete and closed,
     the metadata (`training_metadata.json`) not yet rewritten;
   - `backup:K:metadata`: the metadata file is opened for writing (so
     truncated) and its content not yet written.

   The hooks wrap the distiller's `save_weights`, `h5py.Group.__setitem__`
   and the `json.dumps` that `BackupAndRestore` calls; they do not change
   what is written, only stop the process at a point of the write.
2. Once every run is dead, for each `CASE` a new process trains each of
   its `NAME`s again with the same backup directory (Keras restores the
   last backup and goes on) and saves the final state to `DIR/NAME.npz`,
   with the number of steps it ran (or the error if the backup could not
   be restored); then it trains an uninterrupted reference run from
   scratch and saves its final state beside it (`ref_*` entries).

`DIR/report.json` says, for each `NAME`, how its run ended (`killed`: by
SIGKILL at its kill point) and the backup metadata it left on disk; each
process writes its errors to `DIR/NAME.log` (runs) or `DIR/CASE.log`
(resumes).

Ops are deterministic (`keras.utils.set_random_seed` and
`tf.config.experimental.enable_op_determinism()`); the data are fixed and
not shuffled, so an epoch's batches do not depend on the history.
"""

import argparse
import json
import os
import signal
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SEED = 0
BATCH_SIZE = 16
NUM_EXAMPLES = 64  # 4 steps per epoch.
EPOCHS = 3
STAGE1_EPOCHS = 2
STAGE2_EPOCHS = 2
PRETRAIN_STEPS = 6  # KTAN: phase 2 starts in the middle of epoch 1.


def build(case):
    """Seeded models, data and a compiled distiller for `case`."""
    import tfkd
    from tfkd import testing

    keras.utils.set_random_seed(SEED)
    teacher = testing.tiny_conv_model("teacher", width=8, seed=1)
    student = testing.tiny_conv_model("student", width=4, seed=11)
    x, y = testing.random_images(NUM_EXAMPLES, seed=3)
    if case == "kd":
        distiller = tfkd.Distiller(teacher, student, alpha=0.5,
                                   temperature=4.0)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    elif case == "two_stage":
        distiller = tfkd.CorrelationDistiller(
            teacher, student, teacher_layer_name="conv2",
            student_layer_name="conv2",
            mode="channel", adapter=True, alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    elif case == "ktan":
        distiller = tfkd.AdversarialDistiller(
            teacher, student, teacher_layer_name="conv2",
            student_layer_name="conv2",
            pretrain_steps=PRETRAIN_STEPS, discriminator_width=4,
            kd_weight=0.5)
        distiller.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            discriminator_optimizer=keras.optimizers.Adam(1e-2))
    elif case in ("crd", "lp"):
        # CRD: its memory bank of embeddings (and the sampling of its
        # negatives) must resume too; LP: a batch-level term.
        from tfkd.distillers import registry

        kwargs = {"k": 3, "gamma": 0.1} if case == "lp" else {}
        distiller = registry.build(case, teacher, student,
                                   feature_layers=("conv2", "conv2"),
                                   **kwargs)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    else:
        raise ValueError(f"Unknown case. Received: case={case!r}.")
    return distiller, x, y


def train(case, distiller, x, y, callbacks):
    kwargs = dict(batch_size=BATCH_SIZE, shuffle=False, verbose=0,
                  callbacks=callbacks)
    if case == "two_stage":
        distiller.fit_two_stage(x, y, stage1_epochs=STAGE1_EPOCHS,
                                stage2_epochs=STAGE2_EPOCHS, **kwargs)
    else:
        distiller.fit(x, y, epochs=EPOCHS, **kwargs)


def state(distiller):
    """Every variable that decides how training goes on: the distiller's
    weights (student, owned parts, step counter) and optimizer states."""
    variables = list(distiller.weights) + list(distiller.optimizer.variables)
    second = getattr(distiller, "discriminator_optimizer", None)
    if second is not None:
        variables += list(second.variables)
    return [keras.ops.convert_to_numpy(v) for v in variables]


class CountSteps(keras.callbacks.Callback):
    """Counts the training steps this process runs."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def die():
    """Ends this process here with SIGKILL: no handler, no clean-up."""
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class DieAfter(keras.callbacks.Callback):
    """Kills the process after batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.kill_epoch, self.kill_batch = epoch, batch
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.kill_epoch, self.kill_batch):
            die()


def die_in_backup(distiller, number, point):
    """Kills the process in the `number`-th backup write of this process at `point`."""
    import h5py
    from keras.src.callbacks import backup_and_restore

    from tfkd import io as tfkd_io

    backups = {"count": 0, "writing": False, "datasets": 0, "per_backup": 0}
    save_weights = distiller.save_weights

    def hooked_save_weights(*args, **kwargs):
        backups["count"] += 1
        backups["datasets"] = 0
        current = backups["count"] == number
        if current and point == "start":
            die()
        backups["writing"] = True
        try:
            save_weights(*args, **kwargs)
        finally:
            backups["writing"] = False
        backups["per_backup"] = backups["datasets"]
        if current and point == "weights_written":
            die()

    set_item = h5py.Group.__setitem__

    def hooked_set_item(group, name, value):
        set_item(group, name, value)
        if backups["writing"]:
            backups["datasets"] += 1
            if (backups["count"] == number and point == "weights"
                    and backups["datasets"] == backups["per_backup"] // 2):
                die()

    class HookedJson:
        loads = staticmethod(json.loads)

        @staticmethod
        def dumps(obj, *args, **kwargs):
            # Keras calls it inside `with open(metadata_path, "w")` (the file
            # exists and is empty); tfkd before writing its temporary file.
            if backups["count"] == number and point == "metadata":
                die()
            return json.dumps(obj, *args, **kwargs)

    if point not in ("start", "weights", "weights_written", "metadata"):
        raise ValueError(f"Unknown kill point. Received: point={point!r}.")
    if point == "weights" and number < 2:
        raise ValueError("`weights` needs an earlier backup to count the "
                         f"datasets of one. Received: number={number}.")
    distiller.save_weights = hooked_save_weights
    h5py.Group.__setitem__ = hooked_set_item
    backup_and_restore.json = HookedJson
    tfkd_io.json = HookedJson  # tfkd's backup writes its metadata here


def run_until_killed(case, backup, kill_at):
    import tfkd

    distiller, x, y = build(case)
    callbacks = [tfkd.callbacks.BackupAndRestore(backup)]
    kind, *where = kill_at.split(":")
    if kind == "step":
        callbacks.append(DieAfter(int(where[0]), int(where[1])))
    elif kind == "backup":
        die_in_backup(distiller, int(where[0]), where[1])
    else:
        raise ValueError(f"Unknown kill point. Received: {kill_at!r}.")
    train(case, distiller, x, y, callbacks)
    print("training finished without being killed", file=sys.stderr)
    return 1


_REFERENCES = {}  # case -> final state of its uninterrupted run


def resume(case, backup, out):
    import tfkd

    arrays = {}
    distiller, x, y = build(case)
    counter = CountSteps()
    callbacks = [tfkd.callbacks.BackupAndRestore(backup), counter]
    try:
        train(case, distiller, x, y, callbacks)
    except Exception as e:  # Reported by the test, case by case.
        arrays["error"] = np.array(f"{type(e).__name__}: {e}")
    else:
        arrays.update(
            {f"resumed_{i}": v for i, v in enumerate(state(distiller))})
    if case not in _REFERENCES:
        reference, x, y = build(case)
        train(case, reference, x, y, [])
        _REFERENCES[case] = state(reference)
    arrays.update({f"ref_{i}": v for i, v in enumerate(_REFERENCES[case])})
    arrays["steps_run"] = np.array(counter.steps)
    arrays["backup_left"] = np.array(os.path.exists(backup))
    np.savez(out, **arrays)


def fork(log, target, *args):
    """Runs `target(*args)` in a forked child writing its errors to `log`;
    returns the child's pid. The child's exit code is `target`'s result
    (1 on an exception)."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        with open(log, "wb") as f:
            os.dup2(f.fileno(), 2)
        # The child starts TensorFlow's runtime: make its ops deterministic
        # first (the parent never runs an op, see the module docstring).
        tf.config.experimental.enable_op_determinism()
        code = target(*args)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)  # No parent's clean-up in the child.


def run_all(directory, names, jobs):
    """The two steps of the module docstring; writes `report.json`."""
    from tensorflow.python.eager import context

    # Forking is only safe while the runtime has not started.
    assert context.context()._context_handle is None
    report, pending, running = {}, list(names), {}
    while pending or running:
        while pending and len(running) < jobs:
            name, case, kill_at = pending.pop(0)
            pid = fork(os.path.join(directory, f"{name}.log"),
                       run_until_killed, case,
                       os.path.join(directory, name), kill_at)
            running[pid] = name
        pid, status = os.wait()
        name = running.pop(pid)
        killed = (os.WIFSIGNALED(status)
                  and os.WTERMSIG(status) == signal.SIGKILL)
        report[name] = {"run": "killed" if killed else f"status {status}"}
        metadata = os.path.join(directory, name, "tfkd_backup.json")
        if os.path.exists(metadata):
            with open(metadata) as f:
                report[name]["backup"] = f.read()
    cases = {}
    for name, case, _ in names:
        cases.setdefault(case, []).append(name)
    pending, running = list(cases.items()), {}
    while pending or running:
        while pending and len(running) < jobs:
            case, group = pending.pop(0)
            pid = fork(os.path.join(directory, f"{case}.log"), resume_all,
                       case, [(os.path.join(directory, name),
                               os.path.join(directory, f"{name}.npz"))
                              for name in group])
            running[pid] = case
        pid, status = os.wait()
        case = running.pop(pid)
        for name in cases[case]:
            report[name]["resume"] = status
    with open(os.path.join(directory, "report.json"), "w") as f:
        json.dump(report, f)
    return 0


def resume_all(case, items):
    for backup, out in items:
        resume(case, backup, out)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("runs", nargs="+", help="NAME=CASE=POINT")
    parser.add_argument("--jobs", type=int, default=2,
                        help="processes at a time")
    args = parser.parse_args(argv)
    names = [tuple(run.split("=")) for run in args.runs]
    return run_all(args.directory, names, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
