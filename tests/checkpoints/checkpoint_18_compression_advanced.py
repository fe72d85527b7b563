"""Bonus checkpoint 18, going further part 1: Deep Compression.

Capabilities of `modules/18_compression/compression_advanced_dev.py` as exported into
tinytorch/optimization/compression/ (weight_sharing.py, huffman.py, deep_compression.py).
Separate from checkpoint_18_compression.py: these are bonus points, in POINTS below (tests
not listed are worth 1). Every assertion names what is wrong.

    python -m pytest tests/checkpoints/checkpoint_18_compression_advanced.py
"""
import itertools
import os
import sys

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import DataLoader, Linear, Sequential, Tanh, Tensor, TensorDataset, cross_entropy, no_grad
from tinytorch.datasets import load_digits
from tinytorch.models import MLP
from tinytorch.optimization import compression as C

POINTS = {
    "test_kmeans_matches_lloyd": 3,
    "test_kmeans_is_vectorized": 1,
    "test_share_weights_in_place": 2,
    "test_centroid_gradients": 2,
    "test_fine_tune_centroids": 2,
    "test_huffman_lengths_optimal_and_prefix_free": 2,
    "test_huffman_round_trip": 2,
    "test_huffman_decode_refuses_damage": 1,
    "test_huffman_is_vectorized": 1,
    "test_relative_positions": 2,
    "test_coded_weight": 2,
    "test_coded_file_round_trip": 2,
    "test_coded_file_refused_when_damaged": 1,
    "test_deep_compress": 3,
}


# -------------------------------------------------------------------- helpers
def _both(first, second):
    """One trace function running two (either may be None; a local tracer returning None keeps itself)."""
    if first is None or second is None:
        return first or second

    def trace(frame, event, arg):
        return _both(first(frame, event, arg) or (first if event != "call" else None),
                     second(frame, event, arg) or (second if event != "call" else None))
    return trace


def _lines_run_in_package(fn) -> int:
    """How many lines of the compression package's modules run during fn() (sys.settrace)."""
    package_dir = os.path.dirname(os.path.abspath(C.__file__)) + os.sep
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):
        return local if os.path.abspath(frame.f_code.co_filename).startswith(package_dir) else None

    outer = sys.gettrace()
    sys.settrace(_both(outer, tracer))
    try:
        fn()
    finally:
        sys.settrace(outer)
    return count


def _lloyd(values, k, iters):
    """Lloyd's k-means with loops: linear init over [min, max], nearest centroid (lower index
    on ties), empty clusters keep their centroid, centroids sorted, stop when nothing changes."""
    values = [float(v) for v in values]
    lo, hi = min(values), max(values)
    centroids = [lo + (hi - lo) * j / (k - 1) for j in range(k)]

    def assign(cs):
        return [min(range(k), key=lambda j: (abs(v - cs[j]), j)) for v in values]

    codes = assign(centroids)
    for _ in range(iters):
        new = []
        for j in range(k):
            members = [v for v, c in zip(values, codes) if c == j]
            new.append(sum(members) / len(members) if members else centroids[j])
        centroids = sorted(new)
        new_codes = assign(centroids)
        if new_codes == codes:
            break
        codes = new_codes
    return centroids, codes


def _pruned_mlp(sparsity=0.8, seed=0):
    tt.manual_seed(seed)
    model = MLP(hidden=(24,))
    C.prune_magnitude(model, sparsity)
    return model


def _loader(n=192):
    x, y = load_digits("train")
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=64, shuffle=True, seed=0)


def _strings(lengths):
    codes = C.canonical_codes(lengths)
    return {s: format(int(codes[s]), f"0{int(l)}b") for s, l in enumerate(lengths) if l}


