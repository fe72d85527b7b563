"""Going further, part 1 of module 18: Deep Compression (compression_advanced_dev.py).

Weight sharing (k-means, centroid gradients and fine-tuning), canonical Huffman coding,
relative positions with fillers, coded layers and their files, and the pipeline.

Oracles: Lloyd's k-means written with Python loops, central finite differences in float64,
an exhaustive search over prefix-code lengths, a bit-string decoder that walks the stream
one bit at a time, positions walked one by one, the dense model's own outputs, and the
arrays of the written file recounted with np.load."""
import copy
import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.core import (DataLoader, Linear, ReLU, Sequential, Tanh, Tensor, TensorDataset, cross_entropy,
                            evaluate, manual_seed, no_grad)
from tinytorch.datasets import load_digits
from tinytorch.models import MLP, SimpleCNN
from tinytorch.optimization.compression import (MAX_CODE_LENGTH, CentroidOptimizer, CodedWeight, SharedConv2d,
                                                SharedLinear, SharedWeight, absolute_positions, assign_clusters,
                                                canonical_codes, centroid_gradients, coded_nbytes,
                                                compressed_file_size, deep_compress, fine_tune_centroids,
                                                huffman_code_lengths, huffman_decode, huffman_encode, kmeans_1d,
                                                load_compressed, model_nbytes_compressed, prunable_layers,
                                                prune_magnitude, relative_positions, save_compressed,
                                                share_weights, to_shared)


# ----------------------------------------------------------------------------- oracles
def kmeans_loop(values, k, iters):
    """Lloyd's algorithm with loops: linear init, nearest centroid (lower index on ties),
    empty clusters keep their centroid, centroids sorted, stop when nothing changes."""
    values = [float(v) for v in values]
    lo, hi = min(values), max(values)
    centroids = [lo + (hi - lo) * j / (k - 1) for j in range(k)] if k > 1 else [lo]

    def assign(cs):
        return [min(range(len(cs)), key=lambda j: (abs(v - cs[j]), j)) for v in values]

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


def optimal_bits(counts, max_length=6):
    """Fewest total bits of any prefix code for `counts`: every length vector obeying Kraft."""
    used = [c for c in counts if c > 0]
    if len(used) == 1:
        return used[0]
    return min(sum(c * l for c, l in zip(used, lens))
               for lens in itertools.product(range(1, max_length + 1), repeat=len(used))
               if sum(2.0 ** -l for l in lens) <= 1.0)


def bit_strings(lengths):
    return {s: format(int(c), f"0{int(l)}b") for s, (c, l) in enumerate(zip(canonical_codes(lengths), lengths)) if l}


def decode_bit_by_bit(packed, lengths, count):
    """Reference decoder: grow a bit string until it is a code word."""
    table = {code: s for s, code in bit_strings(lengths).items()}
    out, current = [], ""
    for bit in np.unpackbits(np.asarray(packed, dtype=np.uint8)):
        if len(out) == count:
            break
        current += str(int(bit))
        if current in table:
            out.append(table[current])
            current = ""
    return out


def gaps_loop(positions, span):
    out, previous = [], -1
    for p in positions:
        gap = p - previous
        while gap > span:
            out.append(0)
            gap -= span
        out.append(gap)
        previous = p
    return out


def pruned_mlp(hidden=(24,), sparsity=0.8, seed=0):
    manual_seed(seed)
    model = MLP(hidden=hidden)
    prune_magnitude(model, sparsity)
    return model


def digits_loader(n=192, batch=64):
    x, y = load_digits("train")
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch, shuffle=True, seed=0)


# ----------------------------------------------------------------------------- k-means
@pytest.mark.parametrize("n, k, iters, seed", [(40, 4, 30, 0), (120, 16, 50, 1), (25, 8, 2, 2), (6, 16, 10, 3),
                                               (300, 32, 50, 4)])
