from tfkd.layers.maxout import Maxout  # noqa: F401
from tfkd.layers.self_taught_conv2d import SelfTaughtConv2D  # noqa: F401
from tfkd.layers.self_taught_conv2d import find_guided_channels  # noqa: F401
