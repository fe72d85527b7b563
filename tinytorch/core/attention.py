"""Multi-head self-attention and a pre-norm transformer block (the ViT/GPT-2 layout)."""
from __future__ import annotations

import numpy as np

from .functional import softmax
from .layers import LayerNorm, Linear, ReLU, Sequential
from .module import Module
from .tensor import Tensor


class MultiHeadSelfAttention(Module):
    """softmax(Q K^T / sqrt(d_head)) V over `num_heads` heads, then an output projection.

    Shapes: input (B, T, dim) -> output (B, T, dim). `qkv` is Linear(dim, 3*dim) producing
    queries, keys and values at once; `proj` is Linear(dim, dim).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim, self.num_heads = int(dim), int(num_heads)
        self.qkv = Linear(dim, 3 * dim)
        self.proj = Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h, dh = self.num_heads, d // self.num_heads
        qkv = self.qkv(x).reshape(b, t, 3, h, dh).transpose(2, 0, 3, 1, 4)  # 3, B, H, T, dh
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = softmax(q @ k.transpose(0, 1, 3, 2) * (1.0 / np.sqrt(dh)), axis=-1)  # B,H,T,T
        out = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        return self.proj(out)

    def config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.num_heads}


class TransformerBlock(Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x)); keeps the input shape (B, T, dim)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.dim, self.num_heads, self.mlp_ratio = int(dim), int(num_heads), int(mlp_ratio)
        self.norm1 = LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads)
        self.norm2 = LayerNorm(dim)
        self.mlp = Sequential(Linear(dim, mlp_ratio * dim), ReLU(), Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def config(self) -> dict:
        return {"dim": self.dim, "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}
