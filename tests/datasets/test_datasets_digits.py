"""The bundled UCI digits and its fixed stratified split."""
import numpy as np
import pytest

from tinytorch.core import Tensor
from tinytorch.datasets import digits_loaders, load_digits


@pytest.fixture(scope="module")
def splits():
    return {name: load_digits(name) for name in ("train", "test", "all")}


@pytest.mark.parametrize("name,n", [("train", 1438), ("test", 359), ("all", 1797)])
def test_shapes_dtypes_ranges(splits, name, n):
    x, y = splits[name]
    assert x.shape == (n, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    np.testing.assert_allclose(x * 16, np.round(x * 16), atol=1e-5)  # 17 grey levels


def _row_keys(x, y):
    return [row.tobytes() + bytes([label]) for row, label in zip((x * 16).round().astype(np.uint8), y)]


def test_train_and_test_partition_all(splits):
    (xtr, ytr), (xte, yte), (xall, yall) = splits["train"], splits["test"], splits["all"]
    assert len(ytr) + len(yte) == 1797
    # match rows back to the full set: every sample appears once, in exactly one split
    # (duplicated images in the raw data are handled by counting)
    from collections import Counter
    all_counts = Counter(_row_keys(xall, yall))
    split_counts = Counter(_row_keys(xtr, ytr)) + Counter(_row_keys(xte, yte))
    assert split_counts == all_counts


def test_split_is_disjoint_by_index():
    from tinytorch.datasets.digits import _split_indices
    _, y = load_digits("all")
    train, test = _split_indices(y)
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))


def test_split_is_stratified(splits):
    _, yall = splits["all"]
    _, yte = splits["test"]
    for cls in range(10):
        total, in_test = np.sum(yall == cls), np.sum(yte == cls)
        assert abs(in_test - 0.2 * total) <= 0.5 + 1e-9, (cls, in_test, total)


def test_deterministic_across_calls(splits):
    for name in ("train", "test"):
        x, y = load_digits(name)
        np.testing.assert_array_equal(x, splits[name][0])
        np.testing.assert_array_equal(y, splits[name][1])


def test_bad_split_name():
    with pytest.raises(ValueError):
        load_digits("validation")


def test_digits_loaders():
    train, test = digits_loaders(batch_size=100, seed=3)
    xb, yb = next(iter(train))
    assert isinstance(xb, Tensor) and xb.shape == (100, 1, 8, 8) and xb.dtype == np.float32
    assert yb.dtype == np.int64
    assert len(train) == 15 and len(test) == 1
    again, _ = digits_loaders(batch_size=100, seed=3)
    np.testing.assert_array_equal(next(iter(again))[1].data, yb.data)
    xt, yt = next(iter(test))
    np.testing.assert_array_equal(yt.data, load_digits("test")[1])  # test loader is in order
