"""Run folders: every `tfkd demo`, `tfkd tune` and recipe run gets its own.

- `prepare_run_dir(out, kind=...)`: with `out=None`, a new folder
  `tfkd_runs/<kind>-<n>` (the first free `n`, claimed atomically); with an
  `out`, that folder if it is missing or empty. A non-empty folder is
  refused unless `overwrite=True`, and then only a folder a tfkd run made
  (it holds the `.tfkd-run` marker) is emptied, and only of the files its
  kind of run writes (`RUN_OUTPUTS`): tfkd never deletes files it did not
  write. A folder holding anything else is refused whole, before anything
  is deleted, with the names of the files in the way.
- `display_path(path)`: a path as the user should read it, relative to the
  current directory when it lies below it.
- `next_steps(...)`: the closing lines of a run, the commands to try next.

Pure Python: no TensorFlow.
"""

import csv
import datetime
import fnmatch
import json
import os
import shutil

#: Where runs go by default (relative to the current directory).
DEFAULT_ROOT = "tfkd_runs"
#: The file that marks a folder as made by a tfkd run.
MARKER = ".tfkd-run"
# What `tfkd report` and `tfkd export` (at the paths the runs suggest) add
# to any run folder.
_REPORT_OUTPUTS = ("report.md", "summary.md", "summary.csv", "plots",
                   "*.tflite", "student*.json", "best_student*.json")
#: The entries (names or `fnmatch` patterns) each kind of run writes into
#: its folder: all that `--overwrite` may delete there.
RUN_OUTPUTS = {
    "demo": ("results.json", "student_*.keras", "teacher_seed*.keras",
             "student.json") + _REPORT_OUTPUTS,
    "tune": ("search", "teacher.keras", "teacher.json", "trials.json",
             "best_student.keras") + _REPORT_OUTPUTS,
    # A `tfkd.app.reporting.ResultsWriter` folder: its records are the JSON
    # files its `runs.csv` names (`_recorded_files`).
    "transfer": ("runs.csv", "transfer.md", "transfer.png",
                 "teacher_seed*.keras") + _REPORT_OUTPUTS,
}


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


def _recorded_files(folder):
    """The per-run JSON records a `runs.csv` in `folder` names."""
    try:
        with open(os.path.join(folder, "runs.csv"), encoding="utf-8",
                  newline="") as f:
            return {row.get("json_file") for row in csv.DictReader(f)}
    except (OSError, ValueError, csv.Error):
        return set()


def tfkd_outputs(folder, kind, entries):
    """Which of `entries` (names in run folder `folder`) a run of `kind`
    wrote: those `RUN_OUTPUTS[kind]` names, and the records its `runs.csv`
    lists.

    Example:

    >>> import tempfile
    >>> sorted(tfkd_outputs(tempfile.mkdtemp(), "tune",
    ...                     ["search", "teacher.keras", "thesis.tex"]))
    ['search', 'teacher.keras']
    """
    patterns = RUN_OUTPUTS.get(kind, ())
    recorded = _recorded_files(folder) if "runs.csv" in entries else set()
    return {e for e in entries
            if e in recorded
            or any(fnmatch.fnmatchcase(e, p) for p in patterns)}


def _check_kind(kind):
    if not isinstance(kind, str) or not kind or os.sep in kind:
        raise ValueError(
            f"`kind` must be a short name such as 'demo'. Received: "
            f"kind={kind!r}."
        )


def new_run_dir(kind, root=DEFAULT_ROOT, *, option="--out"):
    """Creates and returns a new folder `root/<kind>-<n>` (first free `n`).

    The folder is claimed with `os.mkdir`, so two runs started at once
    never share one.

    Raises:
        ValueError: If a file named `root` is in the way; the message says
            how to choose another folder (`option`, e.g. `--out`).

    Example:

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> [os.path.basename(new_run_dir("demo", root)) for _ in range(2)]
    ['demo-1', 'demo-2']
    """
    _check_kind(kind)
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(
            f"Runs go into the folder {display_path(root)!r}, but a file of "
            "that name is in the way. Rename or move that file, or choose "
            f"the run's folder with {option} DIR."
        )
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
            False, or `out` holds files a tfkd run of `kind` did not write
            (then nothing is deleted).

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
        return new_run_dir(kind, option=option)
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(
            f"{option} {display_path(out)!r} is a file, not a folder. "
            f"Choose a folder (or leave {option} out for a new one under "
            f"{DEFAULT_ROOT}/)."
        )
    try:
        os.makedirs(out, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        # A file where one of the parent folders should be.
        raise ValueError(
            f"Cannot make the folder {option} {display_path(out)!r}: a file "
            f"is in the way ({e.strerror}: {display_path(e.filename or out)!r}"
            f"). Move that file, or choose another {option}."
        ) from None
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
        ours = tfkd_outputs(out, run_kind(out), entries) | set(keep)
        foreign = [e for e in entries if e not in ours]
        if foreign:
            what = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3
                                              else "")
            raise ValueError(
                f"{option} {display_path(out)!r} holds files a tfkd run did "
                f"not write ({what}), so --overwrite will not delete "
                f"anything there. Choose another {option}, or move those "
                "files out yourself."
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
