"""Atomic file writes: a kill or a full disk never leaves a half-written file.

Every file tfkd writes (`.keras` models, `.tflite` files, tuner signatures,
JSON / CSV / Markdown reports, PNG plots) goes through this module. The new
content is written to a temporary file in the target's directory, flushed
and `fsync`ed, then renamed over the target with `os.replace`, which POSIX
makes atomic. A process killed at any moment, or a write that fails (a full
disk, a file-size limit, a permission error), therefore leaves the target
as it was -- the old complete file, or no file -- never a truncated one. On
failure the temporary file is removed and an `OSError` names the target.

New files get the mode of any normally created file (`0o666` minus the
process's umask, e.g. `0o644` under umask `022`); a replaced file keeps its
mode.

Temporary files are named
`.<name>.tfkd-tmp-<host>-<pid>-<8 hex digits><suffix>` (hidden, in the
target's directory; `<host>` is 8 hex digits identifying the machine or
container, `<suffix>` the ending the writer needs, e.g. `.keras`). Only a
process killed while writing can leave one behind. Each atomic write
removes, in its directory, the temporary files of processes of this host
that no longer run (see `remove_stale_temp_files`), so they do not
accumulate; files of other hosts sharing the directory are left to them.
Call that function yourself to clean a directory no longer written to.

A symbolic link is written through, as `open` would: its target is
replaced, the link kept.

`tfkd.saving.save(model, path)` is the public way to save a model
atomically; the functions here are its building blocks.
"""

import contextlib
import json
import os
import re
import secrets
import socket
import zlib

#: Marks tfkd's temporary files:
#: `.<name>.tfkd-tmp-<host>-<pid>-<token><suffix>`.
TEMP_MARKER = ".tfkd-tmp-"

_TEMP_PATTERN = re.compile(
    r"^\..*" + re.escape(TEMP_MARKER)
    + r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}"
)
# Process ids are only meaningful on their own host (or container, which
# has its own hostname and pid namespace): stale-file checks compare both.
_HOST_ID = format(zlib.crc32(socket.gethostname().encode()), "08x")
# Longest part of the target's name kept in a temporary name (NAME_MAX is
# 255 bytes on common file systems; the marker, pid and suffix need room).
_MAX_BASE = 120
_WRITE_MODES = ("w", "wb")


