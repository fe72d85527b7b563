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
# # Compression, going further: lottery tickets, sensitivity and layer dropping
#
# > Which weights, which layers and which blocks can go: three deeper questions about pruning.

# %% [markdown]
# This notebook follows the main lesson `compression_dev.py` (sections 1-3): it uses the
# pruners, masks and masked fine-tuning you built there, from the exported package (run
# `tito export 18_compression` first). Same rhythm: an explanation, an **exercise** (a heading
# "Exercise N.M" says what to build, its inputs and outputs and which test checks it), a
# test, one measured analysis. It exports two new modules of the package:
#
# | section | module | what it holds |
# |---|---|---|
# | 1 Lottery tickets, 2 Sensitivity | `lottery.py` | `lottery_ticket`, `sensitivity_analysis`, `sensitivity_targets` |
# | 3 Layer dropping | `layer_drop.py` | `block_candidates`, `prune_layers`, `LAYER_METRICS` |
#
# `from tinytorch.optimization.compression import lottery_ticket` works as for every name.

# %%
#| default_exp optimization.compression.lottery

# %% [markdown]
# ### What each module imports

# %%
#| export optimization.compression.lottery
import numpy as np

from tinytorch.core import (Module, check_finite_weights, check_fraction, check_int, check_loader,
                            evaluate)
from tinytorch.optimization.compression.metrics import measure_sparsity, prunable_layers
from tinytorch.optimization.compression.pruning import apply_masks, fine_tune, keep_mask

# %%
#| export optimization.compression.layer_drop
import copy

import numpy as np

from tinytorch.core import Module, Sequential, Tensor, check_choice, evaluate, no_grad

# %%
# Notebook-only setup: data and helpers for the tests.
import copy

import tinytorch as tt
from tinytorch.core import (Adam, DataLoader, LayerNorm, Linear, Sequential, Tensor,
                            TensorDataset, TransformerBlock, evaluate, format_table)
from tinytorch.datasets import digits_loaders, load_digits
from tinytorch.models import MLP, TokenMean, load_pretrained
from tinytorch.optimization.compression import (MagnitudePruner, count_params, model_flops,
                                                measure_sparsity, prunable_layers)

train_loader, test_loader = digits_loaders(batch_size=32, seed=0)
X_train, y_train = load_digits("train")
X_test, y_test = load_digits("test")


def small_loader(n: int, batch_size: int = 64):
    """The first n training images, shuffled with a fixed seed: fast checks in the tests."""
    return DataLoader(TensorDataset(X_train[:n], y_train[:n]), batch_size=batch_size,
                      shuffle=True, seed=0)

# %% [markdown]
# ## 1 The lottery ticket hypothesis
#
# Frankle & Carbin (2019) found that a dense network contains a sparse subnetwork that,
# **reset to its original initial weights**, trains to the same accuracy on its own: a
# "winning ticket". Iterative magnitude pruning finds it: train, prune a fraction of the
# surviving weights, rewind the survivors to their initial values (or, for larger networks,
# to their values after k training steps: Frankle et al. 2020), and repeat. The mask is
# what is found; the initial values it is paired with are what makes it win.
#
# ### Exercise 1.1: `_prune_survivors`
# `lottery_ticket(build_model, train_loader, rounds=3, rate_per_round=0.5, rewind="init",
# epochs=2, ...)` (given) trains, prunes, rewinds and retrains, and returns `"masks"`,
# `"rewind_weights"` (the state dict of the masked, rewound ticket) and per round (round 0 =
# dense) `"sparsity"` and `"accuracy"`. Each round calls `_prune_survivors(layers, masks,
# rate) -> new masks`: `layers` is `{name: layer}` (trained weights), `masks` the current
# keep-masks. For every layer, prune `round(rate * surviving)` MORE weights by |w| with
# `keep_mask`; weights already dead must stay dead (score them -1 so they rank first, and
# count them in `n_prune`). After r rounds the sparsity is 1 - (1 - rate) ** r.
# Checked by `test_lottery_ticket`.

