"""Basic layers: Linear, activations, Flatten, Dropout, LayerNorm and Sequential."""
from __future__ import annotations

import operator

import numpy as np

from . import init
from .init import generator, uniform_fan_in
from .module import Module, Parameter
from .tensor import Tensor


class Linear(Module):
    """y = x @ weight.T + bias.

    Shapes: input (..., in_features) -> output (..., out_features);
    weight (out_features, in_features), bias (out_features,).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(uniform_fan_in((self.out_features, self.in_features), self.in_features))
        self.bias = Parameter(uniform_fan_in((self.out_features,), self.in_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        out = x @ self.weight.T
        return out + self.bias if self.bias is not None else out

    def config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...): keeps the batch axis, like nn.Flatten()."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class Dropout(Module):
    """Zero each element with probability p in training mode, scaling the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = (generator().random(x.shape) >= self.p).astype(np.float32) / (1.0 - self.p)
        return x * keep

    def config(self) -> dict:
        return {"p": self.p}


class LayerNorm(Module):
    """Normalise the last axis to zero mean, unit variance, then scale and shift.

    Shapes: input (..., normalized_shape); weight and bias (normalized_shape,).
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5):
        super().__init__()
        self.normalized_shape, self.eps = int(normalized_shape), float(eps)
        self.weight = Parameter(init.ones(self.normalized_shape))
        self.bias = Parameter(init.zeros(self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(axis=-1, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=-1, keepdims=True)  # biased, as in PyTorch
        return centered / (var + self.eps).sqrt() * self.weight + self.bias

    def config(self) -> dict:
        return {"normalized_shape": self.normalized_shape, "eps": self.eps}


class Sequential(Module):
    """Apply layers in order. Indexable (`model[0]`, slices give a Sequential), iterable,
    `len()`-able, and editable (`model[i] = layer` keeps the position, `del model[i]`
    renumbers, `append`) so compression code can swap or drop layers; children are named
    "0", "1", ... as in PyTorch."""

    def __init__(self, *layers: Module):
        super().__init__()
        self._set_layers(layers)

    @staticmethod
    def _check_layer(layer, position) -> None:
        if not isinstance(layer, Module):
            raise ValueError(f"Sequential takes Modules, got {type(layer).__name__} at position {position}")

    def _set_layers(self, layers) -> None:
        """Replace all children by `layers`, named "0", "1", ...; a bad layer leaves self unchanged."""
        layers = list(layers)
        for i, layer in enumerate(layers):
            self._check_layer(layer, i)
        for name in list(self._modules):
            delattr(self, name)
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def _name(self, index) -> str:
        """The child name of integer position `index` (negative counts from the end)."""
        n = len(self._modules)
        try:
            i = operator.index(index)
        except TypeError:
            raise ValueError(f"index must be an int, got {type(index).__name__}") from None
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a Sequential of {n} layers")
        return list(self._modules)[i % n]

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*list(self._modules.values())[index])
        return self._modules[self._name(index)]

    def __setitem__(self, index: int, layer: Module) -> None:
        """Put `layer` at position `index`, keeping every other layer where it is."""
        name = self._name(index)
        self._check_layer(layer, index)
        setattr(self, name, layer)

    def __delitem__(self, index) -> None:
        layers = list(self._modules.values())
        del layers[index]
        self._set_layers(layers)  # renumber: the children stay "0" .. "n-1", as in PyTorch

    def append(self, layer: Module) -> "Sequential":
        self._check_layer(layer, len(self))
        setattr(self, str(len(self)), layer)
        return self

    @classmethod
    def from_layers(cls, layers) -> "Sequential":
        """An instance of `cls` holding exactly `layers`, without running cls.__init__.

        Used by `load_model` and structured pruning: for a Sequential subclass such as
        SimpleCNN the layer list, not the constructor arguments, is the truth.
        """
        obj = cls.__new__(cls)
        Sequential.__init__(obj, *layers)
        return obj


__all__ = ["Linear", "ReLU", "Tanh", "Flatten", "Dropout", "LayerNorm", "Sequential"]
