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
# > Make trained models smaller and faster: magnitude and structured pruning, knowledge
# > distillation and CSR sparse kernels.

# %% [markdown]
# Welcome to Module 18. You have built a whole deep-learning stack: tensors with autograd,
# layers, optimizers, training loops, convolutions, attention and int8 precision. Now we make
# models **cheap**: fewer bytes to ship, fewer multiply-adds to run.
#
# | technique | what it removes | saves memory | saves time on a CPU |
# |---|---|---|---|
# | magnitude pruning | individual small weights | yes, once stored sparse | only at very high sparsity |
# | structured pruning | whole filters and neurons | yes | yes: the matrices get smaller |
# | knowledge distillation | a big model, replaced by a small student | yes | yes |
# | sparse (CSR) inference | the zeros themselves, at run time | yes | it depends: we measure it |
#
# Every number here is measured when you run it, on the digits models that ship with
# TinyTorch (`tinytorch.models.load_pretrained`).
#
# **How to work through it.** Each concept is an explanation, an **exercise** (a heading
# "Exercise N.M" in the table of contents says what to build, its inputs and outputs, and
# which test checks it), a test cell, and one measured analysis. An exercise cell holds only
# the functions you write; each missing step reads `raise NotImplementedError()` under a
# `# TODO:` naming its inputs and outputs. Other code cells are given: read them, you will
# call them (argument checks such as `check_int` come from the core). The `#| export` line
# of a cell names its module of `tinytorch/optimization/compression/`; `tito export` also
# writes the package's `__init__.py`, so `from tinytorch.optimization.compression import
# MagnitudePruner` works whatever file a name lives in. Part 2,
# `compression_deployment_dev.py`, prunes gradually, saves compressed models to files and
# chains the techniques into one pipeline.

# %%
#| default_exp optimization.compression.metrics

# %% [markdown]
# ### What each module imports
# One cell per module of the package. They run first, so in this notebook the functions you
# write below replace the imported ones.

# %%
#| export optimization.compression.metrics
import numpy as np

from tinytorch.core import Conv2d, Linear, Module, layer_macs

# %%
#| export optimization.compression.pruning
import numpy as np

from tinytorch.core import (Adam, Module, check_choice, check_finite_weights, check_fraction,
                            check_int, check_loader, cross_entropy, train_epoch)
from tinytorch.optimization.compression.metrics import prunable_layers

# %%
#| export optimization.compression.structured
import numpy as np

from tinytorch.core import (Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, Parameter, ReLU,
                            Sequential, Tanh, check_choice, check_finite_weights, check_fraction,
                            check_int)
from tinytorch.optimization.compression.metrics import PRUNABLE

# %%
#| export optimization.compression.distillation
import numpy as np

from tinytorch.core import (Adam, Linear, Module, Tensor, check_fraction, check_int, check_loader,
                            check_number, cross_entropy, evaluate, kl_div, log_softmax, no_grad,
                            softmax)

# %%
#| export optimization.compression.csr
import numpy as np

from tinytorch.core import (Tensor, check_choice, check_index_array, check_int, check_matrix_shape,
                            check_real_array, init, int8_scale)

# %%
#| export optimization.compression.sparse
import copy

import numpy as np

from tinytorch.core import (Conv2d, Linear, Module, Parameter, Tensor, check_choice, check_fraction,
                            init)
from tinytorch.core.conv import im2col
from tinytorch.optimization.compression.csr import (QUANT_PER, CSRMatrix, QuantizedCSR, csr_matmul,
                                                    narrowest_uint)
from tinytorch.optimization.compression.metrics import PRUNABLE

# %%
#| export optimization.compression.summary
import numpy as np

from tinytorch.core import Module, check_int, check_loader, evaluate, median_time, no_grad
from tinytorch.optimization.compression.metrics import count_params
from tinytorch.optimization.compression.sparse import model_nbytes_compressed, sparse_layers

# %%
# Notebook-only setup: data, the pretrained models, and matplotlib if it is installed.
import contextlib
import copy
import importlib.util
import time

import tinytorch as tt
from tinytorch.core import (Adam, Conv2d, DataLoader, Dropout, Flatten, Linear, MaxPool2d, Module,
                            ReLU, Sequential, Tensor, TensorDataset, best_median_times,
                            cross_entropy, evaluate, format_table, no_grad)
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import MLP, SimpleCNN, load_pretrained

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
if HAS_MATPLOTLIB:
    import matplotlib.pyplot as plt


def one_blas_thread():
    """For speed ratios: BLAS pinned to one thread (threadpoolctl), else the default threads."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


train_loader, test_loader = digits_loaders(batch_size=32, seed=0)
X_train, y_train = load_digits("train")
X_test, y_test = load_digits("test")


def small_loader(n: int, batch_size: int = 64):
    """The first n training images, shuffled with a fixed seed: fast checks in the tests."""
    return DataLoader(TensorDataset(X_train[:n], y_train[:n]), batch_size=batch_size,
                      shuffle=True, seed=0)


def expect_value_error(call, *words):
    """Test helper: call() must raise ValueError whose message contains every one of `words`."""
    try:
        call()
    except ValueError as err:
        missing = [word for word in words if word not in str(err)]
        if missing:
            raise AssertionError(f"ValueError({str(err)!r}) should mention {missing}") from None
        return
    raise AssertionError(f"expected a ValueError mentioning {words}")


print(f"digits: {len(X_train)} train / {len(X_test)} test images of shape {X_test.shape[1:]}")

# %% [markdown]
# ## 1 Sparsity: why networks are compressible
#
# A trained network is over-parameterised: many of its weights are close to zero and
# contribute little to any output. *Sparsity* is the fraction of weights that are exactly
# zero. We count it over the **prunable** weights: the `weight` of every `Linear` and
# `Conv2d` layer. Biases are few and sensitive, so pruning code (including
# `torch.nn.utils.prune` in practice) leaves them alone. First, tools to measure.

# %%
#| export optimization.compression.metrics
PRUNABLE = (Linear, Conv2d)


def prunable_layers(model: Module) -> dict:
    """{dotted name: layer} of every Linear and Conv2d, in order, e.g. {"1": Linear, ...}."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def model_flops(model: Module, input_shape: tuple) -> int:
    """Multiply-accumulates (MACs) of all Linear and Conv2d layers for ONE input of
    `input_shape` (no batch axis), e.g. model_flops(cnn, (1, 8, 8))."""
    return int(sum(layer_macs(model, input_shape).values()))

# %% [markdown]
# ### Exercise 1.1: `count_params` and `measure_sparsity`
# - `count_params(model, nonzero=False) -> int`: the number of entries of every parameter
#   (`model.parameters()`: weights, biases, norms); with `nonzero=True` only the nonzero ones.
# - `measure_sparsity(model) -> float`: zeros / size over the prunable weights only
#   (`.weight.data` of the `prunable_layers(model)`), a fraction in [0, 1].
#
# HINTS: `np.count_nonzero`, `array.size`, `np.sum(w == 0)`. Checked by `test_metrics`.

# %% nbgrader={"grade": false, "grade_id": "metrics", "solution": true}
#| export optimization.compression.metrics
def count_params(model: Module, nonzero: bool = False) -> int:
    """Number of parameter entries of `model`; with nonzero=True only the nonzero ones."""
    # TODO: sum the sizes (or the nonzero counts) of p.data over model.parameters().
    ### BEGIN SOLUTION
    if nonzero:
        return int(sum(np.count_nonzero(p.data) for p in model.parameters()))
    return int(sum(p.data.size for p in model.parameters()))
    ### END SOLUTION


def measure_sparsity(model: Module) -> float:
    """Fraction in [0, 1] of prunable weights that are exactly zero (ValueError if the
    model has no Linear or Conv2d)."""
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("model has no prunable layer (Linear or Conv2d)")
    # TODO: zeros over all layers' weights / their total size.
    ### BEGIN SOLUTION
    zeros = sum(int(np.sum(layer.weight.data == 0)) for layer in layers.values())
    total = sum(layer.weight.data.size for layer in layers.values())
    return zeros / total
    ### END SOLUTION

# %%
def test_metrics():
    """A hand-built model where we know every count."""
    tiny = Sequential(Linear(4, 3), ReLU(), Linear(3, 2))
    tiny[0].weight.data[:] = 1.0
    tiny[0].weight.data[0, :2] = 0.0          # 2 zeros of 12
    tiny[2].weight.data[:] = 0.0              # 6 zeros of 6
    tiny[0].bias.data[:] = 0.0                # 3 zero biases: counted by count_params only
    got = count_params(tiny)
    assert got == 23, f"count_params must count weights AND biases: expected 23, got {got}"
    got = count_params(tiny, nonzero=True)
    want = 10 + int(np.count_nonzero(tiny[2].bias.data))
    assert got == want, f"count_params(nonzero=True): expected {want} nonzero entries, got {got}"
    got = measure_sparsity(tiny)
    assert abs(got - 8 / 18) < 1e-12, \
        f"measure_sparsity: 8 of the 18 Linear weights are zero (biases excluded), got {got}"
    print("metrics: OK")


test_metrics()

# %% [markdown]
# ### Analysis: the pretrained models and their weights
# Parameters, MACs per image and accuracy of the three shipped models; then how the CNN's
# weights are distributed. They are concentrated around zero: if we set the smallest to
# zero, the outputs barely move. That is the bet of magnitude pruning (LeCun et al. 1990
# "Optimal Brain Damage"; Han et al. 2015).

# %%
pretrained = {name: load_pretrained(name) for name in ("mlp", "cnn", "transformer")}
dense_accuracy = {name: evaluate(m, test_loader) for name, m in pretrained.items()}
print(format_table([{"model": name, "params": count_params(m),
                     "MACs per image": model_flops(m, (1, 8, 8)),
                     "sparsity": measure_sparsity(m), "accuracy": dense_accuracy[name]}
                    for name, m in pretrained.items()]))
cnn_layers = prunable_layers(pretrained["cnn"]).values()
magnitudes = np.abs(np.concatenate([layer.weight.data.ravel() for layer in cnn_layers]))
for q in (0.5, 0.9):
    print(f"{q:.0%} of the CNN's weights have |w| < {np.quantile(magnitudes, q):.4f} "
          f"(largest |w| = {magnitudes.max():.3f})")
if HAS_MATPLOTLIB:
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(magnitudes, bins=120, color="tab:blue")
    ax.set_title("|weights| of the pretrained SimpleCNN")
    ax.set_xlabel("|w|")
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
#   prunable weights together, so big layers with many redundant weights give up more than
#   small, sensitive ones.
# - **importance**: `"magnitude"` uses |w|; `"taylor"` uses |w · ∂L/∂w|, a first-order
#   estimate of how much the loss changes when w is set to zero (Molchanov et al. 2019),
#   summed over a few batches.
#
# Counting follows `torch.nn.utils.prune` with a float amount: a layer (or, for global
# scope, the whole model) of n weights loses exactly `round(sparsity * n)` of them.
#
# ### Exercise 2.1: `keep_mask` and `apply_masks`
# - `keep_mask(scores, n_prune) -> bool array` of `scores`' shape, `False` at exactly the
#   `n_prune` smallest scores. Ties are broken by position: the lower flat index is pruned
#   first, so the count is exact even when many scores are equal (e.g. zero).
# - `apply_masks(model, masks)`: `masks` is `{layer name: bool array of that layer's weight
#   shape}`; set each layer's weight to 0 where its mask is `False` (in place, float32).
#
# HINTS: `np.argsort(scores, axis=None, kind="stable")` ranks the flattened scores, ties in
# index order; `np.where(keep, w, 0)`. Checked by `test_magnitude_pruner`.

# %% nbgrader={"grade": false, "grade_id": "keep_mask", "solution": true}
#| export optimization.compression.pruning
def keep_mask(scores: np.ndarray, n_prune: int) -> np.ndarray:
    """Boolean mask of `scores`' shape with exactly the `n_prune` smallest scores False
    (ties: the lower flat index is pruned first)."""
    scores = np.asarray(scores)
    n_prune = check_int("n_prune", n_prune, minimum=0)
    if n_prune > scores.size:
        raise ValueError(f"n_prune must be at most scores.size = {scores.size}, got {n_prune}")
    # TODO: rank every score (a stable argsort of the flattened array), mark the n_prune
    # lowest-ranked positions False and the rest True; return it in scores' shape.
    ### BEGIN SOLUTION
    mask = np.ones(scores.size, dtype=bool)
    mask[np.argsort(scores, axis=None, kind="stable")[:n_prune]] = False
    return mask.reshape(scores.shape)
    ### END SOLUTION


def apply_masks(model: Module, masks: dict) -> None:
    """Zero (in place) the weights where masks[name] is False; masks: {layer name: bool
    array of the weight's shape, True = kept}. A float 0/1 mask is refused, not guessed at."""
    layers = prunable_layers(model)
    for name, keep in masks.items():
        keep = np.asarray(keep)
        if name not in layers or layers[name].weight.shape != keep.shape:
            raise ValueError(f"mask {name!r} does not match a prunable layer of the model")
        if keep.dtype != np.bool_:
            raise ValueError(f"mask {name!r} must be a boolean array (True = kept), "
                             f"got dtype {keep.dtype}")
        # TODO: zero the weight entries where `keep` is False (keep float32).
        ### BEGIN SOLUTION
        layers[name].weight.data = np.where(keep, layers[name].weight.data, 0).astype(np.float32)
        ### END SOLUTION

# %% [markdown]
# ### Exercise 2.2: `layer_masks` and `global_masks`
# Both take `scores = {layer name: importance array of the weight's shape}` (in model order)
# and return `{layer name: keep-mask of that shape}`, built with your `keep_mask`:
# `layer_masks(scores, fractions)` prunes `round(fractions[name] * n)` of each layer's n
# weights; `global_masks(scores, sparsity)` ranks all scores together, prunes
# `round(sparsity * total)`, then cuts the flat mask back into one piece per layer.
# HINTS: `np.concatenate([s.ravel() for s in ...])`; slice the flat mask with a running
# offset and `.reshape(shape)`. Checked by `test_magnitude_pruner`.

# %% nbgrader={"grade": false, "grade_id": "layer_global_masks", "solution": true}
#| export optimization.compression.pruning
def layer_masks(scores: dict, fractions: dict) -> dict:
    """{name: keep_mask(scores[name], round(fractions[name] * size))}, in the order of scores."""
    # TODO: one keep_mask per layer, in the order of `scores`.
    ### BEGIN SOLUTION
    return {name: keep_mask(s, int(round(fractions[name] * s.size))) for name, s in scores.items()}
    ### END SOLUTION


def global_masks(scores: dict, sparsity: float) -> dict:
    """Keep-masks pruning the round(sparsity * total) smallest scores across all layers."""
    # TODO: one keep_mask over the concatenated scores, cut back into per-layer masks.
    ### BEGIN SOLUTION
    flat = np.concatenate([s.ravel() for s in scores.values()])
    keep = keep_mask(flat, int(round(sparsity * flat.size)))
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = keep[start:start + s.size].reshape(s.shape)
        start += s.size
    return masks
    ### END SOLUTION

