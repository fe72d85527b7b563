"""Going further, part 2 (compression_fast_sparsity_dev.py): block and N:M masks, pattern
pruners, the BSR format and its kernels, the per-layer format chooser, block-sparse layers,
and prune-then-distill.

Oracles: scipy.sparse.bsr_matrix, the dense product in float64, plain Python loops over
blocks and groups, the dense models themselves, and StructuredPruner's own shapes."""
import copy
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytorch as tt
from tinytorch.core import Conv2d, DataLoader, Linear, ReLU, Sequential, Tensor, TensorDataset, no_grad
from tinytorch.datasets import load_digits
from tinytorch.models import SimpleCNN, load_pretrained
from tinytorch.optimization.compression import (BlockPruner, BlockSparseConv2d, BlockSparseLinear, BSRMatrix,
                                                MagnitudePruner, NMPruner, SparseConv2d, SparseLinear,
                                                StructuredPruner, block_fill, block_mask, block_norms,
                                                block_sparse, block_structure, bsr_matmul, bsr_matvec,
                                                choose_format, fine_tune, layer_formats, load_compressed,
                                                nm_mask, patterns, prunable_layers, prune_then_distill,
                                                save_compressed, to_block_sparse, weight_matrix)

sp = pytest.importorskip("scipy.sparse")


# ----------------------------------------------------------------------------- helpers
@st.composite
def block_matrices(draw):
    """(W, (R, C), rng): float32 W whose shape is a multiple of (R, C), zero blocks, zero
    entries inside kept blocks, and some empty block rows."""
    R, C = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    nbr, nbc = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    W = rng.standard_normal((nbr * R, nbc * C)).astype(np.float32)
    keep = rng.random((nbr, nbc)) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    W *= np.repeat(np.repeat(keep, R, 0), C, 1)
    W *= rng.random(W.shape) < draw(st.sampled_from([1.0, 0.6]))       # zeros inside stored blocks
    for i in draw(st.lists(st.integers(0, 4), max_size=2)):
        if nbr:
            W[(i % nbr) * R:(i % nbr + 1) * R] = 0.0                       # an empty block row
    return W, (R, C), rng


def loop_bsr_product(A: BSRMatrix, X: np.ndarray) -> np.ndarray:
    """A @ X in float64 by a loop over the stored blocks."""
    R, C = A.blocksize
    out = np.zeros((A.shape[0], X.shape[1]))
    for i in range(len(A.indptr) - 1):
        for k in range(A.indptr[i], A.indptr[i + 1]):
            j = A.indices[k]
            out[i * R:(i + 1) * R] += A.data[k].astype(np.float64) @ X[j * C:(j + 1) * C]
    return out


def lines_run_in(modules, fn) -> int:
    """How many lines of the given modules' files run during fn() (sys.settrace)."""
    files = {os.path.abspath(m.__file__) for m in modules}
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if os.path.abspath(frame.f_code.co_filename) not in files:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def digits_loader(n=96, seed=0):
    x, y = load_digits("train")
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=32, shuffle=True, seed=seed)


