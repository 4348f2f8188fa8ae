"""Saving models atomically, and loading them with clear errors.

`tfkd.saving.save(model, path)` is `model.save(path)` made atomic: the file
is written under a temporary name in the same directory, `fsync`ed and
renamed over `path` (see `tfkd.io`), so a kill or a full disk during the
save leaves the previous file intact instead of a truncated one. tfkd's
own commands, recipes and tuner save through it.

`tfkd.load(path)` is `keras.models.load_model` with tfkd's classes
registered and with errors that say what is wrong with the file: a missing
file raises `FileNotFoundError` naming it; a corrupt or truncated `.keras`
or `.h5` file (an interrupted save or copy, a partial download) raises a
`ValueError` naming the file, the damage found and how to recover, instead
of a `zipfile.BadZipFile`, `KeyError`, h5py `OSError` or Keras's misleading
"File not found" for a cut-short zip archive.
"""

import copy
import inspect
import json
import os
import zipfile
import zlib

import keras

from tfkd import io as tfkd_io

_SUFFIXES = (".keras", ".h5", ".hdf5")
_RECOVER = (
    "Re-save the model from the process that trained it, copy the file "
    "again, or restore it from a backup (e.g. the file of a "
    "`keras.callbacks.ModelCheckpoint` or the directory of a "
    "`keras.callbacks.BackupAndRestore`)."
)


def _corrupt(path, detail):
    return ValueError(
        f"Cannot load {path!r}: the file is corrupt or truncated ({detail}). "
        f"It was probably cut short while being written, copied or "
        f"downloaded. {_RECOVER} Received: path={path!r}."
    )


def _check_keras_archive(path):
    """Raises a `ValueError` unless `path` is a complete `.keras` archive."""
    if not zipfile.is_zipfile(path):
        size = os.path.getsize(path)
        raise _corrupt(
            path, f"not a complete zip archive ({size} bytes); a `.keras` "
            "file is a zip of config.json and the weights")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise _corrupt(path, f"unreadable zip archive: {e}") from e
    if damaged is not None:
        raise _corrupt(path, f"member {damaged!r} fails its CRC check")
    missing = [n for n in ("config.json",) if n not in names]
    if not names & {"model.weights.h5", "model.weights.npz"}:
        missing.append("model.weights.h5")
    if missing:
        raise _corrupt(path, f"the archive lacks {', '.join(missing)}")


