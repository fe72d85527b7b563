"""Section 5 of module 18: CSR storage and kernels, int8 CSR, sparse layers, to_sparse,
save_compressed/load_compressed and the compression pipeline.

Oracles: scipy.sparse (a test extra), CSR arrays built with plain Python loops, the dense
product in float64, and the dense (pruned) models themselves."""
import json
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.core import Conv2d, Linear, Module, ReLU, Sequential, Tensor, evaluate, manual_seed, no_grad
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import MLP, load_pretrained
from tinytorch.optimization.compression import (CompressionReport, CSRMatrix, QuantizedCSR, SparseConv2d,
                                                SparseLinear, compress, compressed_file_size, csr_matmul,
                                                csr_matvec, load_compressed, model_nbytes_compressed,
                                                prune_magnitude, save_compressed, sparse_layers, to_sparse)


# ----------------------------------------------------------------------------- helpers
def sparse_matrix(rng, rows, cols, density, empty_rows=()):
    W = rng.standard_normal((rows, cols)).astype(np.float32)
    W *= rng.random((rows, cols)) < density
    if rows:
        W[[r % rows for r in empty_rows]] = 0.0
    return W


def naive_csr(W):
    data, indices, indptr = [], [], [0]
    for r in range(W.shape[0]):
        for c in range(W.shape[1]):
            if W[r, c] != 0:
                data.append(float(W[r, c]))
                indices.append(c)
        indptr.append(len(data))
    return data, indices, indptr


@st.composite
def matrices(draw, max_side=12):
    rows = draw(st.integers(0, max_side))
    cols = draw(st.integers(0, max_side))
    density = draw(st.sampled_from([0.0, 1.0, 0.05, 0.3, 0.7]))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    empty = draw(st.lists(st.integers(0, max_side), max_size=3))
    return sparse_matrix(rng, rows, cols, density, empty), rng


# ----------------------------------------------------------------------------- CSR format
@pytest.mark.parametrize("shape,density,empty", [((7, 5), 0.3, (0, 3, 6)), ((1, 1), 1.0, ()), ((4, 9), 0.0, ()),
                                                  ((0, 5), 0.5, ()), ((5, 0), 0.5, ()), ((30, 17), 0.9, (2,))])
def test_from_dense_equals_scipy(shape, density, empty):
    sp = pytest.importorskip("scipy.sparse")
    W = sparse_matrix(np.random.default_rng(0), *shape, density, empty)
    ours, ref = CSRMatrix.from_dense(W), sp.csr_matrix(W)
    assert np.array_equal(ours.data, ref.data) and ours.data.dtype == ref.data.dtype
    assert np.array_equal(ours.indices, ref.indices) and ours.indices.dtype == ref.indices.dtype
    assert np.array_equal(ours.indptr, ref.indptr) and ours.indptr.dtype == ref.indptr.dtype
    assert ours.nnz == ref.nnz and ours.shape == ref.shape


