"""Experiment 3: bytes vs accuracy. Dense float32 vs CSR (float32 values) vs CSR + int8
(per-row scales), in memory (`model_nbytes_compressed`) and on disk (`save_compressed`,
then `load_compressed` and re-evaluated: the accuracy reported is the reloaded model's), for
the pretrained MLP (LeNet-300-100 style) and SimpleCNN pruned to several sparsities
(global magnitude pruning + SGD fine-tune, as in experiment 1). The module's one-call
pipeline `compress()` is run once per model as a cross-check.

Cited, not measured here (MNIST, LeNet-300-100, 8-bit-or-less weights + Huffman coding):
Han, Mao & Dally 2016 (Deep Compression) 40x at 1.64% -> 1.58% error;
Han, Pool, Tran & Dally 2015 (pruning alone) 12x fewer parameters at 1.64% -> 1.59% error.

    python -m benchmarks.bench_size [--quick] [--out DIR]
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import tinytorch as tt
from tinytorch.core import save_model
from tinytorch.datasets import digits_loaders
from tinytorch.models import load_pretrained
from tinytorch.optimization.compression import (MagnitudePruner, compress, count_params, fine_tune,
                                                load_compressed, measure_sparsity,
                                                model_nbytes_compressed, save_compressed, to_sparse)

from . import common

NAME = "size"
MAX_DROP = 0.01
CITED = [
    {"source": "Han, Mao & Dally 2016, Deep Compression (ICLR)", "model": "LeNet-300-100, MNIST",
     "ratio": 40.0, "error_before": 0.0164, "error_after": 0.0158,
     "method": "pruning + weight sharing (<= 6-bit codes) + Huffman coding"},
    {"source": "Han, Pool, Tran & Dally 2015, Learning both Weights and Connections (NeurIPS)",
     "model": "LeNet-300-100, MNIST", "ratio": 12.0, "error_before": 0.0164, "error_after": 0.0159,
     "method": "pruning alone (ratio = fewer parameters, not bytes)"},
]


def settings(quick: bool) -> dict:
    if quick:
        return {"sparsities": {"mlp": [0.9, 0.95], "cnn": [0.9]}, "epochs": {"mlp": 2, "cnn": 1},
                "compress": {"mlp": {"sparsity": 0.9, "fine_tune_epochs": 2, "steps": 2}, "cnn": None}}
    return {"sparsities": {"mlp": [0.8, 0.9, 0.95, 0.97, 0.98], "cnn": [0.8, 0.9, 0.95, 0.97]},
            "epochs": {"mlp": 8, "cnn": 3},
            "compress": {"mlp": {"sparsity": 0.95, "fine_tune_epochs": 15, "steps": 5},
                         "cnn": {"sparsity": 0.9, "fine_tune_epochs": 6, "steps": 3}}}


def file_size(write) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        write(path)
        return path.stat().st_size


def round_trip(sparse_model, test_loader) -> tuple:
    """(bytes on disk, accuracy of the model read back by load_compressed)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.npz"
        size = save_compressed(sparse_model, path)
        reloaded = load_compressed(path)
    return size, tt.evaluate(reloaded, test_loader)


