"""Real multi-worker training: two worker processes on 127.0.0.1.

The test writes initial weights, starts two `tests/_multiworker_worker.py`
processes with a `TF_CONFIG` naming two loopback ports that the test holds
until the workers have finished (`_ports.py`: no other process can take
them between their choice and the workers' bind), and each
worker trains KD and FitNets under `tf.distribute.MultiWorkerMirroredStrategy`
(one CPU replica per worker, global batch 32, 16 per worker). Both workers'
final weights and per-epoch losses must equal a single-process run with
the same global batch, from the same initial weights. Processes are bounded
by a timeout and killed in `finally`.
"""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import _multiworker_worker as worker
from _ports import reserved_ports

WORKERS = 2
TIMEOUT_S = 120


def _reference_distillers():
    keras.utils.set_random_seed(0)
    distillers = worker.build_distillers()
    return distillers, worker.flat_weights(distillers)


def _train_reference(distillers, x, y):
    histories = {}
    for name, distiller in distillers.items():
        histories[name] = distiller.fit(
            x, y, batch_size=worker.GLOBAL_BATCH, epochs=worker.EPOCHS,
            shuffle=False, verbose=0).history
    return worker.flat_weights(distillers), histories


def _start_workers(tmp_path, init_path, ports):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = os.path.join(os.path.dirname(__file__), os.pardir,
                          "_multiworker_worker.py")
    procs, logs, outs = [], [], []
    for index in range(WORKERS):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})
        env["CUDA_VISIBLE_DEVICES"] = ""
        out = tmp_path / f"worker{index}.npz"
        log = open(tmp_path / f"worker{index}.log", "wb")
        logs.append(log)
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, script, str(init_path), str(out)],
            env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs, logs, outs


def _wait(procs, tmp_path, deadline):
    for index, proc in enumerate(procs):
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {index} did not finish within {TIMEOUT_S} "
                        f"s; log:\n{_tail(tmp_path, index)}")
        assert code == 0, (
            f"worker {index} exited with {code}; log:\n"
            f"{_tail(tmp_path, index)}")


def _tail(tmp_path, index, lines=40):
    text = (tmp_path / f"worker{index}.log").read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def test_two_workers_match_single_process(tmp_path):
    x, y = worker.data()
    distillers, initial = _reference_distillers()
    init_path = tmp_path / "init.npz"
    np.savez(init_path, **initial)
    deadline = time.monotonic() + TIMEOUT_S
    procs, logs, outs = [], [], []
    try:
        with reserved_ports(WORKERS) as ports:
            procs, logs, outs = _start_workers(tmp_path, init_path, ports)
            # The single-process reference trains while the workers start.
            expected, histories = _train_reference(distillers, x, y)
            _wait(procs, tmp_path, deadline)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for log in logs:
            log.close()
    for index, out in enumerate(outs):
        with np.load(out) as got:
            assert int(got["replicas"]) == WORKERS
            for key, value in expected.items():
                np.testing.assert_allclose(
                    got[key], value, rtol=1e-5, atol=1e-5,
                    err_msg=f"worker {index}, weight {key}")
            for name, history in histories.items():
                for metric, values in history.items():
                    np.testing.assert_allclose(
                        got[f"history/{name}/{metric}"], values, rtol=1e-5,
                        err_msg=f"worker {index}, {name} {metric}")
    # Training happened: the weights moved away from the initial ones.
    for name in ("kd", "fitnet"):
        assert any(not np.array_equal(expected[k], initial[k])
                   for k in expected if k.startswith(f"{name}/"))