# %% nbgrader={"grade": false, "grade_id": "lottery_ticket", "solution": true}
#| export optimization.compression.lottery
def _prune_survivors(layers: dict, masks: dict, rate: float) -> dict:
    """New keep-masks: `rate` of each layer's surviving weights pruned by |w|, the dead ones
    staying dead."""
    # TODO: per layer, score dead weights -1 and alive ones |w|; keep_mask pruning the dead
    # ones plus round(rate * alive).
    ### BEGIN SOLUTION
    new_masks = {}
    for name, layer in layers.items():
        alive = masks[name]
        scores = np.where(alive, np.abs(layer.weight.data), -1.0)  # dead weights rank first
        n_prune = int((~alive).sum()) + int(round(rate * alive.sum()))
        new_masks[name] = keep_mask(scores, n_prune)
    return new_masks
    ### END SOLUTION

# %%
#| export optimization.compression.lottery
def lottery_ticket(build_model, train_loader, rounds: int = 3, rate_per_round: float = 0.5,
                   rewind="init", epochs: int = 2, lr: float = 1e-3, val_loader=None,
                   verbose: bool = True) -> dict:
    """Iterative magnitude pruning with rewinding.

    Args:
        build_model: callable returning a freshly initialised model.
        rounds: prune-rewind-retrain rounds after the first dense training.
        rate_per_round: fraction of the *surviving* weights of each layer pruned per round.
        rewind: "init" (the initial weights) or an int k (the weights after k optimizer steps).
    Returns {"masks", "rewind_weights" (state_dict of the masked, rewound ticket),
             "sparsity": [per round, round 0 = dense], "accuracy": [per round]}.
    """
    rounds = check_int("rounds", rounds, minimum=1)
    check_fraction("rate_per_round", rate_per_round)
    check_loader("train_loader", train_loader)
    if not isinstance(rewind, str):
        rewind = check_int("rewind", rewind, minimum=0)
    elif rewind != "init":
        raise ValueError(f"rewind must be 'init' or a non-negative int step, got {rewind!r}")
    model = build_model()
    layers = prunable_layers(model)
    masks = {name: np.ones(layer.weight.shape, dtype=bool) for name, layer in layers.items()}
    saved = {"state": model.state_dict() if rewind in ("init", 0) else None}

    def remember(step):
        if rewind != "init" and step == rewind:
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
        masks.update(_prune_survivors(layers, masks, rate_per_round))
        model.load_state_dict(saved["state"])       # rewind, then hold the new masks
        apply_masks(model, masks)
        train_and_record()
    ticket = build_model()
    ticket.load_state_dict(saved["state"])
    apply_masks(ticket, masks)
    result.update(masks=masks, rewind_weights=ticket.state_dict())
    return result

# %%
def test_lottery_ticket():
    """The kept weights of the ticket are their initial values; 2 rounds of 50% leave 25%."""
    def build():
        tt.manual_seed(3)
        return MLP(hidden=(16,))

    initial = build().state_dict()
    result = lottery_ticket(build, small_loader(128), rounds=2, rate_per_round=0.5, epochs=1,
                            verbose=False)
    for name in ("1", "3"):
        keep, weights = result["masks"][name], result["rewind_weights"][f"{name}.weight"]
        assert np.array_equal(weights[keep], initial[f"{name}.weight"][keep]), \
            f"layer {name}: the kept weights of the ticket must be rewound to their initial values"
        pruned = float((~keep).mean())
        assert abs(pruned - 0.75) < 0.02, \
            f"layer {name}: 2 rounds of 50% of the SURVIVING weights prune 75%, got {pruned:.1%}"
    print("lottery_ticket: OK")


test_lottery_ticket()