def sweep(name: str, cfg: dict, test_loader) -> dict:
    dense = load_pretrained(name)
    dense_acc = tt.evaluate(dense, test_loader)
    params = count_params(dense)
    dense_bytes = params * 4
    dense_disk = file_size(lambda p: save_model(dense, p))
    rows = []
    for sparsity in cfg["sparsities"][name]:
        model = load_pretrained(name)
        masks = MagnitudePruner(sparsity, scope="global").prune(model)
        train_loader, _ = digits_loaders(batch_size=32, seed=0)
        fine_tune(model, masks, train_loader, epochs=cfg["epochs"][name],
                  optimizer=tt.SGD(model.parameters(), lr=0.02, momentum=0.9))
        model.eval()
        acc = tt.evaluate(model, test_loader)
        row = {"sparsity": sparsity, "measured_sparsity": measure_sparsity(model),
               "nonzero_params": count_params(model, nonzero=True), "accuracy_pruned_dense": acc,
               "pruned_dense_disk_bytes": file_size(lambda p: save_model(model, p)), "formats": {}}
        for fmt, quantize in (("csr_float32", False), ("csr_int8", True)):
            sparse = to_sparse(model, min_sparsity=0.0, quantize=quantize, per="row")
            memory = model_nbytes_compressed(sparse)
            disk, reloaded_acc = round_trip(sparse, test_loader)
            row["formats"][fmt] = {"memory_bytes": memory, "disk_bytes": disk,
                                   "ratio_memory": dense_bytes / memory, "ratio_disk": dense_bytes / disk,
                                   "accuracy": reloaded_acc, "accuracy_drop": dense_acc - reloaded_acc}
        rows.append(row)
        q = row["formats"]["csr_int8"]
        common.log(f"  {name} {sparsity:.0%}: pruned {acc:.2%}; CSR+int8 {q['ratio_memory']:.1f}x in memory, "
                   f"{q['ratio_disk']:.1f}x on disk, reloaded accuracy {q['accuracy']:.2%}")
    result = {"dense_accuracy": dense_acc, "params": params, "dense_bytes": dense_bytes,
              "dense_disk_bytes": dense_disk, "rows": rows, "compress": None}
    spec = cfg["compress"][name]
    if spec:
        train_loader, _ = digits_loaders(batch_size=32, seed=0)
        report = compress(load_pretrained(name), train_loader, test_loader, scope="global", **spec)
        result["compress"] = dict(spec, accuracy_dense=report.accuracy_dense,
                                  accuracy_fine_tuned=report.accuracy_fine_tuned,
                                  accuracy_compressed=report.accuracy_compressed,
                                  dense_bytes=report.dense_bytes, memory_bytes=report.memory_bytes,
                                  disk_bytes=report.disk_bytes, ratio_memory=report.ratio,
                                  ratio_disk=report.disk_ratio)
        common.log(f"  {name} compress({spec}): {report.accuracy_compressed:.2%}, "
                   f"{report.ratio:.1f}x in memory, {report.disk_ratio:.1f}x on disk")
    return result


def best_within(result: dict, key: str, fmt: str = "csr_int8"):
    ok = [r for r in result["rows"] if r["formats"][fmt]["accuracy_drop"] <= MAX_DROP + 1e-9]
    return max(ok, key=lambda r: r["formats"][fmt][key]) if ok else None