def test_kmeans_matches_plain_loop(n, k, iters, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n) * rng.choice([0.05, 1.0], n)
    centroids, codes = kmeans_1d(values, k, iters=iters)
    want_centroids, want_codes = kmeans_loop(values, min(k, n), iters)
    np.testing.assert_allclose(centroids, want_centroids, rtol=1e-6, atol=1e-7)
    assert codes.tolist() == want_codes
    assert centroids.dtype == np.float32 and codes.dtype == np.uint8 and np.all(np.diff(centroids) >= 0)


def test_kmeans_assignment_is_nearest_centroid_and_vectorized():
    rng = np.random.default_rng(5)
    values, centroids = rng.standard_normal(5000), np.sort(rng.standard_normal(37))
    want = np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)   # first minimum on ties
    assert np.array_equal(assign_clusters(values, centroids), want)
    assert assign_clusters(np.array([0.5, 1.5]), np.array([0.0, 1.0, 2.0])).tolist() == [0, 1]  # ties: lower


def test_kmeans_initialisations():
    values = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    assert kmeans_1d(values, 3, iters=0, init="linear")[0].tolist() == [0.0, 5.0, 10.0]
    assert kmeans_1d(values, 3, iters=0, init="density")[0].tolist() == [0.0, 2.0, 10.0]
    chosen = kmeans_1d(values, 3, iters=0, init="random", seed=4)[0]
    assert set(chosen.tolist()) <= set(values.tolist()) and len(set(chosen.tolist())) == 3
    assert kmeans_1d(np.arange(300.0), 300, iters=1)[1].dtype == np.uint16
    for bad, word in ((dict(values=[]), "values"), (dict(values=[np.inf]), "finite"), (dict(n_clusters=0), "n_clusters"),
                      (dict(iters=-1), "iters"), (dict(init="kmeans++"), "init")):
        with pytest.raises(ValueError, match=word):
            kmeans_1d(**{"values": [1.0, 2.0], "n_clusters": 2, **bad})


def test_share_weights_in_place_and_bits():
    model = pruned_mlp()
    before = {n: l.weight.data.copy() for n, l in prunable_layers(model).items()}
    shared = share_weights(model, bits={"1": 3})
    assert list(shared) == ["1"], "only the layers named in a bits dict are shared"
    w = model[1].weight.data
    assert np.array_equal(w == 0, before["1"] == 0) and len(np.unique(w[w != 0])) <= 8
    assert np.array_equal(model[3].weight.data, before["3"])
    s = shared["1"]
    assert np.array_equal(s.positions, np.flatnonzero(before["1"])) and s.shape == (24, 64)
    codebook, codes = kmeans_1d(before["1"].ravel()[s.positions], 8)
    assert np.array_equal(s.codebook, codebook) and np.array_equal(s.codes, codes)
    cnn = SimpleCNN(channels=(4, 8))
    assert {n: len(s.codebook) for n, s in share_weights(cnn).items()} == {"0": 36, "3": 256, "7": 32}
    for bits, word in ((17, "16"), ({"9": 2}, "9"), (0, "bits")):
        with pytest.raises(ValueError, match=word):
            share_weights(pruned_mlp(), bits=bits)
    dead = pruned_mlp()
    dead[1].weight.data[:] = 0.0
    with pytest.raises(ValueError, match="no nonzero"):
        share_weights(dead, bits=2)


