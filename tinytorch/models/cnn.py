"""SimpleCNN: two wide 3x3 convolutions, so convolution dominates the run time."""
from __future__ import annotations

from ..core.conv import Conv2d, MaxPool2d
from ..core.layers import Flatten, Linear, ReLU, Sequential


class SimpleCNN(Sequential):
    """Conv(3x3, pad 1) -> ReLU -> MaxPool(2), twice, then Flatten -> Linear(num_classes).

    Input (N, in_channels, image_size, image_size); output logits (N, num_classes).
    With the default 64 and 128 channels on 8x8 digits, the second convolution holds ~90%
    of the multiply-accumulates: removing channels there gives a real speed-up.
    """

    def __init__(self, in_channels: int = 1, channels: tuple = (64, 128), num_classes: int = 10,
                 image_size: int = 8):
        c1, c2 = channels
        side = image_size // 4  # two 2x2 poolings
        super().__init__(
            Conv2d(in_channels, c1, 3, padding=1), ReLU(), MaxPool2d(2),
            Conv2d(c1, c2, 3, padding=1), ReLU(), MaxPool2d(2),
            Flatten(), Linear(c2 * side * side, num_classes))
