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
# # Compression - pruning, knowledge distillation and sparse inference
#
# > Make trained models smaller and faster: magnitude and structured pruning, knowledge distillation and CSR sparse kernels.

# %% [markdown]
# Welcome to Module 18. You have built a whole deep-learning stack: tensors with autograd,
# layers, optimizers, training loops, convolutions, attention and int8 precision. Your models
# work. Now we make them **cheap**: fewer bytes to ship, fewer multiply-adds to run.
#
# Production systems shrink models in four ways, and you will implement each one:
#
# | technique | what it removes | saves memory | saves time on a CPU |
# |---|---|---|---|
# | magnitude (unstructured) pruning | individual small weights | yes, once stored sparse | only at very high sparsity |
# | structured pruning | whole filters, neurons, blocks | yes | yes: the matrices get smaller |
# | knowledge distillation | a big model, replaced by a small student | yes | yes |
# | sparse (CSR) inference | the zeros themselves, at run time | yes | it depends: we measure it |
#
# Every number in this notebook is measured when you run it, on the digits models that ship
# with TinyTorch (`tinytorch.models.load_pretrained`).
#
# **How to work through it.** Each concept follows the same rhythm: an explanation, an
# implementation cell for you to complete (between `### BEGIN SOLUTION` and
# `### END SOLUTION`), a test cell that checks it, and a short measured analysis.

# %%
#| default_exp optimization.compression

# %%
#| export
import copy
import json
import os
import time
import zipfile

import numpy as np

from tinytorch.core import (Adam, Conv2d, DataLoader, Dropout, Flatten, Linear, MaxPool2d, Module,
                            Parameter, ReLU, Tanh,
                            Sequential, Tensor, cross_entropy, evaluate, kl_div, layer_macs,
                            load_model, log_softmax, median_time, no_grad, quantize_int8,
                            dequantize_int8, save_model, softmax)

# %%
# Notebook-only setup: data, the pretrained models, and matplotlib if it is installed.
import importlib.util

import tinytorch as tt
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import MLP, SimpleCNN, TinyTransformer, load_pretrained

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
if HAS_MATPLOTLIB:
    import matplotlib.pyplot as plt

train_loader, test_loader = digits_loaders(batch_size=32, seed=0)
X_test, y_test = load_digits("test")
print(f"digits: {len(train_loader.dataset)} train / {len(X_test)} test images of shape {X_test.shape[1:]}")

# %% [markdown]
# ## 1 Sparsity: why networks are compressible
#
# A trained network is over-parameterised: many of its weights are close to zero and
# contribute little to any output. *Sparsity* is the fraction of weights that are exactly
# zero. We count it over the **prunable** weights: the `weight` of every `Linear` and
# `Conv2d` layer. Biases and normalisation parameters are few and sensitive, so pruning
# code (including `torch.nn.utils.prune` in practice) leaves them alone.
#
# First, tools to measure: which layers can be pruned, how many parameters (and nonzeros) a
# model has, its sparsity, and how many multiply-accumulates (MACs) one input costs.

# %% nbgrader={"grade": false, "grade_id": "metrics", "solution": true}
#| export
PRUNABLE = (Linear, Conv2d)


