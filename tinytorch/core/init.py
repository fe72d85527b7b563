"""Parameter initialisation and the global random generator (`manual_seed` makes runs repeat)."""
from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator used for weight initialisation and dropout (like torch.manual_seed)."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _rng


def uniform_fan_in(shape: tuple, fan_in: int) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for Linear and Conv2d
    (kaiming_uniform with a=sqrt(5) reduces to this bound)."""
    bound = 1.0 / np.sqrt(fan_in)
    return _rng.uniform(-bound, bound, size=shape).astype(np.float32)
