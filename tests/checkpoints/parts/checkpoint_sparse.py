"""Checkpoint 18, part: sparse inference and the compression pipeline (section 5)."""
import time

import numpy as np
import pytest

from tinytorch.core import Conv2d, Linear, ReLU, Sequential, Tensor, no_grad
from tinytorch.datasets import load_digits
from tinytorch.models import load_pretrained
from tinytorch.optimization import compression as C

POINTS = {
    "test_csr_from_dense_canonical": 2,
    "test_csr_matvec": 2,
    "test_csr_kernels_vectorized": 1,
    "test_csr_validation": 1,
    "test_quantized_csr_storage": 2,
    "test_to_sparse_equivalence": 3,
    "test_compressed_roundtrip": 2,
    "test_compressed_file_errors": 1,
}

_W = np.array([[0, 5, 0, 0],
               [0, 0, 0, 0],      # an empty row: indptr must repeat
               [1, 0, 0, 2],
               [0, 0, 0, 3]], dtype=np.float32)


def _pruned(name, sparsity=0.9):
    model = load_pretrained(name)
    C.prune_magnitude(model, sparsity)
    return model


def test_csr_from_dense_canonical():
    A = C.CSRMatrix.from_dense(_W)
    assert A.data.tolist() == [5, 1, 2, 3], f"data must list the nonzeros row by row, got {A.data.tolist()}"
    assert A.indices.tolist() == [1, 0, 3, 3], f"indices must be the column of each value, got {A.indices.tolist()}"
    assert A.indptr.tolist() == [0, 1, 1, 3, 4], (
        f"indptr must be [0, 1, 1, 3, 4] (length rows + 1, starting at 0, repeated for the empty row); "
        f"got {A.indptr.tolist()}: off by one?")
    assert A.nnz == 4 and A.shape == (4, 4), "nnz or shape is wrong"
    assert np.array_equal(A.to_dense(), _W), "to_dense does not give back the matrix"
    W = np.array([[0.0, 0.0, 7.0, 0.0, -1.0], [2.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    B = C.CSRMatrix.from_dense(W)
    assert B.indices.tolist() == [2, 4, 0], "columns must be sorted within each row (canonical CSR)"
    assert B.nbytes == B.data.nbytes + B.indices.nbytes + B.indptr.nbytes, "nbytes must be data + indices + indptr"
    E = C.CSRMatrix.from_dense(np.zeros((3, 2), np.float32))
    assert E.nnz == 0 and E.indptr.tolist() == [0, 0, 0, 0], "an all-zero matrix has nnz 0 and indptr all 0"


def test_csr_matvec():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((12, 9)).astype(np.float32) * (rng.random((12, 9)) < 0.3)
    W[[0, 6, 11]] = 0.0
    for M in (W, _W, np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32), np.zeros((0, 4), np.float32)):
        A = C.CSRMatrix.from_dense(M)
        x = rng.standard_normal(M.shape[1]).astype(np.float32)
        X = rng.standard_normal((M.shape[1], 5)).astype(np.float32)
        y = C.csr_matvec(A, x)
        assert y.shape == (M.shape[0],), f"csr_matvec must return shape (rows,), got {y.shape}"
        assert np.allclose(y, M.astype(np.float64) @ x, atol=1e-5), "csr_matvec differs from the dense product"
        assert np.allclose(C.csr_matmul(A, X), M.astype(np.float64) @ X, atol=1e-5), \
            "csr_matmul differs from the dense product (empty rows? reduceat?)"
        assert np.allclose(A.matvec(x), y) and np.allclose(A.matmul(X), M @ X, atol=1e-5), \
            "the matvec/matmul methods must agree with the kernels"


def test_csr_kernels_vectorized():
    rows = 300_000
    W = np.zeros((rows, 4), np.float32)
    W[np.arange(rows), np.arange(rows) % 4] = 2.0
    start = time.perf_counter()
    A = C.CSRMatrix.from_dense(W)
    y = C.csr_matvec(A, np.arange(4, dtype=np.float32))
    Y = C.csr_matmul(A, np.ones((4, 2), np.float32))
    seconds = time.perf_counter() - start
    assert np.array_equal(y, 2.0 * (np.arange(rows) % 4)) and (Y == 2.0).all(), "wrong result on a tall matrix"
    assert seconds < 1.0, (f"from_dense + kernels took {seconds:.2f} s on {rows:,} rows: "
                           "a Python loop over rows or nonzeros? (vectorized code takes ~0.05 s)")


def test_csr_validation():
    good = dict(data=[5.0, 1.0], indices=[1, 0], indptr=[0, 1, 1, 2], shape=(3, 2))
    cases = [("indptr", dict(indptr=[0, 1, 2])), ("indptr", dict(indptr=[1, 1, 1, 2])),
             ("indptr", dict(indptr=[0, 2, 1, 2])), ("indptr", dict(indptr=[0, 1, 1, 3])),
             ("indices", dict(indices=[1, 2])), ("indices", dict(indices=[1.0, 0.0])),
             ("data", dict(data=[5.0])), ("shape", dict(shape=(3, -1)))]
    for name, change in cases:
        with pytest.raises(ValueError) as info:
            C.CSRMatrix(**{**good, **change})
        assert name in str(info.value), f"CSRMatrix({change}) must raise ValueError naming {name!r}"


def test_quantized_csr_storage():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((40, 200)).astype(np.float32) * (rng.random((40, 200)) < 0.2)
    Q = C.CSRMatrix.from_dense(W).quantize("row")
    assert Q.values.dtype == np.int8, "values must be stored as int8"
    assert Q.indices.dtype == np.uint8, f"200 columns fit uint8 indices, got {Q.indices.dtype}"
    assert Q.indptr.dtype == np.uint16, f"indptr holds up to nnz={Q.nnz} (needs uint16), got {Q.indptr.dtype}"
    assert Q.scale.shape == (40,) and Q.scale.dtype == np.float32, "per-row scales must be float32, one per row"
    err = np.abs(Q.dequantize().to_dense() - W)
    assert (err <= Q.scale[:, None] / 2 * (1 + 1e-6)).all(), "int8 round-trip error exceeds scale / 2"
    assert Q.nbytes == Q.values.nbytes + Q.scale.nbytes + Q.indices.nbytes + Q.indptr.nbytes, "wrong nbytes"
    wide = C.CSRMatrix.from_dense(np.ones((1, 300), np.float32)).quantize()
    assert wide.indices.dtype == np.uint16, "300 columns need uint16 indices"


def test_to_sparse_equivalence():
    x = Tensor(load_digits("test")[0][:32])
    for name in ("mlp", "cnn"):
        dense = _pruned(name)
        sparse = C.to_sparse(dense)
        assert not any(isinstance(m, (Linear, Conv2d)) for m in sparse.modules()), \
            f"to_sparse left a dense Linear/Conv2d in the 90%-pruned {name}"
        assert any(isinstance(m, Linear) for m in dense.modules()), "to_sparse must not modify its input"
        with no_grad():
            want, got = dense(x).data, sparse(x).data
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), f"sparse {name} outputs differ from dense"
    nested = Sequential(Sequential(Linear(4, 4), ReLU()), Linear(4, 2))
    nested[0][0].weight.data[:, :3] = 0.0
    out = C.to_sparse(nested, min_sparsity=0.5)
    assert isinstance(out[0][0], C.SparseLinear), "to_sparse must reach layers inside nested Sequentials"
    assert isinstance(out[1], Linear), "a layer below min_sparsity must stay dense"
    with pytest.raises(ValueError):
        C.to_sparse(nested, min_sparsity=1.5)


def test_compressed_roundtrip(tmp_path):
    model = C.to_sparse(_pruned("mlp"), quantize=True)
    path = tmp_path / "mlp.npz"
    C.save_compressed(model, path)
    with np.load(path, allow_pickle=False) as archive:
        dtypes = {k: archive[k].dtype for k in archive.files}
    assert np.dtype(np.int8) in dtypes.values(), "sparse values must be saved as int8"
    assert not any(d == np.float32 and "indices" in k for k, d in dtypes.items()), "indices saved as floats"
    loaded = C.load_compressed(path)
    x = Tensor(load_digits("test")[0][:32])
    with no_grad():
        assert np.array_equal(loaded(x).data, model(x).data), "the loaded model computes something else"
    dense_bytes = 4 * sum(p.size for p in load_pretrained("mlp").parameters())
    assert C.model_nbytes_compressed(model) * 10 <= dense_bytes, "90% sparse int8 CSR must be >= 10x smaller"


def test_compressed_file_errors(tmp_path):
    model = C.to_sparse(_pruned("mlp"), quantize=True)
    path = tmp_path / "mlp.npz"
    C.save_compressed(model, path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for content in (raw[: len(raw) // 2], b"", b"definitely not a zip"):
        bad.write_bytes(content)
        with pytest.raises(ValueError):
            C.load_compressed(bad)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays.pop("sparse:1:indptr")
    np.savez(bad, **arrays)
    with pytest.raises(ValueError):
        C.load_compressed(bad)