def prunable_layers(model: Module) -> dict:
    """The layers whose `weight` pruning acts on: every Linear and Conv2d, by dotted name.

    Returns an insertion-ordered dict {name: layer}, e.g. {"1": Linear, "3": Linear, ...}.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def count_params(model: Module, nonzero: bool = False) -> int:
    """Number of parameters of `model` (all of them: weights, biases, norms).

    With nonzero=True, only the entries that are not exactly zero.
    """
    ### BEGIN SOLUTION
    if nonzero:
        return int(sum(np.count_nonzero(p.data) for p in model.parameters()))
    return int(sum(p.data.size for p in model.parameters()))
    ### END SOLUTION


def measure_sparsity(model: Module) -> float:
    """Fraction in [0, 1] of prunable weights (Linear/Conv2d `weight`) that are exactly zero.

    Raises ValueError if the model has no prunable layer.
    """
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("model has no prunable layer (Linear or Conv2d)")
    ### BEGIN SOLUTION
    zeros = sum(int(np.sum(layer.weight.data == 0)) for layer in layers.values())
    total = sum(layer.weight.data.size for layer in layers.values())
    return zeros / total
    ### END SOLUTION


def sparsity_report(model: Module) -> list:
    """One row per prunable layer: {"layer", "type", "shape", "params", "zeros", "sparsity"}."""
    rows = []
    for name, layer in prunable_layers(model).items():
        w = layer.weight.data
        zeros = int(np.sum(w == 0))
        rows.append({"layer": name, "type": type(layer).__name__, "shape": tuple(w.shape),
                     "params": int(w.size), "zeros": zeros, "sparsity": zeros / w.size})
    return rows


def model_flops(model: Module, input_shape: tuple) -> int:
    """Multiply-accumulates (MACs) of all Linear and Conv2d layers for ONE input of
    `input_shape` (no batch axis), e.g. model_flops(cnn, (1, 8, 8))."""
    return int(sum(layer_macs(model, input_shape).values()))


def format_table(rows: list, columns: list = None) -> str:
    """Rows of dicts as an aligned text table (floats in [0, 1] under a name containing
    'sparsity' or 'accuracy' print as percentages)."""
    if not rows:
        return "(empty)"
    columns = columns or list(rows[0])

    def cell(key, value):
        if isinstance(value, float) and ("sparsity" in key or "accuracy" in key):
            return f"{value:.2%}"
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    text = [[str(c) for c in columns]] + [[cell(c, r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in text) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

# %% [markdown]
# ### Test: metrics
# A hand-built model where we know every count.

# %%
def test_metrics():
    tiny = Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
    tiny[0].weight.data[:] = 1.0
    tiny[0].weight.data[0, :2] = 0.0          # 2 zeros of 12
    tiny[2].weight.data[:] = 0.0              # 6 zeros of 6
    tiny[0].bias.data[:] = 0.0                # biases do not count towards sparsity
    assert count_params(tiny) == 12 + 3 + 6 + 2
    assert count_params(tiny, nonzero=True) == 10 + int(np.count_nonzero(tiny[2].bias.data))
    assert abs(measure_sparsity(tiny) - 8 / 18) < 1e-12, measure_sparsity(tiny)
    report = sparsity_report(tiny)
    assert [r["layer"] for r in report] == ["0", "2"] and report[1]["sparsity"] == 1.0
    assert model_flops(tiny, (4,)) == 4 * 3 + 3 * 2
    try:
        measure_sparsity(Sequential(ReLU()))
    except ValueError as err:
        assert "prunable" in str(err)
    else:
        raise AssertionError("a model without Linear/Conv2d must raise ValueError")
    print("metrics: OK")


test_metrics()

# %% [markdown]
# ### Analysis: how the pretrained models spend their weights and their time

# %%
pretrained = {name: load_pretrained(name) for name in ("mlp", "cnn", "transformer")}
dense_accuracy = {name: evaluate(m, test_loader) for name, m in pretrained.items()}
print(format_table([{"model": name, "params": count_params(m), "MACs per image": model_flops(m, (1, 8, 8)),
                     "sparsity": measure_sparsity(m), "accuracy": dense_accuracy[name]}
                    for name, m in pretrained.items()]))
print()
print(format_table(sparsity_report(pretrained["cnn"])))

# %% [markdown]
# The weights of a trained layer are concentrated around zero: most of them are small.
# If we set the smallest ones to zero, the outputs barely move. That is the bet of
# magnitude pruning (LeCun et al. 1990 "Optimal Brain Damage"; Han et al. 2015).

# %%
cnn_weights = np.concatenate([layer.weight.data.ravel() for layer in prunable_layers(pretrained["cnn"]).values()])
magnitudes = np.abs(cnn_weights)
for q in (0.5, 0.9):
    print(f"{q:.0%} of the CNN's weights have |w| < {np.quantile(magnitudes, q):.4f} "
          f"(largest |w| = {magnitudes.max():.3f})")
if HAS_MATPLOTLIB:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(cnn_weights, bins=120, color="tab:blue")
    ax.set_title("Weights of the pretrained SimpleCNN")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    plt.show()

# %% [markdown]
# ## 2 Magnitude pruning
#
# **Unstructured magnitude pruning** zeroes the individual weights with the smallest
# absolute value. A *mask* remembers which weights survive (`True` = keep), so the zeros
# can be re-imposed later. Two choices define a pruner:
#
# - **scope**: `"layer"` prunes the same fraction of every layer; `"global"` ranks all
#   prunable weights of the model together and removes the smallest overall, so big layers
#   with many redundant weights give up more than small, sensitive ones.
# - **importance**: `"magnitude"` uses |w|. `"taylor"` uses |w · ∂L/∂w|, a first-order
#   Taylor estimate of how much the loss changes when w is set to zero (Molchanov et al.
#   2017/2019), accumulated over a few batches of data.
#
# Counting follows `torch.nn.utils.prune` with a float amount: a layer (or, for global
# scope, the whole model) of n weights loses exactly `round(sparsity * n)` of them.

# %% nbgrader={"grade": false, "grade_id": "magnitude_pruner", "solution": true}
#| export
def _check_fraction(name: str, value) -> float:
    """A number in [0, 1), or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_finite(layers: dict) -> None:
    for name, layer in layers.items():
        if not np.isfinite(layer.weight.data).all():
            raise ValueError(f"layer {name!r} has NaN or inf weights: they cannot be ranked")


