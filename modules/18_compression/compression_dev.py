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

from tinytorch.core import (Adam, Conv2d, DataLoader, Flatten, Linear, Module, Parameter, ReLU,
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
# <!-- SECTION 2: magnitude pruning (owner: lead) -->

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
