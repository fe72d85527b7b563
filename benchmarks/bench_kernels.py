"""Experiment 4: the module's CSR kernels (csr_matvec / csr_matmul) vs dense NumPy
(`X @ W.T`, BLAS) vs scipy.sparse (if installed), across sparsity and batch size, on a
1024x1024 float32 weight and on the shipped models' layers; the crossover sparsity where
CSR starts to win; peak memory of one call (tracemalloc).

Each implementation is timed on its natural operand layout: dense `X @ W.T` with X of shape
(batch, in); the module's `csr_matmul(A, XT)` and scipy's `S @ XT` with XT = X.T made
contiguous (in, batch) once, outside the timing (the CSR kernel gathers rows of it). For
batch 1 the CSR variants are matrix-vector products. The "layer" column is
`A.rmatmul_T(X)`, what SparseLinear computes, transposes included. The module's kernels
cache a padded (ELLPACK) copy of A and its flat arrays on the first call; timings exclude
that warm-up call, whose cost and memory are reported separately.

Every timing is taken twice, variants interleaved in one process: with BLAS pinned to one
thread (threadpoolctl; the figures the ratios and targets use, since dense BLAS on two
busy cores swings by 100x) and with the process's default threads ("ms_default").

    python -m benchmarks.bench_kernels [--quick] [--out DIR]
"""
from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np

from tinytorch.core import Tensor, best_median_times, no_grad
from tinytorch.models import load_pretrained
from tinytorch.optimization import compression
from tinytorch.optimization.compression import prunable_layers, prune_magnitude, to_sparse

from . import common

NAME = "kernels"
SIZE = 1024
SEED = 0


def settings(quick: bool) -> dict:
    if quick:
        return {"sparsities": [0.5, 0.9, 0.95, 0.99], "batches": [1, 64, 256], "rounds": 1, "repeats": 3,
                "layer_sparsity": 0.9, "layer_batches": [1, 256], "memory_sparsities": [0.95]}
    return {"sparsities": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995], "batches": [1, 64, 256],
            "rounds": 3, "repeats": 7, "layer_sparsity": 0.9, "layer_batches": [1, 256],
            "memory_sparsities": [0.9, 0.95, 0.99]}


def random_sparse(rows: int, cols: int, sparsity: float, rng) -> np.ndarray:
    """Gaussian weights with exactly round(sparsity * size) zeros at random positions."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w.ravel()[rng.permutation(w.size)[:int(round(sparsity * w.size))]] = 0
    return w


def candidates(W: np.ndarray, X: np.ndarray) -> dict:
    """{implementation: zero-argument callable} for y = X @ W.T (see the module docstring)."""
    A = compression.CSRMatrix.from_dense(W)
    XT = np.ascontiguousarray(X.T)
    fns = {"dense": lambda: X @ W.T}
    if X.shape[0] == 1:
        x = np.ascontiguousarray(X[0])
        fns["csr"] = lambda: compression.csr_matvec(A, x)
    else:
        fns["csr"] = lambda: compression.csr_matmul(A, XT)
        # what A.rmatmul_T(X) (SparseLinear's product) computes, transposes included
        fns["csr layer"] = lambda: np.ascontiguousarray(compression.csr_matmul(A, np.ascontiguousarray(X.T)).T)
    if common.has_scipy():
        import scipy.sparse
        S = scipy.sparse.csr_matrix(W)
        fns["scipy"] = (lambda: S @ x) if X.shape[0] == 1 else (lambda: S @ XT)
    return fns


def check_agreement(fns: dict, W: np.ndarray, X: np.ndarray) -> float:
    """Largest |difference| of every implementation's output vs float64 X @ W.T."""
    ref = X.astype(np.float64) @ W.T.astype(np.float64)
    worst = 0.0
    for name, fn in fns.items():
        y = np.asarray(fn())
        if name in ("csr", "scipy"):
            y = y.T if y.ndim == 2 else y[None, :]
        worst = max(worst, float(np.abs(y - ref).max()))
    return worst