def keep_mask(scores: np.ndarray, n_prune: int) -> np.ndarray:
    """Boolean mask of `scores`' shape with exactly the `n_prune` smallest scores False.

    Ties are broken by position (a stable sort), so the count is always exact.
    """
    ### BEGIN SOLUTION
    mask = np.ones(scores.size, dtype=bool)
    mask[np.argsort(scores, axis=None, kind="stable")[:n_prune]] = False
    return mask.reshape(scores.shape)
    ### END SOLUTION


def taylor_importance(model: Module, data, num_batches: int = 4, loss_fn=cross_entropy) -> dict:
    """{layer name: |w * dL/dw|} summed over the first `num_batches` (inputs, labels) of `data`.

    The model is run in eval mode (no dropout noise); gradients are cleared afterwards.
    """
    if data is None:
        raise ValueError("importance='taylor' needs `data`: an iterable of (inputs, labels) batches")
    layers = prunable_layers(model)
    scores = {name: np.zeros_like(layer.weight.data) for name, layer in layers.items()}
    was_training, seen = model.training, 0
    model.eval()
    for inputs, labels in data:
        if seen == num_batches:
            break
        ### BEGIN SOLUTION
        model.zero_grad()
        loss_fn(model(inputs), labels).backward()
        for name, layer in layers.items():
            scores[name] += np.abs(layer.weight.data * layer.weight.grad)
        ### END SOLUTION
        seen += 1
    model.zero_grad()
    model.train(was_training)
    if seen == 0:
        raise ValueError("importance='taylor': `data` yielded no batches")
    return scores


class MagnitudePruner:
    """Zero the least important weights of every Linear and Conv2d layer.

    Args:
        sparsity: fraction in [0, 1) of weights to remove; with scope="layer" it may also be a
            dict {layer name: fraction} (layers not named are left dense).
        scope: "layer" (each layer loses round(sparsity * n_layer) weights) or "global"
            (round(sparsity * n_total) weights ranked across all prunable layers).
        importance: "magnitude" (|w|) or "taylor" (|w * dL/dw|, needs `data` in prune()).
        num_batches: batches of `data` used for Taylor importance.

    After `prune(model)`, `self.masks` maps layer names to boolean keep-masks of the weight's
    shape; `apply(model)` re-imposes them (e.g. after an optimizer step).
    """

    SCOPES = ("layer", "global")
    IMPORTANCES = ("magnitude", "taylor")

    def __init__(self, sparsity, scope: str = "layer", importance: str = "magnitude", num_batches: int = 4):
        if scope not in self.SCOPES:
            raise ValueError(f"scope must be one of {self.SCOPES}, got {scope!r}")
        if importance not in self.IMPORTANCES:
            raise ValueError(f"importance must be one of {self.IMPORTANCES}, got {importance!r}")
        if isinstance(sparsity, dict):
            if scope != "layer":
                raise ValueError("a per-layer sparsity dict needs scope='layer'")
            sparsity = {name: _check_fraction(f"sparsity[{name!r}]", s) for name, s in sparsity.items()}
        else:
            sparsity = _check_fraction("sparsity", sparsity)
        self.sparsity, self.scope, self.importance = sparsity, scope, importance
        self.num_batches = int(num_batches)
        self.masks: dict = {}

    def _layer_sparsity(self, layers: dict) -> dict:
        if not isinstance(self.sparsity, dict):
            return {name: self.sparsity for name in layers}
        unknown = sorted(set(self.sparsity) - set(layers))
        if unknown:
            raise ValueError(f"sparsity names layers the model does not have: {unknown}; "
                             f"prunable layers are {list(layers)}")
        return {name: self.sparsity.get(name, 0.0) for name in layers}

    def scores(self, model: Module, data=None) -> dict:
        """{layer name: importance array of the weight's shape}."""
        if self.importance == "taylor":
            return taylor_importance(model, data, self.num_batches)
        return {name: np.abs(layer.weight.data) for name, layer in prunable_layers(model).items()}

    def prune(self, model: Module, data=None) -> dict:
        """Compute masks from the current weights, zero the pruned weights in place, and
        return the masks {layer name: bool array, True = kept}."""
        layers = prunable_layers(model)
        if not layers:
            raise ValueError("model has no prunable layer (Linear or Conv2d)")
        _check_finite(layers)
        scores = self.scores(model, data)
        ### BEGIN SOLUTION
        if self.scope == "layer":
            fractions = self._layer_sparsity(layers)
            self.masks = {name: keep_mask(scores[name], int(round(fractions[name] * scores[name].size)))
                          for name in layers}
        else:
            flat = np.concatenate([scores[name].ravel() for name in layers])
            keep = keep_mask(flat, int(round(self.sparsity * flat.size)))
            self.masks, start = {}, 0
            for name in layers:
                size = scores[name].size
                self.masks[name] = keep[start:start + size].reshape(scores[name].shape)
                start += size
        ### END SOLUTION
        self.apply(model)
        return self.masks

    def apply(self, model: Module) -> None:
        """Multiply every masked layer's weight by its mask (pruned weights become 0)."""
        apply_masks(model, self.masks)


