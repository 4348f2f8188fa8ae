"""tfkd: knowledge distillation for Keras 3 / TensorFlow.

A large, frozen teacher teaches a small student; the student is then
exported to TFLite. Distillers are `keras.Model` subclasses: build one,
`compile` it and `fit` it like any Keras model.

`import tfkd` is cheap: each name below is imported on first use
(`tfkd.Distiller` loads TensorFlow and the distillers, `tfkd.tuning` Keras
Tuner), so `tfkd --help` starts without TensorFlow. Until a tfkd class has
been used, Keras cannot find tfkd's classes in a saved file: load `.keras`
files with `tfkd.load(path)`, which registers them.
"""

from typing import TYPE_CHECKING

from tfkd import _lazy

__version__ = "0.1.0"

if TYPE_CHECKING:
    # The public names, imported on first use (see `tfkd._lazy`).
    from tfkd import callbacks  # noqa: F401
    from tfkd import data  # noqa: F401
    from tfkd import distillers  # noqa: F401
    from tfkd import experiment  # noqa: F401
    from tfkd import export  # noqa: F401
    from tfkd import hyperparameters  # noqa: F401
    from tfkd import layers  # noqa: F401
    from tfkd import losses  # noqa: F401
    from tfkd import models  # noqa: F401
    from tfkd import reporting  # noqa: F401
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
