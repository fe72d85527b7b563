"""Conv2d and MaxPool2d on (N, C, H, W) batches, vectorized with im2col.

im2col turns every receptive field into one row of a matrix, so the whole convolution is
a single BLAS matrix multiply: (N*Ho*Wo, C*kh*kw) @ (C*kh*kw, out_channels).  The only
Python loops are over the kh*kw kernel offsets in backward, never over pixels.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .init import uniform_fan_in
from .module import Module, Parameter
from .tensor import Tensor


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)


def im2col(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple) -> tuple[np.ndarray, int, int]:
    """(N, C, H, W) -> columns (N*Ho*Wo, C*kh*kw) in (c, i, j) order, plus Ho and Wo."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # N,C,Ho,Wo,kh,kw
    n, c, ho, wo = windows.shape[:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    return cols, ho, wo


def col2im(cols: np.ndarray, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple) -> np.ndarray:
    """Adjoint of im2col: scatter-add column gradients back to an (N, C, H, W) array."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x_shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    grid = cols.reshape(n, ho, wo, c, kh, kw)
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += grid[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return padded[:, :, ph:ph + h, pw:pw + w]


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in PyTorch).

    Shapes: input (N, in_channels, H, W) -> output (N, out_channels, Ho, Wo) with
    Ho = (H + 2*padding - kernel_size) // stride + 1; weight (out, in, kh, kw), bias (out,).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = Parameter(uniform_fan_in((self.out_channels, self.in_channels, *self.kernel_size), fan_in))
        self.bias = Parameter(uniform_fan_in((self.out_channels,), fan_in)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d expects input (N, {self.in_channels}, H, W), got {x.shape}")
        cols, ho, wo = im2col(x.data, self.kernel_size, self.stride, self.padding)
        w2 = self.weight.data.reshape(self.out_channels, -1)
        out = cols @ w2.T
        if self.bias is not None:
            out += self.bias.data
        n = x.shape[0]
        out = out.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2)
        x_shape, weight_shape = x.shape, self.weight.shape

        def backward(g):
            g2 = g.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
            grad_w = (g2.T @ cols).reshape(weight_shape)
            grad_x = col2im(g2 @ w2, x_shape, self.kernel_size, self.stride, self.padding)
            grads = (grad_x, grad_w)
            return grads + ((g2.sum(axis=0),) if self.bias is not None else ())

        parents = (x, self.weight) + ((self.bias,) if self.bias is not None else ())
        return x._make(np.ascontiguousarray(out), parents, backward)

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "bias": self.bias is not None}


class MaxPool2d(Module):
    """Max over non-overlapping kernel_size windows (stride = kernel_size); a ragged edge is
    dropped, as PyTorch does. The gradient goes to the first maximum of each window."""

    def __init__(self, kernel_size: int = 2):
        super().__init__()
        self.kernel_size = int(kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel_size
        n, c, h, w = x.shape
        ho, wo = h // k, w // k
        blocks = x.data[:, :, :ho * k, :wo * k].reshape(n, c, ho, k, wo, k)
        blocks = blocks.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ho, wo, k * k)
        winner = blocks.argmax(axis=-1)
        out = np.take_along_axis(blocks, winner[..., None], axis=-1)[..., 0]

        def backward(g):
            grad_blocks = np.zeros((n, c, ho, wo, k * k), dtype=g.dtype)
            np.put_along_axis(grad_blocks, winner[..., None], g[..., None], axis=-1)
            grad = grad_blocks.reshape(n, c, ho, wo, k, k).transpose(0, 1, 2, 4, 3, 5)
            full = np.zeros(x.shape, dtype=g.dtype)
            full[:, :, :ho * k, :wo * k] = grad.reshape(n, c, ho * k, wo * k)
            return (full,)

        return x._make(out, (x,), backward)

    def config(self) -> dict:
        return {"kernel_size": self.kernel_size}
