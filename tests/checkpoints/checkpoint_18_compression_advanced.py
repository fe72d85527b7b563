"""Bonus checkpoint 18, going further part 1: Deep Compression.

Capabilities of `modules/18_compression/compression_advanced_dev.py` as exported into
tinytorch/optimization/compression/ (weight_sharing.py, huffman.py, deep_compression.py).
Separate from checkpoint_18_compression.py: these are bonus points, in POINTS below (tests
not listed are worth 1). Every assertion names what is wrong.

    python -m pytest tests/checkpoints/checkpoint_18_compression_advanced.py
"""
import copy
import itertools
import math
import os
import sys

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import Conv2d, DataLoader, Flatten, Linear, ReLU, Sequential, Tanh, Tensor, TensorDataset
from tinytorch.core import cross_entropy, no_grad
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
    "test_deep_compress_stages_follow_the_arguments": 2,
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


def _huffman_reference(counts):
    """Huffman code lengths with plain loops (no heap): merge the two lightest subtrees, a tie
    going to the lower symbol among leaves and to the older subtree among merged ones (leaves
    are numbered 0.. by symbol, every merged subtree takes the next number)."""
    nodes = [(int(c), number, [s]) for number, (s, c) in enumerate((s, c) for s, c in enumerate(counts) if c)]
    lengths = [0] * len(counts)
    if len(nodes) == 1:
        lengths[nodes[0][2][0]] = 1
    number = len(nodes)
    while len(nodes) > 1:
        a = min(nodes, key=lambda node: node[:2])
        nodes.remove(a)
        b = min(nodes, key=lambda node: node[:2])
        nodes.remove(b)
        for s in a[2] + b[2]:
            lengths[s] += 1
        nodes.append((a[0] + b[0], number, a[2] + b[2]))
        number += 1
    return lengths


def _huffman_bits(counts):
    """Bits of an optimal prefix code for symbols with these counts, by loops: the sum of the
    weights of every merge (1 bit per symbol when a single symbol occurs)."""
    weights = sorted(int(c) for c in counts if c)
    if len(weights) == 1:
        return weights[0]
    total = 0
    while len(weights) > 1:
        total += weights[0] + weights[1]
        weights = sorted(weights[2:] + [weights[0] + weights[1]])
    return total


def _gap_stream_bytes(positions, span, huffman):
    """Bytes of the gap stream of `positions` for `span`, by loops: a gap g costs (g - 1) // span
    fillers (symbol 0) and the symbol (g - 1) % span + 1; Huffman- or fixed-width (log2(span + 1)
    bits) coded, plus the span + 1 uint8 code lengths."""
    counts, previous = [0] * (span + 1), -1
    for p in positions.tolist():
        gap, previous = p - previous, p
        counts[0] += (gap - 1) // span
        counts[(gap - 1) % span + 1] += 1
    bits = _huffman_bits(counts) if huffman else sum(counts) * int(math.log2(span + 1))
    return (bits + 7) // 8 + span + 1


def _uint_bytes(max_value):
    """Bytes of the narrowest unsigned integer holding max_value."""
    return next(b for b in (1, 2, 4, 8) if max_value < 256 ** b)


def _csr_bytes(s, int8):
    """Bytes of the sparse layer storing the nonzeros that `s` (a SharedWeight) describes, by
    hand: the narrowest unsigned indices (< cols) and indptr (<= nnz), with float32 values or
    (int8) int8 values and one float32 scale per row."""
    (rows, cols), nnz = s.shape, s.nnz
    values = nnz + 4 * rows if int8 else 4 * nnz
    return values + _uint_bytes(cols - 1) * nnz + _uint_bytes(nnz) * (rows + 1)


