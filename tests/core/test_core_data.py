"""TensorDataset / Dataset / DataLoader batching, shuffling and reproducibility."""
import numpy as np
import pytest

from tinytorch.core import DataLoader, Dataset, Tensor, TensorDataset


def dataset(n=10):
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return TensorDataset(x, np.arange(n))


def ids_of(loader):
    return [b[1].data.tolist() for b in loader]


def test_batches_shapes_dtypes_and_partial_last_batch():
    loader = DataLoader(dataset(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert [b[0].shape for b in batches] == [(4, 2), (4, 2), (2, 2)]
    assert all(isinstance(t, Tensor) for b in batches for t in b)
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    assert ids_of(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # no shuffle: in order
    np.testing.assert_array_equal(batches[2][0].data, [[16, 17], [18, 19]])


def test_drop_last():
    loader = DataLoader(dataset(10), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [b[0].shape[0] for b in loader] == [4, 4]
    assert len(DataLoader(dataset(8), batch_size=4, drop_last=True)) == 2
    assert len(DataLoader(dataset(3), batch_size=4, drop_last=True)) == 0
    assert list(DataLoader(dataset(3), batch_size=4, drop_last=True)) == []


def test_shuffle_is_a_permutation_without_duplicates_and_pairs_stay_aligned():
    loader = DataLoader(dataset(23), batch_size=5, shuffle=True, seed=1)
    seen = []
    for x, y in loader:
        np.testing.assert_array_equal(x.data[:, 0], 2 * y.data)  # rows keep their labels
        seen += y.data.tolist()
    assert sorted(seen) == list(range(23)) and len(seen) == 23


def test_same_seed_same_batches_every_epoch_and_epochs_differ():
    a = DataLoader(dataset(30), batch_size=7, shuffle=True, seed=42)
    b = DataLoader(dataset(30), batch_size=7, shuffle=True, seed=42)
    a1, a2 = ids_of(a), ids_of(a)
    assert a1 == ids_of(b) and a2 == ids_of(b)
    assert a1 != a2
    assert sorted(sum(a2, [])) == list(range(30))
    assert ids_of(DataLoader(dataset(30), batch_size=7, shuffle=True, seed=43)) != a1
    assert sum(a1, []) != list(range(30))  # actually shuffled


def test_drop_last_with_shuffle_drops_different_samples_but_no_duplicates():
    loader = DataLoader(dataset(10), batch_size=3, shuffle=True, seed=0, drop_last=True)
    for _ in range(3):
        flat = sum(ids_of(loader), [])
        assert len(flat) == 9 and len(set(flat)) == 9


def test_generic_dataset_is_stacked():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i, i * i], dtype=np.float32), np.int64(i % 2)

    batches = list(DataLoader(Squares(), batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 2), (2, 2), (1, 2)]
    np.testing.assert_array_equal(batches[1][0].data, [[2, 4], [3, 9]])
    np.testing.assert_array_equal(batches[1][1].data, [0, 1])


def test_tensor_dataset_indexing_and_validation():
    ds = TensorDataset(Tensor(np.ones((3, 2))), np.arange(3))
    assert len(ds) == 3
    x, y = ds[1]
    assert x.shape == (2,) and y == 1
    with pytest.raises(ValueError):
        TensorDataset(np.ones((3, 2)), np.arange(4))


def test_invalid_batch_size():
    with pytest.raises(ValueError):
        DataLoader(dataset(), batch_size=0)