# %% [markdown]
# ### Analysis: is the ticket special?
# Three rounds of 50% on an `MLP(hidden=(100,))` trained from scratch (87.5% sparse at the
# end). The control is the *same mask* with freshly drawn random weights, trained the same
# way: if the ticket's initial values did not matter, the two would score alike.

# %%
def build_ticket_mlp():
    tt.manual_seed(0)
    return MLP(hidden=(100,))


ticket = lottery_ticket(build_ticket_mlp, train_loader, rounds=3, rate_per_round=0.5, epochs=5,
                        val_loader=test_loader)
rows = []
for label, weights in (("winning ticket (rewound to init)", ticket["rewind_weights"]),
                       ("same mask, random init", None)):
    tt.manual_seed(123)
    model = MLP(hidden=(100,))
    if weights is not None:
        model.load_state_dict(weights)
    fine_tune(model, ticket["masks"], train_loader, epochs=5)
    rows.append({"network": label, "sparsity": measure_sparsity(model),
                 "accuracy": evaluate(model, test_loader)})
print(format_table(rows))

# %% [markdown]
# Compare the two rows with round 0 (the dense network, same epochs). The same connectivity
# started from other random values trains markedly worse in the same budget: a mask alone is
# not the whole story, which is the claim of the lottery ticket hypothesis.
# `python -m benchmarks.bench_pruning` also rewinds to a later step (docs/results/pruning.png).

# %% [markdown]
# ## 2 Sensitivity analysis: which layers tolerate pruning?
#
# Layers differ: the first layer sees raw pixels and the last one decides the class; the wide
# middle layers are usually the most redundant. Prune one layer at a time, measure the
# accuracy, and turn the table into per-layer targets for `MagnitudePruner(sparsity=targets)`
# (a dict `{layer name: fraction}` with `scope="layer"`).
#
# ### Exercise 2.1: `sensitivity_analysis`
# `sensitivity_analysis(model, loader, sparsities=(0.5, 0.7, 0.9, 0.95, 0.98)) -> dict`
# `{"baseline": dense accuracy, "table": {layer name: {sparsity: accuracy}}}`: the accuracy
# on `loader` when each prunable layer ALONE is pruned by |w| to each sparsity. Write the
# innermost loop body: from `original` (the layer's dense weight, kept aside), build the
# `keep_mask` of `np.abs(original)` pruning `round(sparsity * original.size)` weights, put
# `np.where(keep, original, 0)` into the layer **as float32**, and record
# `table[name][sparsity] = evaluate(model, loader)`. Restoring the layer is given: the model
# is left exactly as it was. `sensitivity_targets` (given) picks, per layer, the highest
# sparsity whose accuracy drop is at most `max_drop`. Checked by `test_sensitivity`.

# %% nbgrader={"grade": false, "grade_id": "sensitivity", "solution": true}
#| export optimization.compression.lottery
def sensitivity_analysis(model: Module, loader, sparsities=(0.5, 0.7, 0.9, 0.95, 0.98)) -> dict:
    """Accuracy when each prunable layer ALONE is magnitude-pruned to each sparsity:
    {"baseline": dense accuracy, "table": {layer name: {sparsity: accuracy}}}. The model is
    left exactly as it was."""
    if isinstance(sparsities, (str, bytes)) or not hasattr(sparsities, "__iter__"):
        raise ValueError(f"sparsities must be a sequence of numbers in [0, 1), got {sparsities!r}")
    sparsities = [check_fraction("sparsities", s) for s in sparsities]
    check_loader("loader", loader)
    layers = prunable_layers(model)
    if not layers:
        raise ValueError("model has no prunable layer (Linear or Conv2d)")
    check_finite_weights(layers)
    table = {}
    for name, layer in layers.items():
        original = layer.weight.data.copy()
        table[name] = {}
        for sparsity in sparsities:
            # TODO: prune a copy of `original` to `sparsity` by |w| (keep_mask), put it in the
            # layer (float32) and record the accuracy on `loader` in table[name][sparsity].
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
    baseline, tolerance = analysis["baseline"], 1e-9  # accuracies are ratios: 0.95 - 0.94 > 0.01
    return {name: max([s for s, acc in row.items() if baseline - acc <= max_drop + tolerance],
                      default=0.0)
            for name, row in analysis["table"].items()}