def _fixed_width_bytes(s):
    """Bytes of a SharedWeight `s` coded with fixed-width codes, by hand: float32 codebook and
    uint8 code length per value, ceil(bits * nnz / 8) bytes of codes, the cheapest gap stream
    of the spans 2^p - 1 (p = 1..12), two uint32 counts."""
    k = len(s.codebook)
    bits = max(1, math.ceil(math.log2(k)))
    return 5 * k + (bits * s.nnz + 7) // 8 + min(_gap_stream_bytes(s.positions, 2 ** p - 1, False)
                                                   for p in range(1, 13)) + 8


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
    # density init on [0, 1 x 10]: quantiles 0 1 1 1; the three 1s tie and every 1 goes to the lowest,
    # so the last two clusters stay empty from the start and must keep their centroid
    centroids, codes = C.kmeans_1d(np.array([0.0] + [1.0] * 10), 4, init="density")
    assert centroids.tolist() == [0.0, 1.0, 1.0, 1.0] and codes.tolist() == [0] + [1] * 10, \
        "kmeans_1d: all k clusters are counted, and one that gets no value (even the last) keeps its centroid"


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
    lines_many_iters = _lines_run_in_package(lambda: C.kmeans_1d(small, 8, iters=2000))   # converges in 5 rounds
    assert lines_many_iters == lines_small, (
        f"kmeans_1d ran {lines_small} lines with iters=20 but {lines_many_iters} with iters=2000: it must stop "
        f"once no assignment changes (iters is a maximum)")


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
    model = _pruned_mlp()
    values = C.prunable_layers(model)["1"].weight.data.copy()
    s = C.share_weights(model, bits={"1": 3}, iters=2, init="density")["1"]
    centroids, codes = C.kmeans_1d(values.ravel()[s.positions], 8, iters=2, init="density")
    assert np.array_equal(s.codebook, centroids) and np.array_equal(s.codes, codes), \
        "share_weights must pass iters and init on to kmeans_1d"
    tt.manual_seed(0)
    conv = Sequential(Conv2d(1, 4, 3), ReLU(), Flatten(), Linear(4 * 6 * 6, 10))
    C.prune_magnitude(conv, 0.5)
    kernel = conv[0].weight.data.copy()
    s = C.share_weights(conv, bits=2)["0"]
    assert s.shape == (4, 9) and np.array_equal(s.positions, np.flatnonzero(kernel)), \
        "a Conv2d weight (out, in, kh, kw) is shared as the (out, in * kh * kw) matrix"
    after = conv[0].weight.data
    assert after.shape == (4, 1, 3, 3) and np.array_equal(after, s.dense().reshape(4, 1, 3, 3)), \
        "share_weights must write the centroids back into a Conv2d weight in its own (out, in, kh, kw) shape"


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
    by_hand = C.SharedWeight(np.array([1.0, 2.0, 3.0, 4.0], np.float32), np.array([0, 1, 0], np.uint8),
                             np.array([0, 2, 5]), (2, 3))
    assert C.centroid_gradients(np.arange(6.0).reshape(2, 3), by_hand).tolist() == [0 + 5, 2, 0, 0], \
        "centroid_gradients: one entry per codebook value (0 for a value no weight uses), the sum over its weights"


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
    model = _pruned_mlp(sparsity=0.7, seed=1)
    shared = C.share_weights(model, bits=2)
    optimizer = C.CentroidOptimizer(model, shared, lr=0.01)
    x, y = next(iter(_loader()))
    optimizer.zero_grad()
    cross_entropy(model(x), y).backward()
    model[1].weight.grad = None                   # as if layer 1 had taken no part in the loss
    grad = C.centroid_gradients(model[3].weight.grad, shared["3"])
    codebooks = {n: s.codebook.copy() for n, s in shared.items()}
    optimizer.step()
    assert np.array_equal(shared["1"].codebook, codebooks["1"]), \
        "CentroidOptimizer.step: a layer whose weight got no gradient keeps its codebook"
    assert np.allclose(shared["3"].codebook, codebooks["3"] - 0.01 * np.sign(grad), atol=1e-6), \
        "CentroidOptimizer.step: Adam's first step moves every centroid by lr against the sign of its summed gradient"
    assert all(p.grad is None or p.grad.dtype == p.data.dtype == np.float32 for p in optimizer.params), \
        "CentroidOptimizer.step: every codebook gets a float32 gradient, like its float32 values"


# -------------------------------------------------------------------- 2 Huffman coding
def test_huffman_lengths_optimal_and_prefix_free():
    assert C.huffman_code_lengths(np.array([8, 4, 2, 1, 1])).tolist() == [1, 2, 3, 4, 4], \
        "counts 8 4 2 1 1 have Huffman code lengths 1 2 3 4 4"
    assert C.huffman_code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0], \
        "an unused symbol gets length 0; a lone symbol still needs 1 bit"
    assert C.huffman_code_lengths(np.ones(6, np.int64)).tolist() == [3, 3, 3, 3, 2, 2], \
        ("six equal counts: merge 0+1, 2+3, 4+5, then the two OLDEST subtrees (0+1)+(2+3): lengths 3 3 3 3 2 2 "
         "(a merged subtree takes the next tie-break number, after every leaf and every earlier subtree)")
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
        assert lengths.tolist() == _huffman_reference(counts), \
            f"counts {counts.tolist()}: ties must be broken by symbol, then by the age of merged subtrees"
        strings = list(_strings(lengths).values())
        assert not any(a != b and b.startswith(a) for a in strings for b in strings), \
            f"the canonical code for lengths {lengths.tolist()} is not prefix-free"
    for _ in range(200):                           # small counts: ties everywhere
        counts = rng.integers(0, 4, size=int(rng.integers(2, 9)))
        assert C.huffman_code_lengths(counts).tolist() == _huffman_reference(counts), \
            f"counts {counts.tolist()}: ties must be broken by symbol, then by the age of merged subtrees"


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
    for name, weight in shared.items():
        huff = C.CodedWeight.from_shared(weight).arrays
        assert len(huff["codes"]) == (_huffman_bits(np.bincount(weight.codes)) + 7) // 8, \
            f"layer {name}: huffman=True must Huffman-code the codes (fewest bits for their counts)"
        for huffman in (True, False):
            arrays = C.CodedWeight.from_shared(weight, huffman=huffman).arrays
            costs = {span: _gap_stream_bytes(weight.positions, span, huffman) for span in C.SPANS}
            best = min(C.SPANS, key=costs.get)      # the first of the cheapest (3 with Huffman, 7 fixed here)
            assert len(arrays["gap_lengths"]) - 1 == best, \
                f"layer {name}, huffman={huffman}: the span must be the cheapest for the gap stream coded THIS way"
            assert len(arrays["gaps"]) + len(arrays["gap_lengths"]) == costs[best], \
                f"layer {name}, huffman={huffman}: the gap stream must cost what its code lengths say"


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