# %% [markdown]
# ### Exercise 2.3: `taylor_importance`
# `taylor_importance(model, data, num_batches=4, loss_fn=cross_entropy)` returns
# `{layer name: |w · ∂L/∂w|}` summed over the first `num_batches` `(inputs, labels)` batches
# of `data`. Write the loop body: clear the gradients (`model.zero_grad()`), run the model,
# back-propagate `loss_fn(outputs, labels)`, add `np.abs(layer.weight.data *
# layer.weight.grad)` of every layer to `scores[name]`. Checked by `test_magnitude_pruner`.

# %% nbgrader={"grade": false, "grade_id": "taylor_importance", "solution": true}
#| export optimization.compression.pruning
def taylor_importance(model: Module, data, num_batches: int = 4, loss_fn=cross_entropy) -> dict:
    """{layer name: |w * dL/dw|} summed over the first `num_batches` (inputs, labels) of
    `data`, in eval mode (no dropout noise); gradients are cleared afterwards."""
    if data is None:
        raise ValueError("importance='taylor' needs `data`: an iterable of (inputs, labels) "
                         "batches")
    num_batches = check_int("num_batches", num_batches, minimum=1)
    layers = prunable_layers(model)
    scores = {name: np.zeros_like(layer.weight.data) for name, layer in layers.items()}
    was_training, seen = model.training, 0
    model.eval()
    for inputs, labels in data:
        if seen == num_batches:
            break
        seen += 1
        # TODO: clear the gradients, run the model on `inputs`, back-propagate loss_fn against
        # `labels`, and add |weight * weight.grad| of every layer to scores[name].
        ### BEGIN SOLUTION
        model.zero_grad()
        loss_fn(model(inputs), labels).backward()
        for name, layer in layers.items():
            scores[name] += np.abs(layer.weight.data * layer.weight.grad)
        ### END SOLUTION
    model.zero_grad()
    model.train(was_training)
    if seen == 0:
        raise ValueError("importance='taylor': `data` yielded no batches")
    return scores

# %% [markdown]
# ### `MagnitudePruner` (given)
# It checks its arguments, scores the weights (|w| or Taylor), builds the masks with your
# Exercise 2.2 functions and applies them: **in place**, like `torch.nn.utils.prune`.

# %%
#| export optimization.compression.pruning
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

    def __init__(self, sparsity, scope: str = "layer", importance: str = "magnitude",
                 num_batches: int = 4):
        check_choice("scope", scope, self.SCOPES)
        check_choice("importance", importance, self.IMPORTANCES)
        if isinstance(sparsity, dict):
            if scope != "layer":
                raise ValueError("a per-layer sparsity dict needs scope='layer'")
            sparsity = {name: check_fraction(f"sparsity[{name!r}]", s)
                        for name, s in sparsity.items()}
        else:
            sparsity = check_fraction("sparsity", sparsity)
        self.sparsity, self.scope, self.importance = sparsity, scope, importance
        self.num_batches = check_int("num_batches", num_batches, minimum=1)
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
        """Prune `model` IN PLACE; return the masks {layer name: bool array, True = kept}
        (also kept in `self.masks`)."""
        layers = prunable_layers(model)
        if not layers:
            raise ValueError("model has no prunable layer (Linear or Conv2d)")
        check_finite_weights(layers)
        scores = self.scores(model, data)
        scores = {name: scores[name] for name in layers}
        if self.scope == "layer":
            self.masks = layer_masks(scores, self._layer_sparsity(layers))
        else:
            self.masks = global_masks(scores, self.sparsity)
        self.apply(model)
        return self.masks

    def apply(self, model: Module) -> None:
        """Multiply every masked layer's weight by its mask (pruned weights become 0)."""
        apply_masks(model, self.masks)


def prune_magnitude(model: Module, sparsity: float = 0.9, scope: str = "layer") -> dict:
    """One call: prune `model` in place by |w| and return the masks (see MagnitudePruner)."""
    return MagnitudePruner(sparsity, scope=scope).prune(model)

# %%
def test_magnitude_pruner():
    """Weights chosen by hand, so we know exactly which ones must go; Taylor vs autograd."""
    model = Sequential(Linear(4, 2, bias=False), Linear(2, 2, bias=False))
    w0 = np.array([[0.1, -0.5, 0.3, 0.8], [-0.2, 0.05, 0.9, -0.7]], dtype=np.float32)
    w1 = np.array([[0.01, 0.02], [0.6, -0.03]], dtype=np.float32)
    model[0].weight.data, model[1].weight.data = w0.copy(), w1.copy()
    # per layer, 50%: |w| 0.05, 0.1, 0.2, 0.3 go in layer 0, 0.01 and 0.02 in layer 1
    masks = MagnitudePruner(0.5, scope="layer").prune(model)
    want = np.array([[0, 1, 0, 1], [0, 0, 1, 1]], dtype=bool)
    assert (masks["0"] == want).all(), f"scope='layer': expected mask\n{want}\ngot\n{masks['0']}"
    assert (model[0].weight.data == np.where(want, w0, 0)).all(), "prune must zero the weights"
    # global, 50%: the 6 smallest of all 12 are 0.01 0.02 0.03 (layer 1) and 0.05 0.1 0.2
    model[0].weight.data, model[1].weight.data = w0.copy(), w1.copy()
    masks = MagnitudePruner(0.5, scope="global").prune(model)
    kept = (int(masks["0"].sum()), int(masks["1"].sum()))
    assert kept == (5, 1), f"scope='global' must rank both layers together: kept (5, 1), got {kept}"
    # Taylor importance equals |w * dL/dw|, the gradient computed by autograd on one batch
    tiny = Sequential(Linear(3, 2))
    x, y = Tensor(np.array([[1.0, 2.0, -1.0]])), np.array([1])
    scores = taylor_importance(tiny, [(x, y)])
    cross_entropy(tiny(x), y).backward()
    want = np.abs(tiny[0].weight.data * tiny[0].weight.grad)
    assert np.allclose(scores["0"], want), f"Taylor scores: expected\n{want}\ngot\n{scores['0']}"
    print("MagnitudePruner: OK")


test_magnitude_pruner()

# %% [markdown]
# ### Analysis: one-shot pruning of the pretrained MLP
# How much accuracy survives pruning without any retraining? Per-layer against global,
# magnitude against Taylor.

# %%
rows = []
for sparsity in (0.5, 0.8, 0.9, 0.95):
    row = {"sparsity": sparsity}
    for scope, importance in (("layer", "magnitude"), ("global", "magnitude"),
                              ("layer", "taylor")):
        model = load_pretrained("mlp")
        MagnitudePruner(sparsity, scope, importance).prune(model, data=train_loader)
        row[f"{scope}/{importance} accuracy"] = evaluate(model, test_loader)
    rows.append(row)
print(f"dense MLP accuracy: {dense_accuracy['mlp']:.2%}")
print(format_table(rows))
one_shot_90 = next(row for row in rows if row["sparsity"] == 0.9)   # for the closing summary

# %% [markdown]
# Read the table before trusting a criterion. Global ranking holds up far better than the
# same fraction in every layer. Taylor importance does poorly here: the pretrained MLP fits
# its training set almost perfectly, so ∂L/∂w is close to zero for most weights and
# |w · ∂L/∂w| is mostly noise: a first-order estimate is only as good as its gradient.

# %% [markdown]
# ### Fine-tuning without reviving pruned weights
#
# After pruning, a few epochs of training let the surviving weights compensate. The trap:
# SGD with momentum and Adam keep running averages of past gradients, so a pruned weight
# keeps moving even when its current gradient is zero. The fix belongs in the optimizer step.
#
# ### Exercise 2.4: `MaskedOptimizer`
# `MaskedOptimizer(optimizer, model, masks)` wraps any optimizer; its `step()` (given) calls
# `_masked_update()`, counts the step and calls `on_step`. Write `_masked_update()`: (1) multiply
# the `.grad` of every masked layer's weight (`self.layers[name].weight`) by its mask (skip a
# `None` grad), (2) call `self.optimizer.step()`, (3) re-apply the masks (`apply_masks`).
# `fine_tune` (given) is module 07's `train_epoch` loop driven by a masked optimizer.
# Checked by `test_fine_tune_keeps_zeros`.

# %% nbgrader={"grade": false, "grade_id": "masked_optimizer", "solution": true}
#| export optimization.compression.pruning
class MaskedOptimizer:
    """Wrap an optimizer so that pruned weights stay exactly zero.

    `step()` masks the gradients, runs the wrapped optimizer and re-applies the masks:
    momentum or Adam moments would otherwise move pruned weights even with a zero gradient.
    `on_step(n)` is called after the n-th step (used for lottery-ticket rewinding).
    """

    def __init__(self, optimizer, model: Module, masks: dict, on_step=None):
        apply_masks(model, masks)  # validates the mask names and shapes
        self.optimizer, self.model, self.masks, self.on_step = optimizer, model, masks, on_step
        self.layers = prunable_layers(model)
        self.steps = 0

    @property
    def params(self) -> list:
        """The parameters the wrapped optimizer updates."""
        return self.optimizer.params

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self) -> None:
        self._masked_update()
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps)

    def _masked_update(self) -> None:
        """One optimizer step that leaves every pruned weight at exactly zero."""
        # TODO: (1) multiply the .grad of every masked layer's weight by its mask (skip a None
        # grad), (2) let self.optimizer step, (3) re-apply the masks to the model.
        ### BEGIN SOLUTION
        for name, keep in self.masks.items():
            weight = self.layers[name].weight
            if weight.grad is not None:
                weight.grad = weight.grad * keep
        self.optimizer.step()
        apply_masks(self.model, self.masks)
        ### END SOLUTION

# %%
#| export optimization.compression.pruning
def fine_tune(model: Module, masks: dict, loader, epochs: int = 1, optimizer=None,
              lr: float = 1e-3, loss_fn=cross_entropy, on_step=None) -> dict:
    """Train `model` for `epochs` over `loader` while the weights masked out by `masks` (as
    MagnitudePruner.prune returns them) stay exactly zero. optimizer: any tinytorch optimizer
    over model.parameters() (default Adam(lr)); on_step: optional callback(step) after each
    step. Returns {"loss": [...], "accuracy": [...]} per epoch (on the training batches)."""
    check_loader("loader", loader)
    epochs = check_int("epochs", epochs, minimum=0)
    optimizer = optimizer or Adam(model.parameters(), lr=lr)
    masked = MaskedOptimizer(optimizer, model, masks, on_step)
    history = {"loss": [], "accuracy": []}
    was_training = model.training
    for _ in range(epochs):
        loss, accuracy = train_epoch(model, loader, masked, loss_fn)  # module 07's loop
        history["loss"].append(loss)
        history["accuracy"].append(accuracy)
    model.train(was_training)
    return history

# %%
def test_fine_tune_keeps_zeros():
    """SGD with momentum and Adam get a head start (state built while the weights were
    dense), then we prune and fine-tune: that state must not push pruned weights off zero."""
    loader = small_loader(256)
    for label, make in (("SGD+momentum", lambda p: tt.SGD(p, lr=0.1, momentum=0.9)),
                        ("Adam", lambda p: Adam(p, lr=1e-2))):
        tt.manual_seed(1)
        model = MLP(hidden=(32,))
        optimizer = make(model.parameters())
        tt.train_epoch(model, loader, optimizer)       # momentum / Adam moments are now nonzero
        masks = prune_magnitude(model, 0.8)
        before = model[1].weight.data.copy()
        fine_tune(model, masks, loader, epochs=2, optimizer=optimizer)
        for name, layer in prunable_layers(model).items():
            revived = int((layer.weight.data[~masks[name]] != 0).sum())
            assert revived == 0, f"{label}: {revived} pruned weights of layer {name} came back"
        assert not np.allclose(before[masks["1"]], model[1].weight.data[masks["1"]]), \
            f"{label}: the kept weights must still train"
    print("fine_tune keeps pruned weights at zero: OK")


test_fine_tune_keeps_zeros()

# %% [markdown]
# ### Analysis: 90% sparsity within 1% of dense accuracy
# One-shot *global* pruning to 90% (the table above shows why global), then a short
# fine-tune with SGD and momentum, on the MLP and the CNN.

# %%
rows = []
for name, epochs in (("mlp", 4), ("cnn", 3)):
    model = load_pretrained(name)
    start = time.perf_counter()
    masks = prune_magnitude(model, 0.9, scope="global")
    one_shot = evaluate(model, test_loader)
    fine_tune(model, masks, train_loader, epochs=epochs,
              optimizer=tt.SGD(model.parameters(), lr=0.02, momentum=0.9))
    rows.append({"model": name, "nonzeros": count_params(model, nonzero=True),
                 "params": count_params(model), "sparsity": measure_sparsity(model),
                 "dense accuracy": dense_accuracy[name], "one-shot accuracy": one_shot,
                 "fine-tuned accuracy": evaluate(model, test_loader),
                 "seconds": round(time.perf_counter() - start, 1)})
print(format_table(rows))
fine_tune_gap = {row["model"]: row["dense accuracy"] - row["fine-tuned accuracy"] for row in rows}
for name, gap in fine_tune_gap.items():
    print(f"{name}: accuracy {'within' if gap <= 0.01 else 'NOT within'} 1% of dense "
          f"(gap {gap:+.2%})")

# %% [markdown]
# ## 3 Structured pruning
#
# Magnitude pruning leaves every matrix at its full size: a 90%-sparse `Linear` still hands
# a dense (out, in) array to BLAS, which spends as long on a zero as on any other number.
# **Structured pruning** removes whole *units*: a `Conv2d` filter (one output channel) or a
# `Linear` neuron (one output row), and rebuilds the layers with fewer rows and columns: an
# ordinary dense model whose matrices are smaller, so BLAS does less work. Removing output
# unit `i` of a layer removes `weight[i]` and `bias[i]`, and the inputs it fed the next
# weight layer:
#
# | producer → consumer | what the consumer loses |
# |---|---|
# | `Conv2d` → `Conv2d` | input channel `i`: `weight[:, i]` |
# | `Conv2d` → `Flatten` → `Linear` | a *feature group*: `Flatten` lays out `(C, H, W)` channel first, so channel `i` is the `H*W` columns `i*H*W ... (i+1)*H*W - 1` |
# | `Linear` → `Linear` | column `i`: `weight[:, i]` |
#
# The layers in between (`ReLU`, `Tanh`, `MaxPool2d`, `Dropout`, `Flatten`) map a channel of
# zeros to a channel of zeros, so the smaller model computes **exactly** what the original
# computes once the removed units' weights and biases are zero: we can test that to the
# last bit. The last `Linear` (the classes) is never pruned.
#
# **Which units?** Li et al. 2017 ("Pruning Filters for Efficient ConvNets") rank the
# filters of a layer by the **L1 norm** of their weights, `sum |w|`: a filter with small
# weights produces weak activations, and the next layers can compensate during a short
# fine-tuning. We remove `round(ratio * n)` units of every layer. **Why it is fast:** a
# convolution costs `out_pixels * C_in * C_out * kh * kw` MACs; keep a third of the channels
# of two consecutive layers and the second one shrinks to `(1/3) * (1/3) = 1/9`.
#
# ### Exercise 3.1: `unit_norms` and `prune_structured`
# - `unit_norms(layer, criterion="l1") -> float64 array (out,)`: unit i owns `weight[i]`
#   (a row of a `Linear`, a filter of a `Conv2d`); `"l1"` = sum |w|, `"l2"` = sqrt(sum w²).
# - `prune_structured(layer, num_filters_to_remove, criterion="l1") -> int64 array`: the
#   **sorted** indices of the units to KEEP, after dropping the `num_filters_to_remove`
#   smallest norms; among equal norms the HIGHER index is dropped first.
#
# HINTS: `w.reshape(len(w), -1)`; `np.lexsort((-np.arange(n), norms))` orders by norm, then
# by descending index (its last key is the primary one); `np.sort`. Checked by
# `test_prune_structured`.

