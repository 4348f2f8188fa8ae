"""One worker of the multi-worker test (`tests/distillers/test_multiworker.py`).

Run as `python tests/_multiworker_worker.py INIT.npz OUT.npz` with
`TF_CONFIG` set: builds a `tf.distribute.MultiWorkerMirroredStrategy` from
it, builds KD and FitNets distillers inside its scope, loads the initial
weights the test wrote, trains each for `EPOCHS` epochs on its shard of
the data and writes the final weights and per-epoch losses.

Two ways of feeding a global batch of `GLOBAL_BATCH` examples per step to
`W` workers are exercised, both giving worker `i` the rows
`[k·G + i·G/W, k·G + (i+1)·G/W)` of global step `k` (so together they see
exactly the single-process batch `k`):

- KD: every worker builds the *same* dataset batched with the global batch,
  with `AutoShardPolicy.DATA`; `fit` distributes it, splitting each global
  batch into per-worker batches and giving each worker its own.
- FitNets: `strategy.distribute_datasets_from_function`, where each worker
  builds per-worker batches (`input_context.get_per_replica_batch_size`)
  and keeps every `W`-th of them (`shard(W, input_pipeline_id)`).

The same module builds the models for the single-process reference run,
so both sides construct identical architectures.
"""

import os
import sys
import time

_START = time.monotonic()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

GLOBAL_BATCH = 32
EPOCHS = 2
NUM_EXAMPLES = 2 * GLOBAL_BATCH
LEARNING_RATE = 0.01


def data():
    """The fixed training data: `(x, y)` NumPy arrays."""
    from tfkd import testing

    return testing.random_images(NUM_EXAMPLES, seed=7)


def build_distillers():
    """`{"kd": Distiller, "fitnet": FitNetDistiller}` on tiny seeded models,
    compiled with SGD. Call inside the strategy's scope."""
    import keras

    from tfkd import testing
    from tfkd.distillers.base import Distiller
    from tfkd.distillers.fitnet import FitNetDistiller

    distillers = {}
    for name in ("kd", "fitnet"):
        teacher = testing.tiny_conv_model(f"{name}_teacher", width=8, seed=1)
        student = testing.tiny_conv_model(f"{name}_student", width=4,
                                          seed=11)
        if name == "kd":
            distiller = Distiller(teacher, student, alpha=0.5,
                                  temperature=4.0)
        else:
            distiller = FitNetDistiller(teacher, student,
                                        teacher_layer_name="conv1",
                                        student_layer_name="conv1", alpha=0.5)
        distiller.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
        distillers[name] = distiller
    return distillers


def global_dataset(x, y):
    """The KD input: global batches, sharded by data across workers."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def per_worker_dataset(strategy, x, y):
    """The FitNets input: each worker builds its own per-worker batches."""
    import tensorflow as tf

    def dataset_fn(input_context):
        batch = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
        return dataset.shard(input_context.num_input_pipelines,
                             input_context.input_pipeline_id)

    return strategy.distribute_datasets_from_function(dataset_fn)


def flat_weights(distillers):
    """`{"name/i": array}` for every weight of every distiller, in order."""
    return {
        f"{name}/{i}": np.array(w)
        for name, d in distillers.items() for i, w in enumerate(d.weights)
    }


def load_weights(distillers, arrays):
    for name, d in distillers.items():
        d.set_weights([arrays[f"{name}/{i}"] for i in range(len(d.weights))])


def main(init_path, out_path):
    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()  # Full tracebacks in logs.

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = data()
    with strategy.scope():
        distillers = build_distillers()
    with np.load(init_path) as arrays:
        load_weights(distillers, arrays)
    steps = NUM_EXAMPLES // GLOBAL_BATCH
    histories = {
        "kd": distillers["kd"].fit(
            global_dataset(x, y), epochs=EPOCHS, verbose=0),
        "fitnet": distillers["fitnet"].fit(
            per_worker_dataset(strategy, x, y), epochs=EPOCHS,
            steps_per_epoch=steps, verbose=0),
    }
    out = flat_weights(distillers)
    for name, history in histories.items():
        for metric, values in history.history.items():
            out[f"history/{name}/{metric}"] = np.array(values)
    out["replicas"] = np.array(strategy.num_replicas_in_sync)
    np.savez(out_path, **out)
    print(f"worker done: {time.monotonic() - _START:.1f} s wall, "
          f"{time.process_time():.1f} s CPU", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