def test_kernels_equal_scipy_products():
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(1)
    W = sparse_matrix(rng, 64, 48, 0.1, (5, 6, 63))
    X = rng.standard_normal((48, 9)).astype(np.float32)
    A, ref = CSRMatrix.from_dense(W), sp.csr_matrix(W)
    assert np.allclose(csr_matmul(A, X), ref @ X, atol=1e-5)
    assert np.allclose(csr_matvec(A, X[:, 0]), ref @ X[:, 0], atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(matrices())
def test_csr_canonical_and_round_trip(case):
    W, _ = case
    A = CSRMatrix.from_dense(W)
    data, indices, indptr = naive_csr(W)
    assert A.data.tolist() == data and A.indices.tolist() == indices and A.indptr.tolist() == indptr
    assert np.array_equal(A.to_dense(), W)
    assert A.nnz == np.count_nonzero(W)
    assert A.nbytes == A.data.nbytes + A.indices.nbytes + A.indptr.nbytes
    assert A.density == (A.nnz / W.size if W.size else 0.0)


@settings(max_examples=80, deadline=None)
@given(matrices(), st.integers(0, 5), st.sampled_from([1, 7, 1 << 21]))
def test_kernels_equal_dense(case, batch, budget):
    W, rng = case
    A = CSRMatrix.from_dense(W)
    x = rng.standard_normal(W.shape[1]).astype(np.float32)
    X = rng.standard_normal((W.shape[1], batch)).astype(np.float32)
    y, Y = csr_matvec(A, x), csr_matmul(A, X, gather_budget=budget)  # budget 1: one row per block
    assert y.shape == (W.shape[0],) and Y.shape == (W.shape[0], batch)
    assert np.allclose(y, W.astype(np.float64) @ x, atol=1e-5)
    assert np.allclose(Y, W.astype(np.float64) @ X, atol=1e-5)
    assert np.allclose(A.rmatmul_T(X.T), Y.T)


@pytest.mark.parametrize("budget", [0, -4, 2.5, True, "64"])
def test_gather_budget_must_be_a_positive_int(budget):
    A = CSRMatrix.from_dense(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="gather_budget"):
        csr_matmul(A, np.ones((3, 2), np.float32), gather_budget=budget)
    assert csr_matmul(A, np.ones((3, 2), np.float32), gather_budget=np.int64(1)).tolist() == [[1, 1]] * 3


@settings(max_examples=40, deadline=None)
@given(matrices())
def test_padded_rows_is_the_ellpack_form_built_once(case):
    """Row r's columns and values left-aligned in (rows, K) arrays, K = the longest row,
    padding column 0 / value 0; oracle: the rows of the dense matrix read in a loop."""
    W, _ = case
    A = CSRMatrix.from_dense(W)
    idx, val = A.padded_rows()
    width = max([np.count_nonzero(row) for row in W], default=0)
    assert idx.shape == val.shape == (W.shape[0], width)
    for r, row in enumerate(W):
        cols = np.flatnonzero(row)
        assert idx[r].tolist() == cols.tolist() + [0] * (width - len(cols))
        assert val[r].tolist() == row[cols].tolist() + [0.0] * (width - len(cols))
    again = A.padded_rows()
    assert again[0] is idx and again[1] is val, "built once: the matrix never changes"
    assert not idx.flags.writeable and not val.flags.writeable


def test_padded_rows_of_int8_values_are_float32():
    A = CSRMatrix(np.array([3, -4], np.int8), np.array([1, 0], np.uint8), np.array([0, 1, 1, 2], np.uint8), (3, 2))
    idx, val = A.padded_rows()
    assert val.dtype == np.float32 and val.tolist() == [[3.0], [0.0], [-4.0]] and idx.tolist() == [[1], [0], [0]]


def test_kernel_results_are_float32_for_float32_inputs():
    A = CSRMatrix.from_dense(np.eye(3, dtype=np.float32))
    assert csr_matmul(A, np.ones((3, 2), np.float32)).dtype == np.float32
    assert csr_matvec(A, np.ones(3, np.float32)).dtype == np.float32


@pytest.mark.parametrize("bad", [np.ones(4), np.ones((4, 2)), np.ones((3, 2, 1))])
def test_kernel_shape_errors(bad):
    A = CSRMatrix.from_dense(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="must have shape"):
        csr_matmul(A, bad) if bad.ndim != 1 else csr_matvec(A, bad)
    with pytest.raises(ValueError, match="CSRMatrix"):
        csr_matmul(np.eye(3), np.ones((3, 1)))


GOOD = dict(data=[5.0, 1.0, 2.0], indices=[1, 0, 1], indptr=[0, 1, 1, 3], shape=(3, 2))


@pytest.mark.parametrize("change,name", [
    (dict(shape=(3,)), "shape"), (dict(shape=(3, 2, 1)), "shape"), (dict(shape=(-3, 2)), "shape"),
    (dict(shape=(3.0, 2)), "shape"), (dict(shape=(True, 2)), "shape"), (dict(shape=7), "shape"),
    (dict(data=[5.0, 1.0]), "data"), (dict(data=[[5.0, 1.0, 2.0]]), "data"),
    (dict(data=np.array([5, 1, 2], np.int32)), "data"), (dict(data=["a", "b", "c"]), "data"),
    (dict(indices=[1, 0]), "indices"), (dict(indices=[1.0, 0.0, 1.0]), "indices"),
    (dict(indices=[1, 0, 2]), "indices"), (dict(indices=[1, -1, 0]), "indices"),
    (dict(indices=[[1, 0, 1]]), "indices"),
    (dict(indptr=[0, 1, 3]), "indptr"), (dict(indptr=[1, 1, 1, 3]), "indptr"),
    (dict(indptr=[0, 2, 1, 3]), "indptr"), (dict(indptr=[0, 1, 1, 2]), "indptr"),
    (dict(indptr=[0.0, 1.0, 1.0, 3.0]), "indptr"),
    (dict(indptr=np.array([0, 2, 1, 3], np.uint8)), "indptr"),   # unsigned: the wrap-around trap
])
def test_csr_validation(change, name):
    with pytest.raises(ValueError, match=name):
        CSRMatrix(**{**GOOD, **change})


def test_csr_accepts_valid_variants_and_is_read_only():
    A = CSRMatrix(**GOOD)
    assert A.to_dense().tolist() == [[0, 5], [0, 0], [1, 2]]
    CSRMatrix(np.array([3, -4, 5], np.int8), np.array([1, 0, 1], np.uint8), np.array([0, 1, 1, 3], np.uint16), (3, 2))
    CSRMatrix(np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int32), (0, 0))
    source = np.array(GOOD["data"])
    B = CSRMatrix(source, GOOD["indices"], GOOD["indptr"], GOOD["shape"])
    source[0] = 99.0
    assert B.data[0] == 5.0, "CSRMatrix must copy its inputs"
    with pytest.raises(ValueError):
        B.data[0] = 1.0


