# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Compression, going further - Deep Compression: weight sharing and Huffman coding
#
# > Trained weight sharing (k-means codebooks), canonical Huffman coding of the codes and of the sparse positions, and the full prune → share → Huffman pipeline.

# %% [markdown]
# The main lesson's pipeline prunes, fine-tunes, quantizes to int8 and stores the survivors
# in CSR: each surviving weight still costs a byte for its value and one or two for its
# column. Han, Mao & Dally ("Deep Compression", ICLR 2016) went further with two more stages
# and reached 40x fewer bytes on LeNet-300-100 (test error 1.64% → 1.58%) and 39x on LeNet-5:
#
# | stage | what it stores per surviving weight | this notebook |
# |---|---|---|
# | pruning + retraining | a value and a position | the main lesson's tools, reused |
# | **trained weight sharing** | a b-bit index into a per-layer codebook of 2^b values | k-means, then the codebook is fine-tuned |
# | **Huffman coding** | variable-length codes: frequent indices and gaps get short codes | canonical codes with `heapq` and NumPy |
#
# We build both new stages, a file format for them, and the whole pipeline, and measure it
# on the digits MLP (a LeNet-300-100 with 64 inputs) and the digits CNN. The target, as in
# the paper: **at least 40x fewer bytes than dense float32, within 1 point of accuracy**.
# Every number below is computed when the notebook runs.
#
# Rhythm as in the main notebook: explanation, an implementation cell (its missing steps
# read `raise NotImplementedError()` in your copy, each under a `# TODO:`), a test cell, a
# measurement. Exports go to three modules of `tinytorch/optimization/compression/`:
# `weight_sharing.py` (k-means, shared weights, centroid fine-tuning), `huffman.py`
# (canonical Huffman codes, relative positions) and `deep_compression.py` (coded layers, the
# file, the pipeline).

# %%
#| default_exp optimization.compression.deep_compression

# %% [markdown]
# ### What each module imports

# %%
#| export optimization.compression.weight_sharing
import numpy as np

from tinytorch.core import Adam, Conv2d, Linear, Module, Parameter, check_choice, check_int
from tinytorch.optimization.compression.csr import narrowest_uint, read_only_copy
from tinytorch.optimization.compression.metrics import prunable_layers
from tinytorch.optimization.compression.pruning import fine_tune

# %%
#| export optimization.compression.huffman
import heapq

import numpy as np

from tinytorch.core import check_int

# %%
#| export optimization.compression.deep_compression
import copy
from dataclasses import dataclass, field

import numpy as np

from tinytorch.core import Linear, Module, check_choice, check_fraction, check_int, check_loader, evaluate, format_table
from tinytorch.optimization.compression.csr import CSRMatrix, narrowest_uint
from tinytorch.optimization.compression.huffman import absolute_positions, huffman_code_lengths, huffman_decode
from tinytorch.optimization.compression.huffman import huffman_encode, relative_positions
from tinytorch.optimization.compression.io import compressed_file_size
from tinytorch.optimization.compression.metrics import PRUNABLE, count_params, prunable_layers
from tinytorch.optimization.compression.pruning import fine_tune
from tinytorch.optimization.compression.schedule import progressive_prune
from tinytorch.optimization.compression.sparse import SparseConv2d, SparseLinear, model_nbytes_compressed
from tinytorch.optimization.compression.sparse import sparse_layers, to_sparse
from tinytorch.optimization.compression.weight_sharing import KMEANS_INITS, SharedWeight, _layer_bits
from tinytorch.optimization.compression.weight_sharing import fine_tune_centroids, share_weights

# %%
# Notebook-only setup: data, the pretrained models, the exported package (for files).
import importlib.util
import os
import tempfile
import time

import tinytorch as tt
import tinytorch.optimization.compression as package
from tinytorch.core import (DataLoader, Linear, Sequential, Tanh, Tensor, TensorDataset, cross_entropy, evaluate,
                            no_grad)
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import MLP, load_pretrained
from tinytorch.optimization.compression import (load_compressed, measure_sparsity, model_nbytes_compressed,
                                                prunable_layers, save_compressed, to_sparse)

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
if HAS_MATPLOTLIB:
    import matplotlib.pyplot as plt
if importlib.util.find_spec("threadpoolctl") is not None:
    # every matrix here is small: a second BLAS thread only waits for a core (badly, when the
    # machine is shared), so this notebook runs BLAS on one thread
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")

train_loader, test_loader = digits_loaders(batch_size=32, seed=0)
X_test, y_test = load_digits("test")


def expect_value_error(call, *words):
    """Test helper: call() must raise ValueError whose message contains every one of `words`."""
    try:
        call()
    except ValueError as err:
        missing = [word for word in words if word not in str(err)]
        assert not missing, f"ValueError({str(err)!r}) should mention {missing}"
    else:
        raise AssertionError(f"expected a ValueError mentioning {words}")


notebook_start = time.perf_counter()

# %% [markdown]
# ## 0 A pruned starting point
#
# Deep Compression starts where the main lesson ends: a pruned, retrained network. We reuse
# its tools: `progressive_prune` (global magnitude ranking on a cubic schedule, fine-tuning
# between steps), then a longer `fine_tune` at a lower learning rate with the masks held.
# This recipe, given below, takes the digits MLP to 95% sparsity.

# %%
#| export optimization.compression.deep_compression
def prune_and_retrain(model: Module, train_loader, sparsity: float = 0.95, steps: int = 10,
                      epochs_per_step: int = 5, retrain_epochs: int = 20, lr: float = 3e-3,
                      retrain_lr: float = 3e-4) -> Module:
    """Deep Compression's first stage, IN PLACE: global magnitude pruning to `sparsity` in
    `steps` steps of a cubic schedule with `epochs_per_step` epochs of Adam(lr) after each
    (the main lesson's `progressive_prune`), then `retrain_epochs` of Adam(retrain_lr) with
    the pruned weights held at zero (`fine_tune`). Returns `model`."""
    check_loader("train_loader", train_loader)
    retrain_epochs = check_int("retrain_epochs", retrain_epochs, minimum=0)
    progressive_prune(model, sparsity, steps=steps, train_loader=train_loader, epochs_per_step=epochs_per_step,
                      scope="global", lr=lr, verbose=False)
    masks = {name: layer.weight.data != 0 for name, layer in prunable_layers(model).items()}
    fine_tune(model, masks, train_loader, epochs=retrain_epochs, lr=retrain_lr)
    return model

# %%
tt.manual_seed(0)
dense_mlp = load_pretrained("mlp")
start = time.perf_counter()
pruned_mlp = prune_and_retrain(copy.deepcopy(dense_mlp), digits_loaders(batch_size=32, seed=0)[0])
print(f"MLP: dense accuracy {evaluate(dense_mlp, test_loader):.2%}, pruned to {measure_sparsity(pruned_mlp):.1%} "
      f"sparsity: {evaluate(pruned_mlp, test_loader):.2%} ({time.perf_counter() - start:.1f} s)")
for name, layer in prunable_layers(pruned_mlp).items():
    w = layer.weight.data
    print(f"  layer {name}: {w.shape}, {np.count_nonzero(w):,} of {w.size:,} weights left")

# %% [markdown]
# ## 1 Weight sharing: k-means on each layer's surviving weights
#
# A layer's surviving weights take thousands of distinct float32 values, but the network
# does not need that many. **Weight sharing** replaces them with `k = 2^b` shared values
# (a *codebook*, one per layer): each weight then stores only the b-bit *index* of its
# value. The shared values are chosen by **k-means** (Lloyd's algorithm) in one dimension:
#
# 1. *initialise* k centroids; Deep Compression compared three ways, random weights
#    ("Forgy"), quantiles of the weights ("density-based") and **linear**: evenly spaced
#    over [min, max]. Linear worked best in the paper because it keeps a few centroids out
#    in the tails, where the rare large weights (the important ones) live;
# 2. *assign* every weight to its nearest centroid;
# 3. *update* every centroid to the mean of its weights (a centroid with no weight keeps
#    its place), and repeat 2-3 until no assignment changes.
#
# The assignment is where a naive implementation crawls: a (weights x centroids) distance
# matrix would have 73,728 x 256 entries for the CNN's big layer (before pruning) at 8 bits. In one dimension there is a
# better way: with the centroids **sorted**, a value belongs to centroid j exactly when it
# lies between the midpoints `(c[j-1] + c[j]) / 2` and `(c[j] + c[j+1]) / 2`, so one binary
# search per value (`np.searchsorted` over the k-1 midpoints) assigns everything. A value
# exactly on a midpoint goes to the lower centroid, as `argmin` of the distances would do.
# Keeping the centroids sorted is cheap (`np.sort` after each update) and makes the
# codebook sorted too.

# %% nbgrader={"grade": false, "grade_id": "kmeans", "solution": true}
#| export optimization.compression.weight_sharing
KMEANS_INITS = ("linear", "density", "random")


