"""Distributed tuning: Keras Tuner's chief/worker mode with tfkd hypermodels.

One chief (the oracle, over gRPC on 127.0.0.1) and two workers run as local
subprocesses of `tuning_distributed_script.py`; the chief's results must show
trials completed by both workers, with student-only checkpoints. The
oracle's port stays reserved by the test until the processes end
(`_ports.py`), so no other process can take it before the chief binds it.
"""

import json
import os
import subprocess
import sys
import time

import tfkd
from _ports import reserved_ports

SCRIPT = os.path.join(os.path.dirname(__file__),
                      "tuning_distributed_script.py")
TIMEOUT = 420  # Seconds for the whole search (three TensorFlow processes).


def _env(tuner_id, port):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy",
                                "grpc_proxy")}
    env.update({
        "KERASTUNER_TUNER_ID": tuner_id,
        "KERASTUNER_ORACLE_IP": "127.0.0.1",
        "KERASTUNER_ORACLE_PORT": str(port),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def test_chief_and_two_workers(tmp_path):
    teacher = tfkd.models.digits_teacher(10, (8, 8, 1))
    teacher_path = str(tmp_path / "teacher.keras")
    teacher.save(teacher_path)
    directory = str(tmp_path / "tuner")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    args = [sys.executable, SCRIPT, teacher_path, directory, str(barrier)]
    processes, outputs, timed_out = {}, {}, None
    deadline = time.monotonic() + TIMEOUT
    with reserved_ports(1) as (port,):
        try:
            for tuner_id in ("chief", "tuner0", "tuner1"):
                processes[tuner_id] = subprocess.Popen(
                    args, env=_env(tuner_id, port), stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True,
                )
            # Workers first: the chief exits only after both are done.
            for tuner_id in ("tuner0", "tuner1", "chief"):
                process = processes[tuner_id]
                try:
                    out, err = process.communicate(
                        timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    timed_out = tuner_id
                    break
                outputs[tuner_id] = (process.returncode, out, err)
        finally:
            for tuner_id, process in processes.items():
                if process.poll() is None:
                    process.kill()
                if tuner_id not in outputs:
                    out, err = process.communicate()
                    outputs[tuner_id] = (process.returncode, out, err)
    report = "\n".join(
        f"--- {tuner_id} (exit {code})\n{out[-2000:]}\n{err[-3000:]}"
        for tuner_id, (code, out, err) in outputs.items())
    assert timed_out is None, (
        f"{timed_out} still running after {TIMEOUT} s:\n{report}")
    for tuner_id, (code, _, _) in outputs.items():
        assert code == 0, f"{tuner_id} failed:\n{report}"
    line = next(l for l in outputs["chief"][1].splitlines()
                if l.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    completed = [t for t in result["trials"] if t["status"] == "COMPLETED"]
    assert len(completed) == 2
    assert {t["worker"] for t in completed} == {0.0, 1.0}
    # Student-only checkpoints, written by the workers into the shared
    # project directory, together smaller than the teacher alone.
    files = [os.path.join(root, name)
             for root, _, names in os.walk(result["project_dir"])
             for name in names]
    assert sum(f.endswith(".weights.h5") for f in files) == 2
    assert sum(os.path.getsize(f) for f in files) < os.path.getsize(
        teacher_path)