# %% nbgrader={"grade": false, "grade_id": "prune_structured", "solution": true}
#| export optimization.compression.structured
STRUCTURED_CRITERIA = ("l1", "l2")


def unit_norms(layer: Module, criterion: str = "l1") -> np.ndarray:
    """The Ln norm of every output unit's weights (biases excluded), float64 of shape (out,)."""
    if not isinstance(layer, (Linear, Conv2d)):
        raise ValueError(f"layer must be a Linear or Conv2d, got {type(layer).__name__}")
    check_choice("criterion", criterion, STRUCTURED_CRITERIA)
    w = layer.weight.data
    if not np.isfinite(w).all():
        raise ValueError("layer weight has NaN or inf values: its units cannot be ranked")
    # TODO: one float64 row per output unit; its sum of |w| ("l1") or sqrt of sum w**2 ("l2").
    ### BEGIN SOLUTION
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    if criterion == "l1":
        return np.abs(rows).sum(axis=1)
    return np.sqrt((rows * rows).sum(axis=1))
    ### END SOLUTION


def prune_structured(conv_layer: Module, num_filters_to_remove: int,
                     criterion: str = "l1") -> np.ndarray:
    """Sorted int64 indices of the output units (Conv2d filters or Linear neurons) to KEEP
    (ValueError unless 0 <= num_filters_to_remove < number of units). Not in place."""
    norms = unit_norms(conv_layer, criterion)
    n = len(norms)
    num_filters_to_remove = check_int("num_filters_to_remove", num_filters_to_remove)
    if not 0 <= num_filters_to_remove < n:
        raise ValueError(f"num_filters_to_remove must be in [0, {n - 1}] (at least one of the "
                         f"{n} units is kept), got {num_filters_to_remove}")
    # TODO: order the units by norm (ties: higher index first), drop the first ones, sort the rest.
    ### BEGIN SOLUTION
    order = np.lexsort((-np.arange(n), norms))  # last key is the primary one: norm ascending
    return np.sort(order[num_filters_to_remove:]).astype(np.int64)
    ### END SOLUTION

# %%
def test_prune_structured():
    """Four 2x2 filters with a tie, and a pair where L1 and L2 disagree: [1, 1, 1, 1] has
    L1 = 4 but L2 = 2, [3, 0, 0, 0] has L1 = L2 = 3."""
    conv = Conv2d(1, 4, 2)
    conv.weight.data = np.array([[1, 1, 1, 1], [3, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]],
                                dtype=np.float32).reshape(4, 1, 2, 2)
    for criterion, want in (("l1", [4, 3, 1, 1]), ("l2", [2, 3, 1, 1])):
        got = unit_norms(conv, criterion)
        assert np.allclose(got, want), f"unit_norms {criterion}: expected {want}, got {got}"
    for args, want, idea in (((1,), [0, 1, 2], "equal norms: the higher index goes first"),
                             ((3, "l1"), [0], "L1: [3,0,0,0] (3) goes before [1,1,1,1] (4)"),
                             ((3, "l2"), [1], "L2: [1,1,1,1] (2) goes before [3,0,0,0] (3)")):
        got = prune_structured(conv, *args).tolist()
        assert got == want, f"prune_structured{args}: expected sorted {want} ({idea}), got {got}"
    print("prune_structured: OK")


test_prune_structured()

# %% [markdown]
# ### Shrinking a whole network
#
# `StructuredPruner(ratio).prune(model)` (given below) walks the layers in execution order
# (into nested `Sequential`s; any other module is one opaque step) and pairs every
# `Conv2d`/`Linear` with the next weight layer past channel-wise layers. If that consumer
# reads the units directly (a row of the table above), the pair joins the **plan**
# `[(producer, consumer, group)]`; `group` is the number of consumer columns per unit (`H*W`
# after a `Flatten`, else 1). A layer followed by anything else (a `LayerNorm`, attention,
# nothing) is left alone. The kept indices are chosen from the ORIGINAL weights:
# `kept = {producer: prune_structured(...)}`; then the layers get smaller `Parameter`s.
#
# ### Exercise 3.2: `_slice_weights` and `_shrink_pairs`
# - `_slice_weights(layer, keep_out=None, keep_in=None, group=1) -> (w, b)`: the layer's
#   weight and bias arrays (`b` is `None` without a bias) cut to output units `keep_out`
#   (rows and bias entries), then to input units `keep_in`: a `Conv2d`'s input channels
#   `w[:, keep_in]`; for a `Linear`, input unit i is the `group` columns `i*group ...
#   i*group + group - 1`. `None` keeps all. `_shrink` (given) installs them as `Parameter`s.
# - `_shrink_pairs(layers, pairs, kept)`: `layers` is `{name: layer}`. Shrink each
#   producer's outputs to `kept[producer]` and each consumer's inputs to the same units,
#   with **one** `_shrink(layer, keep_out, keep_in, group)` per layer (a middle layer is both
#   consumer and producer).
#
# HINTS: `(keep[:, None] * group + np.arange(group)).ravel()` lists a Linear's columns.
# Checked by `test_structured_pruner`.

# %% nbgrader={"grade": false, "grade_id": "shrink", "solution": true}
#| export optimization.compression.structured
def _slice_weights(layer: Module, keep_out=None, keep_in=None, group: int = 1) -> tuple:
    """(weight, bias or None) of Linear/Conv2d `layer` cut to output units `keep_out` and
    input units `keep_in` (a Linear's input unit = `group` columns); None keeps all."""
    w = layer.weight.data
    b = None if layer.bias is None else layer.bias.data
    # TODO: keep rows `keep_out` of w (and entries of b); then keep input units `keep_in`.
    ### BEGIN SOLUTION
    if keep_out is not None:
        w = w[keep_out]
        b = None if b is None else b[keep_out]
    if keep_in is not None:
        if isinstance(layer, Conv2d):
            w = w[:, keep_in]
        else:
            columns = (np.asarray(keep_in)[:, None] * group + np.arange(group)).ravel()
            w = w[:, columns]
    return w, b
    ### END SOLUTION


def _shrink_pairs(layers: dict, pairs: list, kept: dict) -> None:
    """Shrink every producer of `pairs` [(producer, consumer, group)] to kept[producer] and
    its consumer's inputs to the same units: one _shrink per layer."""
    # TODO: keep_out per producer, (keep_in, group) per consumer; one _shrink per layer named.
    ### BEGIN SOLUTION
    keep_out = {producer: kept[producer] for producer, _, _ in pairs}
    keep_in = {consumer: (kept[producer], group) for producer, consumer, group in pairs}
    for name in set(keep_out) | set(keep_in):
        inputs, group = keep_in.get(name, (None, 1))
        _shrink(layers[name], keep_out.get(name), inputs, group)
    ### END SOLUTION

# %%
#| export optimization.compression.structured
def _shrink(layer: Module, keep_out=None, keep_in=None, group: int = 1) -> None:
    """Give Linear/Conv2d `layer` the smaller Parameters of `_slice_weights`, in place."""
    w, b = _slice_weights(layer, keep_out, keep_in, group)
    layer.weight = Parameter(np.ascontiguousarray(w))
    if b is not None:
        layer.bias = Parameter(np.ascontiguousarray(b))  # re-assigned after weight: order kept
    if isinstance(layer, Conv2d):
        layer.out_channels, layer.in_channels = int(w.shape[0]), int(w.shape[1])
    else:
        layer.out_features, layer.in_features = int(w.shape[0]), int(w.shape[1])


CHANNELWISE = (ReLU, Tanh, MaxPool2d, Dropout, Flatten)  # map a zero channel to a zero channel


def _is_plain_chain(module: Module) -> bool:
    """True if `module` is a Sequential whose forward is Sequential's own: its children, in
    order, ARE its computation (a subclass adding e.g. a skip connection is not)."""
    return isinstance(module, Sequential) and type(module).forward is Sequential.forward


def _execution_chain(model: Module, prefix: str = "") -> list:
    """[(dotted name, layer)] in execution order, descending into plain Sequentials."""
    chain = []
    for key, child in model.named_children():
        name = f"{prefix}.{key}" if prefix else key
        if _is_plain_chain(child):
            chain += _execution_chain(child, name)
        else:
            chain.append((name, child))
    return chain


