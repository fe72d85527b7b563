"""Experiment 6: sparsity that is fast on a CPU (going further, part 2).

1. Latency of a 1024x1024 float32 layer pruned in whole blocks (4x4 to 32x32, blocks
   removed at random) at 50-95% sparsity, batch 1 / 64 / 256: dense `W @ X` (BLAS) vs the
   module's `bsr_matmul` vs its CSR kernel `csr_matmul` on the same matrix, and 2:4 (50%)
   as CSR. Variants interleaved in one process, fastest of several medians, each measured
   with BLAS pinned to one thread (the figures targets use) and with the default threads.
2. Accuracy after a masked fine-tune of the pretrained MLP and CNN, at equal per-layer
   sparsity: unstructured (MagnitudePruner) vs 4x4 blocks (BlockPruner) vs N:M (NMPruner:
   2:4, 1:4, 1:8). Layers N:M cannot prune stay dense for every method.
3. Prune, then distill: StructuredPruner(ratio) on the pretrained CNN, then the same epochs
   of label-only training (alpha = 0) or distillation from the dense CNN
   (`prune_then_distill`); test accuracy and batch-256 latency against the dense CNN.

    python -m benchmarks.bench_block_sparse [--quick] [--out DIR]
"""
from __future__ import annotations

import copy
import sys

import numpy as np

import tinytorch as tt
from tinytorch.core import Conv2d, Tensor, no_grad
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import load_pretrained
from tinytorch.optimization.compression import (BlockPruner, BSRMatrix, CSRMatrix, MagnitudePruner, NMPruner,
                                                bsr_matmul, csr_matmul, fine_tune, measure_sparsity, nm_mask,
                                                prunable_layers, prune_then_distill, weight_matrix)

from . import common

NAME = "block_sparse"
SIZE = 1024
SEED = 0
DISTILL = {"alpha": 0.9, "temperature": 4.0, "lr": 3e-3}   # the recipe of part 3 (alpha = 0: labels only)


def settings(quick: bool) -> dict:
    if quick:
        return {"blocks": [16], "sparsities": [0.75, 0.9], "batches": [1, 64], "rounds": 1, "repeats": 3,
                "accuracy": {"mlp": [(2, 4)]}, "fine_tune_epochs": 1,
                "ratios": [0.8], "distill_epochs": 1, "latency_repeats": 3}
    return {"blocks": [4, 8, 16, 32], "sparsities": [0.5, 0.75, 0.8, 0.9, 0.95], "batches": [1, 64, 256],
            "rounds": 3, "repeats": 7,
            "accuracy": {"mlp": [(2, 4), (1, 4), (1, 8)], "cnn": [(2, 4), (1, 4), (1, 8)]}, "fine_tune_epochs": 4,
            "ratios": [0.7, 0.75, 0.8, 0.85], "distill_epochs": 12, "latency_repeats": 7}


# --------------------------------------------------------------------------- 1 latency
def random_block_sparse(size: int, block: int, sparsity: float, rng) -> np.ndarray:
    """Gaussian (size, size) float32 with round(sparsity * blocks) whole blocks zeroed at random."""
    W = rng.standard_normal((size, size)).astype(np.float32)
    n = size // block
    keep = np.ones(n * n, dtype=bool)
    keep[rng.permutation(n * n)[:int(round(sparsity * n * n))]] = False
    return W * np.repeat(np.repeat(keep.reshape(n, n), block, 0), block, 1)


def time_layer(W: np.ndarray, fns_for, batch: int, cfg: dict, rng) -> dict:
    """Timings (ms, both thread settings) of dense and the given sparse kernels on one batch."""
    XT = np.ascontiguousarray(rng.standard_normal((SIZE, batch)).astype(np.float32))
    fns = {"dense": lambda: W @ XT, **fns_for(XT)}
    reference = W.astype(np.float64) @ XT
    error = max(float(np.abs(fn() - reference).max()) for fn in fns.values())
    timings = common.timings_by_threads(fns, rounds=cfg["rounds"], repeats=cfg["repeats"])
    return {"batch": batch, "max_abs_error": error,
            "ms": {k: 1e3 * v for k, v in timings["one"].items()},
            "ms_default": {k: 1e3 * v for k, v in timings["default"].items()}}


