"""Which search a tuner directory holds: its signature file.

Keras Tuner resumes any project directory it finds (`overwrite=False`, its
default). Resumed with another method or search space, it runs no new
trial -- the old oracle has used up its trials -- and returns the old
search's models, without a word. tfkd's tuners (`tfkd.tuning.build_tuner`,
`tfkd.tuning.RandomSearch`, ...) therefore record the search in
`tfkd_search.json` in the project directory -- the methods, the search
space, the fixed values (`DistillerHyperModel.search_signature()`), the
tuner kind and, when given, the data the trials are scored on (data set,
split seed, image size, teacher: `tfkd tune` records them) -- and refuse, before Keras Tuner reloads anything, to resume a
directory that holds another search. The file is written atomically
(`tfkd.io`).
"""

import json
import os

#: Tuner kinds accepted by `build_tuner` and `tfkd tune --tuner`. Kept here,
#: free of Keras Tuner, so that `tfkd tune --help` can list them quickly.
TUNERS = ("random", "bayesian", "hyperband")
#: File in a tuner's project directory recording which search it holds.
SIGNATURE_FILE = "tfkd_search.json"
# Files by which Keras Tuner recognises a project it can resume.
_TUNER_STATE_FILES = ("oracle.json", "tuner0.json")


def tuner_kind(tuner_class):
    """The Keras Tuner class a tuner class is (`"RandomSearch"`, ...)."""
    for cls in tuner_class.__mro__:
        if cls.__module__.startswith("keras_tuner"):
            return cls.__name__
    return tuner_class.__name__


def read_signature(project_dir):
    """The search signature stored in a tuner project directory.

    Args:
        project_dir: A tuner's project directory (`directory/project_name`).

    Returns:
        The dict written by a tfkd tuner (`methods`, `search_space`,
        `fixed`, `tuner`), or `None` if the directory holds none.

    Raises:
        ValueError: If the file exists but is not valid JSON.
    """
    path = os.path.join(os.fspath(project_dir), SIGNATURE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f"The tuner directory's search record {path!r} is damaged "
            f"({e}). Start the search afresh with overwrite=True (`tfkd "
            "tune --overwrite`), or delete the file to resume without the "
            "check."
        ) from e


def holds_search(project_dir):
    """Whether a tuner project directory holds a search to resume."""
    project_dir = os.fspath(project_dir)
    return any(os.path.exists(os.path.join(project_dir, name))
               for name in (SIGNATURE_FILE,) + _TUNER_STATE_FILES)


def describe_signature(signature):
    """A one-line description of a search signature, for messages."""
    if signature is None:
        return "an unrecorded search"
    fixed = signature.get("fixed") or {}
    text = (f"a {signature.get('tuner', '?')} search over method(s) "
            f"{signature.get('methods')}")
    if fixed:
        text += f" with fixed {fixed}"
    return text


def _differences(old, new):
    """What differs between two signatures, as short phrases."""
    phrases = []
    for key in ("tuner", "methods"):
        if old.get(key) != new.get(key):
            phrases.append(f"{key} {old.get(key)!r} -> {new.get(key)!r}")
    # The data the trials were scored on: trials on another split or seed
    # cannot be ranked with these.
    a, b = old.get("data") or {}, new.get("data") or {}
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            phrases.append(f"data {name}: {a.get(name)!r} -> "
                           f"{b.get(name)!r}")
    for key in ("search_space", "fixed"):
        a, b = old.get(key) or {}, new.get(key) or {}
        for group in sorted(set(a) | set(b)):
            x, y = a.get(group) or {}, b.get(group) or {}
            for name in sorted(set(x) | set(y)):
                if x.get(name) != y.get(name):
                    phrases.append(f"{key} {group}/{name}: "
                                   f"{x.get(name)!r} -> {y.get(name)!r}")
    return phrases


def check_signature(project_dir, signature, *,
                    fix="Pass overwrite=True to delete it and start afresh, "
                        "or choose another `directory` or `project_name`."):
    """Raises unless `project_dir` may resume the search `signature`.

    A directory that holds no search, or the same search, passes; so does a
    search recorded before tfkd wrote signatures (it cannot be checked).

    Args:
        project_dir: The tuner's project directory.
        signature: The new search's signature
            (`DistillerHyperModel.search_signature()` plus `tuner`).
        fix: What to do instead, the error's last sentence (the command
            line names `--overwrite` and `--out`).

    Raises:
        ValueError: The directory holds another search; the message names
            the directory, what it holds, what differs and the fix.
    """
    old = read_signature(project_dir)
    if old is None:
        return
    differences = _differences(old, signature)
    if not differences:
        return
    raise ValueError(
        f"The tuner directory {os.fspath(project_dir)!r} holds "
        f"{describe_signature(old)}; this search differs "
        f"({'; '.join(differences)}). Resuming it would run no new trial "
        f"and return that search's students. {fix}"
    )


def write_signature(project_dir, signature):
    """Writes `signature` into `project_dir` (atomically) if it differs."""
    from tfkd import io as tfkd_io

    if read_signature(project_dir) == signature:
        return
    os.makedirs(project_dir, exist_ok=True)
    tfkd_io.write_json(os.path.join(project_dir, SIGNATURE_FILE), signature,
                       sort_keys=True)
