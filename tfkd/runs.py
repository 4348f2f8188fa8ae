"""Run folders: every `tfkd demo`, `tfkd tune` and recipe run gets its own.

- `prepare_run_dir(out, kind=...)`: with `out=None`, a new folder
  `tfkd_runs/<kind>-<n>` (the first free `n`, claimed atomically); with an
  `out`, that folder if it is missing or empty. A non-empty folder is
  refused unless `overwrite=True`, and then only a folder a tfkd run made
  (it holds the `.tfkd-run` marker) is emptied: tfkd never deletes files it
  did not write.
- `display_path(path)`: a path as the user should read it, relative to the
  current directory when it lies below it.
- `next_steps(...)`: the closing lines of a run, the commands to try next.

Pure Python: no TensorFlow.
"""

import datetime
import json
import os
import shutil

#: Where runs go by default (relative to the current directory).
DEFAULT_ROOT = "tfkd_runs"
#: The file that marks a folder as made by a tfkd run.
MARKER = ".tfkd-run"


def display_path(path):
    """`path` relative to the current directory if it lies below it, else
    absolute.

    Example:

    >>> import os
    >>> display_path(os.path.join(os.getcwd(), "tfkd_runs", "demo-1"))
    'tfkd_runs/demo-1'
    >>> display_path("/")
    '/'
    """
    absolute = os.path.abspath(os.fspath(path))
    here = os.getcwd()
    try:
        relative = os.path.relpath(absolute, here)
    except ValueError:  # Another drive (Windows).
        return absolute
    if relative == os.curdir:
        return "."
    if relative.startswith(os.pardir):
        return absolute
    return relative


def _write_marker(folder, kind):
    from tfkd import io as tfkd_io

    tfkd_io.write_json(os.path.join(folder, MARKER), {
        "kind": kind,
        "created": datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds"),
    })


def is_run_dir(path):
    """Whether `path` is a folder a tfkd run made (holds the marker)."""
    return os.path.isfile(os.path.join(os.fspath(path), MARKER))


def run_kind(path):
    """The `kind` recorded in a run folder's marker, or `None`."""
    try:
        with open(os.path.join(os.fspath(path), MARKER),
                  encoding="utf-8") as f:
            return json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _check_kind(kind):
    if not isinstance(kind, str) or not kind or os.sep in kind:
        raise ValueError(
            f"`kind` must be a short name such as 'demo'. Received: "
            f"kind={kind!r}."
        )


def new_run_dir(kind, root=DEFAULT_ROOT):
    """Creates and returns a new folder `root/<kind>-<n>` (first free `n`).

    The folder is claimed with `os.mkdir`, so two runs started at once
    never share one.

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> [os.path.basename(new_run_dir("demo", root)) for _ in range(2)]
    ['demo-1', 'demo-2']
    """
    _check_kind(kind)
    os.makedirs(root, exist_ok=True)
    taken = set(os.listdir(root))
    n = 1
    while True:
        name = f"{kind}-{n}"
        if name not in taken:
            path = os.path.join(root, name)
            try:
                os.mkdir(path)
            except FileExistsError:
                pass
            else:
                _write_marker(path, kind)
                return path
        n += 1


def prepare_run_dir(out=None, *, kind, overwrite=False, keep=(),
                    option="--out"):
    """The folder a run writes into, new or emptied, with the run marker.

    Args:
        out: The folder asked for, or `None` for a new
            `tfkd_runs/<kind>-<n>`.
        kind: The run's kind (`"demo"`, `"tune"`, `"transfer"`, ...).
        overwrite: Whether a non-empty `out` may be emptied (only one a
            tfkd run made).
        keep: Names of entries `overwrite` keeps (e.g. a trained
            `teacher.keras` a run may reuse).
        option: The option name quoted in errors.

    Returns:
        The folder's path.

    Raises:
        ValueError: If `out` is a file, or holds files and `overwrite` is
            False, or `overwrite` would delete files tfkd did not write.

    Example:

    >>> import tempfile
    >>> folder = prepare_run_dir(tempfile.mkdtemp(), kind="demo")
    >>> sorted(os.listdir(folder))
    ['.tfkd-run']
    >>> prepare_run_dir(folder, kind="demo") == folder  # Only the marker.
    True
    """
    _check_kind(kind)
    if out is None:
        return new_run_dir(kind)
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(
            f"{option} {display_path(out)!r} is a file, not a folder. "
            f"Choose a folder (or leave {option} out for a new one under "
            f"{DEFAULT_ROOT}/)."
        )
    os.makedirs(out, exist_ok=True)
    entries = sorted(e for e in os.listdir(out) if e != MARKER)
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3
                                           else "")
        if not overwrite:
            raise ValueError(
                f"{option} {display_path(out)!r} is not empty ({shown}). "
                f"Pass --overwrite to replace its contents, choose another "
                f"{option}, or leave {option} out for a new folder under "
                f"{DEFAULT_ROOT}/."
            )
        if not is_run_dir(out):
            raise ValueError(
                f"{option} {display_path(out)!r} holds files a tfkd run did "
                f"not write ({shown}; no {MARKER} marker), so --overwrite "
                f"will not delete them. Choose another {option}, or empty "
                "the folder yourself."
            )
        for entry in entries:
            if entry in keep:
                continue
            path = os.path.join(out, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    if not is_run_dir(out):
        _write_marker(out, kind)
    return out


def next_steps(commands):
    """The closing lines of a run: what to try next, one command a line.

    Example:

    >>> print(next_steps(["tfkd report tfkd_runs/demo-1"]))
    Next:
      tfkd report tfkd_runs/demo-1
    """
    return "\n".join(["Next:"] + [f"  {c}" for c in commands])


def shell_quote(path):
    """A path as it can be pasted into a shell.

    Example:

    >>> shell_quote("tfkd_runs/demo-1"), shell_quote("my runs/a")
    ('tfkd_runs/demo-1', "'my runs/a'")
    """
    import shlex

    return shlex.quote(display_path(path))