# ----------------------------------------------------------------------------- quantized CSR
@settings(max_examples=60, deadline=None)
@given(matrices(max_side=20), st.sampled_from(["row", "tensor"]))
def test_quantized_error_bound(case, per):
    W, _ = case
    Q = CSRMatrix.from_dense(W).quantize(per)
    assert Q.values.dtype == np.int8 and Q.scale.dtype == np.float32
    assert Q.scale.shape == ((W.shape[0],) if per == "row" else ())
    assert (Q.values != 0).all(), "values that round to 0 must be dropped"
    scale = Q.scale[:, None] if per == "row" else Q.scale
    err = np.abs(Q.dequantize().to_dense().astype(np.float64) - W.astype(np.float64))
    # scale / 2 in exact arithmetic; float32 adds one rounding of w / scale and one of q * scale,
    # each at most half a float32 spacing of the value (np.spacing)
    rounding = np.spacing(np.abs(W)).astype(np.float64) + np.spacing(np.float32(np.max(np.abs(W), initial=0)))
    assert (err <= np.broadcast_to(scale, W.shape).astype(np.float64) / 2 + rounding).all()
    assert Q.nbytes == Q.values.nbytes + Q.scale.nbytes + Q.indices.nbytes + Q.indptr.nbytes


def test_quantized_scales_by_hand():
    # no value lands on a rounding tie (x.5 steps), where the float32 rounding of the scale decides
    W = np.array([[0.0, 1.26, -0.5], [0.0, 0.0, 0.0], [2.54, 0.0, 0.004]], dtype=np.float32)
    Q = CSRMatrix.from_dense(W).quantize("row")
    assert np.allclose(Q.scale, [1.26 / 127, 1.0, 0.02])          # an empty row gets scale 1
    assert Q.values.tolist() == [127, -50, 127] and Q.indices.tolist() == [1, 2, 0]  # -0.5 / 0.00992 = -50.4
    assert Q.indptr.tolist() == [0, 2, 2, 3]                      # 0.004 / 0.02 rounds to 0: dropped
    T = CSRMatrix.from_dense(W).quantize("tensor")
    assert np.isclose(T.scale, 0.02) and T.values.tolist() == [63, -25, 127]