# %%
def test_sensitivity():
    """Sparsity 0 changes nothing; the model is restored; targets from a hand-made table."""
    model = load_pretrained("mlp")
    before = model.state_dict()
    analysis = sensitivity_analysis(model, test_loader, sparsities=(0.0, 0.5))
    changed = [k for k, v in model.state_dict().items() if not np.array_equal(before[k], v)]
    assert not changed, f"sensitivity_analysis must restore every weight: {changed} changed"
    for name, row in analysis["table"].items():
        assert row[0.0] == analysis["baseline"], \
            f"layer {name} at sparsity 0: expected the dense accuracy, got {row[0.0]}"
    fake = {"baseline": 0.9, "table": {"a": {0.5: 0.9, 0.9: 0.885, 0.95: 0.7}, "b": {0.5: 0.8}}}
    assert sensitivity_targets(fake, max_drop=0.02) == {"a": 0.9, "b": 0.0}
    print("sensitivity_analysis: OK")


test_sensitivity()

# %% [markdown]
# ### Analysis: per-layer targets for the pretrained CNN
# The sensitivity table of every prunable layer, the targets for a drop of at most 1%, and
# the CNN pruned with those targets (no fine-tuning) against one global threshold at the
# same overall sparsity.

# %%
cnn = load_pretrained("cnn")
analysis = sensitivity_analysis(cnn, test_loader)
shapes = {name: layer.weight.shape for name, layer in prunable_layers(cnn).items()}
print(format_table([{"layer": name, "shape": shapes[name],
                     **{f"accuracy at {s:.0%}": acc for s, acc in row.items()}}
                    for name, row in analysis["table"].items()]))
targets = sensitivity_targets(analysis, max_drop=0.01)
print("per-layer targets (accuracy drop <= 1% each):", targets)
per_layer = load_pretrained("cnn")
MagnitudePruner(targets).prune(per_layer)
overall = measure_sparsity(per_layer)
uniform = load_pretrained("cnn")
MagnitudePruner(overall, scope="global").prune(uniform)
print(format_table([{"pruning": "per-layer targets", "sparsity": overall,
                     "accuracy": evaluate(per_layer, test_loader)},
                    {"pruning": "one global threshold", "sparsity": measure_sparsity(uniform),
                     "accuracy": evaluate(uniform, test_loader)},
                    {"pruning": "dense", "sparsity": 0.0, "accuracy": analysis["baseline"]}]))

# %% [markdown]
# Each target was measured with the other layers dense: pruning all layers at once adds up
# their damage, so the combined drop is larger than 1%. The table still tells you where the
# redundancy is, which is what a global threshold finds by itself in one pass.

# %% [markdown]
# ## 3 Layer dropping
#
# The coarsest unit is a whole block. A residual block computes `x + f(x)`: without it the
# input simply flows on, so a transformer still runs, degraded, when a block is skipped.
# Fan et al. 2019 ("Reducing Transformer Depth on Demand with Structured Dropout",
# LayerDrop) train with random blocks skipped so that any can be removed later; on an
# ordinary pretrained model we can still measure which block hurts least to lose.
#
# `block_candidates(model, x)` (given) finds the removable blocks: children of the
# `Sequential` with sub-modules and parameters that keep their input shape (the
# TinyTransformer's `TransformerBlock`s). `prune_layers(model, n, loader)` (given) scores them
# with your `block_importance` and removes the n least important ones, in place.
#
# ### Exercise 3.1: `block_importance`
# `block_importance(model, candidates, metric, loader, x) -> list` of one float per position
# in `candidates`: the damage of deleting that block ALONE from a deep copy of `model`
# (`del copy[i]`). `metric="accuracy"`: `evaluate(model, loader) - evaluate(copy, loader)`;
# `metric="output"`: `mean((outputs(copy, x) - outputs(model, x)) ** 2)` on the batch `x`,
# with the given `_outputs(model, x)` (an array, eval mode, no graph).
# Checked by `test_prune_layers`.