def latency(cfg: dict, rng) -> list:
    rows = []
    for block in cfg["blocks"]:
        for sparsity in cfg["sparsities"]:
            W = random_block_sparse(SIZE, block, sparsity, rng)
            A_bsr, A_csr = BSRMatrix.from_dense(W, block), CSRMatrix.from_dense(W)
            for batch in cfg["batches"]:
                row = time_layer(W, lambda XT: {"bsr": lambda: bsr_matmul(A_bsr, XT),
                                                "csr": lambda: csr_matmul(A_csr, XT)}, batch, cfg, rng)
                row.update(pattern=f"{block}x{block} blocks", block=block, sparsity=sparsity)
                for kernel in ("bsr", "csr"):
                    row[f"{kernel}_vs_dense"] = row["ms"]["dense"] / row["ms"][kernel]
                    row[f"{kernel}_vs_dense_default"] = row["ms_default"]["dense"] / row["ms_default"][kernel]
                rows.append(row)
                common.log(f"  {block}x{block} {sparsity:.0%} batch {batch:3d}: " + "  ".join(
                    f"{k} {v:.3f} ms" for k, v in row["ms"].items()) + f"  (BSR {row['bsr_vs_dense']:.2f}x dense)")
    W = rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    W *= nm_mask(W, 2, 4)
    A_csr = CSRMatrix.from_dense(W)
    for batch in cfg["batches"]:
        row = time_layer(W, lambda XT: {"csr": lambda: csr_matmul(A_csr, XT)}, batch, cfg, rng)
        row.update(pattern="2:4", block=None, sparsity=0.5, csr_vs_dense=row["ms"]["dense"] / row["ms"]["csr"],
                   csr_vs_dense_default=row["ms_default"]["dense"] / row["ms_default"]["csr"])
        rows.append(row)
        common.log(f"  2:4 batch {batch:3d}: CSR {row['csr_vs_dense']:.2f}x dense")
    return rows


# --------------------------------------------------------------------------- 2 accuracy
def pattern_accuracy(cfg: dict) -> list:
    rows = []
    _, test_loader = digits_loaders(batch_size=32, seed=0)
    for name, patterns in cfg["accuracy"].items():
        base = load_pretrained(name)
        dense_accuracy = tt.evaluate(base, test_loader)
        for n, m in patterns:
            skipped = {layer for layer, module in prunable_layers(base).items() if weight_matrix(module).shape[1] % m}
            fractions = {layer: (0.0 if layer in skipped else 1 - n / m) for layer in prunable_layers(base)}
            for method in ("unstructured", "4x4 blocks", f"{n}:{m}"):
                tt.manual_seed(SEED)
                model = copy.deepcopy(base)
                if method == "unstructured":
                    masks = MagnitudePruner(fractions).prune(model)
                elif method == "4x4 blocks":
                    masks = BlockPruner(fractions, blocksize=4).prune(model)
                else:
                    masks = NMPruner(n, m).prune(model)
                pruned = tt.evaluate(model, test_loader)
                train_loader, _ = digits_loaders(batch_size=32, seed=1)
                fine_tune(model, masks, train_loader, epochs=cfg["fine_tune_epochs"], lr=1e-3)
                row = {"model": name, "method": method, "target_sparsity": 1 - n / m,
                       "sparsity": measure_sparsity(model), "dense_accuracy": dense_accuracy,
                       "accuracy_pruned": pruned, "accuracy": tt.evaluate(model, test_loader),
                       "dense_layers": sorted(skipped)}
                rows.append(row)
                common.log(f"  {name} {method:12s} at {row['sparsity']:.1%}: {pruned:.2%} -> {row['accuracy']:.2%}")
    return rows


