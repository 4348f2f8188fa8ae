"""Same seed, same numbers (on one machine): the demo's core run twice.

`docs/reproducibility.md` documents the two switches used here:
`keras.utils.set_random_seed` (which `tfkd.demo.run_demo` calls per seed)
and `tf.config.experimental.enable_op_determinism()`.
"""

import pytest
import tensorflow as tf

from tfkd import demo


@pytest.fixture
def op_determinism():
    """Deterministic ops for one test, switched off again afterwards (so
    the rest of this worker's tests run as users' code does)."""
    from tensorflow.python.framework import config

    was_enabled = config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was_enabled:
        config.disable_op_determinism()


def _without_timing(result):
    runs = [{k: v for k, v in run.items() if k != "seconds"}
            for run in result["runs"]]
    return {"runs": runs, "summary": result["summary"]}


def test_demo_core_is_reproducible(tmp_path, op_determinism, capsys):
    kwargs = dict(method="kd", epochs=1, teacher_epochs=1, seeds=[0],
                  export=False, verbose=0)
    first = demo.run_demo(out=str(tmp_path / "a"), **kwargs)
    second = demo.run_demo(out=str(tmp_path / "b"), **kwargs)
    # Wall-clock time is the only entry allowed to differ.
    assert set(first["runs"][0]) - set(_without_timing(first)["runs"][0]) \
        == {"seconds"}
    assert _without_timing(first) == _without_timing(second)
    out = capsys.readouterr().out
    assert out.count("Held-out test accuracy") == 2