# %%
#| export optimization.compression.layer_drop
LAYER_METRICS = ("accuracy", "output")


def _outputs(model: Module, x) -> np.ndarray:
    """model(x) as an array, in eval mode without a graph."""
    was_training = model.training
    model.eval()
    with no_grad():
        out = model(x if isinstance(x, Tensor) else Tensor(x)).data
    model.train(was_training)
    return out


def block_candidates(model: Module, x) -> list:
    """Positions of the children of Sequential `model` that are removable blocks: modules
    with sub-modules and parameters whose output shape equals their input shape on batch `x`
    (single layers such as LayerNorm or a square Linear are not blocks)."""
    if not isinstance(model, Sequential):
        raise ValueError(f"model must be a Sequential, got {type(model).__name__}")
    h, candidates = (x if isinstance(x, Tensor) else Tensor(x)), []
    was_training = model.training
    model.eval()
    with no_grad():
        for position, child in enumerate(model):
            out = child(h)
            if any(True for _ in child.named_children()) and child.parameters() \
                    and out.shape == h.shape:
                candidates.append(position)
            h = out
    model.train(was_training)
    return candidates

# %% nbgrader={"grade": false, "grade_id": "block_importance", "solution": true}
#| export optimization.compression.layer_drop
def block_importance(model: Module, candidates: list, metric: str, loader, x) -> list:
    """The damage of deleting each candidate block alone: the accuracy drop on `loader`
    (metric="accuracy") or the mean squared change of the outputs on batch `x` ("output")."""
    # TODO: the dense baseline once, then one score per candidate, from a deep copy with
    # that block deleted.
    ### BEGIN SOLUTION
    base = evaluate(model, loader) if metric == "accuracy" else _outputs(model, x)
    importance = []
    for i in candidates:
        skipped = copy.deepcopy(model)
        del skipped[i]
        if metric == "accuracy":
            importance.append(base - evaluate(skipped, loader))
        else:
            importance.append(float(np.mean((_outputs(skipped, x) - base) ** 2)))
    return importance
    ### END SOLUTION

# %%
#| export optimization.compression.layer_drop
def prune_layers(model: Module, n: int, loader=None, metric: str = "accuracy", inputs=None):
    """Remove the `n` least important blocks of a Sequential (layer dropping), IN PLACE.

    Importance of block i = the damage of skipping it alone (`block_importance`): the
    accuracy drop on `loader` (metric="accuracy"), or the mean squared change of the output
    (metric="output") on one batch x: the first batch of `loader`, or `inputs` (required
    when loader is None, which implies "output"). The n lowest go (ties: the later block
    first); 0 <= n < number of blocks. Returns (model, table) with one row per candidate
    {"block": position, "type", "importance", "removed"}.
    """
    check_choice("metric", metric, LAYER_METRICS)
    if loader is None and inputs is None:
        raise ValueError("prune_layers needs a `loader` or an `inputs` batch to measure importance")
    if loader is None:
        metric = "output"
    x = inputs if inputs is not None else next(iter(loader))[0]
    candidates = block_candidates(model, x)
    if not candidates:
        raise ValueError("model has no removable block (a child with sub-modules and parameters "
                         "that keeps its input shape)")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) \
            or not 0 <= n < len(candidates):
        raise ValueError(f"n must be an int in [0, {len(candidates) - 1}] (the model has "
                         f"{len(candidates)} removable blocks), got {n!r}")
    importance = block_importance(model, candidates, metric, loader, x)
    order = np.lexsort((-np.asarray(candidates), np.asarray(importance)))  # ties: later first
    removed = sorted(candidates[k] for k in order[:n])
    table = [{"block": i, "type": type(model[i]).__name__, "importance": float(score),
              "removed": i in removed} for i, score in zip(candidates, importance)]
    for i in reversed(removed):    # from the back, so the earlier positions stay valid
        del model[i]
    return model, table

