"""Same seed, same numbers (on one machine): the demo's core run twice.

`docs/reproducibility.md` documents the two switches used here:
`keras.utils.set_random_seed` (which `tfkd.app.demo.run_demo` calls per seed)
and `tf.config.experimental.enable_op_determinism()`. Each run is its own
process, as two invocations of `tfkd demo` are; the two must agree bit for
bit: every per-epoch metric and test accuracy of the teacher, the student
alone and the distilled student, and the saved weights of the teacher and
the distilled student.
"""

import json
import os
import subprocess
import sys

_RUN = """
import hashlib
import os
import sys
import numpy as np
import tensorflow as tf
tf.config.experimental.enable_op_determinism()
from tfkd.app import demo
from tfkd import saving
out = sys.argv[1]
demo.run_demo(out=out, method="lp", epochs=2, teacher_epochs=2,
              seeds=[0], export=False, verbose=0)
for name in ("teacher_seed0.keras", "student_lp_seed0.keras"):
    model = saving.load(os.path.join(out, name), compile=False)
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    print("weights", name, digest.hexdigest())
"""


def _run_demo(out):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _RUN, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Held-out test accuracy") == 1, done.stdout
    hashes = dict(line.split()[1:] for line in done.stdout.splitlines()
                  if line.startswith("weights "))
    assert len(hashes) == 2, done.stdout
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        return json.load(f), hashes


def _numbers(result):
    """`{(model, seed): (test accuracy, {metric: per-epoch values})}`."""
    numbers = {}
    for run in result["runs"]:
        for model, value in run.items():
            if isinstance(value, dict) and "accuracy" in value:
                numbers[model, run.get("seed")] = (
                    value["accuracy"], value.get("history", {}))
    return numbers


def test_demo_core_is_reproducible(tmp_path):
    first, first_hashes = _run_demo(tmp_path / "a")
    second, second_hashes = _run_demo(tmp_path / "b")
    a, b = _numbers(first), _numbers(second)
    assert set(a) == set(b) and len(a) == 3  # teacher, alone, distilled
    for key in a:
        (accuracy_a, history_a), (accuracy_b, history_b) = a[key], b[key]
        assert history_a and set(history_a) == set(history_b), key
        # Bit for bit: JSON floats round-trip exactly.
        assert history_a == history_b, (key, history_a, history_b)
        assert accuracy_a == accuracy_b, key
    assert first_hashes == second_hashes

