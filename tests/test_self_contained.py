"""The repository is self-contained: it cites no document it does not hold.

Every formula and decision tfkd relies on is stated in its own docs (the
method pages in `docs/methods/`); nothing refers a reader to an external
specification file they cannot open.
"""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Spelt in two pieces, so this file does not match itself.
_WORD = re.compile(r"\b" + "SP" + r"EC\b")


def _walk():
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs
                   if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            yield os.path.relpath(os.path.join(directory, name), ROOT)


def _text_files():
    """`(name, text)` of the repository's text files (git's view when
    available: tracked and untracked, ignored files left out)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others",
             "--exclude-standard"], cwd=ROOT, capture_output=True,
            text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        listed = list(_walk())
    for name in listed:
        path = os.path.join(ROOT, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data:
            continue  # Binary.
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def test_no_reference_to_an_external_specification():
    found = [f"{name}:{i}: {line.strip()}"
             for name, text in _text_files()
             for i, line in enumerate(text.splitlines(), 1)
             if _WORD.search(line)]
    assert not found, (
        "References to a specification file the repository does not hold; "
        "point to the docs page stating the formula or decision instead:\n"
        + "\n".join(found))