def apply_masks(model: Module, masks: dict) -> None:
    """Set the weights where masks[name] is False to exactly zero."""
    layers = prunable_layers(model)
    for name, keep in masks.items():
        if name not in layers or layers[name].weight.shape != keep.shape:
            raise ValueError(f"mask {name!r} does not match a prunable layer of the model")
        ### BEGIN SOLUTION
        layers[name].weight.data = np.where(keep, layers[name].weight.data, 0).astype(np.float32)
        ### END SOLUTION


def prune_magnitude(model: Module, sparsity: float = 0.9, scope: str = "layer") -> dict:
    """One call: prune `model` in place by |w| and return the masks."""
    return MagnitudePruner(sparsity, scope=scope).prune(model)

# %% [markdown]
# ### Test: exact counts, per-layer versus global thresholds, Taylor importance
# With weights we choose by hand, we know exactly which ones must go.

# %%
def test_magnitude_pruner():
    model = Sequential(Linear(4, 2, bias=False), Linear(2, 2, bias=False))
    model[0].weight.data = np.array([[0.1, -0.5, 0.3, 0.8], [-0.2, 0.05, 0.9, -0.7]], dtype=np.float32)
    model[1].weight.data = np.array([[0.01, 0.02], [0.6, -0.03]], dtype=np.float32)
    w0, w1 = model[0].weight.data.copy(), model[1].weight.data.copy()

    # per layer, 50%: 4 of 8 in layer 0 (|w| 0.05, 0.1, 0.2, 0.3) and 2 of 4 in layer 1 (0.01, 0.02)
    masks = MagnitudePruner(0.5, scope="layer").prune(model)
    assert (masks["0"] == np.array([[0, 1, 0, 1], [0, 0, 1, 1]], dtype=bool)).all(), masks["0"]
    assert (masks["1"] == np.array([[0, 0], [1, 1]], dtype=bool)).all(), masks["1"]
    assert (model[0].weight.data == np.where(masks["0"], w0, 0)).all()

    # global, 50%: the 6 smallest of all 12 are 0.01 0.02 0.03 (layer 1) and 0.05 0.1 0.2
    model[0].weight.data, model[1].weight.data = w0.copy(), w1.copy()
    masks = MagnitudePruner(0.5, scope="global").prune(model)
    assert masks["0"].sum() == 5 and masks["1"].sum() == 1, (masks["0"].sum(), masks["1"].sum())
    assert measure_sparsity(model) == 0.5

    # exact rounding on a random model: round(0.9 * n) zeros per layer
    tt.manual_seed(0)
    mlp = MLP()
    prune_magnitude(mlp, 0.9)
    for row in sparsity_report(mlp):
        assert row["zeros"] == round(0.9 * row["params"]), row

    # Taylor importance equals |w * dL/dw| (the gradient from autograd, checked on one batch)
    tiny = Sequential(Linear(3, 2))
    x, y = Tensor(np.array([[1.0, 2.0, -1.0]])), np.array([1])
    scores = taylor_importance(tiny, [(x, y)])
    cross_entropy(tiny(x), y).backward()
    assert np.allclose(scores["0"], np.abs(tiny[0].weight.data * tiny[0].weight.grad))

    for bad in (dict(sparsity=1.0), dict(sparsity=-0.1), dict(sparsity=0.5, scope="row"),
                dict(sparsity=0.5, importance="random")):
        try:
            MagnitudePruner(**bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"MagnitudePruner({bad}) must raise ValueError")
    print("MagnitudePruner: OK")


test_magnitude_pruner()

