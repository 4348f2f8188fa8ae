"""Same seed, same numbers (on one machine): the demo's core run twice.

`docs/reproducibility.md` documents the two switches used here:
`keras.utils.set_random_seed` (which `tfkd.demo.run_demo` calls per seed)
and `tf.config.experimental.enable_op_determinism()`.
"""

import numpy as np
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


def _numbers(result):
    """`{(model, seed): (test accuracy, {metric: per-epoch values})}`."""
    numbers = {}
    for run in result["runs"]:
        for model, value in run.items():
            if isinstance(value, dict) and "accuracy" in value:
                numbers[model, run.get("seed")] = (
                    value["accuracy"], value.get("history", {}))
    return numbers


def test_demo_core_is_reproducible(tmp_path, op_determinism, capsys):
    kwargs = dict(method="lp", epochs=2, teacher_epochs=2, seeds=[0],
                  export=False, verbose=0)
    first = demo.run_demo(out=str(tmp_path / "a"), **kwargs)
    second = demo.run_demo(out=str(tmp_path / "b"), **kwargs)
    a, b = _numbers(first), _numbers(second)
    assert set(a) == set(b) and len(a) == 3  # teacher, alone, distilled
    for key in a:
        (accuracy_a, history_a), (accuracy_b, history_b) = a[key], b[key]
        assert set(history_a) == set(history_b) and history_a, key
        for metric in history_a:
            np.testing.assert_allclose(history_a[metric], history_b[metric],
                                       rtol=1e-5, atol=1e-6,
                                       err_msg=f"{key} {metric}")
        # Within one of the 360 test images: oneDNN may sum in another
        # order after other work in the process, which can flip a near
        # tie between two logits.
        assert abs(accuracy_a - accuracy_b) <= 1 / 360 + 1e-9, key
    out = capsys.readouterr().out
    assert out.count("Held-out test accuracy") == 2
