"""Parameter initialisation, the global random generator (`manual_seed` makes runs repeat) and
an allocation budget.

Every layer allocates its parameters through the helpers here (`uniform_fan_in`, `zeros`,
`ones`, `normal`). Each helper checks the active `allocation_budget` BEFORE allocating, so
`build_module(spec, max_elements=N)` can refuse a file that describes a model too large for
it (e.g. a 400-byte file declaring Linear(8000, 8000)) without ever allocating the weights.
"""
from __future__ import annotations

import contextlib
import contextvars
import operator
from typing import Iterator

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator used for weight initialisation and dropout (like torch.manual_seed)."""
    global _rng
    _rng = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _rng


# ------------------------------------------------------------------ allocation budget
class AllocationBudget:
    """Elements that the helpers of this module may still allocate (see allocation_budget)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.remaining = limit

    def reserve(self, shape: tuple) -> None:
        """Charge prod(shape) elements, or raise ValueError if fewer remain (nothing charged)."""
        n = _num_elements(shape)
        if n > self.remaining:
            raise ValueError(f"allocating an array of shape {shape} ({n} elements) exceeds the allocation "
                             f"budget ({self.remaining} of {self.limit} elements left)")
        self.remaining -= n


# A ContextVar, not a global: a budget entered in one thread does not limit another thread.
_budget: contextvars.ContextVar[AllocationBudget | None] = contextvars.ContextVar("allocation_budget",
                                                                                   default=None)


@contextlib.contextmanager
def allocation_budget(n_elements: int) -> Iterator[AllocationBudget]:
    """Within the block, the helpers of this module allocate at most `n_elements` elements in
    total (any dtype); one that would exceed it raises ValueError before allocating.

    Nested budgets: the inner one is also capped by what the outer one has left, and what the
    inner block allocates is charged to the outer budget too.
    """
    if isinstance(n_elements, bool) or not isinstance(n_elements, (int, np.integer)) or n_elements < 0:
        raise ValueError(f"n_elements must be a non-negative int, got {n_elements!r}")
    outer = _budget.get()
    limit = int(n_elements) if outer is None else min(int(n_elements), outer.remaining)
    budget = AllocationBudget(limit)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)
        if outer is not None:
            outer.remaining -= budget.limit - budget.remaining


def _shape(shape) -> tuple:
    """`shape` as a tuple of non-negative Python ints (an int n means (n,)), or ValueError."""
    try:
        dims = (operator.index(shape),) if not isinstance(shape, (tuple, list)) else \
            tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ValueError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must not have negative sizes, got {dims}")
    return dims


def _num_elements(shape: tuple) -> int:
    n = 1
    for d in shape:
        n *= d  # Python ints: a huge declared shape cannot overflow into a small number
    return n


def _reserve(shape) -> tuple:
    shape = _shape(shape)
    budget = _budget.get()
    if budget is not None:
        budget.reserve(shape)
    return shape


# ------------------------------------------------------------------ allocation helpers
def uniform_fan_in(shape: tuple, fan_in: int) -> np.ndarray:
    """float32 array of `shape` drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default
    for Linear and Conv2d (kaiming_uniform with a=sqrt(5) reduces to this bound)."""
    shape = _reserve(shape)
    bound = 1.0 / np.sqrt(fan_in)
    return _rng.uniform(-bound, bound, size=shape).astype(np.float32)


def zeros(shape, dtype=np.float32) -> np.ndarray:
    """np.zeros(shape, dtype), charged to the active allocation budget."""
    return np.zeros(_reserve(shape), dtype=dtype)


def ones(shape, dtype=np.float32) -> np.ndarray:
    """np.ones(shape, dtype), charged to the active allocation budget."""
    return np.ones(_reserve(shape), dtype=dtype)


def normal(shape, std: float, dtype=np.float32) -> np.ndarray:
    """N(0, std^2) samples of `shape` from the global generator (drawn in float64, then cast,
    so a seed gives the same values as `std * generator().standard_normal(shape)`)."""
    shape = _reserve(shape)
    return (std * _rng.standard_normal(shape)).astype(dtype)