# %% [markdown]
# ### Analysis: one-shot pruning of the pretrained MLP
# How much accuracy survives when we prune without any retraining? Per-layer against
# global, magnitude against Taylor.

# %%
rows = []
for sparsity in (0.5, 0.8, 0.9, 0.95):
    row = {"sparsity": sparsity}
    for scope, importance in (("layer", "magnitude"), ("global", "magnitude"), ("layer", "taylor")):
        model = load_pretrained("mlp")
        MagnitudePruner(sparsity, scope=scope, importance=importance).prune(model, data=train_loader)
        row[f"{scope}/{importance} accuracy"] = evaluate(model, test_loader)
    rows.append(row)
print(f"dense MLP accuracy: {dense_accuracy['mlp']:.2%}")
print(format_table(rows))

# %% [markdown]
# Read the table before trusting a criterion. Global ranking holds up far better than the
# same fraction in every layer. Taylor importance, so useful during training, does poorly
# here: the pretrained MLP fits its training set almost perfectly, so dL/dw is close to zero
# for most weights and |w · dL/dw| is mostly noise from a handful of samples. A first-order
# estimate is only as good as the gradient it is built on.

# %% [markdown]
# ### Fine-tuning without reviving pruned weights
#
# After pruning, a few epochs of training let the surviving weights compensate. The trap:
# an optimizer with momentum or Adam keeps a running average of past gradients, so a
# pruned weight keeps moving even when its current gradient is zero. `fine_tune` therefore
# (1) masks the gradient before the step and (2) re-applies the mask after the step: pruned
# weights stay **exactly** zero whatever the optimizer state.

# %% nbgrader={"grade": false, "grade_id": "fine_tune", "solution": true}
#| export
def fine_tune(model: Module, masks: dict, loader, epochs: int = 1, optimizer=None, lr: float = 1e-3,
              loss_fn=cross_entropy, on_step=None) -> dict:
    """Train `model` for `epochs` over `loader` while the masked weights stay exactly zero.

    Args:
        masks: {layer name: bool keep-mask} as returned by MagnitudePruner.prune.
        optimizer: any tinytorch optimizer over model.parameters(); default Adam(lr).
        on_step: optional callback(step) after every optimizer step (lottery-ticket rewinding).
    Returns {"loss": [...], "accuracy": [...]} per epoch (on the training batches).
    """
    apply_masks(model, masks)  # also validates the mask names and shapes
    layers = prunable_layers(model)
    optimizer = optimizer or Adam(model.parameters(), lr=lr)
    history, step = {"loss": [], "accuracy": []}, 0
    was_training = model.training
    model.train()
    for _ in range(epochs):
        total, correct, seen = 0.0, 0, 0
        for inputs, labels in loader:
            logits = model(inputs)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            ### BEGIN SOLUTION
            for name, keep in masks.items():
                weight = layers[name].weight
                if weight.grad is not None:
                    weight.grad = weight.grad * keep
            optimizer.step()
            apply_masks(model, masks)
            ### END SOLUTION
            step += 1
            if on_step is not None:
                on_step(step)
            total += loss.item() * len(labels)
            correct += int((logits.data.argmax(axis=1) == labels.data).sum())
            seen += len(labels)
        history["loss"].append(total / seen)
        history["accuracy"].append(correct / seen)
    model.train(was_training)
    return history

# %% [markdown]
# ### Test: masks survive SGD with momentum and Adam
# We give the optimizers a head start (state built up while the weights were dense), then
# prune and fine-tune: a naive loop would let that state push pruned weights off zero.

# %%
def test_fine_tune_keeps_zeros():
    x, y = load_digits("train")
    loader = DataLoader(tt.TensorDataset(x[:256], y[:256]), batch_size=64, shuffle=True, seed=0)
    for make_optimizer in (lambda p: tt.SGD(p, lr=0.1, momentum=0.9), lambda p: Adam(p, lr=1e-2)):
        tt.manual_seed(1)
        model = MLP(hidden=(32,))
        optimizer = make_optimizer(model.parameters())
        tt.train_epoch(model, loader, optimizer)        # momentum / Adam moments are now nonzero
        masks = prune_magnitude(model, 0.8)
        before = model[1].weight.data.copy()
        history = fine_tune(model, masks, loader, epochs=2, optimizer=optimizer)
        for name, layer in prunable_layers(model).items():
            assert (layer.weight.data[~masks[name]] == 0).all(), f"pruned weights of {name} revived"
        assert not np.allclose(before[masks["1"]], model[1].weight.data[masks["1"]]), "kept weights must train"
        assert len(history["loss"]) == 2
    print("fine_tune keeps pruned weights at zero: OK")