def test_deep_compress_stages_follow_the_arguments():
    x, y = load_digits("train")
    xt, yt = load_digits("test")

    def train_loader():
        return DataLoader(TensorDataset(x[:96], y[:96]), batch_size=32, shuffle=True, seed=1)

    test_loader = DataLoader(TensorDataset(xt[:200], yt[:200]), batch_size=100)
    tt.manual_seed(3)
    model = MLP(hidden=(16,))
    bits = {"1": 3, "3": 2}
    report = C.deep_compress(model, train_loader(), test_loader, sparsity=0.7, bits=bits, prune_steps=2,
                             prune_epochs=2, retrain_epochs=2, centroid_epochs=2, lr=1e-2, retrain_lr=2e-3,
                             centroid_lr=2e-2, init="random")
    # the same stages by hand, from the same model with an identical loader (same shuffles)
    work, train = copy.deepcopy(model), train_loader()
    C.prune_and_retrain(work, train, 0.7, steps=2, epochs_per_step=2, retrain_epochs=2, lr=1e-2, retrain_lr=2e-3)
    accuracy = {"pruned": tt.evaluate(C.to_sparse(work, min_sparsity=0.0), test_loader),
                "pruned, int8": tt.evaluate(C.to_sparse(work, min_sparsity=0.0, quantize=True), test_loader)}
    shared = C.share_weights(work, bits, init="random")
    accuracy["weight sharing"] = tt.evaluate(work, test_loader)
    C.fine_tune_centroids(work, shared, train, epochs=2, lr=2e-2)
    accuracy["centroids"] = tt.evaluate(work, test_loader)
    for name, s in shared.items():
        assert np.array_equal(report.shared[name].positions, s.positions), \
            (f"layer {name}: the pruned weights differ from prune_and_retrain(sparsity, steps=prune_steps, "
             f"epochs_per_step=prune_epochs, retrain_epochs, lr, retrain_lr) run by hand")
        assert np.array_equal(report.shared[name].codebook, s.codebook), \
            (f"layer {name}: the codebook differs from share_weights(bits, init=init) then "
             f"fine_tune_centroids(epochs=centroid_epochs, lr=centroid_lr) run by hand")

    params = 4 * (16 + 10)                         # the biases, float32
    layers = report.shared.values()
    assert min(1 - s.nnz / (s.shape[0] * s.shape[1]) for s in layers) < 0.5, \
        "global pruning to 70% leaves the output layer under 50% sparse (its weights are larger)"
    expected = {
        "pruned 70%, float32 CSR": (params + sum(_csr_bytes(s, int8=False) for s in layers),
                                    "every pruned layer as float32 CSR, however sparse (min_sparsity=0.0)"),
        "pruned, int8 CSR": (params + sum(_csr_bytes(s, int8=True) for s in layers),
                             "every pruned layer as int8 CSR with a scale per row (quantize=True, min_sparsity=0.0)"),
        "weight sharing": (params + sum(_fixed_width_bytes(s) for s in layers),
                           "the shared layers with FIXED-WIDTH codes (coded_nbytes(..., huffman=False))"),
        "centroids fine-tuned": (params + sum(_fixed_width_bytes(s) for s in layers),
                                 "still fixed-width codes: fine-tuning changes centroid values, not sizes"),
    }
    for stage, (nbytes, why) in expected.items():
        assert report.row(stage)["bytes"] == nbytes, f"stage {stage!r}: {report.row(stage)['bytes']} bytes, " \
                                                     f"expected {nbytes}: {why}"
    assert report.row("Huffman")["bytes"] < report.row("centroids")["bytes"], \
        "Huffman coding must make this model smaller than fixed-width codes do (its codes and gaps are skewed)"
    for stage, acc in accuracy.items():
        assert report.row(stage)["accuracy"] == acc, \
            f"stage {stage!r}: the accuracy must be that of the model at this stage, on test_loader"
    final = report.row("Huffman")["accuracy"]
    assert final == tt.evaluate(report.model, test_loader) != report.row("pruned 70%")["accuracy"], \
        "the Huffman-coded row: the accuracy of the coded model (here not that of the pruned one)"
    assert report.row(".npz")["accuracy"] == final, "the .npz file holds the Huffman-coded model: same accuracy"
