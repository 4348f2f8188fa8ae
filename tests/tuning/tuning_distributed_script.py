"""One process of the distributed-tuning test (chief or worker).

Run by `test_tuning_distributed.py` with Keras Tuner's environment
variables set (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`):

    python tuning_distributed_script.py TEACHER.keras DIRECTORY BARRIER_DIR

The chief serves the oracle and, when the search ends, prints one JSON line
with the trials it recorded. Each worker waits until every worker is ready
(so both get trials), then runs trials and tags each with its index through
a `worker` metric.
"""

import json
import os
import sys
import time
import types

NUM_WORKERS = 2
MAX_TRIALS = 2  # One per worker: the barrier makes both ask at once.


def main(teacher_path, directory, barrier_dir):
    import keras

    from tfkd.data import digits_arrays
    from tfkd.tuning import build_tuner
    from tfkd.tuning import digits_hypermodel

    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    hypermodel = digits_hypermodel(teacher_path, method="kd",
                                   input_shape=(8, 8, 1), seed=0)
    tuner = build_tuner(hypermodel, "random", max_trials=MAX_TRIALS, seed=0,
                        directory=directory, project_name="distributed")
    if tuner_id == "chief":
        # The chief polls every 20 s for workers still running once the
        # search has ended; poll faster so the test does not idle.
        from keras_tuner.src.distribute import oracle_chief

        oracle_chief.time = types.SimpleNamespace(
            sleep=lambda seconds: time.sleep(min(seconds, 0.5)))
        tuner.search()  # Serves the oracle until every worker is done.
        trials = [{
            "trial_id": t.trial_id,
            "status": t.status,
            "score": t.score,
            "worker": (t.metrics.get_last_value("worker")
                       if t.metrics.exists("worker") else None),
        } for t in tuner.oracle.trials.values()]
        print("RESULT " + json.dumps({"trials": trials,
                                      "project_dir": tuner.project_dir}))
        return

    index = int(tuner_id.replace("tuner", ""))

    class TagWorker(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["worker"] = float(index)

    splits = digits_arrays(image_size=8, seed=0)
    x, y = splits.train
    validation = (splits.validation[0][:64], splits.validation[1][:64])
    # Barrier: start searching only when every worker is ready.
    open(os.path.join(barrier_dir, f"ready_{index}"), "w").close()
    deadline = time.time() + 120
    while len(os.listdir(barrier_dir)) < NUM_WORKERS:
        if time.time() > deadline:
            raise TimeoutError("the other worker never became ready")
        time.sleep(0.2)
    tuner.search(x[:128], y[:128], batch_size=64, epochs=1,
                 validation_data=validation, callbacks=[TagWorker()],
                 verbose=0)
    print(f"worker {index} done")


if __name__ == "__main__":
    main(*sys.argv[1:4])