def plot(results: dict, out, quick: bool) -> None:
    fig, axes = common.figure(ncols=2)
    ax = axes[0]
    for i, (name, r) in enumerate(results.items()):
        for fmt, marker in (("csr_float32", "o"), ("csr_int8", "s")):
            for where, style in (("memory", "-"), ("disk", ":")):
                xs = [row["formats"][fmt][f"ratio_{where}"] for row in r["rows"]]
                ys = [row["formats"][fmt]["accuracy"] for row in r["rows"]]
                ax.plot(xs, ys, style, marker=marker, color=f"C{i}",
                        label=f"{name.upper()} {fmt.replace('_', ' ')}, {where}")
        ax.axhline(r["dense_accuracy"] - MAX_DROP, color=f"C{i}", lw=0.8, ls="--",
                   label=f"{name.upper()} dense − 1%")
    for cited, ls in zip(CITED, ("-.", "--")):
        ax.axvline(cited["ratio"], color="0.4", ls=ls, lw=1,
                   label=f"cited: {cited['source'].split(',')[0]} {cited['ratio']:.0f}x (MNIST)")
    ax.axvline(10, color="C3", lw=0.8, label="target 10x")
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (dense float32 bytes / compressed bytes, log)")
    ax.set_ylabel("test accuracy (reloaded model)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    ax.set_title("accuracy vs compression")
    ax = axes[1]
    for i, (name, r) in enumerate(results.items()):
        xs = [row["sparsity"] for row in r["rows"]]
        ax.axhline(r["dense_bytes"], color=f"C{i}", lw=1, label=f"{name.upper()} dense float32")
        ax.plot(xs, [row["pruned_dense_disk_bytes"] for row in r["rows"]], "x:", color=f"C{i}",
                label=f"{name.upper()} pruned dense .npz (zlib)")
        for fmt, marker in (("csr_float32", "o"), ("csr_int8", "s")):
            ax.plot(xs, [row["formats"][fmt]["memory_bytes"] for row in r["rows"]], "-", marker=marker,
                    color=f"C{i}", label=f"{name.upper()} {fmt.replace('_', ' ')} (memory)")
    ax.set_yscale("log")
    ax.set_xlabel("sparsity")
    ax.set_ylabel("bytes (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    ax.set_title("bytes vs sparsity")
    common.save_figure(fig, out, NAME, quick)


def run(quick: bool, out) -> dict:
    watch = common.Stopwatch()
    cfg = settings(quick)
    _, test_loader = digits_loaders(batch_size=32, seed=0)
    results = {}
    for name in ("mlp", "cnn"):
        common.log(f"[size] {name}")
        results[name] = sweep(name, cfg, test_loader)
    plot(results, out, quick)

    headlines, targets = [], []
    for name, r in results.items():
        best_mem, best_disk = best_within(r, "ratio_memory"), best_within(r, "ratio_disk")

        def describe(row, key):
            if row is None:
                return "no tested point within 1%"
            f = row["formats"]["csr_int8"]
            return (f"{f[key]:.1f}x at {row['sparsity']:.0%} sparsity ({f['memory_bytes' if key == 'ratio_memory' else 'disk_bytes']:,} "
                    f"vs {r['dense_bytes']:,} bytes), accuracy {common.pct(f['accuracy'])} ({-f['accuracy_drop']:+.2%})")
        headlines.append(common.headline(f"{name.upper()} CSR+int8 in memory, best within 1%", describe(best_mem, "ratio_memory")))
        headlines.append(common.headline(f"{name.upper()} CSR+int8 on disk (.npz), best within 1%", describe(best_disk, "ratio_disk")))
        if r["compress"]:
            c = r["compress"]
            headlines.append(common.headline(
                f"{name.upper()} compress(sparsity={c['sparsity']}, {c['fine_tune_epochs']} epochs, {c['steps']} steps)",
                f"{c['ratio_memory']:.1f}x in memory, {c['ratio_disk']:.1f}x on disk, accuracy "
                f"{common.pct(c['accuracy_compressed'])} vs dense {common.pct(c['accuracy_dense'])}"))
        ratio = best_mem["formats"]["csr_int8"]["ratio_memory"] if best_mem else 0.0
        targets.append(common.target(f"{name.upper()}: >= 10x fewer bytes (in memory) within 1% accuracy",
                                     describe(best_mem, "ratio_memory"), ratio >= 10))
        targets.append(common.target(f"{name.upper()}: (aim) >= 40x fewer bytes (in memory) within 1% accuracy",
                                     describe(best_mem, "ratio_memory"), ratio >= 40))
    headlines.append(common.headline("cited (MNIST, not measured here)", "; ".join(
        f"{c['source'].split(',')[0]} {c['ratio']:.0f}x, error {c['error_before']:.2%} -> {c['error_after']:.2%}"
        for c in CITED)))
    notes = ["Dense bytes = every parameter at float32 (4 bytes). CSR bytes = values + column indices + row "
             "pointers (narrowest unsigned index dtype for int8; int32 for float32 in memory) + biases at float32; "
             "int8 adds one float32 scale per row.",
             "On disk: save_compressed writes a zlib-compressed .npz (np.savez_compressed) with the "
             "architecture as JSON; the accuracy column is the model read back by load_compressed.",
             "The cited ratios are for LeNet-300-100 on MNIST (28x28 inputs, 267K weights) and include "
             "weight sharing and Huffman coding (Deep Compression); our MLP is 64-300-100-10 on 8x8 digits "
             "(50.6K parameters), so its first layer is 12x smaller: compare the ratio, not the accuracy."]
    results_out = {"models": results, "cited": CITED}
    return common.finish(NAME, out, quick, watch, cfg, results_out, headlines, targets, notes)


def main(argv=None) -> dict:
    return common.cli_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