# -------------------------------------------------------------------- 1 weight sharing
def test_kmeans_matches_lloyd():
    rng = np.random.default_rng(0)
    for n, k, iters in ((60, 4, 30), (150, 16, 50), (40, 8, 2)):
        values = rng.standard_normal(n) * rng.choice([0.05, 1.0], n)
        centroids, codes = C.kmeans_1d(values, k, iters=iters)
        want_centroids, want_codes = _lloyd(values, k, iters)
        assert np.allclose(centroids, want_centroids, atol=1e-6), \
            f"kmeans_1d(n={n}, k={k}) centroids differ from Lloyd's algorithm (linear init, means, sorted)"
        assert codes.tolist() == want_codes, f"kmeans_1d(n={n}, k={k}) must assign every value to its nearest centroid"
        assert centroids.dtype == np.float32 and codes.dtype == np.uint8, \
            "centroids must be float32 and codes the narrowest unsigned dtype (uint8 for k <= 256)"
    assert C.assign_clusters(np.array([0.5, 1.5, 1.9]), np.array([0.0, 1.0, 2.0])).tolist() == [0, 1, 2], \
        "assign_clusters: a value on a midpoint goes to the lower centroid"


def test_kmeans_is_vectorized():
    small = np.repeat(np.arange(-40, 41) / 8.0, 2)        # exact binary fractions: tiling keeps every mean exact
    large = np.tile(small, 100)
    want = C.kmeans_1d(small, 8, iters=20)
    got = C.kmeans_1d(large, 8, iters=20)
    assert np.array_equal(want[0], got[0]), "k-means of a tiled sample must give the same centroids"
    lines_small = _lines_run_in_package(lambda: C.kmeans_1d(small, 8, iters=20))
    lines_large = _lines_run_in_package(lambda: C.kmeans_1d(large, 8, iters=20))
    assert lines_small > 0, "no line of the compression package was traced: this check would prove nothing"
    assert lines_large <= lines_small + 5, (f"kmeans_1d ran {lines_small} lines of Python for {len(small)} values "
                                            f"but {lines_large} for {len(large)}: a Python loop over the values?")


def test_share_weights_in_place():
    model = _pruned_mlp()
    before = {n: l.weight.data.copy() for n, l in C.prunable_layers(model).items()}
    shared = C.share_weights(model, bits={"1": 3, "3": 2})
    for name, b in (("1", 3), ("3", 2)):
        w, s = C.prunable_layers(model)[name].weight.data, shared[name]
        assert isinstance(s, C.SharedWeight) and len(s.codebook) == 2 ** b, f"layer {name}: a codebook of 2^{b} values"
        assert np.array_equal(w == 0, before[name] == 0), f"layer {name}: pruned weights must stay zero, survivors nonzero"
        assert np.array_equal(s.positions, np.flatnonzero(before[name])), \
            f"layer {name}: positions must be the flat row-major indices of the nonzero weights"
        centroids, codes = C.kmeans_1d(before[name].ravel()[s.positions], 2 ** b)
        assert np.array_equal(s.codebook, centroids) and np.array_equal(s.codes, codes), \
            f"layer {name}: the codebook and codes must be kmeans_1d of the nonzero weights, in position order"
        assert np.array_equal(w, s.dense()), f"layer {name}: share_weights works in place: weights := their centroids"


def test_centroid_gradients():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 7)), rng.integers(0, 4, 12)
    tt.manual_seed(0)
    model = Sequential(Linear(7, 6), Tanh(), Linear(6, 4))
    C.prune_magnitude(model, 0.5)
    shared = C.share_weights(model, bits=2)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    s, layer, keep = shared["0"], model[0], shared["0"].mask()

    def loss_at(codebook):
        w = np.zeros(s.shape)
        w[keep] = codebook[s.codes]
        layer.weight.data = w
        return cross_entropy(model(Tensor(x, dtype=np.float64)), y)

    codebook = s.codebook.astype(np.float64)
    model.zero_grad()
    loss_at(codebook).backward()
    got = C.centroid_gradients(layer.weight.grad, s)
    for j in range(len(codebook)):
        step = np.zeros_like(codebook)
        step[j] = 1e-6
        numeric = (loss_at(codebook + step).item() - loss_at(codebook - step).item()) / 2e-6
        assert abs(numeric - got[j]) <= 1e-7 + 1e-5 * abs(numeric), \
            f"dL/dc[{j}] = {got[j]} but finite differences give {numeric}: a centroid's gradient is the sum of its weights'"