test_fine_tune_keeps_zeros()

# %% [markdown]
# ### Analysis: 90% sparsity within 1% of dense accuracy
# One-shot *global* pruning to 90% (the table above shows why global: it spares the small
# first and last layers), then a short fine-tune with SGD and momentum, on the MLP and the CNN.

# %%
rows = []
for name, epochs in (("mlp", 4), ("cnn", 3)):
    model = load_pretrained(name)
    start = time.perf_counter()
    masks = prune_magnitude(model, 0.9, scope="global")
    one_shot = evaluate(model, test_loader)
    fine_tune(model, masks, train_loader, epochs=epochs, optimizer=tt.SGD(model.parameters(), lr=0.02, momentum=0.9))
    rows.append({"model": name, "params": count_params(model), "nonzeros": count_params(model, nonzero=True),
                 "sparsity": measure_sparsity(model), "dense accuracy": dense_accuracy[name],
                 "one-shot accuracy": one_shot, "fine-tuned accuracy": evaluate(model, test_loader),
                 "seconds": round(time.perf_counter() - start, 1)})
print(format_table(rows))
for row in rows:
    gap = row["dense accuracy"] - row["fine-tuned accuracy"]
    print(f"{row['model']}: {row['nonzeros']:,} of {row['params']:,} parameters left; "
          f"accuracy {'within' if gap <= 0.01 else 'NOT within'} 1% of dense (gap {gap:+.2%})")

# %% [markdown]
# ### Gradual pruning: the polynomial schedule
#
# Removing 90% of the weights at once is a shock. Zhu & Gupta (2017, "To prune, or not to
# prune") prune gradually: over n steps the sparsity follows
#
# $$s_t = s_f + (s_i - s_f)\left(1 - \frac{t}{n}\right)^3,$$
#
# fast at first, when many weights are redundant, and slowly near the target, with
# fine-tuning between steps so the network can recover.

# %% nbgrader={"grade": false, "grade_id": "progressive", "solution": true}
#| export
class PolynomialSchedule:
    """Sparsity at step t of n: s_t = final + (initial - final) * (1 - t/n) ** power.

    s_0 = initial and s_n = final; t beyond [0, n] is clipped. Iterating gives s_1 .. s_n.
    """

    def __init__(self, initial: float, final: float, steps: int, power: float = 3):
        self.initial = _check_fraction("initial", initial)
        self.final = _check_fraction("final", final)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if power <= 0:
            raise ValueError(f"power must be positive, got {power!r}")
        self.steps, self.power = int(steps), float(power)

    def __call__(self, t: int) -> float:
        ### BEGIN SOLUTION
        t = min(max(t, 0), self.steps)
        return self.final + (self.initial - self.final) * (1 - t / self.steps) ** self.power
        ### END SOLUTION

    def __iter__(self):
        return iter([self(t) for t in range(1, self.steps + 1)])


