"""MLP: a LeNet-300-100 style multilayer perceptron (the model Deep Compression pruned)."""
from __future__ import annotations

from ..core.layers import Flatten, Linear, ReLU, Sequential


class MLP(Sequential):
    """Flatten -> [Linear -> ReLU] per hidden size -> Linear(num_classes).

    Input (N, 1, 8, 8) or (N, 64); output logits (N, num_classes).
    """

    def __init__(self, in_features: int = 64, hidden: tuple = (300, 100), num_classes: int = 10):
        layers, width = [Flatten()], in_features
        for size in hidden:
            layers += [Linear(width, size), ReLU()]
            width = size
        layers.append(Linear(width, num_classes))
        super().__init__(*layers)