def test_fine_tune_centroids():
    model = _pruned_mlp(sparsity=0.7, seed=1)
    shared = C.share_weights(model, bits=3)
    codebooks = {n: s.codebook.copy() for n, s in shared.items()}
    bias = model[1].bias.data.copy()
    C.fine_tune_centroids(model, shared, _loader(), epochs=2, lr=1e-2)
    for name, layer in C.prunable_layers(model).items():
        s = shared[name]
        assert not np.array_equal(s.codebook, codebooks[name]), \
            f"layer {name}: fine_tune_centroids must train the codebook (and update `shared` in place)"
        assert np.array_equal(layer.weight.data, s.dense()), \
            f"layer {name}: after each step every weight must equal its centroid (weights stay tied)"
    assert not np.array_equal(model[1].bias.data, bias), "the biases (not shared) must train as usual"


# -------------------------------------------------------------------- 2 Huffman coding
def test_huffman_lengths_optimal_and_prefix_free():
    assert C.huffman_code_lengths(np.array([8, 4, 2, 1, 1])).tolist() == [1, 2, 3, 4, 4], \
        "counts 8 4 2 1 1 have Huffman code lengths 1 2 3 4 4"
    assert C.huffman_code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0], \
        "an unused symbol gets length 0; a lone symbol still needs 1 bit"
    assert _strings(np.array([1, 2, 3, 4, 4], np.uint8)) == {0: "0", 1: "10", 2: "110", 3: "1110", 4: "1111"}, \
        "canonical codes: by (length, symbol), each the previous + 1, shifted left when the length grows"
    rng = np.random.default_rng(0)
    for _ in range(25):
        counts = rng.integers(0, 25, size=int(rng.integers(2, 6)))
        counts[0] += 1
        lengths = C.huffman_code_lengths(counts)
        used = [c for c in counts.tolist() if c]
        best = used[0] if len(used) == 1 else min(
            sum(c * l for c, l in zip(used, lens)) for lens in itertools.product(range(1, 6), repeat=len(used))
            if sum(2.0 ** -l for l in lens) <= 1)
        assert int((counts * lengths).sum()) == best, f"counts {counts.tolist()}: Huffman lengths must be optimal"
        strings = list(_strings(lengths).values())
        assert not any(a != b and b.startswith(a) for a in strings for b in strings), \
            f"the canonical code for lengths {lengths.tolist()} is not prefix-free"


def test_huffman_round_trip():
    rng = np.random.default_rng(1)
    for trial in range(40):
        k = int(rng.integers(1, 30))
        symbols = rng.choice(k, size=int(rng.integers(1, 300)), p=rng.dirichlet(np.full(k, 0.4)))
        lengths = C.huffman_code_lengths(np.bincount(symbols, minlength=k))
        packed = C.huffman_encode(symbols, lengths)
        bits = int(lengths[symbols].astype(int).sum())
        assert packed.dtype == np.uint8 and len(packed) == (bits + 7) // 8, "encode packs the codes into bytes"
        got = C.huffman_decode(packed, lengths, len(symbols))
        assert np.array_equal(got, symbols), f"decode(encode(symbols)) must give the symbols back (trial {trial})"
    assert C.huffman_encode(np.array([0, 1, 2, 4]), np.array([1, 2, 3, 4, 4], np.uint8)).tolist() == \
        [0b01011011, 0b11000000], "bits are written most significant first, the last byte padded with zeros"


