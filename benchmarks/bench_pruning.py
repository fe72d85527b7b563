"""Experiment 1: test accuracy vs unstructured sparsity on the pretrained MLP and SimpleCNN.

One-shot pruning (magnitude per layer, magnitude global, Taylor |w * dL/dw| per layer and
global), one-shot + fine-tuning (SGD lr 0.02, momentum 0.9: MLP 4 epochs, CNN 3 epochs, the
notebook's recipe), progressive pruning (cubic schedule, the same number of epochs) and
lottery-ticket rounds (iterative magnitude pruning with rewinding to the initial weights,
plus a random re-initialisation control with the same final mask).

    python -m benchmarks.bench_pruning [--quick] [--out DIR]
"""
from __future__ import annotations

import sys

import tinytorch as tt
from tinytorch.datasets import digits_loaders
from tinytorch.models import MLP, SimpleCNN, load_pretrained
from tinytorch.optimization.compression import (MagnitudePruner, count_params, fine_tune,
                                                lottery_ticket, measure_sparsity,
                                                progressive_prune)

from . import common

NAME = "pruning"
METHODS = {  # name: MagnitudePruner keyword arguments
    "magnitude (layer)": {"scope": "layer", "importance": "magnitude"},
    "magnitude (global)": {"scope": "global", "importance": "magnitude"},
    "taylor (layer)": {"scope": "layer", "importance": "taylor"},
    "taylor (global)": {"scope": "global", "importance": "taylor"},
}
BUILDERS = {"mlp": MLP, "cnn": SimpleCNN}
SGD_LR, SGD_MOMENTUM = 0.02, 0.9
TARGET_SPARSITY, MAX_DROP = 0.9, 0.01


def settings(quick: bool) -> dict:
    if quick:
        return {"sparsities": [0.5, 0.9, 0.98],
                "fine_tune_epochs": {"mlp": 2, "cnn": 1},
                "fine_tune_sparsities": {"mlp": [0.5, 0.9, 0.98], "cnn": [0.9]},
                "fine_tune_all_methods_at": {"mlp": [0.9], "cnn": []},
                "progressive": {"mlp": {"targets": [0.9], "steps": 2}, "cnn": None},
                "lottery": {"mlp": {"rounds": 2, "rate_per_round": 0.5, "epochs": 2, "rewinds": ["init"]},
                            "cnn": None}}
    return {"sparsities": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
            "fine_tune_epochs": {"mlp": 4, "cnn": 3},
            "fine_tune_sparsities": {"mlp": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
                                     "cnn": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]},
            "fine_tune_all_methods_at": {"mlp": [0.9, 0.95, 0.98], "cnn": [0.9]},
            # progressive: one epoch per step, as many steps as the fine-tune has epochs
            "progressive": {"mlp": {"targets": [0.9, 0.95, 0.98], "steps": 4},
                            "cnn": {"targets": [0.9], "steps": 3}},
            "lottery": {"mlp": {"rounds": 5, "rate_per_round": 0.5, "epochs": 8, "rewinds": ["init", 50]},
                        "cnn": {"rounds": 3, "rate_per_round": 0.5, "epochs": 3, "rewinds": ["init"]}}}


def one_shot_and_fine_tune(name: str, cfg: dict, test_loader) -> dict:
    dense = load_pretrained(name)
    dense_acc = tt.evaluate(dense, test_loader)
    one_shot, fine_tuned = [], []
    ft_epochs = cfg["fine_tune_epochs"][name]
    for sparsity in cfg["sparsities"]:
        for method, kwargs in METHODS.items():
            model = load_pretrained(name)
            train_loader, _ = digits_loaders(batch_size=32, seed=0)  # fresh: same batches every run
            masks = MagnitudePruner(sparsity, **kwargs).prune(model, data=train_loader)
            acc = tt.evaluate(model, test_loader)
            one_shot.append({"method": method, "sparsity": sparsity,
                             "measured_sparsity": measure_sparsity(model), "accuracy": acc})
            wanted = (method == "magnitude (global)" and sparsity in cfg["fine_tune_sparsities"][name]) \
                or sparsity in cfg["fine_tune_all_methods_at"][name]
            if not wanted:
                continue
            watch = common.Stopwatch()
            train_loader, _ = digits_loaders(batch_size=32, seed=0)
            optimizer = tt.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
            fine_tune(model, masks, train_loader, epochs=ft_epochs, optimizer=optimizer)
            fine_tuned.append({"method": method, "sparsity": sparsity, "epochs": ft_epochs,
                               "measured_sparsity": measure_sparsity(model),
                               "one_shot_accuracy": acc, "accuracy": tt.evaluate(model, test_loader),
                               "seconds": round(watch(), 2)})
            common.log(f"  {name} {method:18s} {sparsity:.0%}: one-shot {acc:.2%} -> "
                       f"fine-tuned {fine_tuned[-1]['accuracy']:.2%}")
    return {"dense_accuracy": dense_acc, "params": count_params(dense),
            "one_shot": one_shot, "fine_tuned": fine_tuned}