@pytest.mark.parametrize("cols,dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                        (65536, np.uint16), (65537, np.uint32)])
def test_index_dtype_narrowing(cols, dtype):
    Q = CSRMatrix.from_dense(np.ones((1, cols), np.float32)).quantize()
    assert Q.indices.dtype == dtype
    assert Q.indptr.dtype == (np.uint8 if cols <= 255 else np.uint16 if cols <= 65535 else np.uint32)


def test_indptr_dtype_follows_nnz():
    assert CSRMatrix.from_dense(np.ones((255, 1), np.float32)).quantize().indptr.dtype == np.uint8
    assert CSRMatrix.from_dense(np.ones((256, 1), np.float32)).quantize().indptr.dtype == np.uint16


@pytest.mark.parametrize("kwargs,name", [
    (dict(values=np.array([1, 2], np.int16)), "values"),
    (dict(scale=np.ones(3, np.float64)), "scale"), (dict(scale=np.ones(2, np.float32)), "scale"),
    (dict(scale=np.array([1.0, 0.0, 1.0], np.float32)), "scale"),
    (dict(scale=np.array([1.0, np.nan, 1.0], np.float32)), "scale"),
    (dict(indptr=np.array([0, 2, 1, 2], np.uint8)), "indptr"),
])
def test_quantized_validation(kwargs, name):
    good = dict(values=np.array([1, 2], np.int8), scale=np.ones(3, np.float32),
                indices=np.array([0, 1], np.uint8), indptr=np.array([0, 1, 1, 2], np.uint8), shape=(3, 2))
    with pytest.raises(ValueError, match=name):
        QuantizedCSR(**{**good, **kwargs})
    with pytest.raises(ValueError, match="per"):
        CSRMatrix.from_dense(np.eye(2, dtype=np.float32)).quantize("channel")


# ----------------------------------------------------------------------------- sparse layers
@pytest.fixture(scope="module")
def images():
    return load_digits("test")[0][:64]


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_to_sparse_equivalence_pretrained(name, images):
    dense = load_pretrained(name)
    prune_magnitude(dense, 0.9)
    sparse = to_sparse(dense)
    assert not any(isinstance(m, (Linear, Conv2d)) for m in sparse.modules())
    assert len(sparse_layers(sparse)) == sum(isinstance(m, (Linear, Conv2d)) for m in dense.modules())
    with no_grad():
        want, got = dense(Tensor(images)).data, sparse(Tensor(images)).data
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_to_sparse_quantized_close_to_dense(images):
    dense = load_pretrained("mlp")
    prune_magnitude(dense, 0.9)
    q = to_sparse(dense, quantize=True)
    with no_grad():
        want, got = dense(Tensor(images)).data, q(Tensor(images)).data
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.95


@pytest.mark.parametrize("stride,padding,kernel", [(1, 0, 3), (2, 1, 3), (1, 2, (3, 2)), (3, 0, 1)])
def test_sparse_conv_matches_conv(stride, padding, kernel):
    manual_seed(0)
    conv = Conv2d(3, 5, kernel, stride=stride, padding=padding)
    rng = np.random.default_rng(0)
    conv.weight.data *= rng.random(conv.weight.shape) < 0.3
    x = Tensor(rng.standard_normal((2, 3, 9, 8)).astype(np.float32))
    sc = SparseConv2d.from_dense(conv)
    with no_grad():
        assert np.allclose(sc(x).data, conv(x).data, atol=1e-5)
    no_bias = Conv2d(3, 5, kernel, stride=stride, padding=padding, bias=False)
    with no_grad():
        assert np.allclose(SparseConv2d.from_dense(no_bias)(x).data, no_bias(x).data, atol=1e-5)


def test_sparse_linear_shapes_and_errors():
    manual_seed(0)
    lin = Linear(6, 4, bias=False)
    sl = SparseLinear.from_dense(lin)
    x = np.random.default_rng(0).standard_normal((2, 3, 6)).astype(np.float32)
    with no_grad():
        assert np.allclose(sl(Tensor(x)).data, lin(Tensor(x)).data, atol=1e-5)
    with pytest.raises(ValueError, match="expects input"):
        sl(Tensor(np.zeros((2, 5), np.float32)))
    with pytest.raises(ValueError, match="linear"):
        SparseLinear.from_dense(Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        sl.set_weight(CSRMatrix.from_dense(np.zeros((6, 4), np.float32)))
    assert Module.registry["SparseLinear"] is SparseLinear and Module.registry["SparseConv2d"] is SparseConv2d
    assert SparseLinear(**sl.config()).weight.shape == (4, 6)


def test_to_sparse_min_sparsity_nesting_and_input_untouched():
    nested = Sequential(Sequential(Linear(4, 4), ReLU(), Linear(4, 2)), ReLU())
    nested[0][0].weight.data[:, :3] = 0.0                     # 75% sparse; nested[0][2] dense
    names = [n for n, _ in nested.named_modules()]
    out = to_sparse(nested, 0.7)
    assert isinstance(out[0][0], SparseLinear) and isinstance(out[0][2], Linear)
    assert [n for n, _ in out.named_modules()] == names, "layer order must be kept"
    assert isinstance(to_sparse(nested, 0.8)[0][0], Linear)
    assert isinstance(to_sparse(nested, 0.0)[0][2], SparseLinear)
    assert isinstance(nested[0][0], Linear), "to_sparse must not modify its input"
    assert isinstance(to_sparse(nested[0][0], 0.5), SparseLinear)  # a bare layer works too
    for bad in (-0.01, 1.01, "0.5", True, None):
        with pytest.raises(ValueError, match="min_sparsity"):
            to_sparse(nested, bad)


# ----------------------------------------------------------------------------- save / load
@pytest.fixture(scope="module")
def compressed_cnn():
    dense = load_pretrained("cnn")
    prune_magnitude(dense, 0.9)
    model = to_sparse(dense, quantize=True)
    model[-1] = to_sparse(dense[-1])          # one float32 CSR layer
    model[3] = dense[3]                       # and one dense Conv2d
    return model


def test_save_load_round_trip(tmp_path, compressed_cnn, images):
    path = tmp_path / "cnn.npz"
    size = save_compressed(compressed_cnn, path, metadata={"acc": 0.9})
    assert size == path.stat().st_size
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["__spec__"]))
        assert archive["sparse:0:values"].dtype == np.int8 and archive["sparse:0:indices"].dtype == np.uint8
        assert archive["sparse:7:data"].dtype == np.float32 and archive["sparse:7:indices"].dtype == np.uint16
        assert not any(k.startswith("sparse:3") for k in archive.files)
    assert header["metadata"] == {"acc": 0.9} and set(header["sparse"]) == {"0", "7"}
    loaded = load_compressed(path)
    assert [type(m) for m in loaded] == [type(m) for m in compressed_cnn] and not loaded.training
    with no_grad():
        assert np.array_equal(loaded(Tensor(images)).data, compressed_cnn(Tensor(images)).data)
    assert model_nbytes_compressed(loaded) == model_nbytes_compressed(compressed_cnn)