def test_shared_weight_validation_and_views():
    s = SharedWeight(np.array([-1.0, 2.0], np.float32), np.array([1, 0, 1], np.uint8), [0, 4, 5], (2, 3))
    assert s.dense().tolist() == [[2.0, 0.0, 0.0], [0.0, -1.0, 2.0]]
    assert s.mask().tolist() == [[True, False, False], [False, True, True]] and s.nnz == 3 and s.bits == 1
    assert not s.codes.flags.writeable and not s.codebook.flags.writeable
    good = dict(codebook=np.zeros(2, np.float32), codes=np.array([0, 1], np.uint8), positions=[0, 3], shape=(2, 2))
    for change, word in ((dict(codebook=np.zeros(2)), "codebook"), (dict(codebook=np.array([np.nan, 0], np.float32)), "finite"),
                         (dict(codes=np.array([0, 2], np.uint8)), "codes"), (dict(codes=np.array([0, 1])), "unsigned"),
                         (dict(positions=[3, 0]), "positions"), (dict(positions=[0, 4]), "positions"),
                         (dict(positions=[0]), "positions"), (dict(shape=(2,)), "shape")):
        with pytest.raises(ValueError, match=word):
            SharedWeight(**{**good, **change})


# ----------------------------------------------------------------------------- centroid gradients
def test_centroid_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 7)), rng.integers(0, 4, 12)
    manual_seed(0)
    model = Sequential(Linear(7, 6), Tanh(), Linear(6, 4))
    prune_magnitude(model, 0.5)
    shared = share_weights(model, bits=2)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    for name, layer in (("0", model[0]), ("2", model[2])):
        s, keep = shared[name], shared[name].mask()

        def loss_at(codebook):
            w = np.zeros(s.shape)
            w[keep] = codebook[s.codes]
            layer.weight.data = w
            return cross_entropy(model(Tensor(x, dtype=np.float64)), y)

        codebook = s.codebook.astype(np.float64)
        model.zero_grad()
        loss_at(codebook).backward()
        got = centroid_gradients(layer.weight.grad, s)
        for j in range(len(codebook)):
            step = np.zeros_like(codebook)
            step[j] = 1e-6
            numeric = (loss_at(codebook + step).item() - loss_at(codebook - step).item()) / 2e-6
            assert abs(numeric - got[j]) <= 1e-7 + 1e-5 * abs(numeric), (name, j, numeric, got[j])


def test_centroid_gradients_sum_by_code():
    s = SharedWeight(np.zeros(3, np.float32), np.array([2, 0, 2, 1], np.uint8), [1, 2, 4, 5], (2, 3))
    grad = np.array([[10.0, 1.0, 2.0], [100.0, 3.0, 4.0]])
    assert centroid_gradients(grad, s).tolist() == [2.0, 4.0, 1.0 + 3.0]   # pruned entries (10, 100) ignored
    with pytest.raises(ValueError, match="weight_grad"):
        centroid_gradients(np.zeros(5), s)


def test_fine_tune_centroids_trains_codebooks_keeps_ties_and_zeros():
    model = pruned_mlp(sparsity=0.7)
    shared = share_weights(model, bits=3)
    codebooks = {n: s.codebook.copy() for n, s in shared.items()}
    history = fine_tune_centroids(model, shared, digits_loader(), epochs=2, lr=1e-2)
    assert len(history["loss"]) == 2
    for name, layer in prunable_layers(model).items():
        s = shared[name]
        assert np.array_equal(layer.weight.data, s.dense()), "weights must stay tied to the codebook"
        assert (layer.weight.data[~s.mask()] == 0).all(), "pruned weights must stay zero"
        assert not np.array_equal(s.codebook, codebooks[name]), "the codebook must train"


def test_centroid_optimizer_step_is_adam_on_summed_gradients():
    from tinytorch.core import Adam, Parameter

    model = pruned_mlp(sparsity=0.6)
    shared = share_weights(model, bits=2)
    x, y = load_digits("train")
    optimizer = CentroidOptimizer(model, dict(shared), lr=0.01)
    optimizer.zero_grad()
    cross_entropy(model(Tensor(x[:32])), y[:32]).backward()
    grads = {n: l.weight.grad.copy() for n, l in prunable_layers(model).items()}
    bias_grad, bias = model[1].bias.grad.copy(), model[1].bias.data.copy()
    optimizer.step()
    for name in shared:
        reference = Parameter(shared[name].codebook.copy())
        reference.grad = centroid_gradients(grads[name], shared[name]).astype(np.float32)
        Adam([reference], lr=0.01).step()
        assert np.allclose(optimizer.shared[name].codebook, reference.data, atol=1e-7)
    reference_bias = Parameter(bias)
    reference_bias.grad = bias_grad
    Adam([reference_bias], lr=0.01).step()
    assert np.allclose(model[1].bias.data, reference_bias.data, atol=1e-7), "untied parameters train as usual"
    with pytest.raises(ValueError, match="7"):
        CentroidOptimizer(model, {"7": shared["1"]})


