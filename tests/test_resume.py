"""`tfkd.callbacks.BackupAndRestore` resumes every kind of distiller.

Each case trains in a process of its own (forked by `_resume_worker.py`)
with a backup at the end of every epoch and is killed with SIGKILL at a
kill point that does not depend on timing; a new process resumes from the
backup. With deterministic ops, the resumed
run must end with bit for bit the state of an uninterrupted run
(`np.testing.assert_array_equal`): the distiller's weights (student,
adapters, regressor, discriminator, KTAN's step counter) and every
optimizer variable. The resumed process must also have run only the epochs
after the backup it restored, so the test cannot pass by silently training
from scratch.

Kill points:

- between two training steps, in the middle of an epoch: Hinton KD; a
  two-stage correlation distiller killed in stage 1 and in stage 2 (the
  stage is not saved: it follows from the restored epoch); KTAN killed in
  its adversarial phase, with both optimizers restored; CRD (its memory
  bank and the sampling of its negatives) and LP;
- inside a backup write (KD): just before it, half-way through the weights
  file, between the weights file and the metadata file, and while the
  metadata is being written. Keras's own `BackupAndRestore` writes both
  files in place and fails the last three (a truncated weights file, new
  weights beside the old epoch, an empty metadata file); tfkd's writes a
  new weights file, then replaces the metadata naming it atomically, so
  every one resumes from the last complete backup (epoch 1).

Backups are taken at epoch ends: Keras's `BackupAndRestore` with an integer
`save_freq` restores mid-epoch weights but replays the interrupted epoch
from its first batch, which is not an exact resume.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "_resume_worker.py")
TIMEOUT = 600  # seconds for every run, kill and resume (under load)
MAX_RUNNING = 3  # processes at a time

# name: (worker case, kill point (see `_resume_worker.py`), epoch of the
# backup left on disk (None: unreadable or either epoch), steps the resumed
# process may run: 4 per epoch after the backup it restored)
CASES = {
    # Killed between two training steps.
    "kd": ("kd", "step:1:1", 1, {8}),
    "two_stage_killed_in_stage1": ("two_stage", "step:1:1", 1, {12}),
    "two_stage_killed_in_stage2": ("two_stage", "step:3:1", 3, {4}),
    "ktan_killed_in_adversarial_phase": ("ktan", "step:2:1", 2, {4}),
    "crd_memory_bank": ("crd", "step:1:1", 1, {8}),
    "lp": ("lp", "step:1:1", 1, {8}),
    # Killed while writing the backup of epoch 2 (the backup of epoch 1 is
    # on disk): the resumed run must restore one of the two, whole.
    "kd_killed_before_backup_write": ("kd", "backup:2:start", 1, {8}),
    "kd_killed_writing_weights": ("kd", "backup:2:weights", 1, {8}),
    "kd_killed_between_weights_and_metadata": (
        "kd", "backup:2:weights_written", 1, {8}),
    "kd_killed_writing_metadata": ("kd", "backup:2:metadata", 1, {8}),
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


def _tail(path, lines=40):
    if not os.path.exists(path):
        return f"(no {path})"
    with open(path, errors="replace") as f:
        return "\n".join(f.read().splitlines()[-lines:])


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Runs, kills and resumes every case; returns `{name: results}`."""
    missing = _classes_missing()
    names = [n for n, c in CASES.items() if c[0] not in missing]
    tmp = tmp_path_factory.mktemp("resume")
    # One process imports TensorFlow and forks every run and resume (a new
    # process each) from there; see `_resume_worker.py`.
    process = subprocess.Popen(
        [sys.executable, WORKER, str(tmp), "--jobs", str(MAX_RUNNING),
         *[f"{n}={CASES[n][0]}={CASES[n][1]}" for n in names]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
        start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # It and every fork.
        process.wait()
        pytest.fail(f"runs and resumes not done within {TIMEOUT} s")
    assert process.returncode == 0, stderr.decode()[-3000:]
    with open(tmp / "report.json") as f:
        report = json.load(f)
    results = {}
    for name in names:
        case = CASES[name][0]
        if report[name]["run"] != "killed":
            pytest.fail(f"{name}: the run ended before its kill point "
                        f"({report[name]['run']}):\n"
                        f"{_tail(tmp / f'{name}.log')}")
        assert report[name]["resume"] == 0, _tail(tmp / f"{case}.log")
        with np.load(tmp / f"{name}.npz") as data:
            results[name] = dict(data)
        results[name]["backup"] = report[name].get("backup", "null")
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_resumed_run_matches_uninterrupted_run(resumed, name):
    case, _, backup_epoch, steps = CASES[name]
    if name not in resumed:
        pytest.skip(f"distiller of case {case!r} is not available: "
                    f"{_classes_missing()[case]}")
    result = resumed[name]
    if backup_epoch is not None:
        # The killed run left a backup of an earlier epoch ...
        assert json.loads(result["backup"])["epoch"] == backup_epoch
    # ... the new process restored it (or, killed in the middle of a
    # backup, one of the two whole backups) ...
    assert "error" not in result, str(result["error"])
    assert int(result["steps_run"]) in steps
    # ... removed it at the end ...
    assert not bool(result["backup_left"])
    # ... and ended exactly where an uninterrupted run ends.
    count = len([k for k in result if k.startswith("ref_")])
    assert count == len([k for k in result if k.startswith("resumed_")])
    assert count > 0
    for i in range(count):
        np.testing.assert_array_equal(
            result[f"resumed_{i}"], result[f"ref_{i}"],
            err_msg=f"{name}: variable {i} differs")