def test_file_size_in_memory_equals_saved(tmp_path):
    dense = load_pretrained("mlp")
    prune_magnitude(dense, 0.9)
    model = to_sparse(dense, quantize=True)
    assert compressed_file_size(model) == save_compressed(model, tmp_path / "m.npz")


def _rewrite(path, out, change):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    np.savez(out, **arrays)
    return out


def _spec_edit(edit):
    def change(arrays):
        header = json.loads(str(arrays["__spec__"]))
        edit(header)
        arrays["__spec__"] = np.array(json.dumps(header))
    return change


BAD_EDITS = {
    "no spec": lambda a: a.pop("__spec__"),
    "spec not json": lambda a: a.__setitem__("__spec__", np.array("{not json")),
    "spec not a string": lambda a: a.__setitem__("__spec__", np.zeros(3)),
    "wrong format": _spec_edit(lambda h: h.__setitem__("format", "tinytorch-model")),
    "wrong version": _spec_edit(lambda h: h.__setitem__("version", 99)),
    "unknown layer": _spec_edit(lambda h: h["model"]["layers"][0].__setitem__("type", "NoSuchLayer")),
    "bad config": _spec_edit(lambda h: h["model"]["layers"][0]["config"].__setitem__("colour", 3)),
    "sparse list mismatch": _spec_edit(lambda h: h["sparse"].pop("0")),
    "unknown kind": _spec_edit(lambda h: h["sparse"].__setitem__("0", {"kind": "int4"})),
    "missing array": lambda a: a.pop("sparse:0:indptr"),
    "missing param": lambda a: a.pop("param:0.bias"),
    "extra array": lambda a: a.__setitem__("stray", np.zeros(2)),
    "wrong value dtype": lambda a: a.__setitem__("sparse:0:values", a["sparse:0:values"].astype(np.int16)),
    "float data as int": lambda a: a.__setitem__("sparse:7:data", a["sparse:7:data"].astype(np.int8)),
    "index out of range": lambda a: a.__setitem__("sparse:0:indices", a["sparse:0:indices"] + 200),
    "indptr reversed": lambda a: a.__setitem__("sparse:0:indptr", a["sparse:0:indptr"][::-1].copy()),
    "scale shape": lambda a: a.__setitem__("sparse:0:scale", a["sparse:0:scale"][:3]),
    "param shape": lambda a: a.__setitem__("param:0.bias", np.zeros(5, np.float32)),
    "param dtype": lambda a: a.__setitem__("param:0.bias", np.zeros(64, np.int64)),
    "object array": lambda a: a.__setitem__("param:0.bias", np.array([{"x": 1}], dtype=object)),
}