def assign_clusters(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of the SORTED `centroids` for every value (the lower index on a
    tie), as an int64 array of `values`' shape. Vectorized: a binary search per value."""
    # TODO: the k-1 midpoints between consecutive centroids, then np.searchsorted with
    # side="left" (a value equal to a midpoint goes to the lower centroid).
    ### BEGIN SOLUTION
    midpoints = (centroids[:-1] + centroids[1:]) / 2
    return np.searchsorted(midpoints, values, side="left")
    ### END SOLUTION


def initial_centroids(values: np.ndarray, n_clusters: int, init: str = "linear", seed: int = 0) -> np.ndarray:
    """Sorted float64 starting centroids: "linear" (evenly spaced over [min, max]), "density"
    (evenly spaced quantiles) or "random" (distinct values drawn with `seed`, Forgy)."""
    if init == "linear":
        return np.linspace(values.min(), values.max(), n_clusters)
    if init == "density":
        return np.quantile(values, np.linspace(0.0, 1.0, n_clusters))
    return np.sort(np.random.default_rng(seed).choice(values, n_clusters, replace=False))


def kmeans_1d(values, n_clusters: int, iters: int = 50, init: str = "linear", seed: int = 0) -> tuple:
    """Lloyd's k-means on the numbers in `values` (any shape, flattened).

    Args:
        n_clusters: k; at most len(values) clusters are made (k = min(n_clusters, len(values))).
        iters: maximum update rounds (it stops earlier once no assignment changes).
        init: "linear", "density" or "random" (see initial_centroids); seed for "random".
    Returns (centroids, codes): centroids (k,) float32 sorted ascending, codes (len(values),)
    the narrowest unsigned dtype, codes[i] = index of the centroid nearest values[i]. Works
    in float64; a centroid that loses all its values keeps its place.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    n_clusters = check_int("n_clusters", n_clusters, minimum=1)
    iters = check_int("iters", iters, minimum=0)
    check_choice("init", init, KMEANS_INITS)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("values must hold at least one number, all finite (no NaN or inf)")
    k = min(n_clusters, values.size)
    centroids = initial_centroids(values, k, init, seed)
    codes = assign_clusters(values, centroids)
    for _ in range(iters):
        # TODO: one Lloyd round without a Python loop over values: counts and sums of the
        # values per cluster (np.bincount, minlength=k); new centroids = sums / counts where
        # counts > 0, else the old centroid; sort them; reassign (assign_clusters). Stop
        # (break) when the new codes equal the old ones; otherwise keep the new codes.
        ### BEGIN SOLUTION
        counts = np.bincount(codes, minlength=k)
        sums = np.bincount(codes, weights=values, minlength=k)
        centroids = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), centroids))
        new_codes = assign_clusters(values, centroids)
        if np.array_equal(new_codes, codes):
            break
        codes = new_codes
        ### END SOLUTION
    return centroids.astype(np.float32), codes.astype(narrowest_uint(k - 1))

# %% [markdown]
# ### Test: the vectorized k-means against a plain loop
# The oracle below is Lloyd's algorithm written the slow, obvious way: a distance to every
# centroid for every value, a mean by summing one cluster at a time.

# %%
def kmeans_loop(values, k, iters):
    """Reference k-means: Python loops, linear init, same rules (lower index on ties,
    empty clusters keep their centroid, centroids sorted, stop when nothing changes)."""
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


def test_kmeans():
    rng = np.random.default_rng(0)
    for n, k, iters in ((50, 4, 20), (200, 16, 50), (31, 8, 3), (7, 32, 10)):
        values = rng.standard_normal(n) * rng.choice([0.1, 1.0], n)   # two scales, like pruned weights
        centroids, codes = kmeans_1d(values, k, iters=iters)
        want_centroids, want_codes = kmeans_loop(values, min(k, n), iters)
        assert np.allclose(centroids, want_centroids, atol=1e-6), (n, k, centroids, want_centroids)
        assert codes.tolist() == want_codes, (n, k)
        assert codes.dtype == np.uint8 and centroids.dtype == np.float32
    # linear init over [min, max]; ties go to the lower centroid
    assert assign_clusters(np.array([0.0, 0.5, 1.0, 1.5, 2.0]), np.array([0.0, 1.0, 2.0])).tolist() == [0, 0, 1, 1, 2]
    centroids, codes = kmeans_1d([0.0, 0.1, 0.9, 1.0], 2, iters=0)
    assert centroids.tolist() == [0.0, 1.0] and codes.tolist() == [0, 0, 1, 1]
    assert kmeans_1d(np.arange(300.0), 300)[1].dtype == np.uint16
    expect_value_error(lambda: kmeans_1d([], 4), "values")
    expect_value_error(lambda: kmeans_1d([1.0, np.nan], 4), "finite")
    expect_value_error(lambda: kmeans_1d([1.0, 2.0], 0), "n_clusters")
    expect_value_error(lambda: kmeans_1d([1.0, 2.0], 2, init="kmeans++"), "init")
    print("kmeans_1d: OK")


test_kmeans()

# %% [markdown]
# ### Shared weights, layer by layer
#
# A `SharedWeight` is what one pruned, weight-shared layer needs: the codebook, one code per
# surviving weight, and the surviving weights' **positions** (flat indices into the weight
# viewed as a `(rows, cols)` matrix, row-major; a convolution's `(out, in, kh, kw)` weight is
# viewed as `(out, in*kh*kw)` as in the main lesson's sparse layers). It is given: like
# `CSRMatrix` it validates its arrays and never changes after it is built.
#
# `share_weights(model, bits)` clusters every prunable layer's surviving weights and, like
# the pruners, works **in place**: the layer's weights become their centroids. The paper used
# 8 bits for convolutions and 5 for fully connected layers (`PAPER_BITS`, the default); `bits`
# may also be one number or a dict {layer name: bits}.

# %%
#| export optimization.compression.weight_sharing
class SharedWeight:
    """A pruned, weight-shared (rows, cols) matrix: w.flat[positions[i]] = codebook[codes[i]],
    every other entry 0.

    Args:
        codebook: (k,) float32, finite, k >= 1.  codes: (nnz,) unsigned ints < k.
        positions: (nnz,) integers, strictly increasing, in [0, rows * cols) (row-major).
        shape: (rows, cols).
    Validated on construction (ValueError naming the argument); the arrays are copied and
    read-only, so a SharedWeight never changes (`with_codebook` makes a new one).
    """

    def __init__(self, codebook, codes, positions, shape):
        try:
            rows, cols = (check_int("shape", d, minimum=0) for d in shape)
        except (TypeError, ValueError):
            raise ValueError(f"shape must be a pair (rows, cols) of non-negative ints, got {shape!r}") from None
        codebook, codes, positions = np.asarray(codebook), np.asarray(codes), np.asarray(positions)
        if codebook.dtype != np.float32 or codebook.ndim != 1 or codebook.size == 0:
            raise ValueError(f"codebook must be a non-empty 1-D float32 array, got {codebook.dtype} {codebook.shape}")
        if not np.isfinite(codebook).all():
            raise ValueError("codebook values must be finite")
        if codes.ndim != 1 or codes.dtype.kind != "u":
            raise ValueError(f"codes must be a 1-D unsigned integer array, got {codes.dtype} {codes.shape}")
        if len(codes) and int(codes.max()) >= len(codebook):
            raise ValueError(f"codes must be < len(codebook) = {len(codebook)}, got {int(codes.max())}")
        if positions.ndim != 1 or positions.dtype.kind not in "iu" or len(positions) != len(codes):
            raise ValueError(f"positions must be a 1-D integer array with one entry per code ({len(codes)}), "
                             f"got {positions.dtype} {positions.shape}")
        flat = positions.astype(np.int64)
        if len(flat) and (flat[0] < 0 or flat[-1] >= rows * cols or np.any(np.diff(flat) <= 0)):
            raise ValueError(f"positions must increase strictly within [0, rows * cols = {rows * cols})")
        self.codebook, self.codes = read_only_copy(codebook), read_only_copy(codes)
        self.positions = read_only_copy(flat)
        self.shape = (rows, cols)

    @property
    def nnz(self) -> int:
        return len(self.codes)

    @property
    def bits(self) -> int:
        """Bits of a fixed-width code: ceil(log2(k)), at least 1."""
        return max(1, int(np.ceil(np.log2(len(self.codebook)))))

    def with_codebook(self, codebook) -> "SharedWeight":
        """The same codes and positions with another codebook (float32, same length)."""
        codebook = np.asarray(codebook, dtype=np.float32)
        if codebook.shape != self.codebook.shape:
            raise ValueError(f"codebook must have shape {self.codebook.shape}, got {codebook.shape}")
        return SharedWeight(codebook, self.codes, self.positions, self.shape)

    def mask(self) -> np.ndarray:
        """(rows, cols) bool: True where a weight survives."""
        keep = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        keep[self.positions] = True
        return keep.reshape(self.shape)

    def dense(self) -> np.ndarray:
        """The (rows, cols) float32 matrix."""
        out = np.zeros(self.shape[0] * self.shape[1], dtype=np.float32)
        out[self.positions] = self.codebook[self.codes]
        return out.reshape(self.shape)

    def __repr__(self) -> str:
        return f"SharedWeight(shape={self.shape}, nnz={self.nnz}, codebook={len(self.codebook)} values)"


PAPER_BITS = {Conv2d: 8, Linear: 5}


def _layer_bits(layers: dict, bits) -> dict:
    """{layer name: bits} for share_weights: None -> PAPER_BITS by layer type, an int -> every
    layer, a dict -> the layers it names (each 1..16)."""
    if bits is None:
        chosen = {name: PAPER_BITS[type(layer)] for name, layer in layers.items()}
    elif isinstance(bits, dict):
        unknown = sorted(set(bits) - set(layers))
        if unknown:
            raise ValueError(f"bits names layers the model does not have: {unknown}; prunable layers are {list(layers)}")
        chosen = {name: check_int(f"bits[{name!r}]", bits[name], minimum=1) for name in layers if name in bits}
    else:
        chosen = dict.fromkeys(layers, check_int("bits", bits, minimum=1))
    too_wide = {name: b for name, b in chosen.items() if b > 16}
    if too_wide:
        raise ValueError(f"bits must be at most 16 (codes are stored as integers < 2^16), got {too_wide}")
    return chosen

# %% nbgrader={"grade": false, "grade_id": "share_weights", "solution": true}
#| export optimization.compression.weight_sharing
def share_weights(model: Module, bits=None, iters: int = 50, init: str = "linear") -> dict:
    """Cluster the nonzero weights of every prunable layer into 2^bits shared values, IN PLACE.

    Args:
        bits: None (PAPER_BITS: 8 for Conv2d, 5 for Linear), an int for every layer, or a
            dict {layer name: bits} (layers not named are left as they are).
        iters, init: passed to kmeans_1d.
    Returns {layer name: SharedWeight} (shape: the weight as (rows, cols)); every shared
    layer's weight now holds its centroids (pruned weights stay exactly zero).
    """
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("model has no prunable layer (Linear or Conv2d)")
    chosen = _layer_bits(layers, bits)
    shared = {}
    for name, b in chosen.items():
        weight = layers[name].weight
        matrix = weight.data.reshape(weight.shape[0], -1)
        if not np.isfinite(matrix).all():
            raise ValueError(f"layer {name!r} has NaN or inf weights: they cannot be clustered")
        positions = np.flatnonzero(matrix)
        if positions.size == 0:
            raise ValueError(f"layer {name!r} has no nonzero weight to share")
        # TODO: k-means (kmeans_1d, 2 ** b clusters, iters, init) over the nonzero values (in
        # the order of `positions`), store shared[name] = SharedWeight(centroids, codes,
        # positions, matrix.shape) and write its dense() matrix back into weight.data (in
        # the weight's own shape).
        ### BEGIN SOLUTION
        centroids, codes = kmeans_1d(matrix.ravel()[positions], 2 ** b, iters=iters, init=init)
        shared[name] = SharedWeight(centroids, codes, positions, matrix.shape)
        weight.data = shared[name].dense().reshape(weight.shape)
        ### END SOLUTION
    return shared

# %% [markdown]
# ### Test: a shared layer takes at most 2^b values and keeps its zeros

# %%
def test_share_weights():
    tt.manual_seed(0)
    model = MLP(hidden=(32,))
    package.prune_magnitude(model, 0.8)
    before = {name: layer.weight.data.copy() for name, layer in prunable_layers(model).items()}
    shared = share_weights(model, bits={"1": 3, "3": 2})
    for name, b in (("1", 3), ("3", 2)):
        w, s = prunable_layers(model)[name].weight.data, shared[name]
        assert len(np.unique(w[w != 0])) <= 2 ** b and len(s.codebook) == 2 ** b
        assert ((w == 0) == (before[name] == 0)).all(), "zeros must stay zeros, survivors must stay nonzero-coded"
        assert np.array_equal(s.positions, np.flatnonzero(before[name]))
        assert np.array_equal(s.dense(), w.reshape(s.shape)) and np.all(np.diff(s.codebook) >= 0)
        # every weight went to its nearest centroid
        nearest = np.abs(before[name].ravel()[s.positions][:, None] - s.codebook[None, :]).argmin(axis=1)
        assert np.array_equal(s.codebook[nearest], s.codebook[s.codes])
    assert _layer_bits(prunable_layers(load_pretrained("cnn")), None) == {"0": 8, "3": 8, "7": 5}
    expect_value_error(lambda: share_weights(model, bits={"9": 4}), "9")
    expect_value_error(lambda: share_weights(model, bits=17), "16")
    expect_value_error(lambda: SharedWeight(np.zeros(2, np.float32), np.array([2], np.uint8), [0], (1, 3)), "codes")
    expect_value_error(lambda: SharedWeight(np.zeros(2, np.float32), np.array([0, 1], np.uint8), [2, 1], (1, 3)),
                       "positions")
    print("share_weights: OK")


test_share_weights()

# %% [markdown]
# ### Analysis: how many bits, and which initialisation?
# Weight sharing alone, without any fine-tuning, on the pruned MLP: the accuracy for each
# bit width and each initialisation (each run starts from a fresh copy of the pruned MLP),
# then, at 3 bits, where each initialisation spends its error: on all weights, and on the 5%
# largest |w| of each layer.

# %%
rows, errors = [], []
for b in (1, 2, 3, 4, 5, 6):
    row = {"bits": b, "clusters": 2 ** b}
    for init in KMEANS_INITS:
        model = copy.deepcopy(pruned_mlp)
        shared = share_weights(model, bits=b, init=init)
        row[f"{init} init"] = evaluate(model, test_loader)
        if b == 3:
            error = {"all": [], "largest 5%": []}
            for name, s in shared.items():
                original = prunable_layers(pruned_mlp)[name].weight.data.ravel()[s.positions]
                diff = np.abs(s.codebook[s.codes] - original)
                large = np.abs(original) >= np.quantile(np.abs(original), 0.95)
                error["all"].append(diff.mean())
                error["largest 5%"].append(diff[large].mean())
            errors.append({"init (3 bits)": init, "mean |error|, all weights": float(np.mean(error["all"])),
                           "mean |error|, largest 5%": float(np.mean(error["largest 5%"]))})
    rows.append(row)
print(f"pruned MLP before sharing: {evaluate(pruned_mlp, test_loader):.2%}; one test image = {1 / len(X_test):.2%}")
print(format_table(rows))
print()
print(format_table(errors))
lowest = min(errors, key=lambda e: e["mean |error|, largest 5%"])["init (3 bits)"]
print(f"lowest error on the largest weights at 3 bits: {lowest} initialisation")

# %% [markdown]
# The top rows are the lesson: with 5 or 6 bits (32-64 shared values per layer) the
# accuracy hardly moves whatever the initialisation, so a 4-byte float per weight was mostly
# wasted. Below that the columns part, by a few test images (read them with care). The paper
# explains its preference for linear initialisation by the large weights: they matter most
# but are few, so initialisations that follow the crowd (density-based, random) give them
# few centroids, while linear spacing keeps centroids out in the tails. The error table
# checks that argument on our weights; note that pruning has already removed the crowd near
# zero, so the survivors of a 95%-pruned layer are all "large". Either way, the next step
# trains the centroids and recovers much of what the low bit widths lose.

# %% [markdown]
# ## 2 Fine-tuning the centroids
#
# After clustering, the weights are tied: every weight with code j *is* `codebook[j]`. Train
# the codebook, not the weights. The loss depends on `codebook[j]` through each weight that
# shares it, so by the chain rule
#
# $$\frac{\partial L}{\partial c_j} = \sum_{i \,:\, \text{code}_i = j} \frac{\partial L}{\partial w_i},$$
#
# the sum of the gradients of the weights in cluster j (the paper draws it as "group the
# gradients by cluster index, then reduce"). With the codes as an integer array that is one
# `np.bincount(codes, weights=grads, minlength=k)`.
#
# `CentroidOptimizer` plugs this into the main lesson's training loop. It looks like an
# optimizer (`zero_grad`, `step`, `params`): each step it turns every shared layer's weight
# gradient into centroid gradients, lets Adam update the centroids (and the biases and any
# layer that is not shared, as usual), then rewrites the tied weights from the new codebook.
# `fine_tune_centroids` hands it to `fine_tune` from section 2 of the main lesson, whose
# `MaskedOptimizer` keeps the pruned weights exactly zero: nothing new to write for that.

# %% nbgrader={"grade": false, "grade_id": "centroid_gradients", "solution": true}
#| export optimization.compression.weight_sharing
def centroid_gradients(weight_grad, shared: SharedWeight) -> np.ndarray:
    """dL/d(codebook): (k,) float64, entry j = the sum of dL/dw over the weights whose code is j.

    weight_grad: the layer's weight gradient, any shape with rows * cols entries (row-major,
    like `shared.positions`)."""
    grad = np.asarray(weight_grad, dtype=np.float64).reshape(-1)
    if grad.size != shared.shape[0] * shared.shape[1]:
        raise ValueError(f"weight_grad must have {shared.shape[0] * shared.shape[1]} entries, got {grad.size}")
    # TODO: the gradients of the surviving weights (grad at shared.positions), summed per code
    # with np.bincount (minlength = the codebook length).
    ### BEGIN SOLUTION
    return np.bincount(shared.codes, weights=grad[shared.positions], minlength=len(shared.codebook))
    ### END SOLUTION


class CentroidOptimizer:
    """Adam over the codebooks of weight-shared layers (and every other parameter).

    Args:
        model: the model whose layers `shared` describes (its weights are tied to the codebooks).
        shared: {layer name: SharedWeight} from share_weights. UPDATED IN PLACE: after every
            step its entries hold the trained codebooks.
        lr, weight_decay: of the Adam optimizer (weight decay does not apply to codebooks).
    Has the optimizer interface train_epoch and MaskedOptimizer use: params, zero_grad(), step().
    """

    def __init__(self, model: Module, shared: dict, lr: float = 1e-3, weight_decay: float = 0.0):
        layers = prunable_layers(model)
        for name, weight in shared.items():
            if name not in layers or not isinstance(weight, SharedWeight) or \
                    layers[name].weight.data.size != weight.shape[0] * weight.shape[1]:
                raise ValueError(f"shared[{name!r}] must be the SharedWeight of a prunable layer of the model")
        self.model, self.shared = model, shared
        self.layers = {name: layers[name] for name in shared}
        self.centroids = {name: Parameter(weight.codebook.copy()) for name, weight in shared.items()}
        tied = [layer.weight for layer in self.layers.values()]
        others = [p for p in model.parameters() if not any(p is t for t in tied)]
        self.optimizer = Adam(others, lr=lr, weight_decay=weight_decay) if others else None
        self.codebook_optimizer = Adam(list(self.centroids.values()), lr=lr)
        self._write_weights()

    @property
    def params(self) -> list:
        """The trained parameters: the codebooks, then the untied parameters."""
        return self.codebook_optimizer.params + (self.optimizer.params if self.optimizer else [])

    def zero_grad(self) -> None:
        for optimizer in (self.optimizer, self.codebook_optimizer):
            if optimizer is not None:
                optimizer.zero_grad()
        for layer in self.layers.values():
            layer.weight.grad = None

    def _write_weights(self) -> None:
        """Every tied weight := its codebook value (pruned weights 0); `shared` gets the codebooks."""
        for name, centroid in self.centroids.items():
            self.shared[name] = self.shared[name].with_codebook(centroid.data)
            weight = self.layers[name].weight
            weight.data = self.shared[name].dense().reshape(weight.shape)

    def step(self) -> None:
        # TODO: give every centroid Parameter its gradient (float32): centroid_gradients of
        # its layer's weight.grad (None if the layer got no gradient); step the codebook
        # optimizer and, if there is one, the optimizer of the other parameters; then
        # _write_weights().
        ### BEGIN SOLUTION
        for name, centroid in self.centroids.items():
            grad = self.layers[name].weight.grad
            centroid.grad = None if grad is None else \
                centroid_gradients(grad, self.shared[name]).astype(np.float32)
        self.codebook_optimizer.step()
        if self.optimizer is not None:
            self.optimizer.step()
        self._write_weights()
        ### END SOLUTION


def fine_tune_centroids(model: Module, shared: dict, loader, epochs: int = 10, lr: float = 1e-3,
                        weight_decay: float = 0.0) -> dict:
    """Train the codebooks of `shared` (and the untied parameters) for `epochs` over `loader`
    with CentroidOptimizer, through the main lesson's `fine_tune` (pruned weights held at 0).
    Updates `model` and `shared` in place; returns fine_tune's history."""
    masks = {name: weight.mask().reshape(prunable_layers(model)[name].weight.shape)
             for name, weight in shared.items()}
    optimizer = CentroidOptimizer(model, shared, lr=lr, weight_decay=weight_decay)
    return fine_tune(model, masks, loader, epochs=epochs, optimizer=optimizer)