def progressive(name: str, spec: dict, test_loader) -> list:
    rows = []
    for target_sparsity in spec["targets"]:
        model = load_pretrained(name)
        train_loader, _ = digits_loaders(batch_size=32, seed=0)
        watch = common.Stopwatch()
        _, history = progressive_prune(model, target_sparsity, steps=spec["steps"], train_loader=train_loader,
                                       epochs_per_step=1, scope="global", val_loader=test_loader, verbose=False,
                                       return_history=True)
        rows.append({"target": target_sparsity, "steps": spec["steps"], "epochs_per_step": 1,
                     "optimizer": "Adam lr 1e-3", "sparsity": measure_sparsity(model),
                     "accuracy": tt.evaluate(model, test_loader), "history": history,
                     "seconds": round(watch(), 2)})
        common.log(f"  {name} progressive -> {target_sparsity:.0%}: {rows[-1]['accuracy']:.2%}")
    return rows


def lottery(name: str, spec: dict, test_loader, seed: int = 0) -> list:
    """Lottery-ticket rounds per rewind point, and the control: the same final mask on a
    fresh random initialisation, trained for the same epochs."""
    rows = []
    build = BUILDERS[name]
    for rewind in spec["rewinds"]:
        watch = common.Stopwatch()
        tt.manual_seed(seed)
        train_loader, _ = digits_loaders(batch_size=32, seed=seed)
        result = lottery_ticket(build, train_loader, rounds=spec["rounds"], rate_per_round=spec["rate_per_round"],
                                rewind=rewind, epochs=spec["epochs"], val_loader=test_loader, verbose=False)
        tt.manual_seed(seed + 1000)
        control = build()
        train_loader, _ = digits_loaders(batch_size=32, seed=seed)
        fine_tune(control, result["masks"], train_loader, epochs=spec["epochs"])
        rows.append({"rewind": rewind, "rounds": spec["rounds"], "rate_per_round": spec["rate_per_round"],
                     "epochs_per_round": spec["epochs"], "sparsity": result["sparsity"],
                     "accuracy": result["accuracy"],
                     "random_reinit_accuracy": tt.evaluate(control, test_loader),
                     "seconds": round(watch(), 2)})
        common.log(f"  {name} lottery (rewind {rewind}): " + ", ".join(
            f"{s:.1%}:{a:.2%}" for s, a in zip(result["sparsity"], result["accuracy"]))
            + f"; random re-init at the final mask {rows[-1]['random_reinit_accuracy']:.2%}")
    return rows


def plot(results: dict, out, quick: bool) -> None:
    fig, axes = common.figure(ncols=2)
    styles = {"magnitude (layer)": "C0", "magnitude (global)": "C1", "taylor (layer)": "C2",
              "taylor (global)": "C3"}
    for ax, (name, r) in zip(axes, results.items()):
        dense = r["dense_accuracy"]
        ax.axhspan(dense - MAX_DROP, dense, color="0.85", label="dense − 1%")
        ax.axhline(dense, color="k", lw=1, label=f"dense {dense:.2%}")
        for method, color in styles.items():
            pts = [(p["sparsity"], p["accuracy"]) for p in r["one_shot"] if p["method"] == method]
            ax.plot(*zip(*pts), "--", color=color, marker=".", label=f"one-shot {method}")
            ft = [(p["sparsity"], p["accuracy"]) for p in r["fine_tuned"] if p["method"] == method]
            if ft:
                ax.plot(*zip(*ft), "-", color=color, marker="o", label=f"fine-tuned {method}")
        if r["progressive"]:
            ax.plot([p["sparsity"] for p in r["progressive"]], [p["accuracy"] for p in r["progressive"]],
                    "s", color="C4", ms=8, label="progressive (cubic schedule)")
        for i, lt in enumerate(r["lottery"]):
            ax.plot(lt["sparsity"], lt["accuracy"], ":", marker="^", color=f"C{5 + i}",
                    label=f"lottery ticket, rewind {lt['rewind']}")
            ax.plot([lt["sparsity"][-1]], [lt["random_reinit_accuracy"]], "x", color=f"C{5 + i}", ms=9,
                    label="same mask, random re-init")
        ax.set_xlabel("sparsity (fraction of weights = 0)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{name.upper()} ({r['params']:,} parameters)")
        ax.set_ylim(max(0.0, dense - 0.25), min(1.0, dense + 0.03))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    common.save_figure(fig, out, NAME, quick)


