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


#: How closely the workers' weights follow the single process's.
WEIGHT_RTOL = 1e-5


def _loss_atol(distiller, x, values):
    """Absolute floor, per epoch, of a loss metric of a feature distiller,
    implied by the weights' tolerance.

    FitNets' metrics are squared differences of quantities that agree
    better and better as training goes: the hint loss `mean((r(f_s) -
    f_t)²)` in its first stage, and in its second a KD term whose KL
    between nearly equal distributions is, to second order, a squared
    difference of their logits. rtol cannot bound such a value `L`.
    Weights that agree to `WEIGHT_RTOL` move the student's outputs by about
    `WEIGHT_RTOL · s` (`s`: the RMS of what the student approaches, the
    teacher's tapped features or logits, whichever is larger), so by
    Cauchy-Schwarz `L` agrees to `2 · WEIGHT_RTOL · s · √L`. (Measured: a
    1.6e-5 relative difference of stage 2's 0.0033 on an unlucky ordering
    of the reductions, against rtol 1e-5 alone.) Logit-only distillers
    (KD) keep the plain rtol.
    """
    taps = distiller.teacher_taps  # [] for logit-only distillers
    if not taps:
        return 0.0
    teacher = distiller.teacher
    outputs = [teacher.get_layer(name).output for name in taps]
    model = keras.Model(teacher.inputs, outputs + list(teacher.outputs))
    scale = max(float(np.sqrt(np.mean(np.square(a))))
                for a in model.predict(x, verbose=0))
    return 2 * WEIGHT_RTOL * scale * np.sqrt(np.abs(np.asarray(values)))


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
                    got[key], value, rtol=WEIGHT_RTOL, atol=1e-5,
                    err_msg=f"worker {index}, weight {key}")
            for name, history in histories.items():
                for metric, values in history.items():
                    floors = _loss_atol(distillers[name], x, values)
                    for epoch, value in enumerate(values):
                        np.testing.assert_allclose(
                            got[f"history/{name}/{metric}"][epoch], value,
                            rtol=WEIGHT_RTOL,
                            atol=float(np.broadcast_to(floors,
                                                       len(values))[epoch]),
                            err_msg=f"worker {index}, {name} {metric}, "
                                    f"epoch {epoch}")
    # Training happened: the weights moved away from the initial ones.
    for name in ("kd", "fitnet"):
        assert any(not np.array_equal(expected[k], initial[k])
                   for k in expected if k.startswith(f"{name}/"))