class StructuredPruner:
    """Remove the output units with the smallest Ln norm from every prunable layer and shrink
    the layer that reads them: a smaller, dense model of the same class.

    Args:
        ratio: fraction in [0, 1) of each prunable layer's n units to remove, round(ratio * n)
            (a ratio that would remove all of them raises ValueError).
        criterion: "l1" (sum |w|, Li et al. 2017; default) or "l2".
    After prune(), `self.kept` = {layer name: sorted kept indices} for every pruned layer.
    """

    def __init__(self, ratio: float, criterion: str = "l1"):
        self.ratio = check_fraction("ratio", ratio)
        self.criterion = check_choice("criterion", criterion, STRUCTURED_CRITERIA)
        self.kept: dict = {}

    def plan(self, model: Module) -> list:
        """[(producer name, consumer name, group size)] for every prunable layer of `model`.
        A Sequential subclass with its own forward (a skip connection, say) is refused: the
        shrunk model would silently compute something else."""
        if not isinstance(model, Sequential):
            raise ValueError(f"model must be a Sequential, got {type(model).__name__}")
        if not _is_plain_chain(model):
            raise ValueError(f"{type(model).__name__} overrides Sequential.forward: "
                             "StructuredPruner cannot prove its layers run as a plain chain, "
                             "so it refuses to prune it")
        chain = _execution_chain(model)
        pairs = []
        for i, (name, layer) in enumerate(chain):
            if not isinstance(layer, (Linear, Conv2d)):
                continue
            j, flattened = i + 1, False
            while j < len(chain) and isinstance(chain[j][1], CHANNELWISE):
                flattened = flattened or isinstance(chain[j][1], Flatten)
                j += 1
            if j == len(chain):
                continue  # the classifier: nothing reads its outputs
            nxt_name, nxt = chain[j]
            if isinstance(layer, Conv2d) and isinstance(nxt, Conv2d) and not flattened \
                    and nxt.in_channels == layer.out_channels:
                pairs.append((name, nxt_name, 1))
            elif isinstance(layer, Conv2d) and isinstance(nxt, Linear) and flattened \
                    and nxt.in_features % layer.out_channels == 0:
                pairs.append((name, nxt_name, nxt.in_features // layer.out_channels))
            elif isinstance(layer, Linear) and isinstance(nxt, Linear) \
                    and nxt.in_features == layer.out_features:
                pairs.append((name, nxt_name, 1))
        return pairs

    def prune(self, model: Module) -> Module:
        """Shrink `model` IN PLACE and return it (same class, smaller dense layers): deep-copy
        it first to keep the original. If a check fails, the model is left untouched."""
        pairs = self.plan(model)
        if not pairs:
            raise ValueError("model has nothing to prune structurally: no Conv2d/Linear feeds "
                             "another Conv2d/Linear through channel-wise layers only")
        layers = dict(_execution_chain(model))
        check_finite_weights({name: layer for name, layer in layers.items()
                              if isinstance(layer, PRUNABLE)})
        kept = {}
        for name, _, _ in pairs:
            n = layers[name].weight.shape[0]
            remove = int(round(self.ratio * n))
            if remove >= n:
                raise ValueError(f"ratio {self.ratio} would remove all {n} units of layer "
                                 f"{name!r}; at least one must be kept")
            kept[name] = prune_structured(layers[name], remove, self.criterion)
        _shrink_pairs(layers, pairs, kept)
        self.kept = kept
        return model

# %%
def _masked_copy(model, kept):
    """A copy of `model` in which every unit not in kept[layer] has weights and bias 0."""
    masked = copy.deepcopy(model)
    layers = dict(masked.named_modules())
    for name, keep in kept.items():
        drop = np.setdiff1d(np.arange(layers[name].weight.shape[0]), keep)
        layers[name].weight.data[drop] = 0.0
        layers[name].bias.data[drop] = 0.0
    return masked


def test_structured_pruner():
    """All three dependencies (Conv→Conv, Conv→Flatten→Linear, Linear→Linear); the oracle is
    the original with the removed units zeroed, on a random input."""
    rng = np.random.default_rng(0)
    net = Sequential(Conv2d(1, 6, 3, padding=1), ReLU(), MaxPool2d(2),
                     Conv2d(6, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(),
                     Linear(8 * 2 * 2, 6), ReLU(), Dropout(0.1), Linear(6, 3)).eval()
    for p in net.parameters():
        p.data = rng.standard_normal(p.shape).astype(np.float32)
    pruner = StructuredPruner(0.5)
    small = pruner.prune(copy.deepcopy(net))                  # in place: keep `net` as oracle
    shapes = [tuple(small[i].weight.shape) for i in (0, 3, 7, 10)]
    want = [(3, 1, 3, 3), (4, 3, 3, 3), (3, 16), (3, 3)]
    assert shapes == want, (f"weight shapes of layers 0, 3, 7, 10: expected {want}, got {shapes}"
                            " (does each consumer lose the inputs of its producer's units?)")
    x = Tensor(rng.standard_normal((5, 1, 8, 8)).astype(np.float32))
    with no_grad():
        want, got = _masked_copy(net, pruner.kept)(x).data, small(x).data
    assert np.allclose(got, want, atol=1e-5), \
        (f"the pruned model differs from the masked original by {np.abs(got - want).max():.2e}:"
         " check the feature-group column order after Flatten and the bias slicing")
    print("StructuredPruner: OK")


test_structured_pruner()

# %% [markdown]
# ### Analysis: how much faster is the CNN with two thirds of its filters gone?
# The pretrained `SimpleCNN` spends almost all its time in its second convolution (64 → 128
# channels). We remove two thirds of the filters of both convolutions (64 → 21, 128 → 43) and
# fine-tune for four short epochs with a step-decay learning rate. The control: a copy
# magnitude-pruned to 90% (not fine-tuned: only its speed matters). Timing: the 359 test
# images as one batch and a single image, interleaved, the fastest of five medians, BLAS
# pinned to one thread by `threadpoolctl` (the batch also with the default threads).

# %%
def timed(models: dict, x, repeats: int = 5, threads=one_blas_thread) -> dict:
    """{name: seconds per forward pass on x}: core `best_median_times`, the models interleaved,
    the fastest of five medians of `repeats` passes, BLAS pinned to one thread if possible."""
    passes = {name: (lambda model=model: model(x)) for name, model in models.items()}
    with no_grad(), threads():
        return best_median_times(passes, 5, repeats)


cnn_dense = load_pretrained("cnn")
cnn_small = StructuredPruner(2 / 3).prune(copy.deepcopy(cnn_dense))  # in place: copy first
accuracy_no_ft = evaluate(cnn_small, test_loader)
ft_loader, _ = digits_loaders(batch_size=32, seed=0)    # a fresh loader: reproducible batches
optimizer = Adam(cnn_small.parameters(), lr=1e-3)
for lr in (1e-3, 1e-3, 3e-4, 1e-4):                      # step decay: settle at a small lr
    optimizer.lr = lr
    tt.train_epoch(cnn_small, ft_loader, optimizer)
cnn_small.eval()
cnn_sparse = copy.deepcopy(cnn_dense)
prune_magnitude(cnn_sparse, 0.9)                           # section 2: zeros, same shapes
cnn_models = {"dense": cnn_dense, "magnitude 90%": cnn_sparse, "structured 2/3": cnn_small}
batch_times = timed(cnn_models, Tensor(X_test))
single_times = timed(cnn_models, Tensor(X_test[:1]), repeats=21)
default_threads = timed(cnn_models, Tensor(X_test), threads=contextlib.nullcontext)
rows = [{"model": name, "nonzero params": count_params(model, nonzero=True),
         "MACs per image": model_flops(model, (1, 8, 8)),
         "batch 359 ms": 1e3 * batch_times[name], "batch 1 ms": 1e3 * single_times[name],
         "accuracy": evaluate(model, test_loader)} for name, model in cnn_models.items()]
print(format_table(rows))
cnn_speedup = batch_times["dense"] / batch_times["structured 2/3"]
default_speedup = default_threads["dense"] / default_threads["structured 2/3"]
cnn_drop = rows[0]["accuracy"] - rows[2]["accuracy"]
print(f"structured 2/3: accuracy {accuracy_no_ft:.2%} right after pruning, "
      f"{rows[2]['accuracy']:.2%} after fine-tuning ({-cnn_drop:+.2%} vs dense); "
      f"batch {cnn_speedup:.2f}x faster ({default_speedup:.2f}x with the default BLAS threads), "
      f"batch 1 "
      f"{single_times['dense'] / single_times['structured 2/3']:.2f}x faster, "
      f"{rows[0]['MACs per image'] / rows[2]['MACs per image']:.1f}x fewer MACs")

# %% [markdown]
# Magnitude pruning removed 90% of the weights, yet the dense kernels take as long as before:
# zeros are multiplied like any other number. Structured pruning cut the MACs about 8x; the
# wall time falls by less, because what does not shrink (im2col copies, pooling, Python and
# NumPy call overhead) becomes a larger share, and a single image is almost all overhead.
# `python -m benchmarks.bench_structured` sweeps the ratio (docs/results/structured.png).

# %% [markdown]
# ## 4 Knowledge distillation
#
# Pruning shrinks a trained network in place. **Knowledge distillation** trains a separate,
# much smaller **student** to imitate a large trained **teacher** (Buciluă, Caruana &
# Niculescu-Mizil 2006; Hinton, Vinyals & Dean 2015 "Distilling the Knowledge in a Neural
# Network"). The student can have any architecture: an MLP can learn from a CNN, a CNN from
# a transformer; only the logits are shared.
#
# **Soft targets.** A label says "this is a 7". The teacher says more: p(7) = 0.98,
# p(1) = 0.015, p(9) = 0.004, ... Which wrong classes get the leftover probability tells the
# student how the teacher *generalises* (Hinton et al.'s *dark knowledge*): a one-hot label
# carries at most log2(10) ≈ 3.3 bits per image, a full distribution far more.
#
# **Temperature.** A confident teacher hides that information: at T = 1 the pretrained MLP
# puts nearly all its probability on one class for most images. Dividing the logits by T > 1
# before the softmax, $p_i(T) = \exp(z_i / T) / \sum_j \exp(z_j / T)$, softens the
# distribution. Teacher and student use the same T in the soft term; the student predicts at
# T = 1.
#
# **The loss.** With student logits s, teacher logits t, labels y, q = p(s/T), p = p(t/T):
#
# $$L = \alpha\, T^2\, \mathrm{KL}\big(p \,\|\, q\big) + (1 - \alpha)\, \mathrm{CE}(s, y),
# \qquad \mathrm{KL}(p\|q) = \frac{1}{N}\sum_{n}\sum_i p_{ni} \log\frac{p_{ni}}{q_{ni}}.$$
#
# **Why T².** For one sample, ∂KL/∂s_i = (q_i − p_i) / T, and for T large compared to the
# logits q_i − p_i ≈ (s_i − t_i) / (C·T) (C classes, zero-mean logits): the gradient shrinks
# like 1/T². The factor T² cancels that, so α keeps meaning the same mix at any temperature.
#
# **In PyTorch** (our module 04 `kl_div` has the same signature):
#
# ```python
# soft = F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean")
# loss = alpha * T * T * soft + (1 - alpha) * F.cross_entropy(s, y)
# ```
# Three classic bugs: swapping the arguments (the *first* is the student's log-probabilities),
# `reduction="mean"` (it averages over N·C elements: C times too small) and forgetting T².
#
# ### Exercise 4.1: `kd_loss`
# `kd_loss(student_logits, teacher_logits, labels, temperature, alpha) -> scalar Tensor`:
# `student_logits` a Tensor (N, C) (gradients flow into it), `teacher_logits` a plain array
# (N, C) (a constant), `labels` (N,) class indices; the loss above.
# HINTS: `softmax(Tensor(teacher / T)).data` (soft targets as an array),
# `log_softmax(student_logits * (1 / T))`, `kl_div(log_q, p, reduction="batchmean")`,
# `cross_entropy`; combine Tensors with `*` and `+`. Checked by `test_kd_loss_by_hand`,
# `test_kd_gradient` and `test_t_squared_scaling`.

# %% nbgrader={"grade": false, "grade_id": "kd_loss", "solution": true}
#| export optimization.compression.distillation
def kd_loss(student_logits: Tensor, teacher_logits: np.ndarray, labels, temperature: float,
            alpha: float) -> Tensor:
    """alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T)) (batchmean)
    + (1 - alpha) * cross_entropy(student, labels), a scalar Tensor; T = temperature."""
    # TODO: alpha * T**2 * kl_div(log_softmax(student / T), softmax(teacher / T), "batchmean")
    # + (1 - alpha) * cross_entropy(student, labels).
    ### BEGIN SOLUTION
    T = temperature
    soft_targets = softmax(Tensor(teacher_logits / T, dtype=teacher_logits.dtype)).data
    log_student = log_softmax(student_logits * (1.0 / T))
    soft = kl_div(log_student, soft_targets, reduction="batchmean")
    hard = cross_entropy(student_logits, labels)
    return soft * (alpha * T * T) + hard * (1.0 - alpha)
    ### END SOLUTION

# %% [markdown]
# ### `KnowledgeDistiller` (given)
# It checks the arguments and calls your `kd_loss`; `train` calls `distill_step` (Exercise
# 4.2) for every batch. **A frozen teacher** runs in eval mode (no dropout: deterministic
# targets) and under `no_grad`: no graph, no gradient, and the optimizer holds only the
# student's parameters.

# %%
#| export optimization.compression.distillation
def _num_classes(model: Module):
    """out_features of the last Linear layer in `model` (its number of classes), or None."""
    linears = [layer for layer in model.modules() if isinstance(layer, Linear)]
    return linears[-1].out_features if linears else None


class KnowledgeDistiller:
    """Train a small `student` to imitate a trained `teacher` (both map a batch to logits
    (N, C), same C; the teacher is never updated) with `kd_loss`: `temperature` T > 0
    (default 4.0), `alpha` in [0, 1] the weight of the soft term (default 0.5; 0 = labels
    only). ValueError for a bad T or alpha, or class counts that differ."""

    def __init__(self, teacher: Module, student: Module, temperature: float = 4.0,
                 alpha: float = 0.5):
        for name, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, Module):
                raise ValueError(f"{name} must be a Module, got {type(model).__name__}")
        if teacher is student:
            raise ValueError("teacher and student must be two different models")
        temperature = check_number("temperature", temperature)  # refuses strings, None, NaN
        if temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        alpha = check_fraction("alpha", alpha, high_inclusive=True)
        classes = _num_classes(teacher), _num_classes(student)
        if None not in classes and classes[0] != classes[1]:
            raise ValueError(f"teacher predicts {classes[0]} classes but student predicts "
                             f"{classes[1]}: they must predict the same classes")
        self.teacher, self.student = teacher, student
        self.temperature, self.alpha = temperature, alpha

    def loss(self, student_logits: Tensor, teacher_logits, labels) -> Tensor:
        """kd_loss of student_logits (Tensor (N, C)), teacher_logits (Tensor or ndarray
        (N, C), a constant) and labels (N,), a scalar Tensor."""
        if not isinstance(student_logits, Tensor):
            student_logits = Tensor(student_logits)
        teacher = teacher_logits.data if isinstance(teacher_logits, Tensor) else teacher_logits
        teacher = np.asarray(teacher, dtype=student_logits.dtype)
        if student_logits.ndim != 2 or teacher.ndim != 2:
            raise ValueError(f"logits must be (N, C), got student {student_logits.shape} and "
                             f"teacher {teacher.shape}")
        if teacher.shape[1] != student_logits.shape[1]:
            raise ValueError(f"teacher logits have {teacher.shape[1]} classes but student "
                             f"logits have {student_logits.shape[1]}: they must predict the "
                             "same classes")
        if teacher.shape[0] != student_logits.shape[0]:
            raise ValueError(f"teacher logits have {teacher.shape[0]} rows but student logits "
                             f"have {student_logits.shape[0]}: use the same batch")
        return kd_loss(student_logits, teacher, labels, self.temperature, self.alpha)

    def train(self, train_loader, epochs: int, optimizer, val_loader=None,
              verbose: bool = True) -> dict:
        """Distill for `epochs` passes over `train_loader` with `optimizer` (student
        parameters only; a MaskedOptimizer works too). The teacher's mode is restored, the
        student left in train mode. Returns {"loss": [...], "accuracy": [...]} per epoch on
        the training batches, plus "val_accuracy" if `val_loader` is given."""
        epochs = check_int("epochs", epochs, minimum=0)
        teacher_ids = {id(p) for p in self.teacher.parameters()}
        if any(id(p) in teacher_ids for p in optimizer.params):
            raise ValueError("optimizer holds teacher parameters: build it from "
                             "student.parameters() only")
        check_loader("train_loader", train_loader)
        history = {"loss": [], "accuracy": []}
        if val_loader is not None:
            history["val_accuracy"] = []
        teacher_was_training = self.teacher.training
        self.teacher.eval()
        try:
            for epoch in range(1, epochs + 1):
                self.student.train()
                total_loss, correct, seen = 0.0, 0, 0
                for x, y in train_loader:
                    x = x if isinstance(x, Tensor) else Tensor(x)
                    y = y if isinstance(y, Tensor) else Tensor(np.asarray(y))
                    loss, student_logits = distill_step(self, optimizer, x, y)
                    total_loss += loss.item() * len(y)
                    correct += int((student_logits.data.argmax(axis=1) == y.data).sum())
                    seen += len(y)
                if seen == 0:
                    raise ValueError("train_loader yielded no (inputs, labels) batch")
                history["loss"].append(total_loss / seen)
                history["accuracy"].append(correct / seen)
                if val_loader is not None:
                    history["val_accuracy"].append(evaluate(self.student, val_loader))
                if verbose:
                    print(f"distill epoch {epoch}/{epochs}  "
                          + "  ".join(f"{key} {values[-1]:.4f}" for key, values in history.items()))
        finally:
            self.teacher.train(teacher_was_training)
        return history

# %% [markdown]
# ### Exercise 4.2: `distill_step`
# `distill_step(distiller, optimizer, x, y) -> (loss, student_logits)`, one step on one batch
# of Tensors: the teacher's logits as an array under `no_grad()` (`distiller.teacher(x).data`),
# the student's with a graph, `loss = distiller.loss(student_logits, teacher_logits, y)`, then
# `zero_grad`, `backward`, `step`. `train` uses both returned Tensors for its running loss and
# accuracy. Checked by `test_teacher_frozen`.

# %% nbgrader={"grade": false, "grade_id": "distill_step", "solution": true}
#| export optimization.compression.distillation
def distill_step(distiller: KnowledgeDistiller, optimizer, x: Tensor, y: Tensor) -> tuple:
    """One distillation step on batch (x, y); returns (loss, student_logits) as Tensors."""
    # TODO: teacher logits under no_grad, student logits, loss; zero_grad, backward, step.
    ### BEGIN SOLUTION
    with no_grad():
        teacher_logits = distiller.teacher(x).data
    student_logits = distiller.student(x)
    loss = distiller.loss(student_logits, teacher_logits, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss, student_logits
    ### END SOLUTION

# %%
#| export optimization.compression.distillation
def distill(teacher: Module, student: Module, data_loader, epochs: int = 10,
            temperature: float = 4.0, alpha: float = 0.5, lr: float = 1e-3, val_loader=None,
            verbose: bool = True, return_history: bool = False):
    """Distill `teacher` into `student` (IN PLACE) with Adam(lr); returns the student, or
    (student, per-epoch history) with return_history=True."""
    distiller = KnowledgeDistiller(teacher, student, temperature=temperature, alpha=alpha)
    optimizer = Adam(student.parameters(), lr=lr)
    history = distiller.train(data_loader, epochs, optimizer, val_loader=val_loader,
                              verbose=verbose)
    return (student, history) if return_history else student

# %%
def np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_kd_loss_by_hand():
    """A 2x3 example in plain NumPy: KL summed over classes, averaged over the 2 rows."""
    s = np.array([[2.0, -1.0, 0.5], [0.0, 1.5, -0.5]])      # student logits
    t = np.array([[3.0, 0.0, -2.0], [-1.0, 2.5, 1.0]])      # teacher logits
    y, T, alpha = np.array([0, 2]), 2.0, 0.7
    p, q = np_softmax(t / T), np_softmax(s / T)
    kl = np.sum(p * np.log(p / q)) / 2                        # "batchmean": sum, then / N
    ce = -np.mean(np.log(np_softmax(s)[[0, 1], y]))
    want = alpha * T ** 2 * kl + (1 - alpha) * ce
    got = KnowledgeDistiller(Linear(4, 3), Linear(4, 3), T, alpha).loss(
        Tensor(s, dtype=np.float64), t, y).item()
    no_t2 = alpha * kl + (1 - alpha) * ce
    assert abs(got - no_t2) > 1e-6, f"got {got}: the soft term is missing its T² factor"
    assert abs(got - want) < 1e-10, \
        f"KD loss: expected {want:.6f} (soft {T ** 2 * kl:.6f}, hard {ce:.6f}), got {got:.6f}"
    print(f"KD loss by hand: {want:.6f}: OK")


test_kd_loss_by_hand()

# %%
def test_kd_gradient():
    """Against the closed form (alpha·T·(q − p) + (1 − alpha)·(softmax(s) − onehot(y))) / N:
    teacher logits that require grad must receive none."""
    rng = np.random.default_rng(0)
    s, t, y = rng.standard_normal((4, 5)), 2 * rng.standard_normal((4, 5)), np.array([0, 3, 1, 4])
    T, alpha = 3.0, 0.6
    student = Tensor(s, requires_grad=True, dtype=np.float64)
    teacher = Tensor(t, requires_grad=True, dtype=np.float64)
    KnowledgeDistiller(Linear(2, 5), Linear(2, 5), T, alpha).loss(student, teacher, y).backward()
    assert teacher.grad is None, "teacher logits received a gradient: treat them as constants"
    want = (alpha * T * (np_softmax(s / T) - np_softmax(t / T))
            + (1 - alpha) * (np_softmax(s) - np.eye(5)[y])) / len(y)
    assert np.allclose(student.grad, want, atol=1e-12), \
        f"student gradient differs from the closed form by {np.abs(student.grad - want).max():.1e}"
    print("KD gradient: OK")


test_kd_gradient()

# %%
def test_t_squared_scaling():
    """The soft term alone (alpha = 1), T = 1..8: with T² the gradient norm keeps its scale;
    without it (divided by T²) it falls like 1/T²."""
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((4, 10)), rng.standard_normal((4, 10))
    rows = []
    for T in (1, 2, 4, 8):
        student = Tensor(s, requires_grad=True, dtype=np.float64)
        distiller = KnowledgeDistiller(Linear(2, 10), Linear(2, 10), temperature=T, alpha=1.0)
        distiller.loss(student, t, np.zeros(4, dtype=np.int64)).backward()
        norm = float(np.linalg.norm(student.grad))
        rows.append({"T": T, "|grad| with T²": norm, "|grad| without T²": norm / T ** 2})
    print(format_table(rows))
    norms = [row["|grad| with T²"] for row in rows]
    assert max(norms) / min(norms) < 1.5, f"with T² the gradient should keep its scale: {norms}"
    print("T² scaling: OK")


test_t_squared_scaling()

# %%
def test_teacher_frozen():
    """A forward hook records the teacher's mode at every call: always eval; its weights
    must stay bit-for-bit unchanged and without `.grad`."""
    tt.manual_seed(0)
    teacher, student = MLP(hidden=(32,)), MLP(hidden=(16,))
    before = {name: value.copy() for name, value in teacher.state_dict().items()}
    student_before = student[1].weight.data.copy()
    modes = []
    teacher.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    teacher.train()
    distill(teacher, student, small_loader(96, batch_size=32), epochs=2, lr=1e-2, verbose=False)
    assert modes and not any(modes), "the teacher must run in eval mode during distillation"
    assert teacher.training, "the teacher's own mode must be restored after training"
    for name, param in teacher.named_parameters():
        assert np.array_equal(param.data, before[name]), f"teacher weight {name} changed"
        assert param.grad is None, f"teacher weight {name} received a gradient (use no_grad)"
    assert not np.allclose(student[1].weight.data, student_before), "the student did not train"
    print("teacher frozen: OK")


def test_kd_validation():
    teacher, student = MLP(hidden=(8,)), MLP(hidden=(4,))
    expect_value_error(lambda: KnowledgeDistiller(teacher, student, temperature=0), "temperature")
    expect_value_error(lambda: KnowledgeDistiller(teacher, MLP(hidden=(4,), num_classes=5)),
                       "10", "5")
    print("KD validation: OK")


test_teacher_frozen()
test_kd_validation()

# %% [markdown]
# ### Exercise 4.3 (project): distill the TinyTransformer into a small SimpleCNN
# Write `distilled_cnn(teacher, images, labels, epochs, seed=0) -> SimpleCNN`: seed the
# initial weights with `tt.manual_seed(seed)`, build `SimpleCNN(channels=(8, 16))` (8 and 16
# channels instead of 64 and 128), and `distill` the teacher into it on a
# `DataLoader(TensorDataset(images, labels), batch_size=32, shuffle=True, seed=seed)` for
# `epochs` epochs with `temperature=4.0, alpha=0.9, lr=1e-2, verbose=False`; return the
# student. There is no hidden test: the analysis below runs it.

# %% nbgrader={"grade": false, "grade_id": "project_distilled_cnn", "solution": true}
def distilled_cnn(teacher: Module, images, labels, epochs: int, seed: int = 0) -> Module:
    """A SimpleCNN(channels=(8, 16)) distilled from `teacher` on (images, labels)."""
    # TODO: seed, build the student, a seeded DataLoader, distill, return the student.
    ### BEGIN SOLUTION
    tt.manual_seed(seed)
    student = SimpleCNN(channels=(8, 16))
    loader = DataLoader(TensorDataset(images, labels), batch_size=32, shuffle=True, seed=seed)
    return distill(teacher, student, loader, epochs, temperature=4.0, alpha=0.9, lr=1e-2,
                   verbose=False)
    ### END SOLUTION

# %% [markdown]
# ### Analysis: what do the soft targets buy?
# The same student trained twice from the same initial weights, batches and epochs: on the
# labels only, and distilled from the TinyTransformer (which saw every label). First with
# 100 labelled images (10 per class), then with all of them. One test image is 0.28%.

# %%
def labelled_subset(n, seed=0):
    """n // 10 training images per class (a seeded choice), as (images, labels)."""
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.permutation(np.flatnonzero(y_train == c))[: n // 10]
                            for c in range(10)])
    return X_train[index], y_train[index]


kd_teacher = load_pretrained("transformer")
print(f"teacher TinyTransformer: {count_params(kd_teacher):,} parameters, accuracy "
      f"{dense_accuracy['transformer']:.2%}; student SimpleCNN(8, 16): "
      f"{count_params(SimpleCNN(channels=(8, 16))):,} parameters")
kd_rows = []
for images, labels, epochs in ((*labelled_subset(100), 60), (X_train, y_train, 8)):
    tt.manual_seed(0)
    baseline = SimpleCNN(channels=(8, 16))
    loader = DataLoader(TensorDataset(images, labels), batch_size=32, shuffle=True, seed=0)
    tt.fit(baseline, loader, Adam(baseline.parameters(), lr=1e-2), epochs, verbose=False)
    distilled_student = distilled_cnn(kd_teacher, images, labels, epochs)  # the last is kept
    labels_only = evaluate(baseline, test_loader)
    distilled = evaluate(distilled_student, test_loader)
    kd_rows.append({"labelled images": len(images), "epochs": epochs,
                    "labels-only accuracy": labels_only, "distilled accuracy": distilled,
                    "gain (points)": round(100 * (distilled - labels_only), 2)})
print(format_table(kd_rows))

# %% [markdown]
# When labels are scarce, the soft targets are worth a lot: every image teaches the student
# about all ten classes, not one. With every label the gain shrinks, and with alpha = 0.9 the
# distilled student can even end up behind. `python -m benchmarks.bench_distillation` sweeps
# temperature, alpha and the number of labels over five seeds (docs/results/distillation.png).

# %% [markdown]
# ## 5 Sparse inference
#
# Pruning leaves zeros in a dense array: the file is just as big and `x @ W.T` does exactly
# the same work, multiplying by every zero. To cash in the sparsity we must **store and
# compute with the nonzeros only**.
#
# ### The CSR format
#
# *Compressed Sparse Row* (CSR, the format of `scipy.sparse.csr_matrix` and
# `torch.sparse_csr_tensor`) stores a `(rows, cols)` matrix with `nnz` nonzeros as three
# 1-D arrays:
#
# | array | length | holds |
# |---|---|---|
# | `data` | nnz | the nonzero values, row by row, left to right |
# | `indices` | nnz | the column of each value |
# | `indptr` | rows + 1 | row `r` owns `data[indptr[r]:indptr[r+1]]`; `indptr[0] = 0`, `indptr[-1] = nnz` |
#
# ```
#     [[0, 5, 0, 0],         data    = [5, 1, 2, 3]
# W =  [0, 0, 0, 0],   ->    indices = [1, 0, 3, 3]
#      [1, 0, 0, 2],         indptr  = [0, 1, 1, 3, 4]   (row 1 is empty: indptr[1] == indptr[2])
#      [0, 0, 0, 3]]
# ```
#
# **Memory.** Dense float32 costs `4 * rows * cols` bytes; CSR `nnz * (value bytes + index
# bytes) + (rows + 1) * pointer bytes`: 8 bytes per nonzero with float32 values and int32
# indices (it pays off below 50% density), 2-3 with int8 values and uint8/uint16 indices.
# The **canonical** CSR (columns sorted within each row, no stored zeros) is unique, so ours
# must equal scipy's array for array. The `CSRMatrix` constructor (given below) **validates**
# every invariant: a wrong `indptr` from a file would read other rows or past the arrays.
#
# ### Exercise 5.1: `csr_arrays` and `csr_to_dense`
# - `csr_arrays(W) -> (data, indices, indptr)`: the canonical CSR arrays of the 2-D array
#   `W` (any integer dtype: `CSRMatrix.from_dense` casts them).
# - `csr_to_dense(A) -> array` of `A.shape`: every stored value added at (its row, its
#   column); `A.row_ids()` (given) is the row of every stored value.
#
# HINTS: `np.nonzero(W)` lists the nonzeros in row-major (canonical) order;
# `np.bincount(rows, minlength=n_rows)` counts them per row, empty rows included;
# `np.cumsum`; `np.add.at(out, (rows, cols), values)` sums duplicates (a fancy assignment
# would keep the last one). No Python loop. Checked by `test_csr_matrix`.

# %%
#| export optimization.compression.csr
def narrowest_uint(max_value: int) -> np.dtype:
    """The smallest of uint8/uint16/uint32/uint64 that can hold every value in [0, max_value]."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"max_value {max_value} does not fit in 64 bits")


def read_only_copy(array: np.ndarray) -> np.ndarray:
    """A copy of `array` that cannot be written to: callers may keep mutating theirs."""
    array = np.array(array)
    array.flags.writeable = False
    return array

# %% nbgrader={"grade": false, "grade_id": "csr_arrays", "solution": true}
#| export optimization.compression.csr
def csr_arrays(W: np.ndarray) -> tuple:
    """(data, indices, indptr) of the canonical CSR of the 2-D array W: the nonzero values
    in row-major order, their columns, and indptr = [0, cumulative nonzeros per row]."""
    rows = W.shape[0]
    # TODO: nonzero values and their columns in row-major order; indptr from counts per row.
    ### BEGIN SOLUTION
    row_of, indices = np.nonzero(W)                  # row-major order = canonical order
    data = W[row_of, indices]
    counts = np.bincount(row_of, minlength=rows)     # nonzeros per row (0 for empty rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return data, indices, indptr
    ### END SOLUTION


def csr_to_dense(A: "CSRMatrix") -> np.ndarray:
    """The (rows, cols) array of A (float32 if its values are int8); duplicates are summed."""
    dtype = np.float32 if A.data.dtype == np.int8 else A.data.dtype
    out = np.zeros(A.shape, dtype=dtype)
    # TODO: add every stored value into `out` at (its row, its column) with np.add.at.
    ### BEGIN SOLUTION
    np.add.at(out, (A.row_ids(), A.indices), A.data.astype(dtype))
    return out
    ### END SOLUTION

# %%
#| export optimization.compression.csr
class CSRMatrix:
    """A sparse (rows, cols) matrix in CSR form (scipy's csr_matrix layout): data (nnz,)
    float or int8 values; indices (nnz,) integer columns in [0, cols); indptr (rows + 1,)
    integer offsets, 0 first, non-decreasing, nnz last; shape (rows, cols). Every invariant
    is checked (ValueError naming the argument); the arrays are copied and read-only."""

    def __init__(self, data, indices, indptr, shape):
        rows, cols = check_matrix_shape("shape", shape)
        data = np.asarray(data)
        if data.ndim != 1:
            raise ValueError(f"data must be a 1-D array, got shape {data.shape}")
        if data.dtype.kind != "f" and data.dtype != np.int8:
            raise ValueError(f"data must have a float or int8 dtype, got {data.dtype}")
        indices = check_index_array("indices", indices)
        indptr = check_index_array("indptr", indptr)
        if len(indptr) != rows + 1:
            raise ValueError(f"indptr must have length rows + 1 = {rows + 1}, got {len(indptr)}")
        ptr = indptr.astype(np.int64)  # signed: differences of unsigned arrays would wrap around
        if ptr[0] != 0:
            raise ValueError(f"indptr must start at 0, got {ptr[0]}")
        if np.any(np.diff(ptr) < 0):
            raise ValueError("indptr must be non-decreasing "
                             "(row r has indptr[r+1] - indptr[r] >= 0 values)")
        if ptr[-1] != len(indices):
            raise ValueError(f"indptr must end at nnz = len(indices) = {len(indices)}, "
                             f"got {ptr[-1]}")
        if len(data) != len(indices):
            raise ValueError(f"data and indices must have the same length nnz, got {len(data)} "
                             f"and {len(indices)}")
        if len(indices) and (indices.min() < 0 or indices.max() >= cols):
            raise ValueError(f"indices must lie in [0, cols = {cols}), got range "
                             f"[{indices.min()}, {indices.max()}]")
        self.data, self.indices = read_only_copy(data), read_only_copy(indices)
        self.indptr = read_only_copy(indptr)
        self.shape = (rows, cols)
        self._padded = None  # this matrix's own ELLPACK cache, built by padded_rows()
        self._segments = None  # this matrix's flat kernel cache, built by segments()

    @classmethod
    def empty(cls, shape) -> "CSRMatrix":
        """The all-zero float32 matrix of `shape` (nnz = 0), built without a dense array:
        memory O(rows), allocated through tinytorch.core.init so file loading can bound it."""
        rows, cols = check_matrix_shape("shape", shape)
        return cls(init.zeros((0,)), init.zeros((0,), dtype=np.int32),
                   init.zeros((rows + 1,), dtype=np.int32), (rows, cols))

    @classmethod
    def from_dense(cls, W) -> "CSRMatrix":
        """Canonical CSR of a 2-D real array or Tensor (scipy's arrays; int32 indices, int64
        if needed). Float and int8 values keep their dtype, other ints and bools become
        float32; complex or non-numeric arrays are refused (ValueError)."""
        W = np.asarray(W.data if isinstance(W, Tensor) else W)
        if W.dtype.kind not in "biuf":
            raise ValueError(f"W must be a real (float, integer or bool) array, got {W.dtype}")
        if W.ndim != 2:
            raise ValueError(f"W must be a 2-D array, got shape {W.shape}")
        if W.dtype.kind != "f" and W.dtype != np.int8:
            W = W.astype(np.float32)
        index_dtype = np.int32 if max(*W.shape, W.size) < 2 ** 31 else np.int64
        data, indices, indptr = csr_arrays(W)
        return cls(data, indices.astype(index_dtype), indptr.astype(index_dtype), W.shape)

    @property
    def nnz(self) -> int:
        return int(len(self.indices))

    @property
    def density(self) -> float:
        """nnz / (rows * cols); 0.0 for an empty shape."""
        size = self.shape[0] * self.shape[1]
        return self.nnz / size if size else 0.0

    @property
    def nbytes(self) -> int:
        """Bytes of the three arrays: data + indices + indptr."""
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

    def row_ids(self) -> np.ndarray:
        """(nnz,) row of every stored value (the inverse of indptr)."""
        return np.repeat(np.arange(self.shape[0]), np.diff(self.indptr.astype(np.int64)))

    def padded_rows(self) -> tuple:
        """The ELLPACK form (idx, val) of `ellpack`, built once and cached read-only."""
        if self._padded is None:
            idx, val = ellpack(self)
            idx.flags.writeable = val.flags.writeable = False  # shared by every later product
            self._padded = (idx, val)
        return self._padded

    def segments(self) -> tuple:
        """The flat arrays of `row_segments`, built once and cached read-only."""
        if self._segments is None:
            parts = row_segments(self)
            for array in parts:
                if array is not None:
                    array.flags.writeable = False  # shared by every later product
            self._segments = parts
        return self._segments

    def to_dense(self) -> np.ndarray:
        """The (rows, cols) array (float32 if the values are int8); duplicates are summed."""
        return csr_to_dense(self)

    def rmatmul_T(self, X) -> np.ndarray:
        """X @ A.T for X (batch, cols) -> (batch, rows), what a Linear computes: (A @ X.T).T
        with X.T made contiguous, as the kernel gathers ROWS of its (cols, batch) operand."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (batch, cols), got shape {X.shape}")
        return np.ascontiguousarray(csr_matmul(self, np.ascontiguousarray(X.T)).T)

    def quantize(self, per: str = "row") -> "QuantizedCSR":
        """int8 storage of this matrix: see QuantizedCSR.from_csr."""
        return QuantizedCSR.from_csr(self, per=per)

    def __repr__(self) -> str:
        return (f"CSRMatrix(shape={self.shape}, nnz={self.nnz}, density={self.density:.2%}, "
                f"dtype={self.data.dtype}, nbytes={self.nbytes:,})")

# %%
def test_csr_matrix():
    """The 4x4 example above, then a matrix with empty rows against a plain double loop."""
    W = np.array([[0, 5, 0, 0], [0, 0, 0, 0], [1, 0, 0, 2], [0, 0, 0, 3]], dtype=np.float32)
    A = CSRMatrix.from_dense(W)
    got = (A.data.tolist(), A.indices.tolist(), A.indptr.tolist())
    want = ([5, 1, 2, 3], [1, 0, 3, 3], [0, 1, 1, 3, 4])
    assert got == want, f"(data, indices, indptr): expected {want}, got {got} (off by one row?)"
    assert (A.to_dense() == W).all(), f"to_dense gives\n{A.to_dense()}\nexpected\n{W}"
    rng = np.random.default_rng(0)
    W = rng.standard_normal((7, 5)).astype(np.float32) * (rng.random((7, 5)) < 0.3)
    W[[1, 4]] = 0.0                                      # two empty rows
    data, indices, indptr = [], [], [0]                  # the oracle: walk row by row
    for r in range(W.shape[0]):
        for c in range(W.shape[1]):
            if W[r, c] != 0:
                data.append(W[r, c])
                indices.append(c)
        indptr.append(len(data))
    A = CSRMatrix.from_dense(W)
    got = (A.data.tolist(), A.indices.tolist(), A.indptr.tolist())
    assert got == (data, indices, indptr), f"expected {(data, indices, indptr)}, got {got}"
    print("CSRMatrix: OK")


test_csr_matrix()

# %% [markdown]
# ### Sparse kernels without Python loops
#
# The textbook CSR product walks row by row: `y[r] = sum(data[k] * x[indices[k]])` over the
# row's range of `k`. A Python loop over rows or nonzeros runs at ~10^7 steps per second:
# hopeless. Every step must be one NumPy call over whole arrays; each call is a pass over
# memory plus 1-5 µs of overhead, so a fast kernel makes **few passes** and lets BLAS do the
# multiply-add where it can. Three paths, chosen from the shape:
#
# * **One vector (`csr_matvec`): a segmented sum.** Gather the products
#   `data[k] * x[indices[k]]` of all nonzeros (`np.take`, then an in-place multiply), then
#   sum each row's contiguous segment with `np.add.reduceat(products, starts)`. Its trap: at
#   an empty row `reduceat` returns the *next* element instead of 0, so it runs on the
#   non-empty rows only and their sums are scattered into zeros. `A.segments()` caches the
#   flat arrays (`row_segments`).
# * **A batch (`csr_matmul`): padded rows.** Pad every row to the longest row's length `K`
#   (the ELLPACK format, `ellpack`, cached by `A.padded_rows()`): the gathered rows `X[idx]`
#   of a block of output rows form a regular `(rows, K, batch)` array, and one `np.matmul` of
#   the `(rows, 1, K)` values with it does every row's product in BLAS-quality loops. A block
#   holds at most `gather_budget` values (4 MB: it stays in the cache) in one buffer reused
#   by every block (`np.take(..., out=buffer)`). Gathering **rows** of a contiguous
#   `(cols, batch)` X copies contiguous runs of memory, so a layer computing `x @ W.T` hands
#   the kernel `x.T` made contiguous.
# * **Dense panels.** From `DENSE_MIN_DENSITY` (15%) on, with at least `DENSE_MIN_BATCH`
#   columns, gathering K rows of X per output row costs more than multiplying the zeros:
#   write a block of rows into a zeroed dense panel, multiply it with BLAS, zero those entries
#   again and reuse the panel.
#
# Why these choices, and what they cost, is the opening of `compression_fast_sparsity_dev.py`.
#
# ### Exercise 5.2: `ellpack`, `row_segments`, `csr_matvec`, `csr_matmul`
# - `ellpack(A) -> (idx, val)`, both `(rows, K)`: stored value k of row r goes to slot
#   `k - indptr[r]` of row r (`idx` gets its column, `val` its value). The zero-filled
#   arrays are given: fill them with two fancy assignments.
# - `row_segments(A) -> (columns, values, starts, rows)`: the flat arrays of the segmented
#   sum (`A.segments()` caches them, as `A.padded_rows()` caches `ellpack`).
# - `csr_matvec(A, x)`: take the products, multiply in place, `np.add.reduceat` at `starts`,
#   scatter into zeros when some rows are empty.
# - `_gather_matmul` and `_dense_panel_matmul`: the loops over blocks of rows described
#   above; `csr_matmul` (given) checks its arguments and picks one of them.
#
# HINTS: `np.repeat(A.indptr[:-1], lengths)` repeats each row's start once per value;
# `np.take(a, indices, axis=0, out=buffer, mode="wrap")` writes into `buffer` without a
# temporary (mode "raise" would copy). Checked by `test_csr_kernels` against the dense product.

# %%
#| export optimization.compression.csr
GATHER_BUDGET = 1 << 20     # default values per gathered block or dense panel (4 MB of float32)
DENSE_MIN_DENSITY = 0.15    # csr_matmul multiplies dense panels with BLAS from this density on ...
DENSE_MIN_BATCH = 32        # ... when the batch has at least this many columns

# %% nbgrader={"grade": false, "grade_id": "csr_kernels", "solution": true}
#| export optimization.compression.csr
def ellpack(A: CSRMatrix) -> tuple:
    """(idx, val), both (rows, K), K = the longest row's nnz: row r's columns and values
    left-aligned, padding column 0 and value 0 (int8 values become float32)."""
    lengths = np.diff(A.indptr.astype(np.int64))
    width = int(lengths.max(initial=0))
    value_dtype = np.float32 if A.data.dtype == np.int8 else A.data.dtype
    idx = np.zeros((A.shape[0], width), dtype=np.intp)
    val = np.zeros((A.shape[0], width), dtype=value_dtype)
    # TODO: value k goes to (its row, k - indptr[its row]): fill idx (columns) and val.
    ### BEGIN SOLUTION
    row_of = A.row_ids()
    slot = np.arange(A.nnz) - np.repeat(A.indptr[:-1].astype(np.int64), lengths)
    idx[row_of, slot] = A.indices
    val[row_of, slot] = A.data
    return idx, val
    ### END SOLUTION


def row_segments(A: CSRMatrix) -> tuple:
    """(columns, values, starts, rows): columns (nnz,) intp (what np.take indexes with);
    values (nnz,) float (int8 -> float32); starts (n,) intp = where each of the n non-empty
    rows begins in them; rows (n,) intp = which rows those are, or None if none is empty."""
    value_dtype = np.float32 if A.data.dtype == np.int8 else A.data.dtype
    ptr = A.indptr.astype(np.intp)
    # TODO: columns = indices as np.intp; values = data as value_dtype; the non-empty rows
    # are those whose indptr grows (np.flatnonzero of np.diff); starts = ptr at those rows;
    # rows = None when every row is non-empty.
    ### BEGIN SOLUTION
    nonempty = np.flatnonzero(np.diff(ptr))
    rows = None if len(nonempty) == A.shape[0] else nonempty
    return A.indices.astype(np.intp), A.data.astype(value_dtype), ptr[nonempty], rows
    ### END SOLUTION


def csr_matvec(A: CSRMatrix, x) -> np.ndarray:
    """A @ x for a CSRMatrix A (rows, cols) and a vector x (cols,) -> (rows,).

    Segmented sum over the cached flat arrays (A.segments()): gather the products, then
    np.add.reduceat over the non-empty rows. Result dtype: float32 unless A or x is float64.
    """
    if not isinstance(A, CSRMatrix):
        raise ValueError(f"A must be a CSRMatrix, got {type(A).__name__}")
    x = check_real_array("x", x)
    if x.ndim != 1 or x.shape[0] != A.shape[1]:
        raise ValueError(f"x must have shape (cols,) = ({A.shape[1]},), got {x.shape}")
    columns, values, starts, rows = A.segments()
    dtype = np.result_type(values.dtype, x.dtype, np.float32)
    if not len(columns):
        return np.zeros(A.shape[0], dtype=dtype)
    # TODO: products = x's entries at `columns` (np.take; mode="wrap" skips the bounds check,
    # every column was validated) times `values`, in place; sums = np.add.reduceat of the
    # products at `starts`; when `rows` is not None, scatter the sums into zeros at `rows`.
    ### BEGIN SOLUTION
    products = np.take(x.astype(dtype, copy=False), columns, mode="wrap")
    products *= values
    sums = np.add.reduceat(products, starts)
    if rows is None:
        return sums
    out = np.zeros(A.shape[0], dtype=dtype)
    out[rows] = sums
    return out
    ### END SOLUTION


def _gather_matmul(A: CSRMatrix, X: np.ndarray, out: np.ndarray, budget: int) -> None:
    """out[:] = A @ X by padded rows: per block of rows, gather X's rows into one reused
    (rows, K, batch) buffer of at most `budget` values (at least one row), then one
    np.matmul of the (rows, 1, K) values with it."""
    idx, val = A.padded_rows()
    rows, width = idx.shape
    batch = X.shape[1]
    val = val.astype(out.dtype, copy=False)
    block = max(1, budget // (width * batch))             # rows per block
    buffer = np.empty((min(block, rows), width, batch), dtype=out.dtype)
    # TODO: for each block of rows [start, stop): gathered = the first stop - start entries of
    # `buffer`; fill it with X's rows idx[start:stop] (np.take along axis 0, out=gathered,
    # mode="wrap"); then np.matmul(val[start:stop, None, :], gathered,
    # out=out[start:stop, None, :]).
    ### BEGIN SOLUTION
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        gathered = buffer[:stop - start]
        np.take(X, idx[start:stop], axis=0, out=gathered, mode="wrap")
        np.matmul(val[start:stop, None, :], gathered, out=out[start:stop, None, :])
    ### END SOLUTION


def _dense_panel_matmul(A: CSRMatrix, X: np.ndarray, out: np.ndarray, budget: int) -> None:
    """out[:] = A @ X by dense panels: per block of rows (at most `budget` values, at least
    one row), write the block's nonzeros into a zeroed (rows, cols) panel, multiply with BLAS,
    then zero those entries again so the panel is reused."""
    ptr = A.indptr.astype(np.intp)
    rows, cols = A.shape
    block = max(1, budget // cols)
    panel = np.zeros((min(block, rows), cols), dtype=out.dtype)
    flat_panel = panel.reshape(-1)
    # TODO: for each block of rows [start, stop): its nonzeros are lo = ptr[start] to
    # hi = ptr[stop]; their flat positions in the panel are (row inside the block) * cols +
    # column, the rows from np.repeat(arange(stop - start), the block's row lengths); put
    # A.data[lo:hi] there (a flat index is much faster than a (rows, columns) pair), write
    # panel[:stop - start] @ X into out[start:stop] (np.matmul with out=), then put zeros back.
    ### BEGIN SOLUTION
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        lo, hi = ptr[start], ptr[stop]
        local_rows = np.repeat(np.arange(stop - start), np.diff(ptr[start:stop + 1]))
        positions = local_rows * cols + A.indices[lo:hi]
        flat_panel[positions] = A.data[lo:hi]
        np.matmul(panel[:stop - start], X, out=out[start:stop])
        flat_panel[positions] = 0
    ### END SOLUTION


def csr_matmul(A: CSRMatrix, X, gather_budget: int = GATHER_BUDGET) -> np.ndarray:
    """A @ X for a CSRMatrix A (rows, cols) and a dense X (cols, batch) -> (rows, batch).

    Vectorized, and picked by shape: one column -> csr_matvec's segmented sum; at least
    DENSE_MIN_BATCH columns and density >= DENSE_MIN_DENSITY -> dense panels and BLAS;
    otherwise padded rows gathered into a reused buffer and reduced by np.matmul. Every
    temporary holds at most `gather_budget` values (or one row when a row needs more).
    Result dtype: float32 unless A or X is float64.
    """
    if not isinstance(A, CSRMatrix):
        raise ValueError(f"A must be a CSRMatrix, got {type(A).__name__}")
    gather_budget = check_int("gather_budget", gather_budget, minimum=1)
    X = check_real_array("X", X)
    if X.ndim != 2 or X.shape[0] != A.shape[1]:
        raise ValueError(f"X must have shape (cols, batch) = ({A.shape[1]}, batch), got {X.shape}")
    rows, batch = A.shape[0], X.shape[1]
    value_dtype = np.float32 if A.data.dtype == np.int8 else A.data.dtype
    dtype = np.result_type(value_dtype, X.dtype, np.float32)
    if A.nnz == 0 or batch == 0:
        return np.zeros((rows, batch), dtype=dtype)
    if batch == 1:
        return csr_matvec(A, X[:, 0])[:, None]
    X = np.ascontiguousarray(X, dtype=dtype)
    out = np.empty((rows, batch), dtype=dtype)
    if batch >= DENSE_MIN_BATCH and A.density >= DENSE_MIN_DENSITY:
        _dense_panel_matmul(A, X, out, gather_budget)
    else:
        _gather_matmul(A, X, out, gather_budget)
    return out

# %%
def test_csr_kernels():
    """Against the float64 dense product: empty rows, all-zero, fully dense, 0 rows, and a
    gather_budget of 1 (one row per block)."""
    rng = np.random.default_rng(1)
    sparse = rng.standard_normal((9, 6)) * (rng.random((9, 6)) < 0.4)
    sparse[[0, 5, 8]] = 0.0                              # empty first, middle and last rows
    for W in (sparse, np.zeros((4, 5)), rng.standard_normal((5, 3)), np.zeros((0, 4))):
        A = CSRMatrix.from_dense(W.astype(np.float32))
        x, X = rng.standard_normal(W.shape[1]), rng.standard_normal((W.shape[1], 4))
        got, want = csr_matvec(A, x), W @ x
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5), \
            f"csr_matvec on a {W.shape} matrix: expected {want}, got {got}"
        for budget in (GATHER_BUDGET, 1):
            got = csr_matmul(A, X, gather_budget=budget)
            assert np.allclose(got, W @ X, atol=1e-5), \
                f"csr_matmul on a {W.shape} matrix, gather_budget={budget}: wrong product"
    print("csr_matvec / csr_matmul: OK")


test_csr_kernels()

# %% [markdown]
# ### Measured: when is CSR faster than dense?
#
# Sparsity cuts the multiply-adds by `1 / (1 - sparsity)`, but dense BLAS runs close to the
# machine's peak while our kernel pays an indirect load per multiply. Who wins is a careful
# measurement (interleaved, fastest of several medians, scipy's C++ CSR alongside), made by
# `python -m benchmarks.bench_kernels` (docs/results/README.md gives the crossovers):
#
# ![CSR kernel vs dense BLAS vs scipy.sparse](../../docs/results/kernels.png)
#
# **Unstructured sparsity always saves memory** below ~50% density, but **saves time only at
# very high sparsity** (in the committed run: at batch 1 from about 98%). That is why
# production systems prune **structure** for speed, and why NVIDIA's Ampere GPUs accelerate
# only the fixed 2:4 pattern. The project of section 6 measures it on a real model.

# %% [markdown]
# ### Quantized CSR: int8 values, the narrowest index types
#
# A float32 CSR nonzero costs 4 (value) + 4 (int32 column) bytes. Two cheap wins:
# **int8 values** (module 17): `q = round(w / scale)` in [-127, 127] with one float32 scale
# per row (per output neuron) or per tensor; every value's error is at most `scale / 2`, and
# values that round to 0 are dropped (no stored zeros). **Narrow indices**: columns of a
# layer with at most 256 inputs fit `uint8`, up to 65,536 `uint16`; `indptr` only holds
# numbers up to `nnz` (`QuantizedCSR.from_csr`, given, picks the dtypes). For the MLP's
# 64-input first layer that is 2 bytes per nonzero instead of 8. Prune, quantize, compact
# the indices: the recipe of Deep Compression (Han, Mao & Dally 2016).
#
# ### Exercise 5.3: `int8_arrays`
# `int8_arrays(A, per) -> (scale, values, indices, indptr)` for a float CSRMatrix `A`,
# `per` in `("row", "tensor")`: `scale` from module 17's `int8_scale` (max|w| / 127 rounded
# up, 1 for an all-zero slice): per row `int8_scale(A.padded_rows()[1], axis=0)` reshaped to
# `(rows,)` (padding zeros do not change a maximum), per tensor of all values (shape ());
# `values` the int8 `np.rint(w / scale)` clipped to [-127, 127] without the zeros; `indices`
# their columns; `indptr` rebuilt from the kept count per row.
# HINTS: index the per-row scales with `A.row_ids()`; `np.bincount` and `np.cumsum` as in
# Exercise 5.1. Checked by `test_quantized_csr`.

# %% nbgrader={"grade": false, "grade_id": "int8_arrays", "solution": true}
#| export optimization.compression.csr
def int8_arrays(A: CSRMatrix, per: str) -> tuple:
    """(scale, int8 values, indices, indptr) of A quantized per "row" or per "tensor";
    values that round to 0 are dropped."""
    rows = A.shape[0]
    w = A.data.astype(np.float32)
    row_of = A.row_ids()
    # TODO: scale; q = int8(clip(rint(w / scale), -127, 127)); drop q == 0; rebuild indptr.
    ### BEGIN SOLUTION
    if per == "row":
        scale = int8_scale(A.padded_rows()[1], axis=0).reshape(rows)  # padding zeros: harmless
        per_value = scale[row_of]
    else:
        scale = int8_scale(w)
        per_value = scale
    q = np.clip(np.rint(w / per_value), -127, 127).astype(np.int8)
    keep = q != 0                                                  # drop values rounded to 0
    counts = np.bincount(row_of[keep], minlength=rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return scale, q[keep], A.indices[keep], indptr
    ### END SOLUTION

# %%
#| export optimization.compression.csr
QUANT_PER = ("row", "tensor")


class QuantizedCSR:
    """int8 CSR storage: w[k] ~ values[k] * scale[row of k] (or * scale, per tensor).
    values (nnz,) int8; scale float32 (rows,) or (), finite and > 0; indices, indptr, shape
    as in CSRMatrix (validated the same way; narrowest unsigned dtypes from `from_csr`)."""

    def __init__(self, values, scale, indices, indptr, shape):
        values = np.asarray(values)
        if values.dtype != np.int8:
            raise ValueError(f"values must have dtype int8, got {values.dtype}")
        structure = CSRMatrix(values, indices, indptr, shape)  # validates indices, indptr, shape
        scale = np.asarray(scale)
        if scale.dtype != np.float32:
            raise ValueError(f"scale must have dtype float32, got {scale.dtype}")
        if scale.shape not in ((), (structure.shape[0],)):
            raise ValueError(f"scale must have shape () (per tensor) or ({structure.shape[0]},) "
                             f"(per row), got {scale.shape}")
        if not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("scale must be finite and > 0")
        self.values, self.indices, self.indptr = structure.data, structure.indices, structure.indptr
        self.scale, self.shape = read_only_copy(scale), structure.shape

    @classmethod
    def from_csr(cls, A: CSRMatrix, per: str = "row") -> "QuantizedCSR":
        """Quantize A's values to int8 (`int8_arrays`) per row or per tensor; indices become
        the narrowest unsigned dtype holding cols - 1, indptr the narrowest holding nnz."""
        check_choice("per", per, QUANT_PER)
        if not isinstance(A, CSRMatrix):
            raise ValueError(f"A must be a CSRMatrix, got {type(A).__name__}")
        if not np.isfinite(A.data.astype(np.float32)).all():
            raise ValueError("A contains NaN or inf values: they cannot be quantized")
        scale, values, indices, indptr = int8_arrays(A, per)
        return cls(values, np.asarray(scale, dtype=np.float32),
                   indices.astype(narrowest_uint(max(A.shape[1] - 1, 0))),
                   indptr.astype(narrowest_uint(len(values))), A.shape)

    @property
    def nnz(self) -> int:
        return int(len(self.values))

    @property
    def nbytes(self) -> int:
        """Bytes of values + scale + indices + indptr."""
        return int(self.values.nbytes + self.scale.nbytes + self.indices.nbytes
                   + self.indptr.nbytes)

    def dequantize(self) -> CSRMatrix:
        """float32 CSRMatrix with values * scale and int32 index arrays (same structure)."""
        row_of = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr.astype(np.int64)))
        per_value = self.scale[row_of] if self.scale.ndim else self.scale
        data = self.values.astype(np.float32) * per_value
        index_dtype = np.int32 if max(self.shape[1], self.nnz) < 2 ** 31 else np.int64
        return CSRMatrix(data.astype(np.float32), self.indices.astype(index_dtype),
                         self.indptr.astype(index_dtype), self.shape)

    def __repr__(self) -> str:
        per = "row" if self.scale.ndim else "tensor"
        return (f"QuantizedCSR(shape={self.shape}, nnz={self.nnz}, per={per!r}, "
                f"indices={self.indices.dtype}, indptr={self.indptr.dtype}, "
                f"nbytes={self.nbytes:,})")

# %%
def test_quantized_csr():
    """Hand-checked scales, a dropped value, and the scale / 2 error bound."""
    W = np.array([[0.0, 1.27, -0.5], [0.0, 0.0, 0.0], [2.54, 0.0, 0.004]], dtype=np.float32)
    Q = CSRMatrix.from_dense(W).quantize("row")
    assert np.allclose(Q.scale, [0.01, 1.0, 0.02]), \
        f"scales: expected [1.27/127, 1 (empty row), 2.54/127], got {Q.scale}"
    assert Q.values.tolist() == [127, -50, 127] and Q.indptr.tolist() == [0, 2, 2, 3], \
        f"0.004 / 0.02 rounds to 0 and must be dropped: got values {Q.values}, indptr {Q.indptr}"
    rng = np.random.default_rng(2)
    W = rng.standard_normal((40, 30)).astype(np.float32) * (rng.random((40, 30)) < 0.3)
    for per in QUANT_PER:
        Q = CSRMatrix.from_dense(W).quantize(per)
        bound = (Q.scale[:, None] if per == "row" else Q.scale) / 2 * (1 + 1e-6)
        err = np.abs(Q.dequantize().to_dense() - W)
        assert (err <= bound).all(), f"per={per}: error {err.max():.2e} exceeds scale / 2"
    print("QuantizedCSR: OK")


test_quantized_csr()

# %% [markdown]
# ### Sparse layers and `to_sparse`
#
# A pruned `Linear` computes `y = x @ W.T + b`; its sparse twin keeps `W` as a CSRMatrix and
# uses `rmatmul_T`. A `Conv2d` is a matrix product in disguise: `im2col` (module 09) turns
# every receptive field into a row of `cols` `(N*Ho*Wo, C*kh*kw)`, and the convolution is
# `cols @ W2.T` with `W2 = (out, C*kh*kw)`. So we store `W2` in CSR and multiply it with the
# contiguous `cols.T`: the result `(out, N*Ho*Wo)` reshapes to `(out, N, Ho, Wo)`, and one
# transpose gives `(N, out, Ho, Wo)`. `SparseLinear` and `SparseConv2d` (given below) are for
# **inference** (fine-tune first); their weight is *extra state* (PyTorch's `get_extra_state`).
#
# ### Exercise 5.4: `sparse_linear` and `sparse_conv2d`
# The layers' `forward` check the input and call these (like PyTorch's `F.linear` and
# `F.conv2d`) on float32 arrays: `sparse_linear(x, weight, bias) -> (rows, out)` with `x`
# `(rows, in)`, `weight` a CSRMatrix `(out, in)`, `bias` `(out,)` or `None`; and
# `sparse_conv2d(x, weight, bias, kernel_size, stride, padding) -> (N, out, Ho, Wo)` with `x`
# `(N, C, H, W)`, `weight` `(out, C*kh*kw)`, sizes as `(h, w)` pairs.
# HINTS: `weight.rmatmul_T(x)`; `cols, ho, wo = im2col(x, kernel_size, stride, padding)`;
# `csr_matmul`; `bias[:, None]`; `.transpose(1, 0, 2, 3)`. Checked by `test_sparse_layers`.

# %%
#| export optimization.compression.sparse
def _weight_storage(weight, expected_shape: tuple) -> tuple:
    """(compute CSRMatrix float32, QuantizedCSR or None) for a CSRMatrix or QuantizedCSR."""
    if isinstance(weight, QuantizedCSR):
        compute, quantized = weight.dequantize(), weight
    elif isinstance(weight, CSRMatrix):  # float32 values, the narrowest index dtypes
        indices = weight.indices.astype(narrowest_uint(max(weight.shape[1] - 1, 0)))
        compute = CSRMatrix(weight.data.astype(np.float32), indices,
                            weight.indptr.astype(narrowest_uint(weight.nnz)), weight.shape)
        quantized = None
    else:
        raise ValueError(f"weight must be a CSRMatrix or QuantizedCSR, got {type(weight).__name__}")
    if compute.shape != tuple(expected_shape):
        raise ValueError(f"weight must have shape {tuple(expected_shape)}, got {compute.shape}")
    return compute, quantized


def _int_pair(value) -> tuple:
    """3 -> (3, 3); (3, 2) -> (3, 2)."""
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)


_STORED_FIELDS = {"int8": ("values", "scale", "indices", "indptr"),
                  "float": ("data", "indices", "indptr")}


class _SparseLayer(Module):
    """Shared parts of SparseLinear and SparseConv2d: weight storage, byte counts, and the
    extra state (PyTorch's get_extra_state / set_extra_state) that a file must hold."""

    def set_weight(self, weight) -> None:
        """Install a CSRMatrix (float) or a QuantizedCSR (kept for storage, dequantized to
        float32 for compute). The shape must be the layer's weight matrix shape."""
        self.weight, self.qweight = _weight_storage(weight, self.weight_shape)

    @property
    def stored_weight(self):
        """What the layer stores: the QuantizedCSR if quantized, else the float CSRMatrix."""
        return self.qweight if self.qweight is not None else self.weight

    def get_extra_state(self) -> dict:
        """The sparse weight, which is not a Parameter: {"kind": "int8" | "float", field: array}
        with the QuantizedCSR fields (values, scale, indices, indptr) or the CSR fields (data,
        indices, indptr), index arrays at their narrowest unsigned dtypes."""
        stored = self.stored_weight
        kind = "int8" if self.qweight is not None else "float"
        return {"kind": kind, **{name: getattr(stored, name) for name in _STORED_FIELDS[kind]}}

    def set_extra_state(self, state: dict) -> None:
        """Install a weight from get_extra_state's dict; every array is validated (ValueError)."""
        kind = state.get("kind") if isinstance(state, dict) else None
        if kind not in _STORED_FIELDS:
            raise ValueError(f"storage kind must be one of {list(_STORED_FIELDS)}, got {kind!r}")
        missing = [name for name in _STORED_FIELDS[kind] if name not in state]
        unknown = sorted(set(state) - {"kind", *_STORED_FIELDS[kind]})
        if missing or unknown:
            raise ValueError(f"a {kind} sparse weight needs exactly the arrays "
                             f"{list(_STORED_FIELDS[kind])}: missing {missing}, "
                             f"unexpected {unknown}")
        arrays = [np.asarray(state[name]) for name in _STORED_FIELDS[kind]]
        if kind == "int8":
            self.set_weight(QuantizedCSR(*arrays, self.weight_shape))
        elif arrays[0].dtype.kind != "f":
            raise ValueError(f"data must have a float dtype, got {arrays[0].dtype}")
        else:
            self.set_weight(CSRMatrix(*arrays, self.weight_shape))

    def _copy_from(self, dense: Module, matrix: np.ndarray, quantize: bool, per: str) -> Module:
        """Take `dense`'s weight (as the 2-D `matrix`), bias and train/eval mode."""
        csr = CSRMatrix.from_dense(matrix)
        self.set_weight(csr.quantize(per) if quantize else csr)
        if dense.bias is not None:
            self.bias.data = dense.bias.data.copy()
        return self.train(dense.training)

    @property
    def nnz(self) -> int:
        return self.weight.nnz

    @property
    def nbytes(self) -> int:
        """Bytes to store the layer: the stored weight + a float32 bias."""
        return self.stored_weight.nbytes + (self.bias.data.nbytes if self.bias is not None else 0)

    def extra_repr(self) -> str:
        kind = "int8" if self.qweight is not None else str(self.weight.data.dtype)
        return f"{super().extra_repr()}, nnz={self.nnz}, density={self.weight.density:.2%}, {kind}"

# %% nbgrader={"grade": false, "grade_id": "sparse_forward", "solution": true}
#| export optimization.compression.sparse
def sparse_linear(x: np.ndarray, weight: CSRMatrix, bias=None) -> np.ndarray:
    """x (rows, in) @ weight.T (+ bias) -> (rows, out), with the CSR weight (out, in)."""
    # TODO: the product with rmatmul_T, plus the bias if there is one.
    ### BEGIN SOLUTION
    out = weight.rmatmul_T(x)
    if bias is not None:
        out += bias
    return out
    ### END SOLUTION


def sparse_conv2d(x: np.ndarray, weight: CSRMatrix, bias, kernel_size: tuple, stride: tuple,
                  padding: tuple) -> np.ndarray:
    """Convolution of x (N, C, H, W) with the CSR weight (out, C*kh*kw) -> (N, out, Ho, Wo)."""
    # TODO: im2col; csr_matmul with the contiguous cols.T; bias per channel; reshape, N first.
    ### BEGIN SOLUTION
    cols, ho, wo = im2col(x, kernel_size, stride, padding)       # (N*Ho*Wo, C*kh*kw)
    out = csr_matmul(weight, np.ascontiguousarray(cols.T))         # (out, N*Ho*Wo)
    if bias is not None:
        out += bias[:, None]
    return out.reshape(weight.shape[0], x.shape[0], ho, wo).transpose(1, 0, 2, 3)
    ### END SOLUTION

# %%
#| export optimization.compression.sparse
class SparseLinear(_SparseLayer):
    """Inference-only Linear, y = x @ W.T + b with a CSR weight (out_features, in_features):
    input (..., in_features) -> Tensor (..., out_features) without autograd history. Built
    empty (all-zero weight), or from a trained, pruned Linear by `from_dense`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight_shape = (self.out_features, self.in_features)
        self.bias = Parameter(init.zeros((self.out_features,))) if bias else None
        self.set_weight(CSRMatrix.empty(self.weight_shape))

    @classmethod
    def from_dense(cls, linear: Linear, quantize: bool = False, per: str = "row") -> "SparseLinear":
        """The sparse twin of `linear` (weights copied; int8 storage if quantize=True)."""
        if not isinstance(linear, Linear):
            raise ValueError(f"linear must be a Linear layer, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        return layer._copy_from(linear, linear.weight.data, quantize, per)

    def forward(self, x) -> Tensor:
        data = np.asarray(x.data if isinstance(x, Tensor) else x, dtype=np.float32)
        if data.ndim < 1 or data.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear expects input (..., {self.in_features}), "
                             f"got {data.shape}")
        bias = None if self.bias is None else self.bias.data
        out = sparse_linear(data.reshape(-1, self.in_features), self.weight, bias)
        return Tensor(out.reshape(*data.shape[:-1], self.out_features))

    def config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None}


class SparseConv2d(_SparseLayer):
    """Inference-only Conv2d with a CSR weight (out_channels, in_channels*kh*kw); shapes as
    Conv2d: (N, in_channels, H, W) -> (N, out_channels, Ho, Wo)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = _int_pair(kernel_size), _int_pair(stride)
        self.padding = _int_pair(padding)
        kh, kw = self.kernel_size
        self.weight_shape = (self.out_channels, self.in_channels * kh * kw)
        self.bias = Parameter(init.zeros((self.out_channels,))) if bias else None
        self.set_weight(CSRMatrix.empty(self.weight_shape))

    @classmethod
    def from_dense(cls, conv: Conv2d, quantize: bool = False, per: str = "row") -> "SparseConv2d":
        """The sparse twin of `conv` (weights copied; int8 storage if quantize=True)."""
        if not isinstance(conv, Conv2d):
            raise ValueError(f"conv must be a Conv2d layer, got {type(conv).__name__}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, bias=conv.bias is not None)
        return layer._copy_from(conv, conv.weight.data.reshape(conv.out_channels, -1), quantize,
                                per)

    def forward(self, x) -> Tensor:
        data = np.asarray(x.data if isinstance(x, Tensor) else x, dtype=np.float32)
        if data.ndim != 4 or data.shape[1] != self.in_channels:
            raise ValueError(f"SparseConv2d expects input (N, {self.in_channels}, H, W), "
                             f"got {data.shape}")
        bias = None if self.bias is None else self.bias.data
        out = sparse_conv2d(data, self.weight, bias, self.kernel_size, self.stride, self.padding)
        return Tensor(np.ascontiguousarray(out))

    def config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "bias": self.bias is not None}


SPARSE_LAYERS = (SparseLinear, SparseConv2d)


def _sparse_twin(layer: Module, quantize: bool, per: str) -> Module:
    cls = SparseLinear if isinstance(layer, Linear) else SparseConv2d
    return cls.from_dense(layer, quantize=quantize, per=per)


def _layer_sparsity(layer: Module) -> float:
    w = layer.weight.data
    return float(np.mean(w == 0)) if w.size else 0.0


def sparse_layers(model: Module) -> dict:
    """{dotted name: SparseLinear/SparseConv2d} of `model`, in order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SPARSE_LAYERS)}


def model_nbytes_compressed(model: Module) -> int:
    """In-memory bytes of a (possibly sparse) model: every sparse layer's stored weight
    (int8 QuantizedCSR or float CSR) plus every Parameter at float32."""
    return int(sum(layer.stored_weight.nbytes for layer in sparse_layers(model).values())
               + sum(p.data.nbytes for p in model.parameters()))

# %% [markdown]
# ### Exercise 5.5: `to_sparse`
# `to_sparse(model, min_sparsity=0.5, quantize=False, per="row") -> Module`: a deep copy of
# `model` in which every `Linear`/`Conv2d` of weight sparsity (`_layer_sparsity`) at least
# `min_sparsity` is replaced by `_sparse_twin(layer, quantize, per)`, **at any depth**. Write
# the loop: for every module of the copy (`named_modules()`) and each qualifying child
# (`named_children()`), `setattr(parent, name, twin)` (same name, same position).
# Checked by `test_sparse_layers`.

# %% nbgrader={"grade": false, "grade_id": "to_sparse", "solution": true}
#| export optimization.compression.sparse
def to_sparse(model: Module, min_sparsity: float = 0.5, quantize: bool = False,
              per: str = "row") -> Module:
    """A deep copy of `model` with every Linear/Conv2d of weight sparsity >= min_sparsity
    replaced by SparseLinear/SparseConv2d (int8 QuantizedCSR weights if quantize=True)."""
    min_sparsity = check_fraction("min_sparsity", min_sparsity, high_inclusive=True)
    check_choice("per", per, QUANT_PER)
    if not isinstance(model, Module):
        raise ValueError(f"model must be a Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    if isinstance(model, PRUNABLE):
        return _sparse_twin(model, quantize, per) if _layer_sparsity(model) >= min_sparsity \
            else model
    # TODO: replace every qualifying child of every module of the copy by its _sparse_twin.
    ### BEGIN SOLUTION
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PRUNABLE) and _layer_sparsity(child) >= min_sparsity:
                setattr(parent, name, _sparse_twin(child, quantize, per))
    return model
    ### END SOLUTION

# %%
def test_sparse_layers():
    """A hand-checked layer, then the 90%-pruned MLP and CNN against their dense selves."""
    lin = Linear(3, 2)
    lin.weight.data = np.array([[0.0, 2.0, 0.0], [1.0, 0.0, -1.0]], dtype=np.float32)
    lin.bias.data = np.array([0.5, -0.5], dtype=np.float32)
    got = SparseLinear.from_dense(lin)(Tensor(np.array([[1.0, 2.0, 3.0]], dtype=np.float32)))
    assert got.data.tolist() == [[4.5, -2.5]], f"expected [[2*2 + .5, 1 - 3 - .5]], got {got.data}"
    for name in ("mlp", "cnn"):
        dense = load_pretrained(name)
        prune_magnitude(dense, 0.9)
        sparse = to_sparse(dense)
        kinds = {type(m).__name__ for m in sparse.modules()}
        assert not kinds & {"Linear", "Conv2d"}, f"{name}: dense layers left in {sorted(kinds)}"
        with no_grad():
            want, got = dense(Tensor(X_test[:64])).data, sparse(Tensor(X_test[:64])).data
        error = np.abs(got - want).max() / np.abs(want).max()
        assert error < 1e-5, f"{name}: sparse logits differ from dense by {error:.1e} (relative)"
    nested = Sequential(Sequential(Linear(4, 4)), ReLU())
    nested[0][0].weight.data[:, :3] = 0.0                    # 75% sparse
    assert isinstance(to_sparse(nested, 0.7)[0][0], SparseLinear), "nested layers must be reached"
    assert isinstance(nested[0][0], Linear), "to_sparse must not modify its input"
    print("SparseLinear / SparseConv2d / to_sparse: OK")


test_sparse_layers()

# %% [markdown]
# ## 6 Hands-on project: every technique on the digits CNN
#
# Time to put the pieces together on a shipped model, with the functions you built
# (`tito demo 18_compression` runs the same pipeline as a script). First, one given function
# that measures a model the same way for every technique, so the closing table compares like
# with like.

# %%
#| export optimization.compression.summary
def model_summary(technique: str, model: Module, loader, repeats: int = 7) -> dict:
    """One row of a comparison table, measured now.

    params: every parameter, with each sparse layer counted at its full (dense) weight shape;
    nonzeros: entries that are not zero (a sparse layer's stored nnz); bytes: what the model
    holds in memory (4 per float32 parameter, the stored CSR/int8 arrays for sparse layers);
    accuracy on `loader`; latency: median ms of one forward pass over its first batch.
    """
    check_loader("loader", loader)
    repeats = check_int("repeats", repeats, minimum=1)
    layers = sparse_layers(model)
    batch = next(iter(loader), (None,))[0]
    if batch is None:
        raise ValueError("loader yielded no (inputs, labels) batch to time")
    model.eval()
    with no_grad():
        latency = median_time(lambda: model(batch), repeats=repeats)
    return {"technique": technique,
            "params": count_params(model) + sum(int(np.prod(m.weight_shape))
                                                for m in layers.values()),
            "nonzeros": count_params(model, nonzero=True) + sum(m.nnz for m in layers.values()),
            "bytes": model_nbytes_compressed(model), "accuracy": evaluate(model, loader),
            "latency ms": 1e3 * latency}

# %% [markdown]
# ### Exercise 6.1 (project): a 90%-sparse CNN, run with sparse kernels
# Write `project_sparse_cnn(train_loader, test_loader) -> list` of four `model_summary` rows
# (on `test_loader`), in this order:
# 1. `"dense SimpleCNN"`: `load_pretrained("cnn")`;
# 2. `"magnitude 90%, dense kernels"`: a fresh pretrained CNN pruned to 90% with
#    `prune_magnitude(..., scope="global")`, then `fine_tune`d for 3 epochs on
#    `train_loader` with `tt.SGD(model.parameters(), lr=0.02, momentum=0.9)` (as in section 2);
# 3. `"magnitude 90%, CSR float32"`: that model through `to_sparse`;
# 4. `"magnitude 90%, CSR int8"`: the same with `quantize=True`.
#
# The next cell runs it, adds the structured CNN (section 3) and the distilled student
# (section 4), and prints one table, every row measured in this run on the same 359 test
# images (latency: one batch of them). There is no hidden test: read the numbers.

# %% nbgrader={"grade": false, "grade_id": "project_sparse_cnn", "solution": true}
def project_sparse_cnn(train_loader, test_loader) -> list:
    """model_summary rows: dense CNN, 90% magnitude-pruned (dense kernels, CSR, CSR int8)."""
    # TODO: the four rows described above, in that order.
    ### BEGIN SOLUTION
    rows = [model_summary("dense SimpleCNN", load_pretrained("cnn"), test_loader)]
    pruned = load_pretrained("cnn")
    masks = prune_magnitude(pruned, 0.9, scope="global")
    fine_tune(pruned, masks, train_loader, epochs=3,
              optimizer=tt.SGD(pruned.parameters(), lr=0.02, momentum=0.9))
    rows.append(model_summary("magnitude 90%, dense kernels", pruned, test_loader))
    rows.append(model_summary("magnitude 90%, CSR float32", to_sparse(pruned), test_loader))
    rows.append(model_summary("magnitude 90%, CSR int8", to_sparse(pruned, quantize=True),
                              test_loader))
    return rows
    ### END SOLUTION

# %%
project_loader, _ = digits_loaders(batch_size=32, seed=0)  # a fresh loader: reproducible batches
with one_blas_thread():                                     # latency ratios: one BLAS thread
    summary = project_sparse_cnn(project_loader, test_loader)
    summary.append(model_summary("structured 2/3 + fine-tune", cnn_small, test_loader))
    summary.append(model_summary("distilled SimpleCNN(8, 16)", distilled_student, test_loader))
print(format_table(summary))

# %% [markdown]
# ## Summary and reflection
#
# You built, tested and measured four ways to make a model cheaper: magnitude pruning with
# masks that survive fine-tuning; structured pruning that shrinks the matrices themselves;
# knowledge distillation into a much smaller student; and CSR storage with int8 values,
# vectorized kernels and sparse layers. The cell below gathers the numbers *you* measured;
# answer the questions with them.

# %%
print(f"1. MLP one-shot at 90%: per-layer {one_shot_90['layer/magnitude accuracy']:.2%}, "
      f"global {one_shot_90['global/magnitude accuracy']:.2%}, "
      f"Taylor {one_shot_90['layer/taylor accuracy']:.2%}; after fine-tuning the gap to dense is "
      f"{fine_tune_gap['mlp']:+.2%} (MLP), {fine_tune_gap['cnn']:+.2%} (CNN)")
print(f"2. structured 2/3: {cnn_speedup:.2f}x faster at batch 359, accuracy {-cnn_drop:+.2%}; "
      f"magnitude 90% on dense kernels: "
      f"{batch_times['dense'] / batch_times['magnitude 90%']:.2f}x")
print(f"3. distillation gain: {kd_rows[0]['gain (points)']:+.2f} points with "
      f"{kd_rows[0]['labelled images']} labels, {kd_rows[-1]['gain (points)']:+.2f} with all "
      f"{kd_rows[-1]['labelled images']}")
print(f"4. CNN 90% int8 CSR: {summary[0]['bytes'] / summary[3]['bytes']:.1f}x smaller, "
      f"latency {summary[3]['latency ms'] / summary[0]['latency ms']:.2f}x; structured 2/3: "
      f"{summary[0]['bytes'] / summary[4]['bytes']:.1f}x smaller, "
      f"latency {summary[4]['latency ms'] / summary[0]['latency ms']:.2f}x")

# %% [markdown]
# **Reflection questions**
#
# 1. At 90% sparsity, why does global ranking (line 1) keep so much more accuracy than the
#    same fraction in every layer, and why is Taylor importance worse than |w| on a
#    pretrained model? What would you change to make Taylor scores useful?
# 2. Line 2: structured pruning removed about 8x the MACs but sped the batch up less than
#    that, and 90% magnitude pruning did not speed it up at all. Where does the time go in
#    each case? What would change at batch size 1?
# 3. Line 3: the distillation gain shrinks (or turns negative) as the number of labelled
#    images grows. Explain with "dark knowledge" and the alpha you used. When would you still
#    distil with plenty of labels?
# 4. Line 4: the int8 CSR CNN is many times smaller, but is it faster? Using the crossover
#    sparsity in docs/results/README.md (from `benchmarks/bench_kernels.py`), at what
#    sparsity would its CSR layers start to pay off in time, and is that sparsity reachable
#    within 1% of accuracy?
# 5. Line 4 again: you need to ship this digits CNN to a phone over a slow link *and* run it at
#    batch 1 as fast as possible. Which combination of the techniques of this module would
#    you choose, in which order, and which number above supports each choice?
#
# **What next.** Part 2, `compression_deployment_dev.py`, prunes gradually, saves your sparse
# models to a file that loads safely and chains the techniques into one call;
# `compression_more_pruning_dev.py` finds lottery tickets (Frankle & Carbin 2019), turns a
# per-layer sensitivity analysis into sparsity targets and drops transformer blocks. Both
# count toward your score. `python -m benchmarks.run_all` reruns every timing study of this
# module (docs/results/README.md). Then `tito module complete 18` exports your notebooks,
# runs them and prints your score.
