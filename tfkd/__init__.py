"""tfkd: knowledge distillation for Keras 3 / TensorFlow.

A large, frozen teacher teaches a small student; the student is then
exported to TFLite. Distillers are `keras.Model` subclasses: build one,
`compile` it and `fit` it like any Keras model.

`import tfkd` imports TensorFlow and registers every tfkd Keras class
(distillers, terms, layers, zoo models), so `keras.models.load_model` reads
tfkd's `.keras` files; the rest is imported on first use (`tfkd.tuning`
loads Keras Tuner, `tfkd.data.load_dataset` tensorflow-datasets,
`tfkd.export` LiteRT). The `tfkd` command (`tfkd.cli`) defers even the
Keras classes until a command runs, so its `--help` answers at once.
"""

import os
import re
import sys
from typing import TYPE_CHECKING

from tfkd import _lazy

__version__ = "0.1.0"

if TYPE_CHECKING:
    # The public names, imported on first use (see `tfkd._lazy`).
    from tfkd import callbacks  # noqa: F401
    from tfkd import data  # noqa: F401
    from tfkd import distillers  # noqa: F401
    from tfkd import app  # noqa: F401
    from tfkd import export  # noqa: F401
    from tfkd import hyperparameters  # noqa: F401
    from tfkd import layers  # noqa: F401
    from tfkd import losses  # noqa: F401
    from tfkd import models  # noqa: F401
    from tfkd import saving  # noqa: F401
    from tfkd import terms  # noqa: F401
    from tfkd import tuning  # noqa: F401
    from tfkd.distillers import Distiller  # noqa: F401
    from tfkd.distillers import AttentionDistiller  # noqa: F401
    from tfkd.distillers import CorrelationDistiller  # noqa: F401
    from tfkd.distillers import FeatureDistiller  # noqa: F401
    from tfkd.distillers import FitNetDistiller  # noqa: F401
    from tfkd.distillers import LocalityPreservingDistiller  # noqa: F401
    from tfkd.distillers import AdversarialDistiller  # noqa: F401
    from tfkd.distillers import CollaborationDistiller  # noqa: F401
    from tfkd.saving import load  # noqa: F401

__getattr__, __dir__, __all__ = _lazy.attach(__name__)


def _running_the_command():
    """Whether this process is the `tfkd` command, importing `tfkd.cli`.

    The command (`tfkd.cli`) lives in this package, so this module runs
    first; it skips registering tfkd's Keras classes (which imports
    TensorFlow) when the program is the `tfkd` console script (a file named
    `tfkd`, as pip writes it), `python -m tfkd` or `python -m tfkd.cli`.
    The command's modules import what a sub-command needs when it runs.

    Returns:
        `True` in the command's process, else `False`.
    """
    if not sys.argv:
        return False
    program = os.path.basename(sys.argv[0])
    if re.sub(r"(-script\.pyw?|\.exe)$", "", program) == "tfkd":
        return True
    # While `python [options] -m MODULE args` imports MODULE's package,
    # `sys.argv` is `["-m", *args]`; MODULE ends the original command line's
    # part before `args`, as `-m MODULE` or `-mMODULE`.
    if sys.argv[0] != "-m":
        return False
    head = sys.orig_argv[:len(sys.orig_argv) - (len(sys.argv) - 1)]
    module = head[-1][2:] if head[-1].startswith("-m") else head[-1]
    return module in ("tfkd", "tfkd.cli")


if not _running_the_command():
    # Register tfkd's Keras classes with Keras (their modules register them
    # when imported): a `.keras` file then loads with plain Keras.
    from tfkd import distillers  # noqa: F401,E402
    from tfkd import layers  # noqa: F401,E402
    from tfkd import models  # noqa: F401,E402
    from tfkd import terms  # noqa: F401,E402

    terms.import_all()