def _check_target(path):
    """`path` as a `str`, checked to be writable as a file."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(
            "`path` must be a file path (str or os.PathLike). Received: "
            f"path={path!r} of type {type(path).__name__}."
        )
    path = os.fsdecode(os.fspath(path))
    if not path or os.path.isdir(path):
        raise ValueError(
            f"`path` must name a file, not a directory. Received: "
            f"path={path!r}. Add a file name, e.g. "
            f"{os.path.join(path or '.', 'model.keras')!r}."
        )
    if _is_remote(path):
        return path
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"Cannot write {path!r}: its directory {directory!r} does not "
            f"exist. Create it first (os.makedirs({directory!r})) or choose "
            f"an existing directory. Received: path={path!r}."
        )
    return path


def _is_remote(path):
    # Object stores (gs://, s3://) have no rename; their uploads are
    # already all-or-nothing, so the writer writes there directly.
    return "://" in path


def _umask():
    """The process's umask, read without changing it where possible."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere: `os.umask` only reads by setting, so set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path):
    """The mode `path` should get: its current one, or a new file's."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _temp_name(path, suffix):
    directory, base = os.path.split(os.path.abspath(path))
    token = secrets.token_hex(4)
    name = (f".{base[:_MAX_BASE]}{TEMP_MARKER}{_HOST_ID}-{os.getpid()}-"
            f"{token}{suffix}")
    return os.path.join(directory, name)


def is_temp_file(name):
    """Whether a file name is one of tfkd's temporary files.

    Args:
        name: A file name or path.

    Returns:
        `True` for names made by this module's atomic writes.

    Example:

    >>> is_temp_file(".student.keras.tfkd-tmp-5f3e2a10-4242-0a1b2c3d.keras")
    True
    >>> is_temp_file("student.keras")
    False
    """
    return _TEMP_PATTERN.match(os.path.basename(os.fspath(name))) is not None


def _running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # Another user's process (or an unknown pid): keep.
    return True


def remove_stale_temp_files(directory):
    """Deletes temporary files left in `directory` by killed writers.

    A file is stale when it was made on this host (machine or container)
    by a process that no longer runs (a zombie -- killed but not yet reaped
    by its parent -- still counts as running). Files of running processes,
    including this one, and of other hosts sharing the directory are left
    alone, so concurrent writers are safe. Every atomic write calls this on
    its directory.

    Args:
        directory: The directory to clean.

    Returns:
        The sorted list of paths removed.

    Example:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> remove_stale_temp_files(folder)
    []
    """
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMP_PATTERN.match(name)
        if (match is None or match["host"] != _HOST_ID
                or _running(int(match["pid"]))):
            continue
        path = os.path.join(directory, name)
        try:
            os.remove(path)
        except FileNotFoundError:
            continue  # Another process cleaned it first.
        except OSError:
            continue  # Not ours to remove (permissions): harmless.
        removed.append(path)
    return sorted(removed)


def _fsync_path(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # Some file systems cannot open directories: best effort.
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _write_error(path, error):
    """An `OSError` (same errno, so the same subclass) naming the target."""
    reason = error.strerror or str(error) or type(error).__name__
    message = (
        f"Could not write {path!r}: {reason}. The file is unchanged "
        "(the new content went to a temporary file, now removed). Free disk "
        "space or raise the file-size limit, check the directory's write "
        "permission, or write to another path."
    )
    if error.errno:
        return OSError(error.errno, message)
    return OSError(message)


def _replace(tmp, path, mode):
    try:
        os.chmod(tmp, mode)
    except OSError:
        pass  # File systems without modes (e.g. some mounts): keep theirs.
    os.replace(tmp, path)
    # Makes the rename itself durable, not only the data.
    _fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path to write; renames it to `path` on success.

    For writers that open the file themselves (Keras's `model.save`,
    `save_weights`, matplotlib's `savefig`). When the block ends without
    error, the temporary file is `fsync`ed, given `path`'s mode (or a new
    file's: `0o666` minus the umask) and renamed over `path`. On any
    exception it is deleted and `path` is left as it was; an `OSError` is
    re-raised naming `path`. Remote paths (`gs://...`) are yielded as they
    are: object stores have no rename, and their uploads are all-or-nothing.

    Args:
        path: The file to write.
        suffix: Ending of the temporary name, for writers that check it
            (`".keras"`, `".weights.h5"`, `".png"`).

    Yields:
        The temporary path, in `path`'s directory.

    Raises:
        FileNotFoundError: If `path`'s directory does not exist.
        ValueError: If `path` is a directory.
        OSError: If writing fails (e.g. the disk is full); `path` is
            unchanged.
        RuntimeError: If the block wrote no file.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with atomic_path(path, suffix=".txt") as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("hello")
    >>> open(path).read()
    'hello'
    """
    path = _check_target(path)
    if _is_remote(path):
        yield path
        return
    # Through symbolic links, as `open` writes: the link's target is
    # replaced, in its own directory (a rename cannot cross file systems).
    target = os.path.realpath(path)
    remove_stale_temp_files(os.path.dirname(target))
    mode = _target_mode(target)
    tmp = _temp_name(target, suffix)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise RuntimeError(
                f"Nothing was written to the temporary file of {path!r}; "
                f"{path!r} is unchanged. Write to the path the `with "
                "atomic_path(...)` block yields."
            )
        _fsync_path(tmp)
        _replace(tmp, target, mode)
    except OSError as e:
        _remove_quietly(tmp)
        raise _write_error(path, e) from e
    except BaseException:
        _remove_quietly(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="wb", *, encoding=None, newline=None):
    """Opens a temporary file for writing; renames it to `path` on success.

    `with atomic_write(path, "w") as f:` replaces `with open(path, "w") as
    f:`. The data is flushed and `fsync`ed before the rename, so `path`
    holds either its old content or the complete new one, even if the
    process is killed or the disk fills up. On an exception the temporary
    file is deleted and `path` is left as it was; an `OSError` is re-raised
    naming `path`.

    Args:
        path: The file to write.
        mode: `"wb"` (bytes) or `"w"` (text).
        encoding: Text encoding (text mode; default `"utf-8"`).
        newline: As for `open` (text mode), e.g. `""` for the csv module.

    Yields:
        The open file object.

    Raises:
        ValueError: If `mode` is not `"w"` or `"wb"`.
        FileNotFoundError: If `path`'s directory does not exist.
        OSError: If writing fails (e.g. the disk is full); `path` is
            unchanged.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "results.json")
    >>> with atomic_write(path, "w") as f:
    ...     _ = f.write('{"accuracy": 0.97}')
    >>> open(path).read()
    '{"accuracy": 0.97}'
    """
    if mode not in _WRITE_MODES:
        raise ValueError(
            f"`mode` must be one of {list(_WRITE_MODES)} (a whole file is "
            f"written and then renamed into place). Received: mode={mode!r}."
        )
    if "b" in mode and (encoding is not None or newline is not None):
        raise ValueError(
            "`encoding` and `newline` apply to text mode only. Received: "
            f"mode={mode!r}, encoding={encoding!r}, newline={newline!r}."
        )
    with atomic_path(path) as tmp:
        if _is_remote(tmp):
            import tensorflow as tf

            with tf.io.gfile.GFile(tmp, mode) as f:
                yield f
            return
        # 0o666: the kernel applies the umask, as for any new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                     | getattr(os, "O_CLOEXEC", 0), 0o666)
        if "b" in mode:
            f = os.fdopen(fd, mode)
        else:
            f = os.fdopen(fd, mode, encoding=encoding or "utf-8",
                          newline=newline)
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text(path, text, *, encoding="utf-8", newline=None):
    """Writes `text` to `path` atomically (see `atomic_write`).

    Args:
        path: The file to write.
        text: The `str` to write.
        encoding: Text encoding.
        newline: As for `open`.

    Returns:
        `path`.
    """
    with atomic_write(path, "w", encoding=encoding, newline=newline) as f:
        f.write(text)
    return path


