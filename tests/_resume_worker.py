"""Training script for `test_resume.py`: one distiller run, killable.

Run as a script in a fresh process:

    python tests/_resume_worker.py run CASE=DIR --kill-epoch E \
        --kill-batch B --ready FILE
    python tests/_resume_worker.py resume CASE=DIR=OUT.npz [...]

`CASE` is `kd` (Hinton KD), `two_stage` (a correlation distiller trained
with `fit_two_stage`) or `ktan` (the adversarial distiller: two optimizers,
a phase switch at step 6).

- `run`: train `CASE` with `keras.callbacks.BackupAndRestore(DIR)` (a
  backup at the end of each epoch); after batch `B` of epoch `E` write the
  `--ready` file and block, waiting to be killed with SIGKILL.
- `resume`: for each case, train again with the same backup directory
  (Keras restores the last backup and goes on) and save the final state to
  `OUT`, with the number of steps this process ran; then train an
  uninterrupted reference run from scratch in the same process and save
  its final state beside it (`ref_*` entries). Several cases share one
  process to pay TensorFlow's start-up once.

Ops are deterministic (`keras.utils.set_random_seed` and
`tf.config.experimental.enable_op_determinism()`); the data are fixed and
not shuffled, so an epoch's batches do not depend on the history.
"""

import argparse
import os
import sys
import time

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
            teacher, student, teacher_layer="conv2", student_layer="conv2",
            mode="channel", adapter=True, alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    elif case == "ktan":
        distiller = tfkd.AdversarialDistiller(
            teacher, student, teacher_layer="conv2", student_layer="conv2",
            pretrain_steps=PRETRAIN_STEPS, discriminator_width=4,
            kd_weight=0.5)
        distiller.compile(
            optimizer=keras.optimizers.Adam(1e-2),
            discriminator_optimizer=keras.optimizers.Adam(1e-2))
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


class BlockAfter(keras.callbacks.Callback):
    """After batch `batch` of epoch `epoch`: signal, then wait to be killed."""

    def __init__(self, epoch, batch, ready):
        super().__init__()
        self.kill_epoch, self.kill_batch, self.ready = epoch, batch, ready
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.kill_epoch, self.kill_batch):
            with open(self.ready, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(600)  # Killed by the test long before this ends.


def run_until_killed(case, backup, kill_epoch, kill_batch, ready):
    distiller, x, y = build(case)
    callbacks = [keras.callbacks.BackupAndRestore(backup),
                 BlockAfter(kill_epoch, kill_batch, ready)]
    train(case, distiller, x, y, callbacks)
    print("training finished without being killed", file=sys.stderr)
    return 1


_REFERENCES = {}  # case -> final state of its uninterrupted run


def resume(case, backup, out):
    distiller, x, y = build(case)
    counter = CountSteps()
    callbacks = [keras.callbacks.BackupAndRestore(backup), counter]
    train(case, distiller, x, y, callbacks)
    arrays = {f"resumed_{i}": v for i, v in enumerate(state(distiller))}
    if case not in _REFERENCES:
        reference, x, y = build(case)
        train(case, reference, x, y, [])
        _REFERENCES[case] = state(reference)
    arrays.update({f"ref_{i}": v for i, v in enumerate(_REFERENCES[case])})
    arrays["steps_run"] = np.array(counter.steps)
    arrays["backup_left"] = np.array(os.path.exists(backup))
    np.savez(out, **arrays)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("run", "resume"))
    parser.add_argument("cases", nargs="+",
                        help="CASE=BACKUP_DIR (resume: CASE=BACKUP_DIR=OUT)")
    parser.add_argument("--kill-epoch", type=int)
    parser.add_argument("--kill-batch", type=int)
    parser.add_argument("--ready")
    args = parser.parse_args(argv)

    tf.config.experimental.enable_op_determinism()
    if args.mode == "run":
        (case, backup), = [c.split("=") for c in args.cases]
        return run_until_killed(case, backup, args.kill_epoch,
                                args.kill_batch, args.ready)
    for item in args.cases:
        case, backup, out = item.split("=")
        resume(case, backup, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