# ----------------------------------------------------------------------------- BSR format
@settings(max_examples=80, deadline=None)
@given(block_matrices())
def test_bsr_from_dense_equals_scipy_and_round_trips(case):
    W, blocksize, _ = case
    A = BSRMatrix.from_dense(W, blocksize)
    assert A.blocksize == blocksize and A.shape == W.shape
    assert np.array_equal(A.to_dense(), W)
    if W.size:
        ref = sp.bsr_matrix(W, blocksize=blocksize)
        ref.sort_indices()
        assert np.array_equal(A.data, ref.data) and np.array_equal(A.indices, ref.indices)
        assert np.array_equal(A.indptr, ref.indptr)
    nonzero_blocks = [(i, j) for i in range(W.shape[0] // blocksize[0]) for j in range(W.shape[1] // blocksize[1])
                      if W[i * blocksize[0]:(i + 1) * blocksize[0], j * blocksize[1]:(j + 1) * blocksize[1]].any()]
    assert A.nnzb == len(nonzero_blocks) and A.nnz == A.nnzb * blocksize[0] * blocksize[1]
    assert A.nbytes == A.data.nbytes + A.indices.nbytes + A.indptr.nbytes


@settings(max_examples=80, deadline=None)
@given(block_matrices(), st.integers(0, 5), st.sampled_from([1, 7, 1 << 20]))
def test_bsr_kernels_equal_dense_scipy_and_a_loop(case, batch, budget):
    W, blocksize, rng = case
    A = BSRMatrix.from_dense(W, blocksize)
    X = rng.standard_normal((W.shape[1], batch)).astype(np.float32)
    x = rng.standard_normal(W.shape[1]).astype(np.float32)
    Y = bsr_matmul(A, X, gather_budget=budget)                    # budget 1: one block row per group
    assert Y.shape == (W.shape[0], batch) and Y.dtype == np.float32
    assert np.allclose(Y, W.astype(np.float64) @ X, atol=1e-5)
    assert np.allclose(Y, loop_bsr_product(A, X), atol=1e-5)
    if W.size:
        assert np.allclose(Y, sp.bsr_matrix(W, blocksize=blocksize) @ X, atol=1e-5)
    y = bsr_matvec(A, x)
    assert y.shape == (W.shape[0],) and np.allclose(y, W.astype(np.float64) @ x, atol=1e-5)
    assert np.allclose(A.rmatmul_T(X.T), Y.T, atol=1e-6) and np.allclose(A.matmul(X), Y)


def test_bsr_kernel_dtypes_and_errors():
    A = BSRMatrix.from_dense(np.eye(4, dtype=np.float32), 2)
    assert bsr_matmul(A, np.ones((4, 2), np.float64)).dtype == np.float64
    assert bsr_matmul(A, np.ones((4, 2), np.int64)).tolist() == [[1, 1]] * 4
    with pytest.raises(ValueError, match="X must have shape"):
        bsr_matmul(A, np.ones((3, 2)))
    with pytest.raises(ValueError, match="BSRMatrix"):
        bsr_matmul(np.eye(4), np.ones((4, 1)))
    with pytest.raises(ValueError, match="gather_budget"):
        bsr_matmul(A, np.ones((4, 1)), gather_budget=0)
    with pytest.raises(ValueError, match="real numbers"):
        bsr_matmul(A, np.full((4, 1), "a"))


GOOD = dict(data=np.ones((3, 2, 2), np.float32), indices=[1, 0, 1], indptr=[0, 1, 1, 3], shape=(6, 4))


@pytest.mark.parametrize("change,name", [
    (dict(shape=(5, 4)), "shape"), (dict(shape=(6,)), "shape"), (dict(shape=(-6, 4)), "shape"),
    (dict(data=np.ones((3, 4), np.float32)), "data"), (dict(data=np.ones((3, 2, 2), np.int8)), "data"),
    (dict(data=np.ones((2, 2, 2), np.float32)), "data"), (dict(data=np.ones((3, 0, 2), np.float32)), "data"),
    (dict(indices=[2, 0, 1]), "indices"), (dict(indices=[-1, 0, 1]), "indices"), (dict(indices=[1.0, 0, 1]), "indices"),
    (dict(indices=[[1, 0, 1]]), "indices"),
    (dict(indptr=[0, 1, 3]), "indptr"), (dict(indptr=[1, 1, 1, 3]), "indptr"), (dict(indptr=[0, 2, 1, 3]), "indptr"),
    (dict(indptr=[0, 1, 1, 2]), "indptr"),
])
def test_bsr_validation(change, name):
    with pytest.raises(ValueError, match=name):
        BSRMatrix(**{**GOOD, **change})


def test_bsr_is_read_only_and_copies_its_input():
    data = np.ones((3, 2, 2), np.float32)
    A = BSRMatrix(data, [1, 0, 1], [0, 1, 1, 3], (6, 4))
    data[:] = 7
    assert (A.data == 1).all(), "the matrix keeps its own copy"
    for array in (A.data, A.indices, A.indptr):
        assert not array.flags.writeable
    with pytest.raises(ValueError, match="multiple"):
        BSRMatrix.from_dense(np.ones((5, 4), np.float32), 2)
    with pytest.raises(ValueError, match="float"):
        BSRMatrix.from_dense(np.ones((4, 4), np.int32), 2)


@settings(max_examples=40, deadline=None)
@given(block_matrices())
def test_padded_block_rows_built_once_and_correct(case):
    W, (R, C), _ = case
    A = BSRMatrix.from_dense(W, (R, C))
    columns, panels = A.padded_block_rows()
    width = max(np.diff(A.indptr).max(initial=0), 0)
    assert columns.shape == (W.shape[0] // R, width) and panels.shape == (W.shape[0] // R, R, width * C)
    for i in range(W.shape[0] // R):
        start, stop = A.indptr[i], A.indptr[i + 1]
        assert columns[i, :stop - start].tolist() == A.indices[start:stop].tolist()
        for slot, k in enumerate(range(start, stop)):
            assert np.array_equal(panels[i, :, slot * C:(slot + 1) * C], A.data[k])
        assert not panels[i, :, (stop - start) * C:].any(), "padding blocks are zero"
    again = A.padded_block_rows()
    assert again[0] is columns and again[1] is panels and not panels.flags.writeable


def test_kernels_and_masks_run_no_python_loop_over_rows():
    """Executed lines in the block_sparse and patterns modules do not grow with the matrix:
    the loops run over groups bounded by the memory budget, never over rows or blocks."""
    def work(block_rows):
        rng = np.random.default_rng(0)
        W = rng.standard_normal((4 * block_rows, 16)).astype(np.float32)
        W *= np.repeat(np.repeat(rng.random((block_rows, 4)) < 0.5, 4, 0), 4, 1)
        W[4:8] = 0.0
        A = BSRMatrix.from_dense(W, 4)
        X = rng.standard_normal((16, 3)).astype(np.float32)
        assert np.allclose(bsr_matmul(A, X), W @ X, atol=1e-4)
        assert np.allclose(bsr_matvec(A, X[:, 0]), W @ X[:, 0], atol=1e-4)
        assert np.allclose(A.to_dense(), W)
        assert block_mask(W, 4, 0.5).shape == W.shape and nm_mask(W, 2, 4).sum() == W.size // 2

    small = lines_run_in([block_sparse, patterns], lambda: work(10))
    large = lines_run_in([block_sparse, patterns], lambda: work(2000))
    assert small > 0
    assert large <= small + 5, f"{small} lines for 10 block rows but {large} for 2000: a loop over rows?"


# ----------------------------------------------------------------------------- masks and pruners
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 11), st.integers(1, 11), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]), st.integers(0, 2 ** 16))
def test_block_mask_removes_whole_blocks_smallest_norm_first(rows, cols, R, C, sparsity, seed):
    W = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    keep = block_mask(W, (R, C), sparsity)
    assert keep.shape == W.shape and keep.dtype == np.bool_
    tiles = {(i, j): (slice(i * R, (i + 1) * R), slice(j * C, (j + 1) * C))
             for i in range(-(-rows // R)) for j in range(-(-cols // C))}
    norms = {b: float(np.sqrt((W[s].astype(np.float64) ** 2).sum())) for b, s in tiles.items()}
    removed = [b for b, s in tiles.items() if not keep[s].any()]
    assert all(keep[s].all() or not keep[s].any() for s in tiles.values()), "only whole blocks"
    assert len(removed) == round(sparsity * len(tiles))
    kept = [b for b in tiles if b not in removed]
    if removed and kept:
        assert max(norms[b] for b in removed) <= min(norms[b] for b in kept)
    expected = [[norms[(i, j)] for j in range(-(-cols // C))] for i in range(-(-rows // R))]
    assert np.allclose(block_norms(W, (R, C)), expected)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 6), st.integers(0, 4), st.sampled_from([(1, 4), (2, 4), (3, 4), (0, 2), (1, 8), (4, 4)]),
       st.integers(0, 2 ** 16), st.booleans())
def test_nm_mask_keeps_exactly_n_of_every_m(rows, groups, nm, seed, ties):
    n, m = nm
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((rows, groups * m)).astype(np.float32)
    if ties:
        W = np.round(W)                                      # many equal magnitudes (and zeros)
    keep = nm_mask(W, n, m)
    assert keep.shape == W.shape and keep.dtype == np.bool_
    for r in range(rows):
        for g in range(groups):
            group = np.abs(W[r, g * m:(g + 1) * m])
            chosen = np.flatnonzero(keep[r, g * m:(g + 1) * m])
            assert len(chosen) == n, "exactly n of every m"
            assert set(chosen) == set(sorted(range(m), key=lambda i: (-group[i], i))[:n]), "the n largest"


def test_mask_argument_errors():
    W = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="multiple of m"):
        nm_mask(W, 2, 4)
    with pytest.raises(ValueError, match="n must be at most"):
        nm_mask(W, 3, 2)
    with pytest.raises(ValueError, match="blocksize"):
        block_mask(W, (2, 0), 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        block_mask(W, 2, 1.5)
    with pytest.raises(ValueError, match="2-D"):
        block_mask(np.ones(5), 2, 0.5)


def _mlp():
    tt.manual_seed(0)
    return Sequential(Linear(16, 12), ReLU(), Linear(12, 8), ReLU(), Linear(8, 3))


def test_pruners_work_in_place_and_masks_survive_fine_tuning():
    rng = np.random.default_rng(0)
    loader = DataLoader(TensorDataset(rng.standard_normal((64, 16)).astype(np.float32), rng.integers(0, 3, 64)),
                        batch_size=16, shuffle=True, seed=0)
    model = _mlp()
    masks = BlockPruner(0.5, blocksize=4).prune(model)
    assert set(masks) == set(prunable_layers(model))
    for name, layer in prunable_layers(model).items():
        assert (layer.weight.data[~masks[name]] == 0).all(), "pruned in place"
    fine_tune(model, masks, loader, epochs=2, lr=1e-2)
    for name, layer in prunable_layers(model).items():
        w = layer.weight.data
        assert (w[~masks[name]] == 0).all() and (w[masks[name]] != 0).any()
        assert np.array_equal(block_mask(np.where(masks[name], 1.0, 0.0), 4, 0.0), np.ones_like(masks[name])), \
            "the mask is still made of whole blocks"

    model = _mlp()
    pruner = NMPruner(2, 4)
    masks = pruner.prune(model)
    assert pruner.skipped == {} and pruner.sparsity == 0.5
    fine_tune(model, masks, loader, epochs=2, lr=1e-2)
    for layer in prunable_layers(model).values():
        w = weight_matrix(layer)
        assert ((w != 0).reshape(w.shape[0], -1, 4).sum(axis=2) <= 2).all(), "2:4 after fine-tuning"

    cnn = SimpleCNN(channels=(4, 8))
    pruner = NMPruner(1, 4)
    masks = pruner.prune(cnn)
    assert pruner.skipped == {"0": 9} and "0" not in masks, "a 9-input conv cannot follow 1:4"
    assert np.mean(weight_matrix(cnn[3]) == 0) == 0.75


def test_pruner_arguments():
    with pytest.raises(ValueError, match="sparsity"):
        BlockPruner(1.5)
    with pytest.raises(ValueError, match="blocksize"):
        BlockPruner(0.5, blocksize=(2, 2, 2))
    with pytest.raises(ValueError, match="does not have"):
        BlockPruner({"nope": 0.5}).prune(_mlp())
    with pytest.raises(ValueError, match="n must be at most"):
        NMPruner(5, 4)
    with pytest.raises(ValueError, match="no prunable layer"):
        NMPruner().prune(Sequential(ReLU()))
    model = _mlp()
    model[0].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError):
        BlockPruner(0.5).prune(model)


# ----------------------------------------------------------------------------- formats and layers
def test_block_structure_and_choose_format_read_the_pattern():
    layer = Linear(64, 32)
    for make, expected in ((lambda: BlockPruner(0.8, blocksize=16), ("bsr", (16, 16))),
                           (lambda: BlockPruner(0.8, blocksize=8), ("bsr", (8, 8))),
                           (lambda: BlockPruner(0.8, blocksize=(4, 4)), ("bsr", (4, 4))),
                           (lambda: MagnitudePruner(0.9), ("csr", None)),
                           (lambda: NMPruner(1, 4), ("csr", None)),
                           (lambda: BlockPruner(0.3, blocksize=16), ("dense", None))):
        model = Sequential(copy.deepcopy(layer))
        make().prune(model)
        assert choose_format(model[0]) == expected
    W = np.zeros((8, 8), np.float32)
    W[:4, :4] = 1.0
    W[0, 0] = 0.0
    assert block_fill(W, 4) == 15 / 16 and block_structure(W, blocksizes=[(8, 8), (4, 4)]) == (4, 4)
    assert block_structure(W, blocksizes=[(8, 8), (4, 4)], min_fill=1.0) is None
    assert block_fill(np.zeros((4, 4)), 2) == 1.0
    assert block_structure(np.ones((6, 6)), blocksizes=[(4, 4)]) is None, "4 does not divide 6"
    with pytest.raises(ValueError, match="Linear or Conv2d"):
        choose_format(ReLU())


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_to_block_sparse_equals_the_dense_model(name):
    model = load_pretrained(name)
    big = max(prunable_layers(model), key=lambda n: prunable_layers(model)[n].weight.size)
    others = {n: 0.9 for n in prunable_layers(model) if n != big}
    BlockPruner({big: 0.75}, blocksize=4).prune(model)
    MagnitudePruner(others).prune(model)
    fast = to_block_sparse(model)
    formats = layer_formats(fast)
    assert formats[big] == "bsr 4x4" and all(formats[n] == "csr" for n in others), formats
    assert isinstance(prunable_layers(model)[big], (Linear, Conv2d)), "the input model is not modified"
    x = Tensor(load_digits("test")[0][:33])
    with no_grad():
        want, got = model(x).data, fast(x).data
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    nested = Sequential(Sequential(Linear(8, 8), ReLU()), Linear(8, 4))
    BlockPruner(0.75, blocksize=4).prune(nested)
    out = to_block_sparse(nested)
    assert isinstance(out[0][0], BlockSparseLinear) and isinstance(to_block_sparse(nested[0][0]), BlockSparseLinear)
    assert isinstance(to_block_sparse(nested, min_sparsity=1.0)[0][0], Linear), "75% < min_sparsity: stays dense"


def test_block_sparse_layers_match_dense_and_round_trip_through_a_file(tmp_path):
    rng = np.random.default_rng(3)
    tt.manual_seed(3)
    conv, lin = Conv2d(4, 8, 3, stride=2, padding=1), Linear(12, 8, bias=False)
    for layer in (conv, lin):
        W = weight_matrix(layer)
        layer.weight.data = (W * block_mask(W, 4, 0.5)).reshape(layer.weight.shape)
    bconv, blin = BlockSparseConv2d.from_dense(conv, 4), BlockSparseLinear.from_dense(lin, (4, 4))
    x_img, x_vec = rng.standard_normal((2, 4, 7, 6)).astype(np.float32), rng.standard_normal((5, 12)).astype(np.float32)
    with no_grad():
        assert np.allclose(bconv(Tensor(x_img)).data, conv(Tensor(x_img)).data, atol=1e-5)
        assert np.allclose(blin(x_vec).data, lin(Tensor(x_vec)).data, atol=1e-5)
    model = Sequential(bconv, ReLU(), tt.Flatten(), Linear(8 * 4 * 3, 12), ReLU(), blin)
    path = tmp_path / "block.npz"
    save_compressed(model, path)
    loaded = load_compressed(path)
    assert isinstance(loaded[0], BlockSparseConv2d) and loaded[0].weight.blocksize == (4, 4)
    with no_grad():
        assert np.array_equal(loaded(Tensor(x_img)).data, model(Tensor(x_img)).data)
    with pytest.raises(ValueError, match="indptr"):
        blin.set_extra_state({"kind": "bsr", "data": blin.weight.data, "indices": blin.weight.indices})
    with pytest.raises(ValueError, match="kind"):
        blin.set_extra_state({**blin.get_extra_state(), "kind": "float"})
    with pytest.raises(ValueError, match="shape"):
        blin.set_weight(BSRMatrix.from_dense(np.ones((4, 4), np.float32), 4))
    with pytest.raises(ValueError, match="BlockSparseLinear expects"):
        blin(np.ones((2, 5), np.float32))


# ----------------------------------------------------------------------------- prune, then distill
def test_prune_then_distill_keeps_pruned_shapes_and_a_frozen_teacher():
    tt.manual_seed(0)
    teacher = SimpleCNN(channels=(8, 16))
    teacher.eval()
    before = {k: v.copy() for k, v in teacher.state_dict().items()}
    expected = StructuredPruner(0.5).prune(copy.deepcopy(teacher))
    student, history = prune_then_distill(teacher, 0.5, digits_loader(), epochs=2, lr=1e-3, alpha=0.7)
    assert [type(m) for m in student] == [type(m) for m in expected]
    assert {k: v.shape for k, v in student.state_dict().items()} == \
        {k: v.shape for k, v in expected.state_dict().items()}
    assert all(np.array_equal(before[k], v) for k, v in teacher.state_dict().items()), "the teacher never changes"
    assert not teacher.training and not student.training
    assert all(p.grad is None or not np.any(p.grad) for p in teacher.parameters()), "no gradient reaches the teacher"
    assert len(history["loss"]) == len(history["accuracy"]) == 2 and history["lr"][0] == 1e-3
    assert history["lr"][1] == pytest.approx(0.5e-3)
    assert any(not np.array_equal(a, b) for a, b in zip(student.state_dict().values(),
                                                         expected.state_dict().values())), "the student trained"


def test_prune_then_distill_is_reproducible_and_alpha_matters():
    teacher = SimpleCNN(channels=(8, 16))
    runs = []
    for alpha in (0.0, 0.0, 1.0):
        tt.manual_seed(5)
        student, _ = prune_then_distill(teacher, 0.5, digits_loader(), epochs=1, alpha=alpha)
        runs.append(list(student.state_dict().values()))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1])), "same seed, same batches: same student"
    assert any(not np.array_equal(a, b) for a, b in zip(runs[0], runs[2])), "alpha changes what is learnt"
    with pytest.raises(ValueError, match="lr"):
        prune_then_distill(teacher, 0.5, digits_loader(), epochs=1, lr=-1.0)
    with pytest.raises(ValueError, match="teacher"):
        prune_then_distill("cnn", 0.5, digits_loader())
    with pytest.raises(ValueError, match="ratio"):
        prune_then_distill(teacher, 1.0, digits_loader())
