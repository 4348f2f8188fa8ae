"""Distillation losses: every method's pure tensor functions and terms.

The one public spelling of every function (`tfkd.losses.kd_loss`) and every
knowledge term (`tfkd.losses.KDDistillation`, Keras's `...Distillation`
names). Nothing is listed here: the names are those of the method modules
(`tfkd.methods`, one module per method), found when first asked for, so a
new method's module adds its names without editing this file.

Every function takes `(teacher_..., student_...)` in that order and returns
per-example values of shape `(batch,)` unless documented as batch-level.
Inputs of any float dtype are computed in float32, and every function also
runs inside `tf.function(jit_compile=True)`.
"""

import tfkd.methods as _methods

_table = None


def _names():
    global _table
    if _table is None:
        _table = _methods.public_table()
    return _table


def __getattr__(name):
    if name == "__all__":
        return list(_names())
    if not name.startswith("_"):
        if name in _names():
            return _names()[name]
        # `tfkd.losses.probabilistic` & co., the modules of older versions.
        module = _methods.old_path_module(__name__, name)
        if module is not None:
            return module
    raise AttributeError(f"module 'tfkd.losses' has no attribute {name!r}")


def __dir__():
    # `dir(tfkd.losses)` lists every function and term of every method.
    return sorted(set(globals()) | set(_names()))
