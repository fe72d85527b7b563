"""Reference models and their pretrained weights (trained by scripts/train_pretrained.py)."""
from pathlib import Path

from ..core.serialization import load_model, read_metadata
from .cnn import SimpleCNN
from .mlp import MLP
from .transformer import PatchEmbedding, TinyTransformer, TokenMean

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
PRETRAINED = {"mlp": "digits_mlp.npz", "cnn": "digits_cnn.npz", "transformer": "digits_transformer.npz"}


def pretrained_path(name: str) -> Path:
    if name not in PRETRAINED:
        raise ValueError(f"name must be one of {sorted(PRETRAINED)}, got {name!r}")
    return PRETRAINED_DIR / PRETRAINED[name]


def load_pretrained(name: str):
    """The trained digits model "mlp", "cnn" or "transformer", in eval mode."""
    return load_model(pretrained_path(name))


def pretrained_metadata(name: str) -> dict:
    """What the training script recorded: test accuracy, epochs, seed, seconds."""
    return read_metadata(pretrained_path(name))


__all__ = ["MLP", "SimpleCNN", "TinyTransformer", "PatchEmbedding", "TokenMean",
           "load_pretrained", "pretrained_metadata", "pretrained_path", "PRETRAINED"]