# %% [markdown]
# ### Test: centroid gradients against finite differences
# Take a small Tanh network (smooth, so finite differences are accurate) in float64, share its
# weights, and nudge each centroid by ±ε: the change of the loss must match the summed
# gradient. Then fine-tune for real: weights stay tied, pruned weights stay zero.

# %%
def test_centroid_gradients():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 6)), rng.integers(0, 3, 16)
    tt.manual_seed(0)
    model = Sequential(Linear(6, 5), Tanh(), Linear(5, 3))
    package.prune_magnitude(model, 0.4)
    shared = share_weights(model, bits=2)
    for p in model.parameters():             # float64 throughout: finite differences need the precision
        p.data = p.data.astype(np.float64)
    layer, keep, codes = model[0], shared["0"].mask(), shared["0"].codes

    def loss_at(codebook):
        weight = np.zeros(shared["0"].shape)
        weight[keep] = codebook[codes]       # row-major order of the mask = order of the codes
        layer.weight.data = weight
        return cross_entropy(model(Tensor(x, dtype=np.float64)), y)

    codebook = shared["0"].codebook.astype(np.float64)
    model.zero_grad()
    loss_at(codebook).backward()
    got = centroid_gradients(layer.weight.grad, shared["0"])
    eps = 1e-6
    for j in range(len(codebook)):
        up, down = codebook.copy(), codebook.copy()
        up[j] += eps
        down[j] -= eps
        numeric = (loss_at(up).item() - loss_at(down).item()) / (2 * eps)
        assert abs(numeric - got[j]) < 1e-6 + 1e-4 * abs(numeric), (j, numeric, got[j])
    # a hand-made case: codes [0, 1, 0] at positions [0, 2, 3] of a 2x2 weight
    s = SharedWeight(np.array([1.0, 2.0], np.float32), np.array([0, 1, 0], np.uint8), [0, 2, 3], (2, 2))
    assert centroid_gradients(np.array([[1.0, 5.0], [2.0, 4.0]]), s).tolist() == [1.0 + 4.0, 2.0]
    expect_value_error(lambda: centroid_gradients(np.zeros(5), s), "weight_grad")
    print("centroid_gradients: OK")