# --------------------------------------------------------------------------- 3 prune, then distill
def cnn_latency(models: dict, cfg: dict) -> dict:
    x = Tensor(load_digits("test")[0][:256])

    def infer(model):
        def run():
            with no_grad():
                model(x)
        return run
    timings = common.timings_by_threads({name: infer(m) for name, m in models.items()},
                                        rounds=cfg["rounds"], repeats=cfg["latency_repeats"])
    return {label: {name: 1e3 * t for name, t in times.items()} for label, times in timings.items()}


def prune_distill(cfg: dict) -> dict:
    _, test_loader = digits_loaders(batch_size=32, seed=0)
    dense = load_pretrained("cnn")
    dense_accuracy = tt.evaluate(dense, test_loader)
    rows, models = [], {"dense": dense}
    for ratio in cfg["ratios"]:
        for recovery, alpha in (("labels only", 0.0), ("distilled", DISTILL["alpha"])):
            tt.manual_seed(SEED)
            watch = common.Stopwatch()
            student, history = prune_then_distill(dense, ratio, digits_loaders(batch_size=32, seed=0)[0],
                                                  epochs=cfg["distill_epochs"], lr=DISTILL["lr"], alpha=alpha,
                                                  temperature=DISTILL["temperature"])
            name = f"{recovery} {ratio:.3g}"
            models[name] = student
            rows.append({"model": name, "recovery": recovery, "ratio": ratio, "alpha": alpha,
                         "channels": [layer.out_channels for layer in student if isinstance(layer, Conv2d)],
                         "accuracy": tt.evaluate(student, test_loader), "train_seconds": round(watch(), 1),
                         "train_accuracy": history["accuracy"]})
            common.log(f"  ratio {ratio:.3g} {recovery:11s}: {rows[-1]['accuracy']:.2%} ({rows[-1]['train_seconds']} s)")
    ms = cnn_latency(models, cfg)
    for row in rows:
        row["accuracy_drop"] = dense_accuracy - row["accuracy"]
        row["latency_ms"] = ms["one"][row["model"]]
        row["speedup"] = ms["one"]["dense"] / ms["one"][row["model"]]
        row["speedup_default"] = ms["default"]["dense"] / ms["default"][row["model"]]
    return {"dense_accuracy": dense_accuracy, "dense_ms": ms["one"]["dense"],
            "dense_ms_default": ms["default"]["dense"], "rows": rows, "recipe": DISTILL,
            "epochs": cfg["distill_epochs"]}


# --------------------------------------------------------------------------- run
def lowest_winning_sparsity(rows: list, block: int, batch: int):
    """Lowest tested sparsity from which BSR beats dense at every higher tested sparsity."""
    pts = sorted((r["sparsity"], r["bsr_vs_dense"]) for r in rows if r["block"] == block and r["batch"] == batch)
    answer = None
    for sparsity, speedup in reversed(pts):
        if speedup <= 1:
            break
        answer = sparsity
    return answer