def run(quick: bool, out) -> dict:
    watch = common.Stopwatch()
    cfg = settings(quick)
    _, test_loader = digits_loaders(batch_size=32, seed=0)
    results = {}
    for name in ("mlp", "cnn"):
        common.log(f"[pruning] {name}")
        results[name] = one_shot_and_fine_tune(name, cfg, test_loader)
        results[name]["progressive"] = progressive(name, cfg["progressive"][name], test_loader) \
            if cfg["progressive"][name] else []
        results[name]["lottery"] = lottery(name, cfg["lottery"][name], test_loader) if cfg["lottery"][name] else []
    plot(results, out, quick)

    headlines, targets = [], []
    for name, r in results.items():
        at90 = [p for p in r["fine_tuned"] if p["method"] == "magnitude (global)" and p["sparsity"] == TARGET_SPARSITY][0]
        drop = r["dense_accuracy"] - at90["accuracy"]
        headlines.append(common.headline(
            f"{name.upper()} at 90% sparsity (global magnitude + {at90['epochs']} epochs SGD)",
            f"{common.pct(at90['accuracy'])} vs dense {common.pct(r['dense_accuracy'])} ({-drop:+.2%})"))
        within = [p["sparsity"] for p in r["fine_tuned"]
                  if p["method"] == "magnitude (global)" and r["dense_accuracy"] - p["accuracy"] <= MAX_DROP + 1e-9]
        headlines.append(common.headline(f"{name.upper()} highest tested sparsity within 1% (fine-tuned)",
                                         common.pct(max(within), 0) if within else "none"))
        one90 = {p["method"]: p["accuracy"] for p in r["one_shot"] if p["sparsity"] == TARGET_SPARSITY}
        headlines.append(common.headline(f"{name.upper()} one-shot at 90% (no fine-tune)",
                                         ", ".join(f"{m} {common.pct(a)}" for m, a in one90.items())))
        for lt in r["lottery"]:
            headlines.append(common.headline(
                f"{name.upper()} lottery ticket (rewind {lt['rewind']}) at {lt['sparsity'][-1]:.1%}",
                f"{common.pct(lt['accuracy'][-1])} vs random re-init {common.pct(lt['random_reinit_accuracy'])} "
                f"(dense-trained round 0: {common.pct(lt['accuracy'][0])})"))
        targets.append(common.target(
            f"{name.upper()}: 90% unstructured sparsity within 1% of dense accuracy",
            f"{at90['measured_sparsity']:.1%} sparse, {common.pct(at90['accuracy'])} vs {common.pct(r['dense_accuracy'])} "
            f"({-drop:+.2%})", drop <= MAX_DROP + 1e-9))
    notes = ["Accuracy is top-1 on the fixed 359-image digits test split; one misclassified image is 0.28%.",
             "Sparsity counts Linear/Conv2d weights only (biases stay dense), like torch.nn.utils.prune.",
             "Fine-tuning keeps pruned weights at exactly zero (gradients masked, masks re-applied after "
             "every step); progressive pruning uses the module's Adam (lr 1e-3) between steps.",
             "Lottery tickets are trained from scratch (Adam lr 1e-3) for the stated epochs per round; "
             "the pretrained models were trained for 40 (MLP) and 20 (CNN) epochs, so round-0 accuracy is lower."]
    return common.finish(NAME, out, quick, watch, cfg, results, headlines, targets, notes)


def main(argv=None) -> dict:
    return common.cli_main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
