"""Atomic writes (`tfkd.io`, `tfkd.saving.save`): a kill or a full disk
leaves the old file or the complete new one, never a truncated file; a
failed write says so and leaves no temporary file; new files get the
umask's mode; temporary files of killed writers are cleaned up."""

import os
import re
import resource
import signal
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest

import tfkd
from tfkd import io as tfkd_io
from tfkd import testing

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_atomic_save_worker.py")
BYTES = 4 << 20  # The worker's payload (see _atomic_save_worker.py).


def _temp_files(directory):
    return sorted(n for n in os.listdir(directory)
                  if tfkd_io.is_temp_file(n))


class _Writers:
    """A writer subprocess (see _atomic_save_worker.py) and what it printed:
    per writer, its pid, the generations it completed and whether it has
    been reaped."""

    def __init__(self, directory, *args):
        self.pids, self.generations = {}, {}
        self.started, self.reaped, self.ready = {}, {}, {}
        self._lock = threading.Lock()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        # Beside the directory, not in it (its listing is checked); a file,
        # not a pipe nobody reads, which TensorFlow's logs could fill.
        self.stderr_path = f"{directory}.stderr"
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, WORKER, *args], stdout=subprocess.PIPE,
                stderr=stderr, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _event(self, table, index):
        with self._lock:
            return table.setdefault(index, threading.Event())

    def _read(self):
        for line in self.process.stdout:
            kind, index, *value = line.split()
            index = int(index)
            if kind == "pid":
                self.pids[index] = int(value[0])
            elif kind == "gen":
                self.generations.setdefault(index, []).append(int(value[0]))
                self._event(self.started, index).set()
            elif kind == "dead":
                self._event(self.reaped, index).set()
            elif kind == "ready":
                self._event(self.ready, index).set()

    def _fail(self, what, timeout):
        self.process.kill()
        self.process.wait()
        with open(self.stderr_path) as f:
            err = f.read()
        pytest.fail(f"{what} within {timeout} s:\n{err[-3000:]}")

    def wait_for_kill_point(self, index, timeout):
        if not self._event(self.ready, index).wait(timeout):
            self._fail(f"writer {index} reached no kill point", timeout)

    def kill(self, index):
        """SIGKILLs writer `index`; returns the last generation it printed."""
        if index in self.pids:  # A forked writer: its parent reaps it.
            os.kill(self.pids[index], signal.SIGKILL)
            if not self._event(self.reaped, index).wait(30):
                self._fail(f"writer {index} was not reaped", 30)
        else:
            self.process.kill()
            self.process.wait()
            self._reader.join(timeout=10)
        return self.generations[index][-1]

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


#: Fixed kill points of a write (see _atomic_save_worker.py) and the
#: generation the target must hold after a kill there (generation 1 was
#: written completely, generation 2 is interrupted), and whether the
#: killed write leaves a temporary file behind.
KILL_POINTS = {
    "write": (1, True),       # half-written temporary file
    "fsynced": (1, True),     # complete temporary file, not renamed
    "replaced": (2, False),   # renamed, folder not yet fsync'ed
}


def _check_clean(directory, left_temp):
    assert bool(_temp_files(directory)) == left_temp, _temp_files(directory)
    tfkd_io.remove_stale_temp_files(directory)
    assert _temp_files(directory) == []


def test_kill_during_keras_save_leaves_a_complete_model(tmp_path):
    """Writers save a 13 MB model (every weight equal to the generation
    number) and are SIGKILLed at fixed points of their second save: the
    file left is a complete model of the first or second generation."""
    points = list(KILL_POINTS)
    writers = _Writers(tmp_path / "models", "keras", str(tmp_path / "models"),
                       str(len(points)), "--kill-at=" + ",".join(points))
    try:
        for index, point in enumerate(points):
            writers.wait_for_kill_point(index, timeout=120)
            assert writers.kill(index) == 1
            expected, left_temp = KILL_POINTS[point]
            directory = tmp_path / "models" / str(index)
            model = tfkd.load(directory / "model.keras", compile=False)
            values = {float(v) for w in model.get_weights()
                      for v in np.unique(w)}
            assert values == {expected}, (point, sorted(values)[:5])
            _check_clean(directory, left_temp)
    finally:
        writers.close()


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_during_atomic_write_leaves_a_complete_file(tmp_path, point):
    """A process writing 4 MB files, SIGKILLed at a fixed point of its
    second write: the file is complete, old or new content as the point
    implies."""
    writer = _Writers(tmp_path, "bytes", str(tmp_path), f"--kill-at={point}")
    try:
        writer.wait_for_kill_point(0, timeout=60)
        assert writer.kill(0) == 1
    finally:
        writer.close()
    expected, left_temp = KILL_POINTS[point]
    data = (tmp_path / "data.bin").read_bytes()
    assert int.from_bytes(data[:8], "little") == expected
    assert len(data) == 8 + BYTES
    assert set(data[8:]) == {expected % 256}
    _check_clean(tmp_path, left_temp)