def test_centroid_fine_tune():
    x, y = load_digits("train")
    loader = DataLoader(TensorDataset(x[:256], y[:256]), batch_size=64, shuffle=True, seed=0)
    tt.manual_seed(1)
    model = MLP(hidden=(32,))
    package.prune_magnitude(model, 0.7)
    shared = share_weights(model, bits=3)
    codebooks = {name: s.codebook.copy() for name, s in shared.items()}
    bias = model[1].bias.data.copy()
    fine_tune_centroids(model, shared, loader, epochs=2, lr=1e-2)
    for name, layer in prunable_layers(model).items():
        assert np.array_equal(layer.weight.data.reshape(shared[name].shape), shared[name].dense()), \
            "every weight must equal its (trained) centroid"
        assert not np.array_equal(shared[name].codebook, codebooks[name]), "the codebooks must train"
    assert not np.array_equal(model[1].bias.data, bias), "biases (not shared) train as usual"
    expect_value_error(lambda: CentroidOptimizer(model, {"5": shared["1"]}), "5")
    print("fine_tune_centroids: OK")


test_centroid_gradients()
test_centroid_fine_tune()

# %% [markdown]
# ### Analysis: what centroid fine-tuning buys, bit width by bit width
# For each bit width: share (linear init), measure, fine-tune the codebooks (and biases) for
# 10 epochs, measure again. Only 2^b numbers per layer train, plus the biases.

# %%
rows, centroid_runs = [], {}
for b in (1, 2, 3, 4):
    model = copy.deepcopy(pruned_mlp)
    shared = share_weights(model, bits=b)
    before = evaluate(model, test_loader)
    start = time.perf_counter()
    fine_tune_centroids(model, shared, digits_loaders(batch_size=32, seed=0)[0], epochs=10)
    centroid_runs[b] = (model, shared)
    rows.append({"bits": b, "shared": before, "centroids fine-tuned": evaluate(model, test_loader),
                 "trained numbers": sum(len(s.codebook) for s in shared.values()),
                 "seconds": round(time.perf_counter() - start, 1)})
print(f"pruned MLP (float32 weights): {evaluate(pruned_mlp, test_loader):.2%}")
print(format_table(rows))
print("accuracy recovered by training the codebooks: "
      + ", ".join(f"{r['bits']} bits {100 * (r['centroids fine-tuned'] - r['shared']):+.2f} pts" for r in rows))

# %% [markdown]
# ## 3 Huffman coding
#
# A b-bit code spends b bits on every weight, but the codes are far from uniform: k-means
# with linear initialisation puts many weights in the clusters near the middle of the range
# and few in the tails. **Huffman coding** (Huffman 1952) gives frequent symbols short bit
# strings and rare ones long strings, so that no code is the prefix of another (the
# stream decodes without separators). It is optimal among such codes: the average length
# is within one bit of the entropy $H = -\sum_s p_s \log_2 p_s$.
#
# **Building the code lengths with a heap.** Put every symbol that occurs in a min-heap keyed
# by its count. Repeatedly pop the two lightest subtrees, merge them (count = sum) and push
# the merge back: every symbol inside the two merged subtrees moves one level deeper, i.e.
# its code gets one bit longer. When one tree is left, each symbol's depth is its code
# length. (A single distinct symbol still needs a 1-bit code.)
#
# **Canonical codes.** The tree itself need not be stored: given only the lengths, the
# *canonical* code assigns codes in order of (length, symbol), each the previous code plus
# one, shifted left when the length grows. The decoder rebuilds the same codes from the
# same lengths, so a file stores **one small integer per symbol** (DEFLATE, inside every
# `.zip` and `.npz`, does the same).
#
# ```
# counts  a:8  b:4  c:2  d:1  e:1      lengths  a:1  b:2  c:3  d:4  e:4
# canonical (by length, then symbol):  a=0  b=10  c=110  d=1110  e=1111
# ```
#
# **Encoding and decoding without a loop over symbols.** Encoding is bit bookkeeping:
# repeat every symbol's code once per bit (`np.repeat`), pick the bits with shifts and
# pack them (`np.packbits`). Decoding looks sequential (where a code ends decides where
# the next begins), but it splits into two vectorized steps: (1) for *every* bit position,
# read the next L bits (L = the longest code) and find which code starts there and how long
# it is; (2) follow the chain `next = position + length` from bit 0. Step 2 is done by
# **pointer doubling**: knowing the first m code starts and the jump table `next^m`, the
# next m starts are `next^m` applied to them, and `next^(2m) = next^m[next^m]`: log2(n)
# rounds of fancy indexing.

# %% nbgrader={"grade": false, "grade_id": "huffman_lengths", "solution": true}
#| export optimization.compression.huffman
MAX_CODE_LENGTH = 32  # bits; a Huffman code needs more only for streams of millions of symbols


def huffman_code_lengths(counts) -> np.ndarray:
    """Huffman code length of every symbol, from its count: (n,) uint8.

    counts: (n,) non-negative integers (count of symbol s = counts[s]). Symbols with count
    0 get length 0 (no code); a single symbol that occurs gets length 1. Ties are broken
    by symbol order, so the result is deterministic. ValueError if a length would exceed
    MAX_CODE_LENGTH.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or (counts.size and counts.dtype.kind not in "iu") or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative integers")
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 1:
        lengths[used] = 1
    # heap entries: (count, tie-break order, the symbols of this subtree)
    heap = [(int(counts[s]), i, [int(s)]) for i, s in enumerate(used)]
    heapq.heapify(heap)
    order = len(heap)
    # TODO: while more than one subtree is left: pop the two lightest (heapq.heappop), add 1
    # to the length of every symbol in both, push their merge (count sum, the next `order`
    # number for ties, the joined symbol list).
    ### BEGIN SOLUTION
    while len(heap) > 1:
        count_a, _, symbols_a = heapq.heappop(heap)
        count_b, _, symbols_b = heapq.heappop(heap)
        merged = symbols_a + symbols_b
        lengths[merged] += 1
        heapq.heappush(heap, (count_a + count_b, order, merged))
        order += 1
    ### END SOLUTION
    if lengths.max(initial=0) > MAX_CODE_LENGTH:
        raise ValueError(f"a Huffman code longer than {MAX_CODE_LENGTH} bits would be needed")
    return lengths.astype(np.uint8)


def check_code_lengths(lengths) -> np.ndarray:
    """`lengths` as a validated 1-D uint8 array: each at most MAX_CODE_LENGTH, 0 = unused, and
    the Kraft inequality sum(2^-length) <= 1 holds (so a prefix code with them exists)."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype != np.uint8:
        raise ValueError(f"code lengths must be a 1-D uint8 array, got {lengths.dtype} {lengths.shape}")
    if lengths.max(initial=0) > MAX_CODE_LENGTH:
        raise ValueError(f"code lengths must be at most {MAX_CODE_LENGTH}, got {int(lengths.max())}")
    used = lengths[lengths > 0].astype(np.int64)
    if int(np.left_shift(1, MAX_CODE_LENGTH - used).sum()) > 1 << MAX_CODE_LENGTH:  # exact in integers
        raise ValueError("code lengths violate the Kraft inequality: no prefix code has these lengths")
    return lengths


def canonical_codes(lengths) -> np.ndarray:
    """The canonical prefix code for `lengths`: (n,) uint64, code of symbol s in its low
    lengths[s] bits (0 for unused symbols). Symbols are numbered in order of (length,
    symbol); each code is the previous one + 1, shifted left by the growth in length."""
    lengths = check_code_lengths(lengths)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    order = [int(s) for s in np.lexsort((np.arange(len(lengths)), lengths)) if lengths[s] > 0]
    code, previous = 0, 0
    # TODO: walk `order` (a loop over the alphabet, not the data): shift `code` left by
    # lengths[symbol] - previous, store it, remember the length, add 1.
    ### BEGIN SOLUTION
    for symbol in order:
        code <<= int(lengths[symbol]) - previous
        codes[symbol] = code
        previous = int(lengths[symbol])
        code += 1
    ### END SOLUTION
    return codes

# %% nbgrader={"grade": false, "grade_id": "huffman_coding", "solution": true}
#| export optimization.compression.huffman
def huffman_encode(symbols, lengths) -> np.ndarray:
    """Pack the canonical codes (for `lengths`) of `symbols` into bytes, MSB first.

    symbols: (n,) integers in [0, len(lengths)), each with a nonzero length. Returns a uint8
    array of ceil(total bits / 8) bytes, the last one padded with 0 bits (np.packbits)."""
    symbols = np.asarray(symbols)
    codes = canonical_codes(lengths)
    lengths = np.asarray(lengths)
    if symbols.ndim != 1 or (symbols.size and symbols.dtype.kind not in "iu"):
        raise ValueError("symbols must be a 1-D array of integers")
    symbols = symbols.astype(np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= len(lengths) or (lengths[symbols] == 0).any()):
        raise ValueError("every symbol must lie in [0, len(lengths)) and have a code (a nonzero length)")
    # TODO: n_bits = lengths[symbols]; owner[t] = which symbol bit t belongs to (np.repeat);
    # place[t] = the bit's index inside its code (t minus where that code starts); the bit is
    # (code >> (n_bits - 1 - place)) & 1. Return np.packbits of the bits as uint8.
    ### BEGIN SOLUTION
    n_bits = lengths[symbols].astype(np.int64)
    owner = np.repeat(np.arange(len(symbols)), n_bits)
    place = np.arange(int(n_bits.sum())) - np.repeat(np.cumsum(n_bits) - n_bits, n_bits)
    shift = (n_bits[owner] - 1 - place).astype(np.uint64)
    bits = (codes[symbols][owner] >> shift) & np.uint64(1)
    return np.packbits(bits.astype(np.uint8))
    ### END SOLUTION


def _code_at_every_bit(bits: np.ndarray, lengths: np.ndarray, codes: np.ndarray) -> tuple:
    """(length, symbol) of the code that starts at every bit position (length 0 where none
    does). Reads L = max(lengths) bits at each position (zeros past the end) and compares the
    first l of them, for every length l, with the range of canonical codes of length l."""
    n, longest = len(bits), int(lengths.max())
    padded = np.concatenate([bits, np.zeros(longest, dtype=np.uint8)]).astype(np.uint64)
    window = np.zeros(n, dtype=np.uint64)
    for j in range(longest):                      # a loop over bit offsets (<= 32), not over data
        window = (window << np.uint64(1)) | padded[j:j + n]
    length_at, symbol_at = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for l in range(1, longest + 1):
        of_length = np.flatnonzero(lengths == l)
        if not len(of_length):
            continue
        of_length = of_length[np.argsort(codes[of_length])]   # consecutive codes, first = smallest
        first = int(codes[of_length[0]])
        prefix = (window >> np.uint64(longest - l)).astype(np.int64)
        hit = (prefix >= first) & (prefix < first + len(of_length)) & (length_at == 0)
        length_at[hit] = l
        symbol_at[hit] = of_length[prefix[hit] - first]
    return length_at, symbol_at