# ----------------------------------------------------------------------------- Huffman
def test_huffman_lengths_known_distributions():
    assert huffman_code_lengths(np.array([8, 4, 2, 1, 1])).tolist() == [1, 2, 3, 4, 4]
    assert bit_strings(np.array([1, 2, 3, 4, 4], np.uint8)) == {0: "0", 1: "10", 2: "110", 3: "1110", 4: "1111"}
    dyadic = np.array([16, 8, 4, 2, 1, 1])                 # p = 2^-length: Huffman meets the entropy
    lengths = huffman_code_lengths(dyadic)
    p = dyadic / dyadic.sum()
    assert np.isclose((p * lengths).sum(), -(p * np.log2(p)).sum())
    assert huffman_code_lengths(np.array([0, 3, 0])).tolist() == [0, 1, 0]
    assert huffman_code_lengths(np.array([5, 5, 5, 5])).tolist() == [2, 2, 2, 2]
    assert huffman_code_lengths(np.zeros(3, np.int64)).tolist() == [0, 0, 0]
    fib = np.array([1, 1, 2, 3, 5, 8, 13, 21])             # the deepest tree for its size: lengths 7 7 6 ... 1
    assert huffman_code_lengths(fib).tolist() == [7, 7, 6, 5, 4, 3, 2, 1]
    for bad in (np.array([1, -1]), np.array([1.5, 2.0]), np.ones((2, 2), np.int64)):
        with pytest.raises(ValueError, match="counts"):
            huffman_code_lengths(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=2, max_size=6).filter(lambda c: sum(1 for v in c if v) >= 1))
def test_huffman_lengths_are_optimal_and_codes_prefix_free(counts):
    counts = np.array(counts)
    lengths = huffman_code_lengths(counts)
    assert ((lengths > 0) == (counts > 0)).all()
    assert int((counts * lengths).sum()) == optimal_bits(counts.tolist())
    strings = list(bit_strings(lengths).values())
    assert len(set(strings)) == len(strings)
    assert not any(a != b and b.startswith(a) for a in strings for b in strings)
    assert sum(2.0 ** -len(s) for s in strings) <= 1.0


def test_canonical_codes_rules():
    lengths = np.array([3, 2, 0, 3, 2, 3], np.uint8)
    # by (length, symbol): 1 -> 00, 4 -> 01, 0 -> 100, 3 -> 101, 5 -> 110
    assert bit_strings(lengths) == {1: "00", 4: "01", 0: "100", 3: "101", 5: "110"}
    for bad, word in ((np.array([1, 1, 1], np.uint8), "Kraft"), (np.array([1, 2]), "uint8"),
                      (np.array([MAX_CODE_LENGTH + 1], np.uint8), "at most")):
        with pytest.raises(ValueError, match=word):
            canonical_codes(bad)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_huffman_round_trip(data):
    k = data.draw(st.integers(1, 24))
    symbols = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=0, max_size=300)), dtype=np.int64)
    counts = np.bincount(symbols, minlength=k)
    lengths = huffman_code_lengths(counts) if symbols.size else np.ones(1, np.uint8)
    packed = huffman_encode(symbols, lengths)
    assert packed.dtype == np.uint8 and len(packed) == (int(lengths[symbols].astype(int).sum()) + 7) // 8
    decoded = huffman_decode(packed, lengths, len(symbols))
    assert decoded.tolist() == symbols.tolist() == decode_bit_by_bit(packed, lengths, len(symbols))