# %%
def test_prune_layers():
    """Two transformer blocks; the second computes x + 0 + 0 = x (its output projections are
    zero), so skipping it changes nothing: it is the one to go, under both metrics."""
    rng = np.random.default_rng(1)
    net = Sequential(TransformerBlock(8, 2), TransformerBlock(8, 2), LayerNorm(8), TokenMean(),
                     Linear(8, 3))
    for p in net.parameters():
        p.data = rng.standard_normal(p.shape).astype(np.float32) * 0.5
    for layer in (net[1].attn.proj, net[1].mlp[2]):
        layer.weight.data[:] = 0.0
        layer.bias.data[:] = 0.0
    x = rng.standard_normal((16, 5, 8)).astype(np.float32)
    assert block_candidates(net, x) == [0, 1], "LayerNorm, TokenMean and Linear are not blocks"
    labels = _outputs(net, x).argmax(axis=1)               # labels the model gets 100% right
    loader = DataLoader(TensorDataset(x, labels), batch_size=8)
    for metric in LAYER_METRICS:
        scores = block_importance(net, [0, 1], metric, loader, x)
        assert scores[1] == 0.0 and scores[0] >= 0.0, \
            f"metric={metric}: skipping the identity block must cost exactly 0, got {scores}"
    small, table = prune_layers(copy.deepcopy(net), 1, inputs=x)
    assert [row["removed"] for row in table] == [False, True] and len(small) == 4, table
    assert np.allclose(_outputs(small, x), _outputs(net, x), atol=1e-6), \
        "without the identity block the model must compute the same outputs"
    print("prune_layers: OK")


test_prune_layers()

# %% [markdown]
# ### Analysis: dropping a block of the TinyTransformer
# We score both blocks of the pretrained TinyTransformer by the accuracy drop on the test
# set, drop the less important one, and give the shallower model six short epochs of
# fine-tuning.

# %%
transformer = load_pretrained("transformer")
shallow, block_table = prune_layers(copy.deepcopy(transformer), 1, test_loader)
print(format_table(block_table))
accuracy_dropped = evaluate(shallow, test_loader)
ft_loader, _ = digits_loaders(batch_size=32, seed=0)       # a fresh loader: reproducible batches
optimizer = Adam(shallow.parameters(), lr=1e-3)
for lr in (1e-3, 1e-3, 1e-3, 1e-3, 3e-4, 1e-4):
    optimizer.lr = lr
    tt.train_epoch(shallow, ft_loader, optimizer)
print(format_table([
    {"model": "TinyTransformer", "params": count_params(transformer),
     "MACs per image": model_flops(transformer, (1, 8, 8)),
     "accuracy": evaluate(transformer, test_loader)},
    {"model": "1 block dropped", "params": count_params(shallow),
     "MACs per image": model_flops(shallow, (1, 8, 8)), "accuracy": accuracy_dropped},
    {"model": "  + 6 epochs fine-tuning", "params": count_params(shallow),
     "MACs per image": model_flops(shallow, (1, 8, 8)),
     "accuracy": evaluate(shallow, test_loader)}]))

# %% [markdown]
# Skipping a block hurts a model that was not trained for it (LayerDrop trains for it), but
# the remaining block relearns most of the job in a few epochs: structured pruning at its
# coarsest granularity, a large saving in MACs for a loss that fine-tuning mostly recovers.
#
# **Reflection.** (1) In your lottery table, how far apart are the ticket and the random
# re-initialisation, and how does that compare with round 0? (2) Which CNN layer tolerated
# the most pruning alone, and why did the per-layer targets together cost more than 1%?
# (3) How many MACs did dropping a block save, and how much accuracy did fine-tuning recover?
