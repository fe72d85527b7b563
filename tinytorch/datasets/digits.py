"""The UCI handwritten digits (8x8, 10 classes), with a fixed stratified train/test split."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.data import DataLoader, TensorDataset

DIGITS_PATH = Path(__file__).with_name("digits.npz")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, a seeded shuffle puts round(20%) of its samples in the test set."""
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for cls in range(10):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(TEST_FRACTION * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images float32 (N, 1, 8, 8) in [0, 1] and labels int64 (N,).

    split: "train" (1438 samples), "test" (359) or "all" (1797).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    with np.load(DIGITS_PATH, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]
    y = labels.astype(np.int64)
    if split == "all":
        return x, y
    train, test = _split_indices(y)
    index = train if split == "train" else test
    return x[index], y[index]


def digits_loaders(batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """(train loader shuffled with `seed`, test loader in order) over the fixed split."""
    train = DataLoader(TensorDataset(*load_digits("train")), batch_size, shuffle=True, seed=seed)
    test = DataLoader(TensorDataset(*load_digits("test")), batch_size=512)
    return train, test