def huffman_decode(packed, lengths, count: int) -> np.ndarray:
    """The `count` symbols encoded by huffman_encode(symbols, lengths) in `packed`: (count,) int64.

    ValueError if `packed` does not hold exactly `count` codes followed by fewer than 8 zero
    padding bits (a truncated, extended or damaged stream)."""
    packed = np.asarray(packed)
    if packed.ndim != 1 or packed.dtype != np.uint8:
        raise ValueError(f"the bitstream must be a 1-D uint8 array, got {packed.dtype} {packed.shape}")
    count = check_int("count", count, minimum=0)
    codes = canonical_codes(lengths)
    lengths = np.asarray(lengths)
    bits = np.unpackbits(packed)
    n = len(bits)
    if count > n:  # every code is at least 1 bit: refuse before allocating anything large
        raise ValueError(f"{count} symbols cannot fit in {n} bits")
    if count == 0:
        if packed.size:
            raise ValueError("the bitstream holds bits after the last symbol")
        return np.zeros(0, dtype=np.int64)
    if not lengths.any():
        raise ValueError("the code lengths define no code at all")
    length_at, symbol_at = _code_at_every_bit(bits, lengths, codes)
    jump = np.append(np.where(length_at > 0, np.minimum(np.arange(n) + length_at, n), n), n)  # n: dead end
    starts = np.zeros(1, dtype=np.int64)         # code t starts at starts[t]; so far t = 0 only
    # TODO: pointer doubling: while fewer than `count` starts are known, append jump[starts]
    # (the next len(starts) starts) and square the jump table (jump = jump[jump]); then keep
    # the first `count` starts.
    ### BEGIN SOLUTION
    while len(starts) < count:
        starts = np.concatenate([starts, jump[starts]])
        jump = jump[jump]
    starts = starts[:count]
    ### END SOLUTION
    if (starts >= n).any() or (length_at[starts] == 0).any():
        raise ValueError("the bitstream does not decode: it is truncated or damaged")
    end = int(starts[-1] + length_at[starts[-1]])
    if end > n or n - end >= 8 or bits[end:].any():
        raise ValueError("the bitstream does not decode: it is truncated or damaged")
    return symbol_at[starts]

# %% [markdown]
# ### Test: prefix-free, optimal and exact
# The lengths of the example above; a dyadic distribution (probabilities 1/2, 1/4, 1/8, 1/8),
# where Huffman meets the entropy exactly; the optimum over all length assignments that
# satisfy Kraft, found by brute force for small alphabets; then encode → decode round trips.

# %%
def brute_force_optimal_bits(counts, max_length=5):
    """The fewest total bits of any prefix code for `counts` (exhaustive over code lengths)."""
    import itertools
    used = [c for c in counts if c > 0]
    if len(used) == 1:
        return used[0]
    best = None
    for lens in itertools.product(range(1, max_length + 1), repeat=len(used)):
        if sum(2.0 ** -l for l in lens) <= 1.0:
            total = sum(c * l for c, l in zip(used, lens))
            best = total if best is None else min(best, total)
    return best


def test_huffman_lengths():
    lengths = huffman_code_lengths(np.array([8, 4, 2, 1, 1]))
    assert lengths.tolist() == [1, 2, 3, 4, 4], lengths
    codes = canonical_codes(lengths)
    assert [format(int(c), f"0{l}b") for c, l in zip(codes, lengths)] == ["0", "10", "110", "1110", "1111"]
    assert huffman_code_lengths(np.array([4, 2, 1, 1])).tolist() == [1, 2, 3, 3]   # dyadic: entropy met
    assert huffman_code_lengths(np.array([0, 5, 0])).tolist() == [0, 1, 0]          # one symbol: 1 bit
    rng = np.random.default_rng(0)
    for _ in range(30):
        counts = rng.integers(0, 20, size=rng.integers(2, 6))
        counts[rng.integers(len(counts))] += 1
        lengths = huffman_code_lengths(counts)
        assert int((counts * lengths).sum()) == brute_force_optimal_bits(counts.tolist()), counts
        strings = [format(int(c), f"0{l}b") for c, l in zip(canonical_codes(lengths), lengths) if l]
        assert not any(a != b and b.startswith(a) for a in strings for b in strings), strings  # prefix-free
    expect_value_error(lambda: canonical_codes(np.array([1, 1, 1], np.uint8)), "Kraft")
    expect_value_error(lambda: huffman_code_lengths(np.array([1, -1])), "counts")
    print("huffman_code_lengths / canonical_codes: OK")


def test_huffman_round_trip():
    rng = np.random.default_rng(1)
    for trial in range(50):
        k = int(rng.integers(1, 40))
        symbols = rng.choice(k, size=int(rng.integers(1, 400)), p=rng.dirichlet(np.full(k, 0.3)))
        lengths = huffman_code_lengths(np.bincount(symbols, minlength=k))
        packed = huffman_encode(symbols, lengths)
        assert len(packed) == (int(lengths[symbols].astype(int).sum()) + 7) // 8
        assert np.array_equal(huffman_decode(packed, lengths, len(symbols)), symbols), trial
    # the bits of the worked example: a b c e = 0 10 110 1111 -> 01011011 11 (+ 6 padding zeros)
    lengths = np.array([1, 2, 3, 4, 4], np.uint8)
    assert huffman_encode(np.array([0, 1, 2, 4]), lengths).tolist() == [0b01011011, 0b11000000]
    packed = huffman_encode(np.array([0, 1, 2, 4]), lengths)
    for bad in (packed[:1], np.append(packed, np.uint8(0)), np.array([0b01011011, 0b11000001], np.uint8)):
        expect_value_error(lambda: huffman_decode(bad, lengths, 4), "bitstream")
    expect_value_error(lambda: huffman_decode(packed, lengths, 17), "bits")
    print("huffman_encode / huffman_decode: OK")


test_huffman_lengths()
test_huffman_round_trip()

# %% [markdown]
# ### Analysis: how many bits do the codes really need?
# For the MLP shared at 4 bits and fine-tuned (section 2), per layer: the fixed 4 bits, the
# entropy of the codes (the limit of any code that looks at one symbol at a time) and
# Huffman's average.

# %%
model_4bit, shared_4bit = centroid_runs[4]
rows = []
for name, s in shared_4bit.items():
    counts = np.bincount(s.codes, minlength=len(s.codebook))
    p = counts[counts > 0] / s.nnz
    lengths = huffman_code_lengths(counts)
    rows.append({"layer": name, "weights": s.nnz, "fixed bits": s.bits,
                 "entropy bits": float(-(p * np.log2(p)).sum()),
                 "Huffman bits": float((counts * lengths).sum() / s.nnz),
                 "most used code": f"{counts.max() / s.nnz:.0%}"})
print(format_table(rows))

# %% [markdown]
# ## 4 Where the weights are: relative positions with fillers
#
# The codes say *what* each surviving weight is; we still need *where* it is. CSR stores a
# column per weight (8-16 bits) plus row pointers. Deep Compression stores the **gap** to the
# previous surviving weight instead (walking the matrix row-major, across row ends): at 95%
# sparsity the gaps are small numbers, around 20 on average. To keep the alphabet small, a gap
# is split: with a bound `span`, a gap larger than span is written as **filler** symbols, each
# meaning "advance span positions, no weight here", followed by the rest. (The paper stores a
# filler as a zero weight; here the filler is its own symbol, 0, so the code stream holds
# real weights only.) Position -1 is the start, so the first gap is `positions[0] + 1`:
#
# ```
# positions 0 3 40, span 8:  gaps 1 3 37  ->  symbols 1 3 0 0 0 0 5    (37 = 4 x 8 + 5)
# ```
#
# Symbols lie in [0, span]; decoding adds `span` for each 0 and the symbol otherwise, and
# keeps the running sums of the non-filler symbols. Both directions are vectorized: the
# number of fillers before each weight is `(gap - 1) // span`, so every symbol's place in the
# output is known at once. The symbols are then Huffman-coded like the cluster codes. The
# best span depends on the layer: small spans mean many fillers, large spans a bigger code
# length table; the encoder tries the spans `2^p - 1` and keeps the cheapest.

# %% nbgrader={"grade": false, "grade_id": "relative_positions", "solution": true}
#| export optimization.compression.huffman
def relative_positions(positions, span: int) -> np.ndarray:
    """Gap symbols of strictly increasing `positions` (>= 0): (m,) int64 in [0, span].

    Gap g = positions[i] - positions[i-1] (positions[-1] = -1) becomes (g - 1) // span
    fillers (symbol 0, each advancing `span` positions) and then the symbol (g - 1) % span + 1.
    """
    positions = np.asarray(positions, dtype=np.int64)
    span = check_int("span", span, minimum=1)
    gaps = np.diff(positions, prepend=-1)
    if positions.ndim != 1 or (gaps < 1).any():
        raise ValueError("positions must be a 1-D array of strictly increasing integers >= 0")
    # TODO: fillers = (gaps - 1) // span per weight; out = zeros of length len(positions) +
    # fillers.sum(); weight i's symbol goes right after its fillers, at index
    # cumsum(fillers + 1)[i] - 1, and is (gaps - 1) % span + 1.
    ### BEGIN SOLUTION
    fillers = (gaps - 1) // span
    out = np.zeros(len(positions) + int(fillers.sum()), dtype=np.int64)
    out[np.cumsum(fillers + 1) - 1] = (gaps - 1) % span + 1
    return out
    ### END SOLUTION


def absolute_positions(symbols, span: int) -> np.ndarray:
    """Inverse of relative_positions: the positions encoded by the gap `symbols`, (n,) int64.
    ValueError for symbols outside [0, span] or a stream ending in a filler."""
    symbols = np.asarray(symbols, dtype=np.int64)
    span = check_int("span", span, minimum=1)
    if symbols.ndim != 1 or (symbols.size and (symbols.min() < 0 or symbols.max() > span)):
        raise ValueError(f"position symbols must be a 1-D array of integers in [0, span = {span}]")
    if symbols.size and symbols[-1] == 0:
        raise ValueError("a position stream cannot end with a filler")
    # TODO: each symbol advances `span` positions if it is 0, else `symbol` positions; the
    # positions are the running sums minus 1, kept where the symbol is not a filler.
    ### BEGIN SOLUTION
    steps = np.where(symbols == 0, span, symbols)
    return (np.cumsum(steps) - 1)[symbols != 0]
    ### END SOLUTION

# %%
def test_relative_positions():
    assert relative_positions([0, 3, 40], 8).tolist() == [1, 3, 0, 0, 0, 0, 5]
    assert relative_positions([7, 8, 16], 8).tolist() == [8, 1, 8]         # gaps equal to span: no filler
    assert relative_positions([], 4).tolist() == []
    rng = np.random.default_rng(2)
    for _ in range(100):
        size = int(rng.integers(1, 400))
        positions = np.sort(rng.choice(size, int(rng.integers(0, size + 1)), replace=False))
        span = int(rng.integers(1, 40))
        symbols = relative_positions(positions, span)
        assert symbols.min(initial=1) >= 0 and symbols.max(initial=0) <= span
        # oracle: walk the positions one by one
        want, previous = [], -1
        for p in positions:
            gap = p - previous
            while gap > span:
                want.append(0)
                gap -= span
            want.append(gap)
            previous = p
        assert symbols.tolist() == want
        assert np.array_equal(absolute_positions(symbols, span), positions)
    expect_value_error(lambda: relative_positions([3, 3], 4), "increasing")
    expect_value_error(lambda: absolute_positions([1, 0], 4), "filler")
    expect_value_error(lambda: absolute_positions([5], 4), "span")
    print("relative_positions / absolute_positions: OK")


