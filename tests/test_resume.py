"""`keras.callbacks.BackupAndRestore` resumes every kind of distiller.

Each case trains in a subprocess (`_resume_worker.py`) with a backup at the
end of every epoch, blocks in the middle of a later epoch and is killed
with SIGKILL; a new process resumes from the backup. With deterministic
ops, the resumed run must end with exactly the state of an uninterrupted
run: the distiller's weights (student, adapters, regressor,
discriminator, KTAN's step counter) and every optimizer variable. The
resumed process must also have run only the epochs after the backup, so
the test cannot pass by silently training from scratch.

Cases: Hinton KD; a two-stage correlation distiller killed in stage 1 and
in stage 2 (the stage is not saved: it follows from the restored epoch);
KTAN killed in its adversarial phase, with both optimizers restored.

Keras's `BackupAndRestore` resumes at an epoch boundary: with an integer
`save_freq` it restores mid-epoch weights but replays the interrupted epoch
from its first batch, so exact resumes need backups at epoch ends (the
default `save_freq="epoch"`).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "_resume_worker.py")
KILL_TIMEOUT = 120  # seconds for a run to reach its kill point
RESUME_TIMEOUT = 240  # seconds for all resumes and references

# name: (worker case, epoch killed in, epoch of the backup left, steps the
# resumed process runs: 4 per epoch after the backup)
CASES = {
    "kd": ("kd", 1, 1, 8),
    "two_stage_killed_in_stage1": ("two_stage", 1, 1, 12),
    "two_stage_killed_in_stage2": ("two_stage", 3, 3, 4),
    "ktan_killed_in_adversarial_phase": ("ktan", 2, 2, 4),
}


def _classes_missing():
    import tfkd

    need = {"kd": "Distiller", "two_stage": "CorrelationDistiller",
            "ktan": "AdversarialDistiller"}
    return {case: name for case, name in need.items()
            if not hasattr(tfkd, name)}


def _env():
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _kill(process):
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Runs, kills and resumes every case; returns `{name: results}`."""
    missing = _classes_missing()
    names = [n for n, c in CASES.items() if c[0] not in missing]
    tmp = tmp_path_factory.mktemp("resume")
    runs = {}
    try:
        for name in names:
            case, kill_epoch = CASES[name][:2]
            ready = tmp / f"{name}.ready"
            runs[name] = (ready, subprocess.Popen(
                [sys.executable, WORKER, "run", f"{case}={tmp / name}",
                 "--kill-epoch", str(kill_epoch), "--kill-batch", "1",
                 "--ready", str(ready)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=_env(),
            ))
        deadline = time.monotonic() + KILL_TIMEOUT
        for name, (ready, process) in runs.items():
            while not ready.exists():
                if process.poll() is not None:
                    pytest.fail(f"{name}: the run ended before its kill "
                                f"point:\n{process.stderr.read().decode()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{name}: no kill point within "
                                f"{KILL_TIMEOUT} s")
                time.sleep(0.2)
            _kill(process)
            assert process.returncode == -signal.SIGKILL
    finally:
        for _, process in runs.values():
            _kill(process)

    backups = {}
    for name in names:
        with open(tmp / name / "training_metadata.json") as f:
            backups[name] = json.load(f)
    outputs = {name: tmp / f"{name}.npz" for name in names}
    args = [f"{CASES[n][0]}={tmp / n}={outputs[n]}" for n in names]
    process = subprocess.run(
        [sys.executable, WORKER, "resume", *args], capture_output=True,
        env=_env(), timeout=RESUME_TIMEOUT,
    )
    assert process.returncode == 0, process.stderr.decode()[-3000:]
    results = {}
    for name in names:
        with np.load(outputs[name]) as data:
            results[name] = dict(data)
        results[name]["backup"] = backups[name]
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_resumed_run_matches_uninterrupted_run(resumed, name):
    case, _, backup_epoch, steps = CASES[name]
    if name not in resumed:
        pytest.skip(f"distiller of case {case!r} is not available: "
                    f"{_classes_missing()[case]}")
    result = resumed[name]
    # The killed run left a backup of an earlier epoch ...
    assert result["backup"]["epoch"] == backup_epoch
    # ... the new process resumed from it (it ran only the later epochs)
    # and removed it at the end ...
    assert int(result["steps_run"]) == steps
    assert not bool(result["backup_left"])
    # ... and ended exactly where an uninterrupted run ends.
    count = len([k for k in result if k.startswith("ref_")])
    assert count == len([k for k in result if k.startswith("resumed_")])
    assert count > 0
    for i in range(count):
        np.testing.assert_allclose(
            result[f"resumed_{i}"], result[f"ref_{i}"], rtol=1e-6,
            atol=1e-6, err_msg=f"{name}: variable {i} differs")