def test_kill_points_catch_a_direct_writer(tmp_path):
    """The same kill (half-way through the second write) against a writer
    that writes in place: the file is truncated, which the checks above
    catch."""
    writer = _Writers(tmp_path, "bytes", str(tmp_path), "--kill-at=write",
                      "--direct")
    try:
        writer.wait_for_kill_point(0, timeout=60)
        writer.kill(0)
    finally:
        writer.close()
    assert len((tmp_path / "data.bin").read_bytes()) < 8 + BYTES


@pytest.fixture
def file_size_limit():
    """Sets RLIMIT_FSIZE (SIGXFSZ ignored, so a write fails with EFBIG
    instead of killing the process), as a full disk would stop a write."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(size):
        """Limits file sizes to `size` bytes; `None` restores the limit."""
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (soft if size is None else size, hard))

    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_full_disk_keeps_the_old_file(tmp_path, file_size_limit):
    small = testing.tiny_conv_model("small", width=2)
    path = str(tmp_path / "model.keras")
    tfkd.saving.save(small, path)
    old = open(path, "rb").read()
    text_path = str(tmp_path / "results.json")
    tfkd_io.write_json(text_path, {"old": True})

    inputs = keras.Input((256,))
    big = keras.Model(inputs, keras.layers.Dense(1024)(inputs))  # 1 MB
    file_size_limit(len(old) + 4096)
    with pytest.raises(OSError) as info:
        tfkd.saving.save(big, path)
    with pytest.raises(OSError) as text_info:
        tfkd_io.write_text(text_path, "x" * (len(old) + 8192))
    file_size_limit(None)

    for error, target in ((info.value, path), (text_info.value, text_path)):
        message = str(error)
        assert repr(target) in message, message
        assert "File too large" in message and "unchanged" in message
        assert "Free disk space" in message
    assert open(path, "rb").read() == old
    assert tfkd.load(path).name == "small"
    assert open(text_path).read() == '{\n  "old": true\n}\n'
    assert _temp_files(tmp_path) == []


def test_full_disk_in_the_cli_is_one_line(tmp_path, file_size_limit, capsys):
    from tfkd import cli

    run = {"seed": 0, "method": "kd", "seconds": 1.0,
           "teacher": {"accuracy": 0.97, "params": 600},
           "scratch": {"accuracy": 0.91, "params": 60},
           "distilled": {"accuracy": 0.94, "params": 60}}
    tfkd_io.write_json(tmp_path / "results.json", {"runs": [run]})
    file_size_limit(64)  # The summary table is longer.
    code = cli.main(["report", str(tmp_path), "--no-plots"])
    file_size_limit(None)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert re.match(r"tfkd report: error: \[Errno 27\] Could not write "
                    r"'.*summary\.md': File too large\. The file is "
                    r"unchanged", err), err
    assert not (tmp_path / "summary.md").exists()
    assert _temp_files(tmp_path) == []


def test_keras_own_save_on_a_full_disk_destroys_the_old_file(
        tmp_path, file_size_limit):
    """Why the docs save students with `tfkd.saving.save`: Keras's own
    `model.save` writes in place, so a save that fails half-way leaves no
    loadable model where the previous good one was."""
    small = testing.tiny_conv_model("small", width=2)
    path = str(tmp_path / "model.keras")
    small.save(path)
    inputs = keras.Input((256,))
    big = keras.Model(inputs, keras.layers.Dense(1024)(inputs))  # 1 MB
    file_size_limit(os.path.getsize(path) + 4096)
    with pytest.raises(OSError):
        big.save(path)
    file_size_limit(None)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        tfkd.load(path)


def test_failed_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with tfkd_io.atomic_write(path, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    with pytest.raises(RuntimeError, match="Nothing was written"):
        with tfkd_io.atomic_path(path):
            pass
    assert path.read_text() == "old"
    assert _temp_files(tmp_path) == []


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def test_new_files_follow_the_umask(tmp_path, umask):
    from tfkd.app import plots

    model = testing.tiny_conv_model("student", width=2)
    for mask, expected in ((0o022, 0o644), (0o027, 0o640)):
        umask(mask)
        folder = tmp_path / oct(mask)
        folder.mkdir()
        written = [
            tfkd.saving.save(model, folder / "student.keras"),
            tfkd_io.write_text(folder / "summary.md", "| a |\n"),
            tfkd_io.write_json(folder / "run.json", {"a": 1}),
        ]
        plots.plot_history({"loss": [1.0, 0.5]}, folder / "curves.png")
        written.append(folder / "curves.png")
        for path in written:
            mode = os.stat(path).st_mode & 0o777
            assert mode == expected, (path, oct(mode), oct(mask))
    # `to_tflite` used to write 0o600 (a `mkstemp` file renamed into place).
    umask(0o022)
    path = tmp_path / "student.tflite"
    tfkd.export.to_tflite(model, path, verify=False, latency_runs=0)
    assert os.stat(path).st_mode & 0o777 == 0o644
    # A replaced file keeps its mode, as `open(path, "w")` would.
    path = tmp_path / "private.json"
    tfkd_io.write_json(path, {"a": 1})
    os.chmod(path, 0o600)
    tfkd_io.write_json(path, {"a": 2})
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_stale_temp_files_are_removed(tmp_path):
    """A killed writer's temporary file goes at the next write into its
    directory; those of live writers and of other hosts stay."""
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()  # Reaped: its pid no longer runs.
    host = tfkd_io._HOST_ID
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8

    def temp(name, host, pid):
        return tmp_path / f".{name}.tfkd-tmp-{host}-{pid}-0a1b2c3d.keras"

    stale = temp("model.keras", host, exited.pid)
    live = temp("model.keras", host, os.getpid())
    init = temp("notes", host, 1)  # pid 1 always runs.
    remote = temp("model.keras", other_host, exited.pid)
    unrelated = tmp_path / ".model.keras.tmp"
    for p in (stale, live, init, remote, unrelated):
        p.write_bytes(b"partial")
    assert tfkd_io.is_temp_file(stale) and tfkd_io.is_temp_file(remote)
    assert not tfkd_io.is_temp_file(unrelated)
    tfkd_io.write_text(tmp_path / "summary.md", "table\n")
    assert not stale.exists()
    for kept in (live, init, remote, unrelated):
        assert kept.exists(), kept
    assert tfkd_io.remove_stale_temp_files(tmp_path) == []


def test_symlink_is_written_through(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "run.json").write_text("{}")
    link = tmp_path / "run.json"
    link.symlink_to(real / "run.json")
    tfkd_io.write_json(link, {"a": 1})
    assert link.is_symlink()
    assert (real / "run.json").read_text() == '{\n  "a": 1\n}\n'
    assert _temp_files(real) == [] and _temp_files(tmp_path) == []


def test_save_round_trip_and_temp_name(tmp_path, monkeypatch):
    model = testing.tiny_conv_model("student", width=2)
    seen = []
    original = keras.Model.save

    def spy(self, filepath, *args, **kwargs):
        seen.append(os.fspath(filepath))
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", spy)
    path = tfkd.saving.save(model, tmp_path / "student.keras")
    assert path == str(tmp_path / "student.keras")
    # Keras wrote a hidden, recognisable temporary file of the same format.
    (written,) = seen
    assert os.path.dirname(written) == str(tmp_path)
    name = os.path.basename(written)
    assert name.startswith(".student.keras.tfkd-tmp-")
    assert name.endswith(".keras") and tfkd_io.is_temp_file(name)
    assert os.listdir(tmp_path) == ["student.keras"]
    assert tfkd.load(path).name == "student"


# ----------------------------------------------------------------------
# Durability order, checked directly: the temporary file's data reach the
# disk before it is renamed, and the rename before the writer returns.


def _record_durability(monkeypatch):
    """Records `("fsync", path)` and `("replace", source, target)` in call
    order (the path of an fsync'ed descriptor read from /proc)."""
    calls = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        calls.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recording_replace(source, target, **kwargs):
        calls.append(("replace", os.path.realpath(source),
                      os.path.realpath(target)))
        return replace(source, target, **kwargs)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    return calls


def _write_with(writer, path):
    if writer == "atomic_write":
        with tfkd_io.atomic_write(path) as f:
            f.write(b"data")
    elif writer == "atomic_path":
        with tfkd_io.atomic_path(path, suffix=".txt") as tmp:
            with open(tmp, "w") as f:
                f.write("data")
    elif writer == "write_text":
        tfkd_io.write_text(path, "data")
    elif writer == "write_json":
        tfkd_io.write_json(path, {"data": 1})
    elif writer == "save_keras_model":
        tfkd_io.save_keras_model(
            testing.tiny_conv_model("student", width=2), path)
    else:  # The public form.
        tfkd.saving.save(testing.tiny_conv_model("student", width=2), path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                    reason="reads descriptors' paths from /proc")
@pytest.mark.parametrize("writer", ["atomic_write", "atomic_path",
                                    "write_text", "write_json",
                                    "save_keras_model", "saving.save"])
def test_fsync_then_replace_then_fsync_of_the_folder(tmp_path, monkeypatch,
                                                     writer):
    path = str(tmp_path / ("out.keras" if "save" in writer else "out.txt"))
    calls = _record_durability(monkeypatch)
    _write_with(writer, path)
    replaces = [i for i, c in enumerate(calls) if c[0] == "replace"]
    assert len(replaces) == 1, calls
    index = replaces[0]
    _, source, target = calls[index]
    assert target == os.path.realpath(path)
    assert tfkd_io.is_temp_file(os.path.basename(source))
    # The temporary file is fsync'ed before the rename ...
    assert ("fsync", source) in calls[:index], calls
    # ... and the folder after it (making the rename itself durable).
    assert ("fsync", os.path.realpath(tmp_path)) in calls[index + 1:], calls
