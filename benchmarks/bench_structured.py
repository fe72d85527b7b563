"""Experiment 2: structured (filter) pruning of the pretrained SimpleCNN: pruning ratio vs
test accuracy (right after pruning and after a short fine-tune) vs MACs (`model_flops`) vs
measured latency at batch 1, 32 and 256.

StructuredPruner(ratio) removes round(ratio * n) of the n filters of both convolutions by
L1 norm (Li et al. 2017) and shrinks the layers that read them, giving a smaller dense
model. Fine-tune: Adam with a step-decayed learning rate (the notebook's recipe). Controls
with the same timing loop: the dense model, and 90% unstructured magnitude pruning run by
the dense kernels and by the CSR kernels (`to_sparse`).

    python -m benchmarks.bench_structured [--quick] [--out DIR]
"""
from __future__ import annotations

import copy
import sys

import tinytorch as tt
from tinytorch.core import Conv2d, Tensor, best_median_times, no_grad
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import load_pretrained
from tinytorch.optimization.compression import (StructuredPruner, count_params, model_flops,
                                                prune_magnitude, to_sparse)

from . import common

NAME = "structured"
BATCHES = (1, 32, 256)
INPUT_SHAPE = (1, 8, 8)


def settings(quick: bool) -> dict:
    if quick:
        return {"ratios": [0.5, 2 / 3], "fine_tune_lrs": [1e-3], "rounds": 2, "repeats": {1: 9, 32: 5, 256: 3}}
    return {"ratios": [0.25, 0.5, 2 / 3, 0.75, 0.8, 0.875], "fine_tune_lrs": [1e-3, 1e-3, 3e-4, 1e-4],
            "rounds": 5, "repeats": {1: 21, 32: 9, 256: 5}}


def fine_tune_dense(model, lrs) -> None:
    """Adam, one epoch per entry of `lrs` (step decay), on fresh reproducible batches."""
    train_loader, _ = digits_loaders(batch_size=32, seed=0)
    optimizer = tt.Adam(model.parameters(), lr=lrs[0])
    for lr in lrs:
        optimizer.lr = lr
        tt.train_epoch(model, train_loader, optimizer)
    model.eval()


def _infer(model, x):
    def run():
        with no_grad():
            model(x)
    return run


