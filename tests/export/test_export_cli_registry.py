"""`tfkd export DISTILLER.keras` works for every registry method.

Each method's distiller is built on one shared tiny teacher/student pair,
saved with `tfkd.saving.save`, and exported by the `tfkd` command in a fresh
process (as a user runs it: a program named `tfkd` defers tfkd's Keras
classes, so the command itself must register the terms a file names). One
process exports
them all, so the test costs a TensorFlow start-up plus about a second a
method.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

import _litert
import tfkd
from tfkd import testing
from tfkd.distillers import registry

from _distiller_cases import TAPS
from _distiller_cases import _FAST

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_exports_every_methods_saved_distiller(tmp_path):
    teacher = testing.tiny_conv_model("teacher", width=8, seed=0)
    student = testing.tiny_conv_model("student", width=4, seed=1)
    paths = {}
    for name in registry.method_names():
        spec = registry.get(name)
        distiller = registry.build(
            name, teacher, student,
            feature_layers=TAPS if spec.uses_features else None,
            **_FAST.get(name, {}))
        distiller.compile(optimizer="adam")
        paths[name] = tfkd.saving.save(distiller,
                                       str(tmp_path / f"{name}.keras"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    code = textwrap.dedent(f"""
        import json, sys
        from tfkd.cli import main  # as the `tfkd` console script does

        codes = {{}}
        for name, path in {paths!r}.items():
            codes[name] = main(
                ["export", path, "--out", path[:-6] + ".tflite",
                 "--num-samples", "16"])
        print("CODES", json.dumps(codes))
    """)
    # Named `tfkd`, as the console script: tfkd defers its Keras classes.
    script = tmp_path / "tfkd"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("CODES")]
    codes = json.loads(line[-1][len("CODES "):])
    failed = {n: c for n, c in codes.items() if c != 0}
    assert not failed, (failed, result.stderr[-3000:])
    assert sorted(codes) == registry.method_names()

    # Each file is the student alone: the student's logits, not the
    # teacher's (their widths differ, so their outputs do too).
    x, _ = testing.random_images(8)
    expected = np.asarray(student(x))
    for name, path in paths.items():
        tflite = path[:-6] + ".tflite"
        np.testing.assert_allclose(_litert.run(tflite, x), expected,
                                   atol=1e-4, err_msg=name)
        report = json.loads(open(path[:-6] + ".json").read())
        assert report["top1_agreement"] == 1.0, name
