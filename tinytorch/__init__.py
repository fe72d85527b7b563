"""TinyTorch: a NumPy-only deep-learning library that students build module by module."""
from .core import *  # noqa: F401,F403  (the public core API: Tensor, Linear, Conv2d, ...)

__version__ = "0.18.0"