def test_huffman_fixed_width_is_plain_binary():
    lengths = np.full(8, 3, np.uint8)
    packed = huffman_encode(np.array([5, 0, 7]), lengths)
    assert np.unpackbits(packed)[:9].tolist() == [1, 0, 1, 0, 0, 0, 1, 1, 1]


def test_huffman_decode_refuses_damaged_streams():
    lengths = np.array([1, 2, 3, 4, 4], np.uint8)
    packed = huffman_encode(np.array([0, 1, 2, 4, 3, 0]), lengths)
    assert huffman_decode(packed, lengths, 6).tolist() == [0, 1, 2, 4, 3, 0]
    damaged = {"truncated": packed[:-1], "extra byte": np.append(packed, np.uint8(0)),
               "nonzero padding": packed ^ np.array([0] * (len(packed) - 1) + [1], np.uint8)}
    for name, stream in damaged.items():
        with pytest.raises(ValueError, match="bitstream"):
            huffman_decode(stream, lengths, 6)
    with pytest.raises(ValueError, match="cannot fit"):
        huffman_decode(packed, lengths, 10 ** 12)            # refused before any allocation
    with pytest.raises(ValueError, match="bitstream"):       # an incomplete code: '1' has no meaning
        huffman_decode(np.array([0b10000000], np.uint8), np.array([1, 0], np.uint8), 1)
    with pytest.raises(ValueError, match="every symbol"):
        huffman_encode(np.array([1]), np.array([1, 0], np.uint8))


# ----------------------------------------------------------------------------- positions
@settings(max_examples=80, deadline=None)
@given(st.data())
def test_relative_positions_match_loop_and_invert(data):
    size = data.draw(st.integers(1, 600))
    positions = sorted(data.draw(st.sets(st.integers(0, size - 1), max_size=60)))
    span = data.draw(st.integers(1, 50))
    symbols = relative_positions(positions, span)
    assert symbols.tolist() == gaps_loop(positions, span)
    assert absolute_positions(symbols, span).tolist() == positions


def test_relative_positions_by_hand_and_refusals():
    assert relative_positions([0, 3, 40], 8).tolist() == [1, 3, 0, 0, 0, 0, 5]
    assert relative_positions([8, 9], 8).tolist() == [0, 1, 1]
    for call, word in ((lambda: relative_positions([2, 2], 4), "increasing"), (lambda: relative_positions([-1], 4), "increasing"),
                       (lambda: relative_positions([1], 0), "span"), (lambda: absolute_positions([1, 0], 4), "filler"),
                       (lambda: absolute_positions([5], 4), "span"), (lambda: absolute_positions([-1, 1], 4), "span")):
        with pytest.raises(ValueError, match=word):
            call()


# ----------------------------------------------------------------------------- coded layers and files
def shared_model(seed=0):
    model = pruned_mlp(hidden=(32, 16), sparsity=0.85, seed=seed)
    return model, share_weights(model, bits={"1": 4, "3": 3})     # the last Linear stays dense


def test_coded_weight_round_trip_and_byte_count():
    model, shared = shared_model()
    for huffman in (True, False):
        coded = CodedWeight.from_shared(shared["1"], huffman=huffman)
        again = CodedWeight({k: v.copy() for k, v in coded.arrays.items()}, shared["1"].shape)
        assert np.array_equal(again.shared.codes, shared["1"].codes)
        assert np.array_equal(again.shared.positions, shared["1"].positions)
        assert coded.nbytes == sum(a.nbytes for a in coded.arrays.values())
    fixed = CodedWeight.from_shared(shared["1"], huffman=False).arrays
    span = len(fixed["gap_lengths"]) - 1
    gaps = relative_positions(shared["1"].positions, span)
    assert set(fixed["code_lengths"].tolist()) == {4} and set(fixed["gap_lengths"].tolist()) == {int(np.log2(span + 1))}
    assert len(fixed["codes"]) == (4 * shared["1"].nnz + 7) // 8
    assert len(fixed["gaps"]) == (int(np.log2(span + 1)) * len(gaps) + 7) // 8
    assert fixed["counts"].tolist() == [shared["1"].nnz, len(gaps)]