test_relative_positions()

# %% [markdown]
# ### Analysis: bits per position, span by span
# The middle layer of the pruned MLP: for each span, the average bits per surviving weight
# spent on its position with fixed-width symbols (`log2(span + 1)` bits each) and with
# Huffman codes, next to what CSR spends (its column index and its share of the row pointers).

# %%
positions = shared_4bit["3"].positions
csr = CSRMatrix.from_dense(shared_4bit["3"].dense()).quantize()
rows = []
for span in (1, 3, 7, 15, 31, 63, 127, 255):
    symbols = relative_positions(positions, span)
    huffman_bits = (huffman_code_lengths(np.bincount(symbols, minlength=span + 1))[symbols].astype(int).sum())
    rows.append({"span": span, "symbols per weight": len(symbols) / len(positions),
                 "fixed bits per weight": len(symbols) * np.log2(span + 1) / len(positions),
                 "Huffman bits per weight": huffman_bits / len(positions)})
print(format_table(rows))
print(f"CSR (uint8 columns, narrowest row pointers): {8 * (csr.indices.nbytes + csr.indptr.nbytes) / csr.nnz:.2f} "
      f"bits per weight; density of this layer {len(positions) / (shared_4bit['3'].shape[0] * shared_4bit['3'].shape[1]):.1%}")

# %% [markdown]
# ## 5 Coded layers and the file
#
# `CodedWeight` is the stored form of one shared layer: six arrays, every byte of which is
# counted.
#
# | array | dtype | holds |
# |---|---|---|
# | `codebook` | float32 (k,) | the shared values |
# | `code_lengths` | uint8 (k,) | canonical code length of each cluster index |
# | `codes` | uint8 bitstream | the cluster index of every surviving weight, Huffman-coded |
# | `gap_lengths` | uint8 (span + 1,) | code length of each gap symbol (its length gives span) |
# | `gaps` | uint8 bitstream | the relative positions with fillers, Huffman-coded |
# | `counts` | uint32 (2,) | how many codes and how many gap symbols the streams hold |
#
# With `huffman=False` the same container holds fixed-width codes (every length = the bits
# of the alphabet), which is what weight sharing alone would store: the stage before Huffman.
#
# `SharedLinear` and `SharedConv2d` are the main lesson's `SparseLinear` / `SparseConv2d`
# (same forward pass through the CSR kernels, same config) whose stored weight is a
# `CodedWeight`. Their extra state (`get_extra_state` / `set_extra_state`) is exactly these
# arrays, so the main lesson's **`save_compressed` / `load_compressed` store them unchanged**:
# the same atomic writer, the same bounded, pickle-free reader, and loading validates every
# array (a damaged stream fails to decode and the file is refused, naming it).

# %% nbgrader={"grade": false, "grade_id": "coded_weight", "solution": true}
#| export optimization.compression.deep_compression
SPANS = tuple(2 ** p - 1 for p in range(1, 13))   # span + 1 = 2^p gap symbols: p bits each at fixed width
CODED_FIELDS = ("codebook", "code_lengths", "codes", "gap_lengths", "gaps", "counts")


def code_lengths_for(symbols: np.ndarray, n_symbols: int, huffman: bool = True) -> np.ndarray:
    """uint8 code lengths for an alphabet of `n_symbols`: Huffman lengths from the counts of
    `symbols`, or (huffman=False) the fixed width ceil(log2(n_symbols)) (>= 1) for every symbol."""
    if huffman:
        return huffman_code_lengths(np.bincount(symbols, minlength=n_symbols))
    return np.full(n_symbols, max(1, int(np.ceil(np.log2(n_symbols)))), dtype=np.uint8)


def stream_bytes(symbols: np.ndarray, n_symbols: int, huffman: bool = True) -> int:
    """Bytes of a coded stream of `symbols` plus its uint8 length table."""
    lengths = code_lengths_for(symbols, n_symbols, huffman)
    return (int(lengths[symbols].astype(np.int64).sum()) + 7) // 8 + n_symbols


def best_span(positions: np.ndarray, huffman: bool = True, spans=SPANS) -> int:
    """The span of `spans` whose gap stream (relative_positions) costs the fewest bytes."""
    costs = {span: stream_bytes(relative_positions(positions, span), span + 1, huffman) for span in spans}
    return min(costs, key=costs.get)


class CodedWeight:
    """A SharedWeight stored as entropy-coded streams (see the table above).

    Build one with `CodedWeight.from_shared(shared, huffman=True)`; `CodedWeight(arrays,
    shape)` validates arrays read from a file by decoding them (ValueError naming what is
    wrong). `.arrays` is the dict of the six arrays, `.nbytes` their total size, `.shared`
    the decoded SharedWeight, `.shape` its (rows, cols).
    """

    def __init__(self, arrays: dict, shape):
        if not isinstance(arrays, dict):
            raise ValueError(f"arrays must be a dict of the arrays {list(CODED_FIELDS)}")
        missing = [f for f in CODED_FIELDS if f not in arrays]
        unknown = sorted(set(arrays) - set(CODED_FIELDS))
        if missing or unknown:
            raise ValueError(f"a coded weight needs exactly the arrays {list(CODED_FIELDS)}: "
                             f"missing {missing}, unexpected {unknown}")
        arrays = {f: np.asarray(arrays[f]) for f in CODED_FIELDS}
        counts = arrays["counts"]
        if counts.shape != (2,) or counts.dtype != np.uint32:
            raise ValueError(f"counts must be 2 uint32 numbers, got {counts.dtype} {counts.shape}")
        if arrays["code_lengths"].shape != arrays["codebook"].shape:
            raise ValueError("code_lengths must have one entry per codebook value")
        if arrays["gap_lengths"].ndim != 1 or len(arrays["gap_lengths"]) < 2:
            raise ValueError("gap_lengths must have span + 1 >= 2 entries")
        codes = huffman_decode(arrays["codes"], arrays["code_lengths"], int(counts[0]))
        gaps = huffman_decode(arrays["gaps"], arrays["gap_lengths"], int(counts[1]))
        positions = absolute_positions(gaps, len(arrays["gap_lengths"]) - 1)
        if len(positions) != len(codes):
            raise ValueError(f"the gap stream places {len(positions)} weights, the code stream holds {len(codes)}")
        k = max(len(arrays["codebook"]), 1)
        self.shared = SharedWeight(arrays["codebook"], codes.astype(narrowest_uint(k - 1)), positions, shape)
        self.arrays, self.shape = arrays, self.shared.shape

    @classmethod
    def from_shared(cls, shared: SharedWeight, huffman: bool = True) -> "CodedWeight":
        """Encode `shared`: its codes with code_lengths_for(codes, k, huffman), its positions as
        relative_positions with the best_span, coded the same way."""
        if not isinstance(shared, SharedWeight):
            raise ValueError(f"shared must be a SharedWeight, got {type(shared).__name__}")
        # TODO: code_lengths for the codes (alphabet len(codebook)); span = best_span of the
        # positions; gap symbols = relative_positions(positions, span) and their lengths
        # (alphabet span + 1); build the dict with CODED_FIELDS as keys: the codebook, the
        # two length tables, the two huffman_encode'd streams, and counts = uint32 [number of
        # codes, number of gap symbols]. Return cls(arrays, shared.shape).
        ### BEGIN SOLUTION
        code_lengths = code_lengths_for(shared.codes, len(shared.codebook), huffman)
        span = best_span(shared.positions, huffman)
        gaps = relative_positions(shared.positions, span)
        gap_lengths = code_lengths_for(gaps, span + 1, huffman)
        arrays = {"codebook": shared.codebook, "code_lengths": code_lengths,
                  "codes": huffman_encode(shared.codes, code_lengths), "gap_lengths": gap_lengths,
                  "gaps": huffman_encode(gaps, gap_lengths),
                  "counts": np.array([shared.nnz, len(gaps)], dtype=np.uint32)}
        ### END SOLUTION
        return cls(arrays, shared.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the six arrays: everything this layer's weight costs in a file."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def __repr__(self) -> str:
        return f"CodedWeight(shape={self.shape}, nnz={self.shared.nnz}, nbytes={self.nbytes:,})"

# %% [markdown]
# The layers are given: they only route storage. `set_weight` accepts a `SharedWeight` (it
# is Huffman-coded), a `CodedWeight`, or a `CSRMatrix` (its distinct values become the
# codebook; the constructor uses this for the empty weight).

# %%
#| export optimization.compression.deep_compression
def shared_from_csr(csr: CSRMatrix) -> SharedWeight:
    """The SharedWeight of a CSR matrix: its distinct values are the codebook (at most 2^16)."""
    codebook, codes = np.unique(csr.data.astype(np.float32), return_inverse=True)
    if len(codebook) > 1 << 16:
        raise ValueError(f"a shared weight has at most 2^16 distinct values, got {len(codebook)}")
    positions = csr.row_ids().astype(np.int64) * csr.shape[1] + csr.indices.astype(np.int64)
    codebook = codebook if len(codebook) else np.zeros(1, dtype=np.float32)
    return SharedWeight(codebook, codes.astype(narrowest_uint(len(codebook) - 1)), positions, csr.shape)


def shared_to_csr(shared: SharedWeight) -> CSRMatrix:
    """The float32 CSRMatrix of `shared` (canonical, narrowest unsigned index dtypes)."""
    rows, cols = shared.shape
    row_of, indices = np.divmod(shared.positions, max(cols, 1))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of, minlength=rows))])
    return CSRMatrix(shared.codebook[shared.codes], indices.astype(narrowest_uint(max(cols - 1, 0))),
                     indptr.astype(narrowest_uint(shared.nnz)), shared.shape)


class _CodedStorage:
    """What SharedLinear and SharedConv2d add to the sparse layers: a CodedWeight as the
    stored weight (the CSR `weight` used to compute is decoded from it) and as extra state."""

    def set_weight(self, weight) -> None:
        if isinstance(weight, CSRMatrix):
            weight = shared_from_csr(weight)
        if isinstance(weight, SharedWeight):
            weight = CodedWeight.from_shared(weight)
        if not isinstance(weight, CodedWeight):
            raise ValueError(f"weight must be a SharedWeight, CodedWeight or CSRMatrix, got {type(weight).__name__}")
        if weight.shape != tuple(self.weight_shape):
            raise ValueError(f"weight must have shape {tuple(self.weight_shape)}, got {weight.shape}")
        self.coded, self.weight, self.qweight = weight, shared_to_csr(weight.shared), None

    @property
    def stored_weight(self) -> CodedWeight:
        return self.coded

    @property
    def shared(self) -> SharedWeight:
        return self.coded.shared

    def get_extra_state(self) -> dict:
        """{"kind": "coded", and the six CodedWeight arrays}."""
        return {"kind": "coded", **self.coded.arrays}

    def set_extra_state(self, state: dict) -> None:
        """Install the weight described by get_extra_state's dict (validated: ValueError)."""
        if not isinstance(state, dict) or state.get("kind") != "coded":
            kind = state.get("kind") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"storage kind must be 'coded', got {kind!r}")
        self.set_weight(CodedWeight({k: v for k, v in state.items() if k != "kind"}, self.weight_shape))

    def extra_repr(self) -> str:
        return (f"{Module.extra_repr(self)}, nnz={self.nnz}, codebook of {len(self.shared.codebook)}, "
                f"{self.coded.nbytes:,} bytes coded")