def write_json(path, value, *, indent=2, default=None, sort_keys=False):
    """Writes `value` as JSON (and a final newline) to `path` atomically.

    Args:
        path: The file to write.
        value: A JSON-serialisable value.
        indent: As for `json.dump`.
        default: As for `json.dump`: converts values JSON does not know.
        sort_keys: As for `json.dump`.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.json")
    >>> _ = write_json(path, {"seed": 0})
    >>> json.load(open(path))
    {'seed': 0}
    """
    # Serialised before the file is opened: a value JSON cannot encode
    # fails without touching the disk.
    text = json.dumps(value, indent=indent, default=default,
                      sort_keys=sort_keys)
    return write_text(path, text + "\n")


def keras_suffix(path):
    """The Keras format suffix of `path`: `.weights.h5`, `.keras`, `.h5`...

    Keras picks the format from the file name's ending, so a temporary file
    must end the same way.

    Example:

    >>> keras_suffix("runs/student.weights.h5")
    '.weights.h5'
    """
    name = os.fspath(path)
    for suffix in (".weights.h5", ".weights.json", ".keras", ".h5", ".hdf5"):
        if name.endswith(suffix):
            return suffix
    return os.path.splitext(name)[1]


def save_keras_model(model, path, **kwargs):
    """`model.save(path, **kwargs)`, atomically.

    Keras opens the target path itself, so the model is saved to a
    temporary file of the same format in `path`'s directory, `fsync`ed and
    renamed over `path`. A kill or a full disk during the save leaves the
    previous file intact (see the module docstring).
    `tfkd.saving.save` is the checked, public form of this function.

    Args:
        model: A `keras.Model` (a student, a teacher or a whole distiller).
        path: The `.keras` (or legacy `.h5`) file to write.
        **kwargs: Other arguments of `model.save`.

    Returns:
        `path`.
    """
    with atomic_path(path, suffix=keras_suffix(path)) as tmp:
        model.save(tmp, **kwargs)
    return path
