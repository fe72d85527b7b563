"""TinyTransformer: a ViT-style classifier over image patches, built as a Sequential so its
blocks can be inspected, skipped or removed one by one."""
from __future__ import annotations

from ..core import init
from ..core.attention import TransformerBlock
from ..core.layers import LayerNorm, Linear, Sequential
from ..core.module import Module, Parameter
from ..core.tensor import Tensor


class PatchEmbedding(Module):
    """Cut (N, C, H, W) images into non-overlapping patch_size x patch_size patches, project
    each to `dim` and add a learned position embedding: output (N, num_patches, dim)."""

    def __init__(self, image_size: int = 8, patch_size: int = 2, in_channels: int = 1, dim: int = 32):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        self.image_size, self.patch_size, self.in_channels, self.dim = image_size, patch_size, in_channels, dim
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = Linear(in_channels * patch_size * patch_size, dim)
        self.position = Parameter(init.normal((self.num_patches, dim), std=0.02))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        p = self.patch_size
        patches = x.reshape(n, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(n, self.num_patches, c * p * p)
        return self.proj(patches) + self.position

    def config(self) -> dict:
        return {"image_size": self.image_size, "patch_size": self.patch_size,
                "in_channels": self.in_channels, "dim": self.dim}


class TokenMean(Module):
    """Average over tokens: (N, T, dim) -> (N, dim)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(axis=1)


class TinyTransformer(Sequential):
    """PatchEmbedding -> `depth` TransformerBlocks -> LayerNorm -> TokenMean -> Linear.

    Input (N, 1, 8, 8); output logits (N, num_classes).
    """

    def __init__(self, image_size: int = 8, patch_size: int = 2, in_channels: int = 1, dim: int = 32,
                 depth: int = 2, num_heads: int = 4, mlp_ratio: int = 2, num_classes: int = 10):
        super().__init__(
            PatchEmbedding(image_size, patch_size, in_channels, dim),
            *[TransformerBlock(dim, num_heads, mlp_ratio) for _ in range(depth)],
            LayerNorm(dim), TokenMean(), Linear(dim, num_classes))