def run(quick: bool, out) -> dict:
    watch = common.Stopwatch()
    cfg = settings(quick)
    _, test_loader = digits_loaders(batch_size=32, seed=0)
    x_test, _ = load_digits("test")
    dense = load_pretrained("cnn")
    dense_acc = tt.evaluate(dense, test_loader)

    models, rows = {"dense": dense}, {}
    rows["dense"] = {"model": "dense", "kind": "dense", "ratio": 0.0, "accuracy_pruned": dense_acc,
                     "accuracy": dense_acc, "fine_tune_seconds": 0.0}
    for ratio in cfg["ratios"]:
        name = f"structured {ratio:.3g}"
        small = StructuredPruner(ratio).prune(copy.deepcopy(dense))  # in place: keep the dense control
        acc_pruned = tt.evaluate(small, test_loader)
        ft = common.Stopwatch()
        fine_tune_dense(small, cfg["fine_tune_lrs"])
        models[name] = small
        rows[name] = {"model": name, "kind": "structured", "ratio": ratio, "accuracy_pruned": acc_pruned,
                      "accuracy": tt.evaluate(small, test_loader), "fine_tune_seconds": round(ft(), 2)}
        common.log(f"  {name}: {acc_pruned:.2%} after pruning -> {rows[name]['accuracy']:.2%} after fine-tune")
    unstructured = copy.deepcopy(dense)
    prune_magnitude(unstructured, 0.9, scope="global")
    for name, model in (("unstructured 90% (dense kernels)", unstructured),
                        ("unstructured 90% (CSR kernels)", to_sparse(unstructured, min_sparsity=0.5))):
        models[name] = model
        acc = tt.evaluate(model, test_loader)
        rows[name] = {"model": name, "kind": "unstructured", "ratio": None, "accuracy_pruned": acc,
                      "accuracy": acc, "fine_tune_seconds": 0.0}

    latency = {}
    for batch in BATCHES:
        x = Tensor(x_test[:batch])
        latency[batch] = best_median_times({n: _infer(m, x) for n, m in models.items()},
                                                  rounds=cfg["rounds"], repeats=cfg["repeats"][batch])
    dense_macs = model_flops(dense, INPUT_SHAPE)
    table = []
    for name, model in models.items():
        row = dict(rows[name])
        row["channels"] = [layer.out_channels for layer in model if isinstance(layer, Conv2d)]
        row["params"] = count_params(model)
        row["nonzero_params"] = count_params(model, nonzero=True)
        row["macs"] = model_flops(model, INPUT_SHAPE) if row["kind"] != "unstructured" else dense_macs
        row["mac_reduction"] = dense_macs / row["macs"]
        row["accuracy_drop"] = dense_acc - row["accuracy"]
        for batch in BATCHES:
            row[f"latency_ms_batch{batch}"] = 1e3 * latency[batch][name]
            row[f"speedup_batch{batch}"] = latency[batch]["dense"] / latency[batch][name]
        table.append(row)
        common.log(f"  {name:34s} MACs {row['mac_reduction']:.1f}x fewer; speed-up b1 "
                   f"{row['speedup_batch1']:.2f}x b32 {row['speedup_batch32']:.2f}x "
                   f"b256 {row['speedup_batch256']:.2f}x; accuracy {row['accuracy']:.2%}")
    plot(table, out, quick)

    structured = [r for r in table if r["kind"] == "structured"]

    def best_within(max_drop):
        ok = [r for r in structured if r["accuracy_drop"] <= max_drop + 1e-9]
        return max(ok, key=lambda r: r["speedup_batch256"]) if ok else None

    within2, within1 = best_within(0.02), best_within(0.01)

    def describe(r):
        return ("none" if r is None else
                f"ratio {r['ratio']:.3g} (channels {'/'.join(map(str, r['channels']))}): "
                f"{r['speedup_batch256']:.2f}x at batch 256, {common.pct(r['accuracy'])} "
                f"({-r['accuracy_drop']:+.2%})")

    headlines = [common.headline("best batch-256 speed-up within 2% accuracy", describe(within2)),
                 common.headline("best batch-256 speed-up within 1% accuracy", describe(within1))]
    for r in structured:
        headlines.append(common.headline(
            f"ratio {r['ratio']:.3g}", f"{r['mac_reduction']:.1f}x fewer MACs; speed-up {r['speedup_batch1']:.2f}x / "
            f"{r['speedup_batch32']:.2f}x / {r['speedup_batch256']:.2f}x at batch 1 / 32 / 256; "
            f"accuracy {common.pct(r['accuracy'])}"))
    u = [r for r in table if r["kind"] == "unstructured"]
    headlines.append(common.headline("unstructured 90% (control), batch-256 speed-up",
                                     ", ".join(f"{r['model'].split('(')[1][:-1]} {r['speedup_batch256']:.2f}x"
                                               for r in u)))
    targets = [
        common.target("structured pruning >= 3x batch-256 speed-up within 2% accuracy", describe(within2),
                      within2 is not None and within2["speedup_batch256"] >= 3),
        common.target("(aim) >= 5x batch-256 speed-up within 1% accuracy", describe(within1),
                      within1 is not None and within1["speedup_batch256"] >= 5),
    ]
    notes = [f"Latency: fastest of {cfg['rounds']} medians of {cfg['repeats']} calls (batch: repeats), "
             "all models interleaved; inputs are the first images of the test split; eval mode, no graph.",
             f"Fine-tune: Adam, {len(cfg['fine_tune_lrs'])} epoch(s) with lr {cfg['fine_tune_lrs']}, batch 32.",
             "MACs per image from model_flops (Linear + Conv2d only); unstructured pruning leaves the "
             "dense MAC count unchanged (zeros are multiplied)."]
    results = {"dense_accuracy": dense_acc, "dense_macs": dense_macs, "batches": list(BATCHES), "rows": table}
    return common.finish(NAME, out, quick, watch, cfg, results, headlines, targets, notes)


def plot(table: list, out, quick: bool) -> None:
    fig, axes = common.figure(ncols=2)
    structured = [r for r in table if r["kind"] != "unstructured"]
    ratios = [r["ratio"] for r in structured]
    ax = axes[0]
    ax.plot(ratios, [r["accuracy_pruned"] for r in structured], "o--", label="right after pruning")
    ax.plot(ratios, [r["accuracy"] for r in structured], "o-", label="after fine-tune")
    dense = structured[0]["accuracy"]
    ax.axhspan(dense - 0.02, dense, color="0.9", label="dense − 2%")
    ax.axhspan(dense - 0.01, dense, color="0.8", label="dense − 1%")
    ax.set_xlabel("fraction of filters removed per conv layer")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(max(0.0, min(r["accuracy_pruned"] for r in structured) - 0.02), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("accuracy")
    ax = axes[1]
    ax.plot(ratios, [r["mac_reduction"] for r in structured], "k^-", label="MACs (fewer, x)")
    for batch in BATCHES:
        ax.plot(ratios, [r[f"speedup_batch{batch}"] for r in structured], "o-", label=f"speed-up, batch {batch}")
    for r in table:
        if r["kind"] == "unstructured":
            ax.axhline(r["speedup_batch256"], ls=":", color="C3" if "CSR" in r["model"] else "C4",
                       label=f"{r['model']}, batch 256")
    ax.axhline(3, color="0.5", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("fraction of filters removed per conv layer")
    ax.set_ylabel("x vs dense (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("MACs and measured speed-up")
    common.save_figure(fig, out, NAME, quick)


def main(argv=None) -> dict:
    return common.cli_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