def run(quick: bool, out) -> dict:
    watch = common.Stopwatch()
    cfg = settings(quick)
    rng = np.random.default_rng(SEED)
    common.log("[block_sparse] 1024x1024 latency")
    layer_rows = latency(cfg, rng)
    common.log("[block_sparse] accuracy at equal sparsity")
    accuracy_rows = pattern_accuracy(cfg)
    common.log("[block_sparse] prune, then distill")
    recovery = prune_distill(cfg)
    plot(layer_rows, accuracy_rows, recovery, out, quick)

    headlines, targets = [], []
    wins = {block: lowest_winning_sparsity(layer_rows, block, 64) for block in cfg["blocks"]}
    at90 = [r for r in layer_rows if r["block"] and r["batch"] == 64 and r["sparsity"] == 0.9]
    headlines.append(common.headline(
        "BSR faster than dense at batch 64 (one BLAS thread) from sparsity",
        ", ".join(f"{b}x{b}: {'never' if s is None else common.pct(s, 0)}" for b, s in wins.items())))
    if at90:
        headlines.append(common.headline(
            "BSR vs dense at 90%, batch 64, one BLAS thread (default threads)",
            ", ".join(f"{r['block']}x{r['block']} {r['bsr_vs_dense']:.2f}x ({r['bsr_vs_dense_default']:.2f}x)"
                      for r in at90)))
    for batch in cfg["batches"]:
        pts = [r for r in layer_rows if r["block"] == max(cfg["blocks"]) and r["batch"] == batch]
        headlines.append(common.headline(
            f"{max(cfg['blocks'])}x{max(cfg['blocks'])} blocks, batch {batch}: BSR / CSR vs dense (one thread)",
            ", ".join(f"{r['sparsity']:.0%}: {r['bsr_vs_dense']:.2f}x / {r['csr_vs_dense']:.2f}x" for r in pts)))
    nm = [r for r in layer_rows if r["pattern"] == "2:4"]
    headlines.append(common.headline("2:4 (50%) as CSR vs dense (one thread)",
                                     ", ".join(f"batch {r['batch']} {r['csr_vs_dense']:.2f}x" for r in nm)))
    best = [(b, s) for b, s in wins.items() if s is not None and s <= 0.9]
    targets.append(common.target(
        "a block-sparse 1024x1024 layer faster than dense at <= 90% sparsity, batch 64 (one BLAS thread)",
        "; ".join(f"{r['block']}x{r['block']} at 90%: {r['bsr_vs_dense']:.2f}x" for r in at90)
        + "; faster from " + ", ".join(f"{b}x{b}: {'never' if s is None else common.pct(s, 0)}"
                                       for b, s in wins.items()),
        bool(best)))

    for model in cfg["accuracy"]:
        for target_sparsity in sorted({r["target_sparsity"] for r in accuracy_rows if r["model"] == model}):
            pts = {r["method"]: r for r in accuracy_rows if r["model"] == model
                   and r["target_sparsity"] == target_sparsity}
            first = next(iter(pts.values()))
            dense_layers = f"; layers left dense for all: {', '.join(first['dense_layers'])}" \
                if first["dense_layers"] else ""
            headlines.append(common.headline(
                f"{model.upper()}, {target_sparsity:.1%} of each pruned layer ({common.pct(first['sparsity'], 1)} "
                f"of all weights{dense_layers}), {cfg['fine_tune_epochs']} fine-tuning epochs "
                f"(dense {common.pct(first['dense_accuracy'])})",
                ", ".join(f"{method} {common.pct(r['accuracy'])}" for method, r in pts.items())))

    rows = recovery["rows"]
    dense_acc = recovery["dense_accuracy"]
    for ratio in cfg["ratios"]:
        pair = {r["recovery"]: r for r in rows if r["ratio"] == ratio}
        headlines.append(common.headline(
            f"structured ratio {ratio:.3g} (channels {'/'.join(map(str, pair['distilled']['channels']))}), "
            f"{cfg['distill_epochs']} epochs: batch-256 speed-up {pair['distilled']['speedup']:.2f}x one thread "
            f"({pair['distilled']['speedup_default']:.2f}x default)",
            f"labels only {common.pct(pair['labels only']['accuracy'])}, distilled "
            f"{common.pct(pair['distilled']['accuracy'])} (dense {common.pct(dense_acc)})"))

    def best_within(recovery_kind, max_drop=0.01):
        ok = [r for r in rows if r["recovery"] == recovery_kind and r["accuracy_drop"] <= max_drop + 1e-9]
        return max(ok, key=lambda r: r["speedup"]) if ok else None

    def describe(r):
        return "none within 1 point" if r is None else (
            f"ratio {r['ratio']:.3g} ({'/'.join(map(str, r['channels']))} channels): {r['speedup']:.2f}x "
            f"({r['speedup_default']:.2f}x default threads), {common.pct(r['accuracy'])} ({-r['accuracy_drop']:+.2%})")

    distilled, labels = best_within("distilled"), best_within("labels only")
    headlines.append(common.headline("best label-only student within 1 point", describe(labels)))
    targets.append(common.target(
        "prune, then distill: >= 5x batch-256 speed-up within 1 point of the dense CNN (one BLAS thread)",
        describe(distilled), distilled is not None and distilled["speedup"] >= 5))
    notes = [f"Timings: fastest of {cfg['rounds']} medians of {cfg['repeats']} calls (CNN: "
             f"{cfg['latency_repeats']}), variants interleaved, once with BLAS pinned to one thread "
             "(threadpoolctl; the figures the targets use) and once with the default threads (ms_default)."
             if common.has_threadpoolctl() else "threadpoolctl is not installed: both timing figures use the "
             "BLAS threads the environment set.",
             "BSR: the module's bsr_matmul (per group of block rows, one np.matmul of the padded block panels with "
             "the gathered slices of X); CSR: the package's csr_matmul on the same matrix.",
             "Accuracy: masked fine-tune with Adam (lr 1e-3) of the pretrained models; layers whose fan-in is not a "
             "multiple of M stay dense for all three methods (the CNN's first conv).",
             f"Prune, then distill: cosine learning rate from {DISTILL['lr']}, distillation with alpha "
             f"{DISTILL['alpha']} and temperature {DISTILL['temperature']}; label-only = the same loop with alpha 0."]
    results = {"size": SIZE, "layer": layer_rows, "accuracy": accuracy_rows, "prune_then_distill": recovery,
               "lowest_winning_sparsity_batch64": {str(b): s for b, s in wins.items()}}
    return common.finish(NAME, out, quick, watch, cfg, results, headlines, targets, notes)