def save(model, path, **kwargs):
    """Saves `model` to a `.keras` file atomically: all or nothing.

    Same as `model.save(path, **kwargs)`, except that the model is written
    to a temporary file in `path`'s directory (named
    `.<name>.tfkd-tmp-<host>-<pid>-<hex>.keras`), flushed to disk and renamed over
    `path`. If the process is killed or the disk fills up during the save,
    `path` keeps its previous content (or does not exist), and a failed save
    removes its temporary file and raises an `OSError` naming `path`. A new
    file gets the usual mode (`0o666` minus the umask); a replaced file
    keeps its mode.

    Save a distiller's student alone with `save(distiller.student, path)`:
    the file holds no teacher, adapter, regressor or discriminator weights.

    Args:
        model: The `keras.Model` to save (a student, a teacher or a whole
            distiller).
        path: Path (`str` or `os.PathLike`) of the `.keras` file (a legacy
            `.h5` also works); its directory must exist.
        **kwargs: Other arguments of `model.save` (e.g. `zipped=False`).

    Returns:
        `path`, as a `str`.

    Raises:
        TypeError: If `model` is not a `keras.Model` or `path` not a path.
        ValueError: If `path` does not end in `.keras` (or `.h5`), or is a
            directory.
        FileNotFoundError: If `path`'s directory does not exist.
        OSError: If writing fails (e.g. a full disk); `path` is unchanged.

    Example:

    >>> import os, tempfile
    >>> import tfkd
    >>> from tfkd import testing
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> path = os.path.join(tempfile.mkdtemp(), "student.keras")
    >>> tfkd.saving.save(student, path) == path
    True
    >>> tfkd.load(path).name
    'student'
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a `keras.Model` (a student, teacher or "
            f"distiller). Received: model={model!r} of type "
            f"{type(model).__name__}."
        )
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "`path` must be a file path (str or os.PathLike). Received: "
            f"path={path!r} of type {type(path).__name__}."
        )
    path = os.fsdecode(os.fspath(path))
    if not path.endswith(_SUFFIXES):
        raise ValueError(
            f"`path` must end in `.keras` (or a legacy `.h5`). Received: "
            f"path={path!r}. Use e.g. {os.path.splitext(path)[0] + '.keras'!r}."
        )
    return tfkd_io.save_keras_model(model, path, **kwargs)


def load(path, *, custom_objects=None, compile=True, safe_mode=True):
    """Loads a model or distiller saved with `model.save(path)`.

    A thin wrapper of `keras.models.load_model` that registers tfkd's
    classes (distillers, layers, losses) and turns failures caused by a
    damaged file into one clear error. `safe_mode=True` (the default, as in
    Keras) refuses to deserialise Lambda layers: tfkd's distillers and
    zoo models contain none.

    Args:
        path: Path (`str` or `os.PathLike`) of a `.keras` file (or a legacy
            `.h5` file).
        custom_objects: Optional dict of your own classes or functions used
            by the model, as for `keras.models.load_model`.
        compile: Whether to restore the compiled state (optimizers and
            their variables, metrics), so training continues where it
            stopped.
        safe_mode: Refuse to load arbitrary code (Lambda layers).

    Returns:
        The loaded `keras.Model` (a tfkd distiller if one was saved).

    Raises:
        TypeError: If `path` is not a path.
        FileNotFoundError: If there is no file at `path`.
        ValueError: If `path` is not a `.keras`/`.h5` file, or the file is
            corrupt or truncated (the message names the file, the damage
            and how to recover).

    Example:

    >>> import os, tempfile
    >>> import tfkd
    >>> from tfkd import testing
    >>> student = testing.tiny_conv_model("student", width=4)
    >>> path = os.path.join(tempfile.mkdtemp(), "student.keras")
    >>> student.save(path)
    >>> tfkd.load(path).name
    'student'
    """
    try:
        path = os.fspath(path)
    except TypeError as e:
        raise TypeError(
            "`path` must be a file path (str or os.PathLike). Received: "
            f"path={path!r} of type {type(path).__name__}."
        ) from e
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No such model file: {path!r}. Check the path, or save the "
            f"model first with `model.save({path!r})`. Received: "
            f"path={path!r}."
        )
    if os.path.isdir(path):
        raise ValueError(
            f"`path` is a directory, not a saved model file. Received: "
            f"path={path!r}. Pass the `.keras` file written by "
            "`model.save('name.keras')` (for a TensorFlow SavedModel "
            "directory use `keras.layers.TFSMLayer`)."
        )
    if not path.endswith(_SUFFIXES):
        raise ValueError(
            f"`path` must be a `.keras` file (or a legacy `.h5`). Received: "
            f"path={path!r}. Save models with `model.save('name.keras')`."
        )
    # Registers tfkd's serialisable classes before Keras looks them up:
    # under the `tfkd` command `import tfkd` defers them, and a distiller's
    # file names its terms (`tfkd>DISTDistillation`) and zoo models.
    import tfkd.distillers  # noqa: F401
    import tfkd.layers  # noqa: F401
    import tfkd.models  # noqa: F401
    import tfkd.terms

    tfkd.terms.import_all()

    if path.endswith(".keras"):
        _check_keras_archive(path)
    try:
        return keras.models.load_model(
            path, custom_objects=custom_objects, compile=compile,
            safe_mode=safe_mode,
        )
    except PermissionError:
        raise
    except json.JSONDecodeError as e:
        raise _corrupt(path, f"its JSON config is invalid: {e}") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    except OSError as e:
        # h5py reports truncated or damaged HDF5 data as OSError.
        raise _corrupt(path, f"unreadable weights: {e}") from e


#: Alias: `tfkd.saving.load_distiller(path)` is `tfkd.load(path)`.
load_distiller = load


def _without_compile_config(model):
    """`model` serialised without its own compile state.

    A teacher (or student) compiled for its own training carries its
    optimizer into the config; loaded inside a distiller it would be
    compiled afresh, and Keras would then warn "Skipping variable loading
    for optimizer ..." (the fresh optimizer has no slots). The distiller
    trains with its own optimizer only, so the models load uncompiled.
    """
    config = keras.saving.serialize_keras_object(model)
    if isinstance(config, dict) and config.get("compile_config"):
        config = dict(config, compile_config=None)
    return config


class DistillerSaving:
    """How `tfkd.Distiller` saves (a mixin): its config with the teacher
    and student serialised, its compile config with the student loss, the
    student alone (`save_student`) and student-only checkpoints."""

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self._student_loss_config is not None:
            config["loss"] = keras.saving.serialize_keras_object(
                self._student_loss_config)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    def save_student(self, path, **kwargs):
        """Saves the student alone to a `.keras` file, atomically.

        The file holds no teacher, adapter, regressor or discriminator
        weights; a kill or a full disk during the save leaves a previous
        file at `path` intact (see `tfkd.saving.save`).

        Args:
            path: The `.keras` path; its directory must exist.
            **kwargs: Other arguments of `keras.Model.save`.

        Returns:
            `path`, as a `str`.
        """
        return save(self.student, path, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """Saves the distiller's weights, or only the student's when
        `checkpoint_student_only` is set (Keras Tuner's trial
        checkpoints: no teacher weights in every trial directory).
        Student-only checkpoints are written atomically."""
        if self.checkpoint_student_only:
            from tfkd import io as tfkd_io

            path = os.fspath(filepath)
            # Atomic: a trial killed mid-save keeps its previous checkpoint.
            with tfkd_io.atomic_path(path, tfkd_io.keras_suffix(path)) as tmp:
                return self.student.save_weights(tmp, overwrite=overwrite,
                                                 **kwargs)
        return super().save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        """Loads weights saved by `save_weights` (same mode)."""
        if self.checkpoint_student_only:
            return self.student.load_weights(filepath, **kwargs)
        return super().load_weights(filepath, **kwargs)

    def base_config(self):
        """`keras.Model`'s config plus the serialised teacher and student;
        presets add their own arguments to it."""
        config = keras.Model.get_config(self)
        config.update({
            "teacher": _without_compile_config(self.teacher),
            "student": _without_compile_config(self.student),
            "unlabelled_weight": self.unlabelled_weight,
        })
        return config

    def get_config(self):
        config = self.base_config()
        if self._hinton:
            config.update({"alpha": self.alpha,
                           "temperature": self.temperature})
        else:
            config.update({
                "distillation_losses": [
                    keras.saving.serialize_keras_object(t)
                    for t in self.distillation_losses
                ],
                "distillation_loss_weights": self.distillation_loss_weights,
                "student_loss_weight": self.student_loss_weight,
            })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's deserialisation consumes nested dicts; keep the caller's.
        config = copy.deepcopy(config)
        for key in ("teacher", "student"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects)
        if config.get("distillation_losses") is not None:
            config["distillation_losses"] = [
                keras.saving.deserialize_keras_object(
                    t, custom_objects=custom_objects)
                for t in config["distillation_losses"]
            ]
        # Configs written before the option existed trained with "share".
        config.setdefault("unlabelled_weight", "share")
        return cls(**config)


#: Values a config holds as they are; anything else is a Keras object.
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict)


def _preset_parameters(cls):
    """The keyword parameters of `cls.__init__` (`teacher`, `student` and
    `*args`/`**kwargs` aside). A subclass's `__init__` that forwards
    `**kwargs` adds its own to its parent's, up to a tfkd preset (whose
    signature lists all of its arguments)."""
    names = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        for p in parameters:
            if p.name not in ("self", "teacher", "student", *names) and (
                    p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)):
                names.append(p.name)
        if klass.__module__.startswith("tfkd.") or not any(
                p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


class PresetSaving:
    """`get_config` of a preset, read from its `__init__` signature (a mixin).

    A preset (`FitNetDistiller`, `LocalityPreservingDistiller`, ...) builds
    its terms from its arguments; the terms hold the values. Its config is
    `base_config()` plus one entry per keyword parameter of `__init__`
    (`teacher`, `student` and `**kwargs` aside; a subclass forwarding
    `**kwargs` to a tfkd preset adds its own), found, in order:

    1. where `config_sources[parameter]` says: `"<term name>/<key>"` (that
       term's config entry) or `"<attribute>"` (the distiller's attribute);
    2. in the terms' configs under the parameter's own name (the term's
       value: terms hold the presets' defaults);
    3. as the distiller's attribute of that name (the preset's own
       hyperparameters, e.g. `alpha`).

    A Keras object found as an attribute is serialised. `from_config`
    passes the entries back to `__init__`, so `from_config(get_config())`
    rebuilds an equal distiller and a new argument is saved as soon as its
    term (or the preset) holds it.
    """

    #: `{parameter: source}` for the arguments saved under another name
    #: (see the class docstring); everything else is found by its name.
    config_sources = {}

    def get_config(self):
        config = self.base_config()
        terms = {name: term.get_config() for name, term in zip(
            self._term_names, self._terms) if hasattr(term, "get_config")}
        cls = type(self).__name__
        for name in _preset_parameters(type(self)):
            config[name] = self._preset_argument(name, terms, cls)
        return config

    def _preset_argument(self, name, terms, cls):
        """The value of `__init__`'s argument `name` that rebuilds this
        distiller (see the class docstring)."""
        source = self.config_sources.get(name)
        keys = {term: sorted(c) for term, c in terms.items()}
        if source is not None and "/" in source:
            term, key = source.split("/", 1)
            if term not in terms or key not in terms[term]:
                raise ValueError(
                    f"{cls}.config_sources[{name!r}]={source!r} names no "
                    f"entry of a term's config. Terms' config keys: "
                    f"{keys}."
                )
            return terms[term][key]
        if source is None:
            held = {t: c[name] for t, c in terms.items() if name in c}
            values = list(held.values())
            if values and all(v == values[0] for v in values):
                return values[0]
            if values:
                # Two terms disagree: the preset must say which one it is.
                raise ValueError(
                    f"{cls}'s argument `{name}` is held by several terms "
                    f"with different values ({held}); declare its source "
                    f"in `{cls}.config_sources`."
                )
            source = name
        if not hasattr(self, source):
            raise TypeError(
                f"{cls}.get_config cannot save the argument `{name}`: no "
                f"term's config holds it and the distiller has no attribute "
                f"{source!r}. Terms' config keys: {keys}. Declare its "
                f"source in `{cls}.config_sources`."
            )
        value = getattr(self, source)
        if not isinstance(value, _PLAIN):
            value = keras.saving.serialize_keras_object(value)
        return value