class SharedLinear(_CodedStorage, SparseLinear):
    """Inference-only Linear whose weight is shared and entropy-coded (see CodedWeight)."""


class SharedConv2d(_CodedStorage, SparseConv2d):
    """Inference-only Conv2d whose weight is shared and entropy-coded (see CodedWeight)."""


def _coded_twin(layer: Module, weight: SharedWeight) -> Module:
    if isinstance(layer, Linear):
        twin = SharedLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    else:
        twin = SharedConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                            layer.padding, bias=layer.bias is not None)
    twin.set_weight(weight)
    if layer.bias is not None:
        twin.bias.data = layer.bias.data.copy()
    return twin.train(layer.training)


def to_shared(model: Module, shared: dict) -> Module:
    """A deep copy of `model` whose layers named in `shared` ({name: SharedWeight}) are replaced
    by SharedLinear / SharedConv2d with that weight (Huffman-coded) and the layer's bias.
    The input model is not modified."""
    if not isinstance(model, Module):
        raise ValueError(f"model must be a Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    for name, weight in shared.items():
        if not isinstance(modules.get(name), PRUNABLE):
            raise ValueError(f"shared names {name!r}, which is not a Linear or Conv2d layer of the model")
        twin = _coded_twin(modules[name], weight)
        if name == "":
            return twin
        parent, _, child = name.rpartition(".")
        setattr(modules[parent], child, twin)
    return model


def coded_nbytes(model: Module, huffman: bool = True) -> int:
    """Bytes of `model` as stored: every Parameter at float32, every coded layer's CodedWeight
    (re-encoded with fixed-width codes if huffman=False), every other sparse layer's stored weight."""
    total = sum(p.data.nbytes for p in model.parameters())
    for layer in sparse_layers(model).values():
        if isinstance(layer, _CodedStorage) and not huffman:
            total += CodedWeight.from_shared(layer.shared, huffman=False).nbytes
        else:
            total += layer.stored_weight.nbytes
    return int(total)

# %% [markdown]
# ### Test: coded weights decode exactly; files round-trip; damaged files are refused
# A file names its layer classes by their place in the package, so the model saved here is
# built by the exported package (run `tito export 18_compression` first); the notebook's own
# `CodedWeight` is tested directly.

# %%
def test_coded_weight():
    rng = np.random.default_rng(3)
    for huffman in (True, False):
        dense = rng.standard_normal((20, 30)).astype(np.float32) * (rng.random((20, 30)) < 0.1)
        positions = np.flatnonzero(dense)
        codebook, codes = kmeans_1d(dense.ravel()[positions], 8)
        shared = SharedWeight(codebook, codes, positions, dense.shape)
        coded = CodedWeight.from_shared(shared, huffman=huffman)
        assert set(coded.arrays) == set(CODED_FIELDS)
        assert np.array_equal(coded.shared.codes, shared.codes) and np.array_equal(coded.shared.positions, positions)
        assert coded.nbytes == sum(a.nbytes for a in coded.arrays.values())
        again = CodedWeight(dict(coded.arrays), shared.shape)          # as if read from a file
        assert np.array_equal(again.shared.dense(), shared.dense())
        if not huffman:
            assert set(coded.arrays["code_lengths"].tolist()) == {3}, "8 clusters: 3 bits each"
    layer = SharedLinear(30, 20)
    layer.set_weight(shared)
    x = rng.standard_normal((4, 30)).astype(np.float32)
    assert np.allclose(layer(Tensor(x)).data, x @ shared.dense().T, atol=1e-5)
    broken = dict(coded.arrays, counts=np.array([shared.nnz + 1, coded.arrays["counts"][1]], np.uint32))
    expect_value_error(lambda: CodedWeight(broken, shared.shape), "stream")
    expect_value_error(lambda: CodedWeight({k: v for k, v in coded.arrays.items() if k != "gaps"}, (20, 30)), "gaps")
    expect_value_error(lambda: CodedWeight(dict(coded.arrays), (20, 20)), "positions")
    print("CodedWeight / SharedLinear: OK")


def test_save_load_coded():
    cnn = copy.deepcopy(pruned_cnn_for_test)
    shared = package.share_weights(cnn, bits={"0": 4, "3": 4})       # the last Linear stays dense
    model = package.to_shared(cnn, shared)
    assert [type(m).__name__ for m in model][:4] == ["SharedConv2d", "ReLU", "MaxPool2d", "SharedConv2d"]
    with tempfile.TemporaryDirectory() as tmpdir:
        path = os.path.join(tmpdir, "cnn.npz")
        size = save_compressed(model, path)
        loaded = load_compressed(path)
        assert size == os.path.getsize(path)
        with no_grad():
            assert np.array_equal(loaded(Tensor(X_test[:32])).data, model(Tensor(X_test[:32])).data)
        arrays = dict(np.load(path, allow_pickle=False))
        payload = sum(a.nbytes for key, a in arrays.items() if key != "__spec__")
        assert payload == model_nbytes_compressed(model) == package.coded_nbytes(model), payload
        gaps = arrays["sparse:3:gaps"]
        damaged = {"truncated_stream": dict(arrays, **{"sparse:3:gaps": gaps[:-2]}),
                   "longer_stream": dict(arrays, **{"sparse:3:gaps": np.append(gaps, np.uint8(7))}),
                   "bad_lengths": dict(arrays, **{"sparse:0:code_lengths": np.ones(16, np.uint8)}),
                   "missing_table": {k: v for k, v in arrays.items() if k != "sparse:0:gap_lengths"}}
        for name, content in damaged.items():
            np.savez(os.path.join(tmpdir, name + ".npz"), **content)
            expect_value_error(lambda: load_compressed(os.path.join(tmpdir, name + ".npz")), name + ".npz")
    print("save_compressed / load_compressed with coded layers: OK")


tt.manual_seed(0)
pruned_cnn_for_test = load_pretrained("cnn")
package.prune_magnitude(pruned_cnn_for_test, 0.9, scope="global")
test_coded_weight()
test_save_load_coded()

# %% [markdown]
# ## 6 The pipeline: prune → share → fine-tune centroids → Huffman
#
# `deep_compress` runs every stage on a copy of a model and measures each one like the
# paper's Table 1: the accuracy, and the bytes of the representation that stage would store,
# every array and table counted, biases included (float32), against dense float32:
#
# 1. **pruned** (`prune_and_retrain`), stored as the main lesson's float32 CSR, and for
#    reference as its int8 CSR (`to_sparse(..., quantize=True)`);
# 2. **weight sharing** (`share_weights`), stored with fixed-width codes and gap symbols;
# 3. **centroids fine-tuned** (`fine_tune_centroids`): same bytes, better accuracy;
# 4. **Huffman-coded** (`to_shared`): the coded layers, and the `.npz` file written by
#    `save_compressed` (its zip and `.npy` headers and architecture description included).

# %% nbgrader={"grade": false, "grade_id": "deep_compress", "solution": true}
#| export optimization.compression.deep_compression
@dataclass
class DeepCompressionReport:
    """What deep_compress measured: `rows` (one dict per stage: "stage", "nonzero weights",
    "bits per weight" (weight bytes, tables included, * 8 / nonzero weights), "bytes",
    "ratio" (dense float32 bytes / bytes), "accuracy"), the compressed `model` (coded layers,
    eval mode) and its `shared` weights."""

    dense_bytes: int
    rows: list
    model: Module = field(repr=False, default=None)
    shared: dict = field(repr=False, default_factory=dict)

    def row(self, stage: str) -> dict:
        """The first row whose stage name starts with `stage` (KeyError if none does)."""
        for r in self.rows:
            if r["stage"].startswith(stage):
                return r
        raise KeyError(f"no stage starts with {stage!r}; the stages are {[r['stage'] for r in self.rows]}")

    @property
    def ratio(self) -> float:
        """Dense float32 bytes / bytes of the Huffman-coded model."""
        return self.row("Huffman").get("ratio")

    @property
    def accuracy_drop(self):
        """Dense accuracy - accuracy of the Huffman-coded model (None without a test loader)."""
        dense, final = self.rows[0]["accuracy"], self.row("Huffman")["accuracy"]
        return None if dense is None else dense - final

    def __str__(self) -> str:
        def shown(row):
            acc = row["accuracy"]
            return {**row, "bytes": f"{row['bytes']:,}", "ratio": f"{row['ratio']:.1f}x",
                    "bits per weight": f"{row['bits per weight']:.2f}",
                    "accuracy": "" if acc is None else f"{acc:.2%}"}
        return format_table([shown(r) for r in self.rows])


def _stage(stage: str, nonzeros: int, nbytes: int, params_bytes: int, dense_bytes: int, accuracy) -> dict:
    return {"stage": stage, "nonzero weights": int(nonzeros),
            "bits per weight": 8 * (nbytes - params_bytes) / max(nonzeros, 1), "bytes": int(nbytes),
            "ratio": dense_bytes / nbytes, "accuracy": accuracy}


def deep_compress(model: Module, train_loader, test_loader=None, sparsity: float = 0.95, bits=None,
                  prune_steps: int = 10, prune_epochs: int = 5, retrain_epochs: int = 20,
                  centroid_epochs: int = 10, lr: float = 3e-3, retrain_lr: float = 3e-4,
                  centroid_lr: float = 1e-3, init: str = "linear") -> DeepCompressionReport:
    """Deep Compression of a copy of `model`: prune_and_retrain (sparsity, prune_steps,
    prune_epochs, retrain_epochs, lr, retrain_lr), share_weights (bits, init: see there),
    fine_tune_centroids (centroid_epochs, centroid_lr), then to_shared (Huffman coding).
    Accuracies on `test_loader` (None without one). The input model is not modified."""
    check_loader("train_loader", train_loader)
    if test_loader is not None:
        check_loader("test_loader", test_loader)
    check_fraction("sparsity", sparsity)
    _layer_bits(prunable_layers(model), bits)   # refuse bad arguments before any training
    check_choice("init", init, KMEANS_INITS)
    check_int("centroid_epochs", centroid_epochs, minimum=0)
    score = (lambda m: evaluate(m, test_loader)) if test_loader is not None else (lambda m: None)
    work = copy.deepcopy(model)
    weights = [layer.weight.data for layer in prunable_layers(model).values()]
    dense_bytes = 4 * count_params(model)
    params_bytes = dense_bytes - 4 * sum(w.size for w in weights)   # biases and other parameters, float32
    rows = [_stage("dense float32", sum(w.size for w in weights), dense_bytes, params_bytes, dense_bytes,
                   score(work))]
    # TODO: (1) prune_and_retrain `work` (sparsity, prune_steps, prune_epochs, retrain_epochs,
    # lr, retrain_lr); nonzeros = its nonzero prunable weights; append the stages
    # f"pruned {sparsity:.0%}, float32 CSR" and "pruned, int8 CSR (main lesson)" with the bytes
    # of to_sparse(work, min_sparsity=0.0) (model_nbytes_compressed) and of its quantize=True
    # version, and their accuracies. (2) shared = share_weights(work, bits, init=init) and
    # append f"weight sharing, fixed-width codes" with coded_nbytes(to_shared(work, shared),
    # huffman=False). (3) fine_tune_centroids (centroid_epochs, centroid_lr) on train_loader;
    # append "centroids fine-tuned" (bytes measured as in (2)). (4) compressed = to_shared(work, shared).eval(); append "Huffman-coded" with
    # model_nbytes_compressed(compressed) and ".npz file (save_compressed)" with
    # compressed_file_size(compressed). Use _stage(...) for every row.
    ### BEGIN SOLUTION
    prune_and_retrain(work, train_loader, sparsity, steps=prune_steps, epochs_per_step=prune_epochs,
                      retrain_epochs=retrain_epochs, lr=lr, retrain_lr=retrain_lr)
    nonzeros = sum(int(np.count_nonzero(layer.weight.data)) for layer in prunable_layers(work).values())
    csr32 = to_sparse(work, min_sparsity=0.0)
    csr8 = to_sparse(work, min_sparsity=0.0, quantize=True)
    rows.append(_stage(f"pruned {sparsity:.0%}, float32 CSR", nonzeros, model_nbytes_compressed(csr32),
                       params_bytes, dense_bytes, score(csr32)))
    rows.append(_stage("pruned, int8 CSR (main lesson)", nonzeros, model_nbytes_compressed(csr8),
                       params_bytes, dense_bytes, score(csr8)))
    shared = share_weights(work, bits, init=init)
    rows.append(_stage("weight sharing, fixed-width codes", nonzeros,
                       coded_nbytes(to_shared(work, shared), huffman=False), params_bytes, dense_bytes, score(work)))
    fine_tune_centroids(work, shared, train_loader, epochs=centroid_epochs, lr=centroid_lr)
    rows.append(_stage("centroids fine-tuned", nonzeros, coded_nbytes(to_shared(work, shared), huffman=False),
                       params_bytes, dense_bytes, score(work)))
    compressed = to_shared(work, shared).eval()
    rows.append(_stage("Huffman-coded", nonzeros, model_nbytes_compressed(compressed), params_bytes,
                       dense_bytes, score(compressed)))
    rows.append(_stage(".npz file (save_compressed)", nonzeros, compressed_file_size(compressed),
                       params_bytes, dense_bytes, rows[-1]["accuracy"]))
    ### END SOLUTION
    return DeepCompressionReport(dense_bytes, rows, compressed, shared)

# %% [markdown]
# ### Test: the pipeline's bookkeeping on a small problem
# Two epochs here and there on a small MLP: the point is the accounting. Every byte count
# must equal an independent recount (the arrays of the file `save_compressed` writes, and
# the six arrays of every layer's extra state plus the biases), the stages must come in
# order, and the input model must be left alone.

# %%
def test_deep_compress():
    tt.manual_seed(0)
    x, y = load_digits("train")
    loader = DataLoader(TensorDataset(x[:128], y[:128]), batch_size=64, shuffle=True, seed=0)
    model = MLP(hidden=(32,))
    before = model.state_dict()
    report = deep_compress(model, loader, loader, sparsity=0.8, bits=3, prune_steps=2, prune_epochs=1,
                           retrain_epochs=1, centroid_epochs=1)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), "input model changed"
    assert [r["stage"] for r in report.rows] == [
        "dense float32", "pruned 80%, float32 CSR", "pruned, int8 CSR (main lesson)",
        "weight sharing, fixed-width codes", "centroids fine-tuned", "Huffman-coded", ".npz file (save_compressed)"]
    weights = 64 * 32 + 32 * 10
    assert report.dense_bytes == 4 * (weights + 42) and report.rows[0]["bits per weight"] == 32.0
    layers = {name: m for name, m in report.model.named_modules() if isinstance(m, SharedLinear)}
    assert list(layers) == ["1", "3"] and all(len(m.shared.codebook) == 8 for m in layers.values())
    nonzeros = sum(m.nnz for m in layers.values())
    assert report.row("Huffman")["nonzero weights"] == nonzeros == round(0.2 * weights)
    recount = sum(a.nbytes for m in layers.values() for key, a in m.get_extra_state().items() if key != "kind")
    assert report.row("Huffman")["bytes"] == recount + 42 * 4
    assert report.row(".npz")["bytes"] > report.row("Huffman")["bytes"], "a file has headers on top"
    assert report.row("Huffman")["bytes"] < report.row("centroids")["bytes"] < report.row("pruned, int8")["bytes"] \
        < report.row("pruned 80%")["bytes"] < report.dense_bytes
    assert report.ratio == report.dense_bytes / report.row("Huffman")["bytes"]
    assert all(0 <= r["accuracy"] <= 1 for r in report.rows)
    assert "Huffman-coded" in str(report)
    for bad, word in ((dict(sparsity=1.0), "sparsity"), (dict(bits=0), "bits"), (dict(retrain_epochs=-1), "retrain_epochs")):
        expect_value_error(lambda: deep_compress(model, loader, **bad), word)
    expect_value_error(lambda: deep_compress(model, None), "train_loader")
    print("deep_compress: OK")


