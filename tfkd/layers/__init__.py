from tfkd.layers.maxout import Maxout  # noqa: F401
from tfkd.layers.self_taught_conv2d import SelfTaughtConv2D  # noqa: F401
from tfkd.layers.self_taught_conv2d import find_guided_channels  # noqa: F401
from tfkd.layers.teacher_to_student import TeacherToStudent  # noqa: F401
from tfkd.layers.teacher_to_student import pretrain_regressor  # noqa: F401
from tfkd.layers.teacher_to_student import (  # noqa: F401
    regressor_kernel_size,
)
from tfkd.layers.teacher_to_student import upsampling_factor  # noqa: F401
from tfkd.layers.feature_adapter import FeatureAdapter  # noqa: F401
