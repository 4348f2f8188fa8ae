"""A quiet TensorFlow start-up for the `tfkd` command.

`tfkd` sets `TF_CPP_MIN_LOG_LEVEL=2` (errors only) unless the environment
already sets it, before anything imports TensorFlow. That level only
filters what TensorFlow logs once absl logging is initialised. What its
shared libraries log while they load goes to stderr unfiltered (absl writes
every message logged before `absl::InitializeLog()` is called to stderr,
whatever the level). TensorFlow 2.21 on a CPU-only Linux machine prints
this twice on import:

    WARNING: All log messages before absl::InitializeLog() is called ...
    I0000 00:00:1796079926.510790 16192 port.cc:153] oneDNN custom ...
    I0000 00:00:1796079926.511307 16192 cudart_stub.cc:31] Could not ...

and, once it first lists its devices, an error (which level 2 keeps):

    E0000 00:00:1796079941.702973 16291 cuda_platform.cc:52] failed call
    to cuInit: INTERNAL: CUDA error: ... UNKNOWN ERROR (303)

No setting silences these alone: `TF_CPP_MIN_LOG_LEVEL=3` also hides real
errors, `CUDA_VISIBLE_DEVICES=""` still calls `cuInit`, and
`TF_ENABLE_ONEDNN_OPTS=0` changes the kernels. So `import_tensorflow`
imports TensorFlow and lists its devices with file descriptor 2 sent to a
temporary file, then writes back every line except the C++ log lines below
`TF_CPP_MIN_LOG_LEVEL` (as if the level had applied to them) and the
`cuInit` failure on a machine with no NVIDIA device (no `/dev/nvidia*`,
no WSL `/dev/dxg`), where it only says that there is no GPU. Everything
else (Python warnings, other errors, a traceback) is written back, in
order. `TF_CPP_MIN_LOG_LEVEL=0` shows everything.
"""

import contextlib
import glob
import os
import re
import sys
import tempfile

# `I0000 00:00:1796079926.510790   16192 port.cc:153] ...`: absl's prefix.
_RECORD = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_BANNER = ("WARNING: All log messages before absl::InitializeLog() is "
           "called are written to STDERR")
_CUINIT = re.compile(r"E\d{4} [\d:.]+\s+\d+ \S+:\d+\] failed call to cuInit")
_SEVERITIES = "IWEF"


def min_log_level(environ=None):
    """`TF_CPP_MIN_LOG_LEVEL` as an int (0 when unset or not a number)."""
    value = (os.environ if environ is None else environ).get(
        "TF_CPP_MIN_LOG_LEVEL", "0")
    try:
        return int(value)
    except ValueError:
        return 0


def has_nvidia_device():
    """Whether the machine exposes an NVIDIA GPU for `cuInit` to find."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def filter_startup_log(text, min_level, nvidia_device):
    """Drops TensorFlow's start-up noise from captured stderr text.

    Args:
        text: What was written to stderr while TensorFlow started.
        min_level: `TF_CPP_MIN_LOG_LEVEL`: absl records (and absl's banner,
            a warning) below it are dropped (0 = INFO, 1 = WARNING,
            2 = ERROR, 3 = FATAL).
        nvidia_device: Whether the machine has an NVIDIA device; without
            one, the `failed call to cuInit` error is dropped too.

    Returns:
        The text without those lines; other lines are kept in order.

    Example:

    >>> log = (_BANNER + "\\n"
    ...        "I0000 00:00:17.5   16 port.cc:153] oneDNN custom ops on.\\n"
    ...        "E0000 00:00:18.7   16 cuda_platform.cc:52] failed call to "
    ...        "cuInit: INTERNAL\\n"
    ...        "E0000 00:00:18.9   16 kernel.cc:9] real trouble\\n"
    ...        "UserWarning: from Python\\n")
    >>> print(filter_startup_log(log, 2, nvidia_device=False), end="")
    E0000 00:00:18.9   16 kernel.cc:9] real trouble
    UserWarning: from Python
    """
    if min_level <= 0:
        return text
    kept = []
    for line in text.splitlines(keepends=True):
        record = _RECORD.match(line)
        if record and _SEVERITIES.index(record.group(1)) < min_level:
            continue
        if line.rstrip("\r\n") == _BANNER:  # A warning, about the above.
            continue
        if not nvidia_device and _CUINIT.match(line):
            continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def filtered_stderr(min_level, nvidia_device):
    """Sends file descriptor 2 to a temporary file, then writes back the
    text that `filter_startup_log` keeps.

    Args:
        min_level: `TF_CPP_MIN_LOG_LEVEL`; 0 filters nothing.
        nvidia_device: Whether the machine has an NVIDIA device.

    Yields:
        Nothing; on exit (also by an exception) the kept text goes to
        `sys.stderr`.
    """
    try:
        saved = os.dup(2) if min_level > 0 else None
    except OSError:  # No file descriptor 2 (a detached process).
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            text = filter_startup_log(text, min_level, nvidia_device)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


def import_tensorflow():
    """Imports TensorFlow and lists its devices without start-up noise.

    Does nothing if TensorFlow is already imported. With
    `TF_CPP_MIN_LOG_LEVEL=0`, or if stderr cannot be redirected, nothing is
    filtered.
    """
    if "tensorflow" in sys.modules:
        return
    with filtered_stderr(min_log_level(), has_nvidia_device()):
        import tensorflow as tf

        # `cuInit` runs when the devices are first listed.
        tf.config.list_physical_devices()