def test_huffman_decode_refuses_damage():
    lengths = np.array([1, 2, 3, 4, 4], np.uint8)
    packed = C.huffman_encode(np.array([0, 1, 2, 4, 3, 0]), lengths)
    for stream in (packed[:-1], np.append(packed, np.uint8(0)), packed ^ np.array([0, 1], np.uint8)):
        with pytest.raises(ValueError):
            C.huffman_decode(stream, lengths, 6)
    with pytest.raises(ValueError):
        C.huffman_decode(packed, lengths, 10 ** 12)


def test_huffman_is_vectorized():
    rng = np.random.default_rng(2)
    small = rng.choice(16, size=200, p=rng.dirichlet(np.ones(16)))
    large = np.tile(small, 100)
    lengths = C.huffman_code_lengths(np.bincount(small, minlength=16))

    def run(symbols):
        C.huffman_decode(C.huffman_encode(symbols, lengths), lengths, len(symbols))
        C.relative_positions(np.cumsum(symbols + 1), 7)

    lines_small, lines_large = _lines_run_in_package(lambda: run(small)), _lines_run_in_package(lambda: run(large))
    assert lines_small > 0, "no line of the compression package was traced: this check would prove nothing"
    assert lines_large <= 2 * lines_small + 50, (
        f"encode + decode + relative_positions ran {lines_small} lines for {len(small)} symbols but {lines_large} "
        f"for {len(large)}: a Python loop over the symbols or bits?")


def test_relative_positions():
    assert C.relative_positions([0, 3, 40], 8).tolist() == [1, 3, 0, 0, 0, 0, 5], \
        "gaps 1 3 37 with span 8: 37 = four fillers (0) of 8, then 5"
    assert C.relative_positions([7, 8, 16], 8).tolist() == [8, 1, 8], "a gap equal to span needs no filler"
    rng = np.random.default_rng(3)
    for _ in range(30):
        size, span = int(rng.integers(1, 300)), int(rng.integers(1, 20))
        positions = np.sort(rng.choice(size, int(rng.integers(0, size + 1)), replace=False))
        symbols = C.relative_positions(positions, span)
        assert symbols.max(initial=0) <= span and symbols.min(initial=0) >= 0, "gap symbols lie in [0, span]"
        assert np.array_equal(C.absolute_positions(symbols, span), positions), \
            "absolute_positions(relative_positions(p, span), span) must give p back"


# -------------------------------------------------------------------- 3 coded layers, file, pipeline
def _shared_model():
    tt.manual_seed(2)
    model = MLP(hidden=(32, 16))
    C.prune_magnitude(model, 0.85)
    return model, C.share_weights(model, bits={"1": 4, "3": 3})


def test_coded_weight():
    _, shared = _shared_model()
    s = shared["1"]
    for huffman in (True, False):
        coded = C.CodedWeight.from_shared(s, huffman=huffman)
        again = C.CodedWeight({k: v.copy() for k, v in coded.arrays.items()}, s.shape)
        assert np.array_equal(again.shared.dense(), s.dense()), \
            f"CodedWeight(huffman={huffman}) must decode to the same codes and positions"
        assert coded.nbytes == sum(a.nbytes for a in coded.arrays.values()), "nbytes must count every array"
    huff, fixed = C.CodedWeight.from_shared(s).arrays, C.CodedWeight.from_shared(s, huffman=False).arrays
    assert set(fixed["code_lengths"].tolist()) == {4} and len(fixed["codes"]) == (4 * s.nnz + 7) // 8, \
        "huffman=False stores fixed 4-bit codes for a 16-value codebook"
    assert huff["codes"].nbytes <= fixed["codes"].nbytes and huff["gaps"].nbytes <= fixed["gaps"].nbytes, \
        "Huffman streams can never be longer than fixed-width ones"
    span = len(huff["gap_lengths"]) - 1
    assert huff["counts"].tolist() == [s.nnz, len(C.relative_positions(s.positions, span))], \
        "counts must hold the number of codes and of gap symbols"