def plot(layer_rows: list, accuracy_rows: list, recovery: dict, out, quick: bool) -> None:
    fig, axes = common.figure(ncols=3, width=5.0)
    ax = axes[0]
    batch = 64
    for block in sorted({r["block"] for r in layer_rows if r["block"]}):
        pts = sorted((r for r in layer_rows if r["block"] == block and r["batch"] == batch), key=lambda r: r["sparsity"])
        ax.plot([r["sparsity"] for r in pts], [r["bsr_vs_dense"] for r in pts], "o-", label=f"BSR {block}x{block}")
    pts = sorted((r for r in layer_rows if r["block"] == max(r2["block"] or 0 for r2 in layer_rows)
                  and r["batch"] == batch), key=lambda r: r["sparsity"])
    ax.plot([r["sparsity"] for r in pts], [r["csr_vs_dense"] for r in pts], "s--", color="gray", label="CSR (same matrix)")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("speed-up vs dense (log), one BLAS thread")
    ax.set_title(f"{SIZE}x{SIZE} float32, batch {batch}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)

    ax = axes[1]
    styles = {"unstructured": "o-", "4x4 blocks": "s-"}
    for model, color in (("mlp", "C0"), ("cnn", "C1")):
        for method in ("unstructured", "4x4 blocks", "N:M"):
            pts = sorted((r for r in accuracy_rows if r["model"] == model and
                          (r["method"] == method or (method == "N:M" and ":" in r["method"]))),
                         key=lambda r: r["target_sparsity"])
            if pts:
                ax.plot([r["target_sparsity"] for r in pts], [r["accuracy"] for r in pts], styles.get(method, "^--"),
                        color=color, label=f"{model.upper()} {method}")
    ax.set_xlabel("sparsity (per pruned layer)")
    ax.set_ylabel("test accuracy after fine-tuning")
    ax.set_title("same sparsity, different patterns")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    ax = axes[2]
    for kind, style in (("labels only", "o--"), ("distilled", "s-")):
        pts = sorted((r for r in recovery["rows"] if r["recovery"] == kind), key=lambda r: r["speedup"])
        ax.plot([r["speedup"] for r in pts], [r["accuracy"] for r in pts], style, label=kind)
    ax.axhline(recovery["dense_accuracy"] - 0.01, color="C3", lw=0.8, ls="--", label="dense - 1 point")
    ax.axvline(5, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("batch-256 speed-up vs dense CNN, one BLAS thread")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"structured pruning + {recovery['epochs']} epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    common.save_figure(fig, out, NAME, quick)


def main(argv=None) -> dict:
    return common.cli_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