def peak_bytes(fn) -> int:
    """Peak traced allocation (bytes) during one call of fn, above what was allocated before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return int(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


def square_sweep(cfg: dict, rng) -> list:
    rows = []
    for sparsity in cfg["sparsities"]:
        W = random_sparse(SIZE, SIZE, sparsity, rng)
        for batch in cfg["batches"]:
            X = rng.standard_normal((batch, SIZE)).astype(np.float32)
            fns = candidates(W, X)
            warm = time.perf_counter()
            fns["csr"]()                         # builds and caches the padded (ELLPACK) form
            first_call = time.perf_counter() - warm
            error = check_agreement(fns, W, X)
            timings = common.timings_by_threads(fns, rounds=cfg["rounds"], repeats=cfg["repeats"])
            times, default = timings["one"], timings["default"]
            row = {"sparsity": sparsity, "batch": batch, "ms": {k: 1e3 * v for k, v in times.items()},
                   "ms_default": {k: 1e3 * v for k, v in default.items()},
                   "csr_first_call_ms": 1e3 * first_call, "max_abs_error": error,
                   "csr_vs_dense": times["dense"] / times["csr"],
                   "csr_vs_dense_default": default["dense"] / default["csr"]}
            if "scipy" in times:
                row["csr_over_scipy"] = times["csr"] / times["scipy"]
                row["csr_over_scipy_default"] = default["csr"] / default["scipy"]
                row["scipy_vs_dense"] = times["dense"] / times["scipy"]
            rows.append(row)
            common.log(f"  {SIZE}x{SIZE} {sparsity:.1%} batch {batch:3d}, 1 thread: " +
                       "  ".join(f"{k} {v:.3f} ms" for k, v in row["ms"].items()) +
                       "  | default threads: " + "  ".join(f"{k} {v:.3f}" for k, v in row["ms_default"].items()))
    return rows


def memory(cfg: dict, rng) -> list:
    rows = []
    for sparsity in cfg["memory_sparsities"]:
        W = random_sparse(SIZE, SIZE, sparsity, rng)
        A = compression.CSRMatrix.from_dense(W)
        for batch in (64, 256):
            X = rng.standard_normal((batch, SIZE)).astype(np.float32)
            fns = candidates(W, X)
            fresh = compression.CSRMatrix.from_dense(W)
            XT = np.ascontiguousarray(X.T)
            row = {"sparsity": sparsity, "batch": batch, "dense_weight_bytes": int(W.nbytes),
                   "csr_bytes": A.nbytes,
                   "csr_first_call_peak_bytes": peak_bytes(lambda: compression.csr_matmul(fresh, XT)),
                   "peak_bytes": {name: peak_bytes(fn) for name, fn in fns.items()},
                   "output_bytes": int(batch * SIZE * 4)}
            if common.has_scipy():
                import scipy.sparse
                S = scipy.sparse.csr_matrix(W)
                row["scipy_csr_bytes"] = int(S.data.nbytes + S.indices.nbytes + S.indptr.nbytes)
            rows.append(row)
    return rows


def layer_shapes(model, name: str) -> dict:
    """{layer name: (weight matrix rows, cols, output positions per image)} from one forward
    pass with hooks (a Conv2d's matrix is (out, in*kh*kw), applied at every output position)."""
    shapes, handles = {}, []
    for lname, layer in prunable_layers(model).items():
        def hook(module, inputs, output, lname=lname):
            w = module.weight.data
            positions = output.data[0].size // w.shape[0]
            shapes[lname] = (w.shape[0], int(np.prod(w.shape[1:])), positions)
        handles.append(layer.register_forward_hook(hook))
    with no_grad():
        model(Tensor(np.zeros((1, 1, 8, 8), dtype=np.float32)))
    for h in handles:
        h.remove()
    return shapes


def model_layers(cfg: dict, rng) -> tuple:
    """Every prunable layer of the shipped MLP and CNN, magnitude-pruned per layer to
    cfg["layer_sparsity"], as a matrix product over (images x output positions) columns;
    and the whole models, dense vs to_sparse, at batch 1 and 256."""
    rows, whole = [], []
    for model_name in ("mlp", "cnn"):
        model = load_pretrained(model_name)
        shapes = layer_shapes(model, model_name)
        prune_magnitude(model, cfg["layer_sparsity"], scope="layer")
        for lname, layer in prunable_layers(model).items():
            out_f, in_f, positions = shapes[lname]
            W = np.ascontiguousarray(layer.weight.data.reshape(out_f, in_f))
            for images in cfg["layer_batches"]:
                X = rng.standard_normal((images * positions, in_f)).astype(np.float32)
                fns = candidates(W, X)
                with common.blas_threads(1):
                    times = best_median_times(fns, rounds=cfg["rounds"], repeats=cfg["repeats"])
                row = {"model": model_name, "layer": lname, "type": type(layer).__name__,
                       "matrix": [out_f, in_f], "images": images, "columns": images * positions,
                       "sparsity": float(np.mean(W == 0)), "ms": {k: 1e3 * v for k, v in times.items()},
                       "csr_vs_dense": times["dense"] / times["csr"]}
                if "scipy" in times:
                    row["csr_over_scipy"] = times["csr"] / times["scipy"]
                rows.append(row)
        sparse = to_sparse(model, min_sparsity=0.5)
        for images in cfg["layer_batches"]:
            x = Tensor(rng.random((images, 1, 8, 8)).astype(np.float32))

            def infer(m, x=x):
                def go():
                    with no_grad():
                        m(x)
                return go
            with common.blas_threads(1):
                times = best_median_times({"dense": infer(model), "csr": infer(sparse)},
                                                 rounds=cfg["rounds"], repeats=cfg["repeats"])
            whole.append({"model": model_name, "sparsity": cfg["layer_sparsity"], "images": images,
                          "ms": {k: 1e3 * v for k, v in times.items()},
                          "csr_vs_dense": times["dense"] / times["csr"]})
            common.log(f"  {model_name} whole model, {images} images: dense {1e3 * times['dense']:.3f} ms, "
                       f"to_sparse {1e3 * times['csr']:.3f} ms")
    return rows, whole


def crossover(rows: list, batch: int):
    """Lowest tested sparsity from which CSR is faster than dense at every higher tested
    sparsity (None if it never is)."""
    pts = sorted((r["sparsity"], r["csr_vs_dense"]) for r in rows if r["batch"] == batch)
    answer = None
    for sparsity, speedup in reversed(pts):
        if speedup > 1:
            answer = sparsity
        else:
            break
    return answer


def run(quick: bool, out) -> dict:
    watch = common.Stopwatch()
    cfg = settings(quick)
    rng = np.random.default_rng(SEED)
    common.log("[kernels] 1024x1024 sweep")
    square = square_sweep(cfg, rng)
    common.log("[kernels] memory")
    mem = memory(cfg, rng)
    common.log("[kernels] shipped models")
    layers, whole = model_layers(cfg, rng)
    cross = {batch: crossover(square, batch) for batch in cfg["batches"]}
    plot(square, cross, out, quick)

    headlines = [common.headline(
        f"crossover sparsity (CSR faster than dense from here up), batch {b}, one BLAS thread",
        "never in the tested range" if s is None else common.pct(s, 1)) for b, s in cross.items()]
    for s in (0.9, 0.99):
        pts = [r for r in square if r["sparsity"] == s]
        if pts:
            headlines.append(common.headline(
                f"{SIZE}x{SIZE} at {s:.0%}: CSR vs dense, one BLAS thread (default threads)", ", ".join(
                    f"batch {r['batch']} {r['csr_vs_dense']:.2f}x ({r['csr_vs_dense_default']:.2f}x)" for r in pts)))
    targets = []
    if common.has_scipy():
        for batch, limit, name in ((1, 2, "csr_matvec"), (64, 4, "csr_matmul")):
            pts = [r for r in square if r["batch"] == batch and 0.9 <= r["sparsity"] <= 0.99]
            if not pts:
                continue
            listing = ", ".join(f"{r['sparsity']:.0%}: {r['csr_over_scipy']:.2f}x "
                                f"({r['csr_over_scipy_default']:.2f}x)" for r in pts)
            headlines.append(common.headline(
                f"CSR time / scipy time at batch {batch}, one BLAS thread (default threads)", listing))
            worst = max(pts, key=lambda r: r["csr_over_scipy"])
            targets.append(common.target(
                f"batch-{batch} {name} within {limit}x of scipy.sparse from 90% to 99% sparsity "
                f"(1024x1024 float32, one BLAS thread)",
                f"worst {worst['csr_over_scipy']:.2f}x at {worst['sparsity']:.0%} ({listing})",
                worst["csr_over_scipy"] <= limit))
    c1 = cross.get(1)
    targets.append(common.target(
        "CSR beats dense at batch 1 from the lowest sparsity reachable (90%: what pruning reaches "
        "within 1% accuracy)",
        "never in the tested range" if c1 is None else
        f"faster from {c1:.1%} up; at 90%: "
        + ", ".join(f"{r['csr_vs_dense']:.2f}x" for r in square if r["batch"] == 1 and r["sparsity"] == 0.9),
        c1 is not None and c1 <= 0.9))
    m = [r for r in mem if r["batch"] == 64]
    if m:
        r = m[0]
        headlines.append(common.headline(
            f"storage at {r['sparsity']:.0%} (1024x1024)",
            f"dense {r['dense_weight_bytes'] / 1e6:.2f} MB, CSR {r['csr_bytes'] / 1e6:.2f} MB; peak extra memory of "
            f"one batch-64 call: dense {r['peak_bytes']['dense'] / 1e6:.2f} MB, CSR {r['peak_bytes']['csr'] / 1e6:.2f} MB "
            f"(first call, building the padded cache: {r['csr_first_call_peak_bytes'] / 1e6:.2f} MB)"))
    notes = [f"Timings: fastest of {cfg['rounds']} medians of {cfg['repeats']} calls, implementations interleaved, "
             "once with BLAS pinned to one thread (threadpoolctl; ratios and targets use these) and once with "
             "the default threads (ms_default in the JSON, in brackets above)." if common.has_threadpoolctl() else
             f"Timings: fastest of {cfg['rounds']} medians of {cfg['repeats']} calls, implementations interleaved; "
             "threadpoolctl is not installed, so both figures use the threads the environment set.",
             "Peak memory: tracemalloc sees NumPy's allocations (outputs, gathered blocks, caches) but not "
             "BLAS or scipy's internal C++ buffers.",
             "Weights: Gaussian float32 with zeros at uniformly random positions (unstructured); for the "
             "model layers, per-layer magnitude pruning of the pretrained weights.",
             "The model layers and whole models are timed with one BLAS thread; whole models use the "
             "package's to_sparse, hence the package's kernels."]
    results = {"size": SIZE, "square": square, "crossover": {str(k): v for k, v in cross.items()},
               "memory": mem, "model_layers": layers, "whole_models": whole,
               "scipy": common.has_scipy()}
    return common.finish(NAME, out, quick, watch, cfg, results, headlines, targets, notes)


def plot(square: list, cross: dict, out, quick: bool) -> None:
    batches = sorted({r["batch"] for r in square})
    fig, axes = common.figure(ncols=len(batches) + 1, width=4.8)
    for ax, batch in zip(axes, batches):
        pts = sorted((r for r in square if r["batch"] == batch), key=lambda r: r["sparsity"])
        xs = [r["sparsity"] for r in pts]
        for impl, style in (("dense", "k-"), ("csr", "o-"), ("csr layer", "o:"), ("scipy", "s--")):
            ys = [r["ms"].get(impl) for r in pts]
            if all(y is not None for y in ys):
                ax.plot(xs, ys, style, label={"dense": "dense X @ W.T", "csr": "module CSR",
                                              "csr layer": "module CSR, rmatmul_T",
                                              "scipy": "scipy.sparse"}[impl])
        if cross.get(batch) is not None:
            ax.axvline(cross[batch], color="C3", lw=0.8, ls="--", label=f"crossover {cross[batch]:.1%}")
        ax.set_yscale("log")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("ms per call (log)")
        ax.set_title(f"{SIZE}x{SIZE}, batch {batch}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    ax = axes[-1]
    for batch in batches:
        pts = sorted((r for r in square if r["batch"] == batch), key=lambda r: r["sparsity"])
        ax.plot([r["sparsity"] for r in pts], [r["csr_vs_dense"] for r in pts], "o-", label=f"CSR, batch {batch}")
        if "scipy_vs_dense" in pts[0]:
            ax.plot([r["sparsity"] for r in pts], [r["scipy_vs_dense"] for r in pts], "s--", alpha=0.6,
                    label=f"scipy, batch {batch}")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("speed-up vs dense (log)")
    ax.set_title("speed-up vs dense")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    common.save_figure(fig, out, NAME, quick)


def main(argv=None) -> dict:
    return common.cli_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
