"""Dataset and DataLoader: batches of Tensors, shuffled reproducibly from a seed."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


class Dataset:
    """Anything with __len__ and __getitem__(i) -> tuple of arrays."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


class TensorDataset(Dataset):
    """Rows of equally long arrays, e.g. TensorDataset(images, labels)."""

    def __init__(self, *arrays):
        self.arrays = tuple(np.asarray(a.data if isinstance(a, Tensor) else a) for a in arrays)
        lengths = {len(a) for a in self.arrays}
        if len(lengths) != 1:
            raise ValueError(f"TensorDataset arrays must have the same length, got {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Iterate over `dataset` in batches of Tensors.

    shuffle=True draws a new permutation every epoch from a generator seeded with `seed`,
    so two loaders built with the same seed yield the same batches epoch after epoch.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 32, shuffle: bool = False,
                 seed: int | None = None, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batch(self, indices: np.ndarray) -> tuple:
        if isinstance(self.dataset, TensorDataset):  # one fancy-index per array, no per-item loop
            columns = [a[indices] for a in self.dataset.arrays]
        else:
            items = [self.dataset[int(i)] for i in indices]
            columns = [np.stack(col) for col in zip(*items)]
        return tuple(Tensor(col) for col in columns)

    def __iter__(self):
        n = len(self.dataset)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self._batch(order[start:start + self.batch_size])
