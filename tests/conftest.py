"""Test configuration: two logical CPUs (for MirroredStrategy tests), quiet TF,
and distinct collective keys for every `MirroredStrategy` of the session."""

import functools
import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Logical devices must be configured before TensorFlow initialises its
# runtime, i.e. at import time of the test session.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
except RuntimeError:
    pass  # Already initialised (e.g. imported by a plugin); tests adapt.


def _own_collective_keys(cls, bases=itertools.count(1000)):
    """Gives every `cls` strategy created in this process its own keys.

    Every `MirroredStrategy` numbers its collective ops from the same keys,
    so a second strategy on the same devices in one process reuses instance
    keys whose shapes TensorFlow has cached, and its first all-reduce of
    differently shaped gradients aborts with "Shape mismatch in the
    collective instance 102" (tensorflow/tensorflow#62790); pytest runs
    every test file in one process. `tests/_distiller_cases.py:
    mirrored_strategy` sets a key base on the class for the strategies it
    makes (bases 1, 2, ... x 100,000); every other strategy, e.g. a test's
    plain `tf.distribute.MirroredStrategy(devices)`, gets a base of its own
    here (from 1,000 x 100,000 on). Real programs create one strategy per
    process and need none of this.
    """
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if type(self)._collective_key_base == 0:  # Not set by the helper.
            self._collective_key_base = 100_000 * next(bases)
        init(self, *args, **kwargs)

    cls.__init__ = __init__


_own_collective_keys(tf.distribute.MirroredStrategy)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from the float32 policy (a test may set another).

    No `clear_session()` here: it costs ~0.5 s a test and tests do not rely
    on Keras's global name counters.
    """
    keras.mixed_precision.set_dtype_policy("float32")
    yield
    keras.mixed_precision.set_dtype_policy("float32")