test_deep_compress()

# %% [markdown]
# ### Analysis: Deep Compression of the digits MLP and CNN
# The settings come from the bit-width sweep of `benchmarks/bench_deep_compression.py`:
# 95% sparsity for both, 4-bit codebooks for the MLP's layers, 5-bit for the CNN's (the
# paper's 5 bits for fully connected layers; 8 bits for convolutions buys nothing here and
# costs a 256-entry codebook per layer). One seed of the fine-tuning data order here; the
# benchmark averages three.

# %%
def layer_table(report: DeepCompressionReport) -> list:
    """Per coded layer, like the paper's per-layer tables: weights kept, and bits per kept
    weight for the value (codebook index) and the position, fixed-width vs Huffman."""
    rows = []
    for name, m in report.model.named_modules():
        if not isinstance(m, (SharedLinear, SharedConv2d)):
            continue
        s, fixed = m.shared, CodedWeight.from_shared(m.shared, huffman=False).arrays
        huff = m.coded.arrays
        rows.append({"layer": name, "weights": s.shape[0] * s.shape[1], "kept": f"{s.nnz / (s.shape[0] * s.shape[1]):.1%}",
                     "value bits (fixed)": 8 * fixed["codes"].nbytes / s.nnz,
                     "value bits (Huffman)": 8 * huff["codes"].nbytes / s.nnz,
                     "position bits (fixed)": 8 * fixed["gaps"].nbytes / s.nnz,
                     "position bits (Huffman)": 8 * huff["gaps"].nbytes / s.nnz,
                     "span": len(huff["gap_lengths"]) - 1,
                     "tables + codebook bytes": int(huff["codebook"].nbytes + huff["code_lengths"].nbytes
                                                    + huff["gap_lengths"].nbytes + huff["counts"].nbytes)})
    return rows


reports = {}
for name, bits in (("mlp", 4), ("cnn", 5)):
    start = time.perf_counter()
    fresh_train, _ = digits_loaders(batch_size=32, seed=0)   # the same batches on every run of this cell
    tt.manual_seed(0)
    epochs = {} if name == "mlp" else {"prune_epochs": 2, "retrain_epochs": 5, "centroid_epochs": 3}  # as the benchmark
    reports[name] = deep_compress(load_pretrained(name), fresh_train, test_loader, sparsity=0.95, bits=bits, **epochs)
    print(f"{name.upper()}: {time.perf_counter() - start:.1f} s")
    print(reports[name])
    print(format_table(layer_table(reports[name])))
    print()

# %%
summary = []
for name, report in reports.items():
    drop = report.accuracy_drop
    summary.append({"model": name, "dense bytes": f"{report.dense_bytes:,}",
                    "coded bytes": f"{report.row('Huffman')['bytes']:,}", "ratio": f"{report.ratio:.1f}x",
                    "file ratio": f"{report.row('.npz')['ratio']:.1f}x",
                    "accuracy drop": f"{100 * drop:+.2f} pts",
                    "40x within 1 point": "met" if report.ratio >= 40 and drop <= 0.01 + 1e-9 else "NOT met"})
print(format_table(summary))
for name, report in reports.items():
    members = 1 + len(list(report.model.parameters())) + len(CODED_FIELDS) * len(report.shared)
    overhead = report.row(".npz")["bytes"] - report.row("Huffman")["bytes"]
    print(f"{name}: the .npz file holds {members} arrays (with the JSON architecture): {overhead:,} bytes of "
          f"headers and description, {overhead / members:.0f} per array")
if HAS_MATPLOTLIB:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, report in reports.items():
        stages = [r for r in report.rows if r["accuracy"] is not None]
        ax.plot([r["bytes"] for r in stages], [100 * r["accuracy"] for r in stages], "o-", label=name.upper())
        for r in stages[1:]:
            ax.annotate(r["stage"].split(",")[0].split(" (")[0], (r["bytes"], 100 * r["accuracy"]), fontsize=7,
                        rotation=20, textcoords="offset points", xytext=(2, 4))
    ax.set_xscale("log")
    ax.set_xlabel("bytes (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Deep Compression, stage by stage")
    ax.legend()
    plt.show()

# %% [markdown]
# **Reading the tables.** Pruning does the heavy lifting on the *count* of weights, but a
# float32 CSR weight still costs more than its 32 bits (value, column and a share of the
# row pointers: the "bits per weight" column). Weight sharing cuts the value to a few bits,
# relative positions cut the column to a few more, and Huffman coding takes a slice off
# both streams (the per-layer tables). On models this small the fixed costs show: the
# float32 biases, the codebooks and the code length tables are a visible share of the total
# (they are counted), and the `.npz` container adds its headers for every array, which is
# why the file ratio trails the coded ratio (the line under the summary measures it). Compare the last
# column of the summary with the paper's 40x for LeNet-300-100 and 39x for LeNet-5; the
# benchmark (`docs/results/`) reports the same targets over three seeds and every bit width.
#
# What the coded model costs at inference: nothing extra. Loading decodes each layer once
# into a CSR matrix, and the forward pass is the main lesson's sparse kernel.

# %% [markdown]
# ## 7 Summary
#
# | stage | idea | code |
# |---|---|---|
# | weight sharing | k-means per layer, 2^b centroids, linear initialisation | `kmeans_1d`, `share_weights` |
# | trained quantization | a centroid's gradient is the sum of its weights' gradients | `centroid_gradients`, `CentroidOptimizer`, `fine_tune_centroids` |
# | Huffman coding | canonical codes: only the lengths are stored | `huffman_code_lengths`, `canonical_codes`, `huffman_encode`, `huffman_decode` |
# | sparse positions | gaps with fillers, Huffman-coded | `relative_positions`, `absolute_positions` |
# | storage | six arrays per layer, in the main lesson's validated file | `CodedWeight`, `SharedLinear`, `SharedConv2d`, `to_shared` |
# | pipeline | prune → share → fine-tune centroids → Huffman, measured per stage | `deep_compress` |

# %%
print(f"notebook ran in {time.perf_counter() - notebook_start:.0f} s")
