"""Hyperparameter search over distillers with Keras Tuner.

`DistillerHyperModel` builds any tfkd distiller with hyperparameters drawn
from its method's published search space (`tfkd.tuning.spaces`); trial
checkpoints hold the student only, and `best_student(tuner)` returns the
best student ready for export. `tfkd tune` runs a search from the command
line.
"""

from typing import TYPE_CHECKING

from tfkd import _lazy

if TYPE_CHECKING:
    # Imported on first use (see `tfkd._lazy`).
    from tfkd.tuning.hypermodel import DistillerHyperModel  # noqa: F401
    from tfkd.tuning.hypermodel import digits_hypermodel  # noqa: F401
    from tfkd.tuning.hypermodel import method_arguments  # noqa: F401
    from tfkd.tuning.hypermodel import scaled_digits_student  # noqa: F401
    from tfkd.tuning.hypermodel import student_checkpoints  # noqa: F401
    from tfkd.tuning.signature import TUNERS  # noqa: F401
    from tfkd.tuning.search import best_student  # noqa: F401
    from tfkd.tuning.search import best_students  # noqa: F401
    from tfkd.tuning.search import build_tuner  # noqa: F401
    from tfkd.tuning.search import format_trials  # noqa: F401
    from tfkd.tuning.search import trial_rows  # noqa: F401
    from tfkd.tuning.spaces import COMMON_SEARCH_SPACE  # noqa: F401
    from tfkd.tuning.spaces import DEFAULT_SEARCH_SPACES  # noqa: F401
    from tfkd.tuning.spaces import default_search_space  # noqa: F401
    from tfkd.tuning.spaces import normalize_spec  # noqa: F401
    from tfkd.tuning.spaces import register_search_space  # noqa: F401
    from tfkd.tuning.search import BayesianOptimization  # noqa: F401
    from tfkd.tuning.search import Hyperband  # noqa: F401
    from tfkd.tuning.search import RandomSearch  # noqa: F401

__getattr__, __dir__, __all__ = _lazy.attach(__name__)