def test_coded_file_round_trip(tmp_path):
    model, shared = _shared_model()
    coded = C.to_shared(model, shared)
    assert [type(m).__name__ for m in coded][1:4] == ["SharedLinear", "ReLU", "SharedLinear"], \
        "to_shared must swap the shared layers for SharedLinear"
    x = Tensor(load_digits("test")[0][:64])
    with no_grad():
        assert np.allclose(coded(x).data, model(x).data, atol=1e-5), "the coded model must compute what the shared one does"
    path = tmp_path / "mlp.npz"
    size = C.save_compressed(coded, path)
    loaded = C.load_compressed(path)
    with no_grad():
        assert np.array_equal(loaded(x).data, coded(x).data), "a loaded file must give exactly the same outputs"
    with np.load(path, allow_pickle=False) as archive:
        recount = sum(archive[k].nbytes for k in archive.files if k != "__spec__")
    assert C.model_nbytes_compressed(coded) == recount == C.coded_nbytes(coded), \
        "the byte count must equal the arrays of the file"
    assert size == os.path.getsize(path)


def test_coded_file_refused_when_damaged(tmp_path):
    model, shared = _shared_model()
    path = tmp_path / "good.npz"
    C.save_compressed(C.to_shared(model, shared), path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for key, value in (("sparse:1:gaps", arrays["sparse:1:gaps"][:-1]),
                       ("sparse:1:code_lengths", np.ones_like(arrays["sparse:1:code_lengths"])),
                       ("sparse:3:counts", np.array([10 ** 9, 1], np.uint32))):
        bad = tmp_path / "bad.npz"
        np.savez(bad, **dict(arrays, **{key: value}))
        with pytest.raises(ValueError) as info:
            C.load_compressed(bad)
        assert "bad.npz" in str(info.value), f"a damaged {key} must be refused with a ValueError naming the file"


def test_deep_compress():
    tt.manual_seed(0)
    loader = _loader(128)
    model = MLP(hidden=(32,))
    before = model.state_dict()
    report = C.deep_compress(model, loader, loader, sparsity=0.75, bits=3, prune_steps=2, prune_epochs=1,
                             retrain_epochs=1, centroid_epochs=1)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), "the input model must not change"
    stages = [r["stage"] for r in report.rows]
    assert stages == ["dense float32", "pruned 75%, float32 CSR", "pruned, int8 CSR (main lesson)",
                      "weight sharing, fixed-width codes", "centroids fine-tuned", "Huffman-coded",
                      ".npz file (save_compressed)"], f"unexpected stages {stages}"
    coded = report.model
    assert all(isinstance(coded[i], C.SharedLinear) and len(coded[i].shared.codebook) == 8 for i in (1, 3)), \
        "the result must hold SharedLinear layers with 2^3-value codebooks"
    weights = 64 * 32 + 32 * 10
    assert report.rows[0]["bytes"] == 4 * (weights + 42), "dense bytes = every parameter at float32"
    nnz = sum(coded[i].nnz for i in (1, 3))
    assert nnz == round(0.25 * weights) == report.row("Huffman")["nonzero weights"], "75% of the weights must be pruned"
    recount = 42 * 4 + sum(a.nbytes for i in (1, 3) for k, a in coded[i].get_extra_state().items() if k != "kind")
    assert report.row("Huffman")["bytes"] == recount, "Huffman-coded bytes must count every stored array"
    assert report.row("weight sharing")["bytes"] == C.coded_nbytes(coded, huffman=False), \
        "the weight-sharing stage stores fixed-width codes"
    assert report.ratio == report.rows[0]["bytes"] / recount
    with no_grad():
        assert report.row("Huffman")["accuracy"] == tt.evaluate(coded, loader), "accuracies are measured on test_loader"