@pytest.mark.parametrize("name", sorted(BAD_EDITS))
def test_load_rejects_inconsistent_files(tmp_path, compressed_cnn, name):
    path = tmp_path / "good.npz"
    save_compressed(compressed_cnn, path)
    bad = _rewrite(path, tmp_path / "bad.npz", BAD_EDITS[name])
    with pytest.raises(ValueError):
        load_compressed(bad)


def test_load_rejects_truncated_and_garbage(tmp_path, compressed_cnn, images):
    path = tmp_path / "good.npz"
    save_compressed(compressed_cnn, path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for cut in (0, 1, 10, 100, len(raw) // 3, len(raw) // 2, len(raw) - 30, len(raw) - 1):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError):
            load_compressed(bad)
    for content in (b"garbage", b"\x93NUMPY not really", b"PK\x03\x04 broken zip"):
        bad.write_bytes(content)
        with pytest.raises(ValueError):
            load_compressed(bad)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError):
        load_compressed(tmp_path / "single.npy")
    with pytest.raises(FileNotFoundError):
        load_compressed(tmp_path / "missing.npz")


def test_byte_flips_fail_loudly_or_change_nothing(tmp_path, compressed_cnn, images):
    """Every flipped byte either gives ValueError or (zip metadata we do not read) a model
    with identical outputs: never a silently different model."""
    path = tmp_path / "good.npz"
    save_compressed(compressed_cnn, path)
    raw = path.read_bytes()
    with no_grad():
        want = compressed_cnn(Tensor(images[:8])).data
    bad = tmp_path / "bad.npz"
    for offset in np.random.default_rng(0).choice(len(raw), size=60, replace=False):
        bad.write_bytes(raw[:offset] + bytes([raw[offset] ^ 0x5A]) + raw[offset + 1:])
        try:
            model = load_compressed(bad)
        except ValueError:
            continue
        with no_grad():
            assert np.array_equal(model(Tensor(images[:8])).data, want), f"flip at {offset} changed the model"


def test_loading_never_unpickles(tmp_path, compressed_cnn):
    path = tmp_path / "good.npz"
    save_compressed(compressed_cnn, path)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            assert b"pickle" not in zf.read(name)[:128].lower()


# ----------------------------------------------------------------------------- pipeline
def test_compress_bookkeeping_small():
    manual_seed(0)
    x, y = load_digits("train")
    from tinytorch.core import DataLoader, TensorDataset
    loader = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=32, shuffle=True, seed=0)
    model = MLP(hidden=(16,))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    report = compress(model, loader, loader, sparsity=0.8, fine_tune_epochs=1, steps=1, scope="layer")
    assert isinstance(report, CompressionReport)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    layers = sparse_layers(report.model)
    assert report.nonzeros == sum(l.nnz for l in layers.values())
    assert report.nonzeros <= round(0.2 * 64 * 16) + round(0.2 * 16 * 10)
    assert report.dense_bytes == 4 * (64 * 16 + 16 + 16 * 10 + 10)
    assert report.memory_bytes == sum(l.qweight.nbytes for l in layers.values()) + 4 * (16 + 10)
    assert report.disk_bytes == compressed_file_size(report.model)
    text = str(report)
    assert "int8 CSR" in text and "dense float32" in text and len(text.splitlines()) == 7
    no_test = compress(model, sparsity=0.5, fine_tune_epochs=0, quantize=False)
    assert no_test.accuracy_dense is None and no_test.latency_sparse is None and "float32 CSR" in str(no_test)
    for bad in (dict(sparsity=1.0), dict(sparsity=-0.1), dict(steps=0), dict(fine_tune_epochs=-1),
                dict(fine_tune_epochs=2), dict(scope="row")):
        with pytest.raises(ValueError):
            compress(model, **bad)


def test_compress_pretrained_mlp_reaches_target():
    """The module's headline: >= 10x fewer bytes than dense float32, within 1 point."""
    train_loader, test_loader = digits_loaders(batch_size=32, seed=0)
    manual_seed(0)
    report = compress(load_pretrained("mlp"), train_loader, test_loader, sparsity=0.9,
                      fine_tune_epochs=30, steps=10)
    assert report.ratio >= 10, report
    assert report.accuracy_dense - report.accuracy_compressed <= 0.01, report
    assert abs(evaluate(report.model, test_loader) - report.accuracy_compressed) < 1e-12
