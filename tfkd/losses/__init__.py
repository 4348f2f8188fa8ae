"""Distillation losses: pure tensor functions plus thin Keras wrappers.

Every function takes `(teacher_..., student_...)` in that order and returns
per-example values of shape `(batch,)` unless documented as batch-level.
"""

from tfkd.losses.kd import KDLoss  # noqa: F401
from tfkd.losses.kd import SoftCrossEntropy  # noqa: F401
from tfkd.losses.kd import class_loss  # noqa: F401
from tfkd.losses.kd import cross_entropy  # noqa: F401
from tfkd.losses.kd import kd_loss  # noqa: F401
from tfkd.losses.kd import soft_cross_entropy  # noqa: F401