def progressive_prune(model: Module, target_sparsity: float = 0.9, steps: int = 5, train_loader=None,
                      epochs_per_step: int = 1, initial_sparsity: float = 0.0, scope: str = "layer",
                      lr: float = 1e-3, val_loader=None, verbose: bool = True):
    """Prune `model` in place to `target_sparsity` in `steps` steps of a cubic
    PolynomialSchedule, fine-tuning `epochs_per_step` epochs after each step.

    Returns (masks, history) where history has one row per step:
    {"step", "sparsity", "accuracy" (on val_loader, if given)}.
    """
    if train_loader is None:
        raise ValueError("progressive_prune needs train_loader to fine-tune between steps")
    schedule = PolynomialSchedule(initial_sparsity, target_sparsity, steps)
    optimizer = Adam(model.parameters(), lr=lr)  # one optimizer throughout: masks keep its state harmless
    history, masks = [], {}
    for step, sparsity in enumerate(schedule, start=1):
        ### BEGIN SOLUTION
        masks = MagnitudePruner(sparsity, scope=scope).prune(model)
        fine_tune(model, masks, train_loader, epochs=epochs_per_step, optimizer=optimizer)
        ### END SOLUTION
        row = {"step": step, "sparsity": measure_sparsity(model)}
        if val_loader is not None:
            row["accuracy"] = evaluate(model, val_loader)
        history.append(row)
        if verbose:
            print("  ".join(f"{k} {v:.2%}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return masks, history

# %% [markdown]
# ### Test: schedule values

# %%
def test_polynomial_schedule():
    schedule = PolynomialSchedule(0.0, 0.9, steps=4)
    expected = [0.9 + (0.0 - 0.9) * (1 - t / 4) ** 3 for t in range(1, 5)]
    assert np.allclose(list(schedule), expected), list(schedule)
    assert schedule(0) == 0.0 and abs(schedule(4) - 0.9) < 1e-12 and abs(schedule(10) - 0.9) < 1e-12
    assert abs(schedule(2) - (0.9 - 0.9 / 8)) < 1e-12           # halfway: 7/8 of the way there
    assert all(a < b for a, b in zip(list(schedule), list(schedule)[1:]))
    try:
        PolynomialSchedule(0.0, 1.0, 4)
    except ValueError as err:
        assert "final" in str(err)
    else:
        raise AssertionError("final sparsity 1.0 must be rejected")
    print("PolynomialSchedule: OK")


test_polynomial_schedule()

# %% [markdown]
# ### The lottery ticket hypothesis
#
# Frankle & Carbin (2019) found that a dense network contains a sparse subnetwork that,
# **reset to its original initial weights**, trains to the same accuracy on its own: a
# "winning ticket". Iterative magnitude pruning finds it: train, prune a fraction of the
# surviving weights, rewind the survivors to their initial values (or, for larger networks,
# to their values after k training steps: Frankle et al. 2020), and repeat.

# %% nbgrader={"grade": false, "grade_id": "lottery_ticket", "solution": true}
#| export
def lottery_ticket(build_model, train_loader, rounds: int = 3, rate_per_round: float = 0.5,
                   rewind="init", epochs: int = 2, lr: float = 1e-3, val_loader=None, verbose: bool = True) -> dict:
    """Iterative magnitude pruning with rewinding.

    Args:
        build_model: callable returning a freshly initialised model.
        rounds: prune-rewind-retrain rounds after the first dense training.
        rate_per_round: fraction of the *surviving* weights of each layer pruned per round,
            so after r rounds the sparsity is 1 - (1 - rate) ** r.
        rewind: "init" (the initial weights) or an int k (the weights after k optimizer steps).
    Returns {"masks", "rewind_weights" (state_dict of the masked, rewound ticket),
             "sparsity": [per round, round 0 = dense], "accuracy": [per round]}.
    """
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    _check_fraction("rate_per_round", rate_per_round)
    if not (rewind == "init" or (isinstance(rewind, int) and not isinstance(rewind, bool) and rewind >= 0)):
        raise ValueError(f"rewind must be 'init' or a non-negative int step, got {rewind!r}")
    model = build_model()
    layers = prunable_layers(model)
    masks = {name: np.ones(layer.weight.shape, dtype=bool) for name, layer in layers.items()}
    saved = {"state": model.state_dict() if rewind == "init" else None}

    def remember(step):
        if rewind != "init" and step == rewind:
            saved["state"] = model.state_dict()

    if rewind == 0:
        saved["state"] = model.state_dict()
    result = {"sparsity": [], "accuracy": []}

    def train_and_record():
        fine_tune(model, masks, train_loader, epochs=epochs, lr=lr, on_step=remember)
        result["sparsity"].append(measure_sparsity(model))
        result["accuracy"].append(evaluate(model, val_loader) if val_loader is not None else None)
        if verbose:
            acc = result["accuracy"][-1]
            print(f"round {len(result['sparsity']) - 1}: sparsity {result['sparsity'][-1]:.2%}"
                  + (f"  accuracy {acc:.2%}" if acc is not None else ""))

    train_and_record()
    if saved["state"] is None:
        raise ValueError(f"rewind step {rewind} was never reached in {epochs} epoch(s) of training")
    for _ in range(rounds):
        ### BEGIN SOLUTION
        for name, layer in layers.items():
            alive = masks[name]
            scores = np.where(alive, np.abs(layer.weight.data), -1.0)  # dead weights rank first
            n_prune = int((~alive).sum()) + int(round(rate_per_round * alive.sum()))
            masks[name] = keep_mask(scores, n_prune)
        model.load_state_dict(saved["state"])
        apply_masks(model, masks)
        ### END SOLUTION
        train_and_record()
    ticket = build_model()
    ticket.load_state_dict(saved["state"])
    apply_masks(ticket, masks)
    result.update(masks=masks, rewind_weights=ticket.state_dict())
    return result

# %% [markdown]
# ### Test: rewinding restores the initial values of the kept weights

# %%
def test_lottery_ticket():
    x, y = load_digits("train")
    loader = DataLoader(tt.TensorDataset(x[:128], y[:128]), batch_size=64, shuffle=True, seed=0)

    def build():
        tt.manual_seed(3)
        return MLP(hidden=(16,))

    initial = build().state_dict()
    result = lottery_ticket(build, loader, rounds=2, rate_per_round=0.5, epochs=1, verbose=False)
    for name in ("1", "3"):
        keep, weights = result["masks"][name], result["rewind_weights"][f"{name}.weight"]
        assert np.array_equal(weights[keep], initial[f"{name}.weight"][keep]), "kept weights must be rewound"
        assert (weights[~keep] == 0).all()
        assert abs((~keep).mean() - (1 - 0.5 ** 2)) < 0.02, (~keep).mean()
    assert len(result["sparsity"]) == 3 and result["sparsity"][0] == 0.0
    late = lottery_ticket(build, loader, rounds=1, rate_per_round=0.5, rewind=2, epochs=1, verbose=False)
    assert not np.array_equal(late["rewind_weights"]["1.weight"][late["masks"]["1"]],
                              initial["1.weight"][late["masks"]["1"]]), "rewind=k must not restore step 0"
    print("lottery_ticket: OK")


test_lottery_ticket()

# %% [markdown]
# ### Sensitivity analysis: which layers tolerate pruning?
#
# Layers differ: the first layer sees raw pixels and the last one decides the class; the
# wide middle layers are usually the most redundant. Prune one layer at a time, measure
# the accuracy, and turn the table into per-layer targets.

# %% nbgrader={"grade": false, "grade_id": "sensitivity", "solution": true}
#| export
def sensitivity_analysis(model: Module, loader, sparsities=(0.5, 0.7, 0.9, 0.95, 0.98)) -> dict:
    """Accuracy when each prunable layer ALONE is magnitude-pruned to each sparsity.

    Returns {"baseline": dense accuracy, "table": {layer name: {sparsity: accuracy}}}.
    The model is left exactly as it was.
    """
    sparsities = [_check_fraction("sparsities", s) for s in sparsities]
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("model has no prunable layer (Linear or Conv2d)")
    _check_finite(layers)
    table = {}
    for name, layer in layers.items():
        original = layer.weight.data.copy()
        table[name] = {}
        for sparsity in sparsities:
            ### BEGIN SOLUTION
            keep = keep_mask(np.abs(original), int(round(sparsity * original.size)))
            layer.weight.data = np.where(keep, original, 0).astype(np.float32)
            table[name][sparsity] = evaluate(model, loader)
            ### END SOLUTION
        layer.weight.data = original
    return {"baseline": evaluate(model, loader), "table": table}


def sensitivity_targets(analysis: dict, max_drop: float = 0.01) -> dict:
    """{layer name: the highest tested sparsity whose accuracy drop is <= max_drop} (0.0 if
    none), ready for MagnitudePruner(sparsity=targets)."""
    baseline, tolerance = analysis["baseline"], 1e-9  # accuracies are ratios: 0.95 - 0.94 > 0.01 in floats
    return {name: max([s for s, acc in row.items() if baseline - acc <= max_drop + tolerance], default=0.0)
            for name, row in analysis["table"].items()}

# %%
def test_sensitivity():
    model = load_pretrained("mlp")
    before = model.state_dict()
    analysis = sensitivity_analysis(model, test_loader, sparsities=(0.0, 0.5))
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), "model must be restored"
    assert all(row[0.0] == analysis["baseline"] for row in analysis["table"].values())
    fake = {"baseline": 0.9, "table": {"a": {0.5: 0.9, 0.9: 0.885, 0.95: 0.7}, "b": {0.5: 0.8}}}
    assert sensitivity_targets(fake, max_drop=0.02) == {"a": 0.9, "b": 0.0}
    print("sensitivity_analysis: OK")


test_sensitivity()

# %%
analysis = sensitivity_analysis(pretrained["cnn"], test_loader)
print(format_table([{"layer": name, "shape": prunable_layers(pretrained["cnn"])[name].weight.shape,
                     **{f"accuracy at {s:.0%}": acc for s, acc in row.items()}}
                    for name, row in analysis["table"].items()]))
targets = sensitivity_targets(analysis, max_drop=0.01)
print("per-layer targets (accuracy drop <= 1%):", targets)

# %% [markdown]
# ## 3 Structured pruning
#
# <!-- SECTION 3: structured pruning (owner: helper) -->

# %% [markdown]
# ## 4 Knowledge distillation
#
# <!-- SECTION 4: knowledge distillation (owner: helper) -->

# %% [markdown]
# ## 5 Sparse inference
#
# <!-- SECTION 5: sparse inference and the compression pipeline (owner: helper) -->

# %% [markdown]
# ## 6 Hands-on projects
#
# <!-- SECTION 6: projects and summary (owner: lead) -->