def test_to_shared_computes_what_the_shared_dense_model_computes():
    model, shared = shared_model()
    coded = to_shared(model, shared)
    assert [type(m).__name__ for m in coded] == ["Flatten", "SharedLinear", "ReLU", "SharedLinear", "ReLU", "Linear"]
    assert isinstance(model[1], Linear), "to_shared must not modify its input"
    x = Tensor(load_digits("test")[0][:50])
    with no_grad():
        np.testing.assert_allclose(coded(x).data, model(x).data, rtol=1e-5, atol=1e-5)
    cnn = SimpleCNN(channels=(4, 8))
    prune_magnitude(cnn, 0.7)
    cnn_coded = to_shared(cnn, share_weights(cnn, bits=4))
    assert isinstance(cnn_coded[0], SharedConv2d) and isinstance(cnn_coded[7], SharedLinear)
    x = Tensor(load_digits("test")[0][:8])
    with no_grad():
        np.testing.assert_allclose(cnn_coded(x).data, cnn(x).data, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'0'"):
        to_shared(model, {"0": shared["1"]})                 # Flatten is not a Linear


def test_file_round_trip_equals_in_memory_model(tmp_path):
    model, shared = shared_model()
    coded = to_shared(model, shared).eval()
    path = tmp_path / "mlp.npz"
    size = save_compressed(coded, path)
    assert size == os.path.getsize(path) == compressed_file_size(coded)
    loaded = load_compressed(path)
    assert [type(m).__name__ for m in loaded] == [type(m).__name__ for m in coded]
    x = Tensor(load_digits("test")[0])
    with no_grad():
        assert np.array_equal(loaded(x).data, coded(x).data)
    for name in ("1", "3"):
        assert np.array_equal(loaded[int(name)].shared.dense(), shared[name].dense())


def test_byte_counts_equal_a_recount_of_the_file(tmp_path):
    model, shared = shared_model(seed=1)
    coded = to_shared(model, shared)
    path = tmp_path / "m.npz"
    save_compressed(coded, path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    recount = sum(a.nbytes for k, a in arrays.items() if k != "__spec__")
    assert model_nbytes_compressed(coded) == coded_nbytes(coded) == recount
    biases_and_dense = 4 * (32 + 16 + 16 * 10 + 10)
    layer_arrays = sum(a.nbytes for k, a in arrays.items() if k.startswith("sparse:"))
    assert recount == layer_arrays + biases_and_dense
    fixed = coded_nbytes(coded, huffman=False)
    assert fixed == biases_and_dense + sum(CodedWeight.from_shared(shared[n], huffman=False).nbytes for n in shared)


@pytest.mark.parametrize("damage, word", [
    (lambda a: a.update({"sparse:1:gaps": a["sparse:1:gaps"][:-1]}), "bitstream"),
    (lambda a: a.update({"sparse:1:codes": np.append(a["sparse:1:codes"], np.uint8(255))}), "bitstream"),
    (lambda a: a.update({"sparse:1:counts": np.array([10 ** 9, 5], np.uint32)}), "cannot fit"),
    (lambda a: a.update({"sparse:1:counts": a["sparse:1:counts"].astype(np.int64)}), "counts"),
    (lambda a: a.update({"sparse:1:code_lengths": np.full(16, 1, np.uint8)}), "Kraft"),
    (lambda a: a.update({"sparse:1:codebook": a["sparse:1:codebook"].astype(np.float64)}), "codebook"),
    (lambda a: a.update({"sparse:1:gap_lengths": np.ones(1, np.uint8)}), "gap_lengths"),
    (lambda a: a.pop("sparse:3:codes"), "codes"),
    (lambda a: a.update({"sparse:3:extra": np.zeros(2, np.uint8)}), "extra"),
])
def test_corrupt_files_are_refused(tmp_path, damage, word):
    model, shared = shared_model()
    path = tmp_path / "good.npz"
    save_compressed(to_shared(model, shared), path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    damage(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=word) as err:
        load_compressed(bad)
    assert "bad.npz" in str(err.value)


def test_flipped_byte_in_file_is_refused(tmp_path):
    model, shared = shared_model()
    path = tmp_path / "m.npz"
    save_compressed(to_shared(model, shared), path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="m.npz"):
        load_compressed(path)


def test_positions_beyond_the_layer_are_refused():
    model, shared = shared_model()
    arrays = CodedWeight.from_shared(shared["1"]).arrays
    with pytest.raises(ValueError, match="positions"):
        CodedWeight(arrays, (shared["1"].shape[0] // 2, shared["1"].shape[1]))
    layer = SharedLinear(64, 32)
    with pytest.raises(ValueError, match="kind"):
        layer.set_extra_state({"kind": "int8", **arrays})


# ----------------------------------------------------------------------------- pipeline
def test_deep_compress_stages_and_bookkeeping(tmp_path):
    manual_seed(0)
    loader = digits_loader(n=128)
    model = MLP(hidden=(32,))
    before = model.state_dict()
    report = deep_compress(model, loader, loader, sparsity=0.75, bits=3, prune_steps=2, prune_epochs=1,
                           retrain_epochs=1, centroid_epochs=1)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    stages = [r["stage"] for r in report.rows]
    assert stages == ["dense float32", "pruned 75%, float32 CSR", "pruned, int8 CSR (main lesson)",
                      "weight sharing, fixed-width codes", "centroids fine-tuned", "Huffman-coded",
                      ".npz file (save_compressed)"]
    coded = report.model
    path = tmp_path / "m.npz"
    size = save_compressed(coded, path)
    with np.load(path, allow_pickle=False) as archive:
        recount = sum(archive[k].nbytes for k in archive.files if k != "__spec__")
    assert report.row("Huffman")["bytes"] == recount
    assert report.row(".npz")["bytes"] == size
    assert report.row("weight sharing")["bytes"] == coded_nbytes(coded, huffman=False)
    weights = 64 * 32 + 32 * 10
    assert report.row("Huffman")["nonzero weights"] == round(0.25 * weights)
    assert report.rows[0]["bytes"] == report.dense_bytes == 4 * (weights + 42)
    assert report.ratio == pytest.approx(report.dense_bytes / recount)
    assert report.accuracy_drop == pytest.approx(report.rows[0]["accuracy"] - evaluate(coded, loader))
    weight_bytes = recount - 42 * 4
    assert report.row("Huffman")["bits per weight"] == pytest.approx(8 * weight_bytes / round(0.25 * weights))
    with pytest.raises(KeyError, match="Huffman-coded"):
        report.row("arithmetic coding")


def test_deep_compress_refuses_bad_arguments_before_training():
    loader = digits_loader(n=64)
    model = MLP(hidden=(8,))
    for kwargs, word in ((dict(sparsity=1.0), "sparsity"), (dict(bits=0), "bits"), (dict(bits={"7": 2}), "7"),
                         (dict(retrain_epochs=-1), "retrain_epochs"), (dict(init="forgy"), "init")):
        with pytest.raises(ValueError, match=word):
            deep_compress(model, loader, **kwargs)
    with pytest.raises(ValueError, match="train_loader"):
        deep_compress(model, None)
    with pytest.raises(ValueError, match="test_loader"):
        deep_compress(model, loader, [])
