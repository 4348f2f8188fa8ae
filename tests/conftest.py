"""Test configuration: two logical CPUs (for MirroredStrategy tests), quiet TF,
XLA compiled without LLVM's optimisation passes, and distinct collective
keys for every `MirroredStrategy` of the session."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# XLA's CPU back end without LLVM's optimisation passes: the tests compile
# hundreds of tiny XLA clusters and run each a few times, so compilation
# is most of their cost (about half of it is these passes). The arithmetic
# is the same IEEE float32; only the generated code is slower.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfkd import _compat  # noqa: E402

# Logical devices must be configured before TensorFlow initialises its
# runtime, i.e. at import time of the test session.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:
    pass  # Already initialised (e.g. imported by a plugin); tests adapt.


# Every strategy created in the test process gets collective keys of its
# own (pytest runs a whole file in one process; see the function).
_compat.isolate_collective_keys()


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from the float32 policy (a test may set another).

    No `clear_session()` here: it costs ~0.5 s a test and tests do not rely
    on Keras's global name counters.
    """
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.fixture(scope="module", autouse=True)
def _freeze_earlier_objects():
    """Moves what earlier test files left alive out of the collector's way.

    Keras and TensorFlow keep a few thousand objects alive per `fit`
    (function caches, not tfkd's), so a worker running half the suite
    holds millions; every full collection walked them all again (up to
    14 s each). With this (and three small cuts) the README's test
    command went from 1,092 s to 720 s. Frozen objects are never
    collected, so garbage is collected first.
    """
    gc.collect()
    gc.freeze()
    yield
