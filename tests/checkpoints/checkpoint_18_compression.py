"""Checkpoint 18, Compression: the capabilities a finished module 18 must have.

Each test is one graded capability, run by `tito checkpoint run 18` and `tito grade 18`
against the package as exported (tinytorch/optimization/compression/). Every assertion
names what is wrong, so a student sees which idea is missing, not just a traceback.
Points per capability are defined here, in POINTS (tests not listed are worth 1).
"""
import copy
import json
import os
import sys
import time
import tracemalloc

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import (SGD, Adam, Conv2d, DataLoader, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, ReLU,
                            Sequential, Tensor, TensorDataset, TransformerBlock, cross_entropy, evaluate, kl_div,
                            log_softmax, no_grad, softmax)
from tinytorch.datasets import load_digits
from tinytorch.models import MLP, SimpleCNN, TokenMean, load_pretrained
from tinytorch.optimization import compression as C

POINTS = {
    "test_sparsity_metrics": 1,
    "test_keep_mask_exact_with_ties": 2,
    "test_magnitude_pruning_exact_count": 2,
    "test_global_pruning_single_threshold": 2,
    "test_taylor_importance": 1,
    "test_taylor_pruning_exact_count": 2,
    "test_fine_tune_keeps_pruned_weights_zero": 2,
    "test_polynomial_schedule": 1,
    "test_progressive_prune": 1,
    "test_progressive_prune_follows_the_schedule": 1,
    "test_lottery_ticket_rewind": 2,
    "test_sensitivity_analysis": 1,
    "test_pruning_validation": 1,
    # section 3: structured pruning
    "test_filter_norm_ranking": 2,
    "test_structured_dependent_shapes": 2,
    "test_structured_equals_masked_original": 3,
    "test_structured_in_place_keeps_class_and_classifier": 1,
    "test_structured_refuses_skip_connection": 1,
    "test_structured_validation": 1,
    "test_prune_layers_drops_least_important_block": 2,
    # section 4: knowledge distillation
    "test_kd_loss_value": 3,
    "test_kd_gradient": 2,
    "test_kd_temperature_scaling": 1,
    "test_teacher_frozen": 2,
    "test_distill_training_step": 2,
    "test_kd_validation": 1,
    # section 5: sparse inference and the pipeline
    "test_csr_from_dense_canonical": 2,
    "test_csr_to_dense_sums_duplicates": 1,
    "test_csr_matvec": 2,
    "test_csr_matmul_bounded_memory": 2,
    "test_csr_kernels_vectorized": 1,
    "test_csr_validation": 1,
    "test_quantized_csr_storage": 2,
    "test_to_sparse_equivalence": 3,
    "test_compressed_roundtrip": 2,
    "test_compressed_file_errors": 1,
    "test_compress_pipeline": 2,
}


# -------------------------------------------------------------------- Sections 1-2: metrics and pruning

def _loader(n=160):
    x, y = load_digits("train")
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=32, shuffle=True, seed=0)


def _model(seed=0):
    tt.manual_seed(seed)
    return MLP(hidden=(24, 16))


def test_sparsity_metrics():
    model = Sequential(Linear(2, 2), ReLU(), Linear(2, 1))
    model[0].weight.data = np.array([[0, 1], [2, 0]], dtype=np.float32)
    model[0].bias.data = np.zeros(2, dtype=np.float32)
    model[2].weight.data = np.array([[3, 4]], dtype=np.float32)
    model[2].bias.data = np.array([5], dtype=np.float32)
    assert C.count_params(model) == 9, "count_params must count every parameter, weights and biases"
    assert C.count_params(model, nonzero=True) == 5, "count_params(nonzero=True) must count nonzero entries"
    assert C.measure_sparsity(model) == pytest.approx(2 / 6), \
        "measure_sparsity must be zeros / size over Linear/Conv2d weights only (biases excluded)"


def _expected_keep(scores, n_prune):
    """The reference keep-mask: a plain sort of (score, flat index) pairs prunes the n_prune
    lowest scores, equal scores by the lower row-major index first."""
    flat = np.asarray(scores).ravel().tolist()
    keep = np.ones(len(flat), dtype=bool)
    keep[[i for _, i in sorted(zip(flat, range(len(flat))))[:n_prune]]] = False
    return keep.reshape(np.shape(scores))


def test_keep_mask_exact_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.random((6, 40)).astype(np.float32)
    scores[rng.random((6, 40)) < 0.6] = 0.0                  # many tied zeros, like Taylor scores of dead inputs
    zeros = int((scores == 0).sum())
    for n_prune in (0, 7, zeros - 1, zeros, zeros + 5, scores.size):
        keep = C.keep_mask(scores, n_prune)
        assert keep.shape == scores.shape and keep.dtype == np.bool_, \
            f"keep_mask must return a boolean mask of the scores' shape {scores.shape}, got {keep.dtype} {keep.shape}"
        assert (~keep).sum() == n_prune, (
            f"keep_mask(scores, {n_prune}) pruned {(~keep).sum()} of {zeros} tied zero scores and others: it must "
            f"prune exactly n_prune (rank positions; a threshold on the score value removes every tie)")
        wrong = np.flatnonzero(keep.ravel() != _expected_keep(scores, n_prune).ravel())
        assert wrong.size == 0, (
            f"keep_mask(scores, {n_prune}) must prune the lowest scores, equal scores by the lower row-major index "
            f"first (a stable sort); it decided flat positions {wrong[:6].tolist()} the other way")


def _split(flat, like):
    """Cut a flat array into pieces shaped like the arrays of `like`, in order."""
    pieces, start = [], 0
    for array in like:
        pieces.append(flat[start:start + array.size].reshape(array.shape))
        start += array.size
    return pieces


def test_magnitude_pruning_exact_count():
    model = _model(1)
    layers = C.prunable_layers(model)
    tie = next(iter(layers.values())).weight.data
    tie[:, :5] = 0.125                                       # a block of equal magnitudes across the cut
    weights = {name: layer.weight.data.copy() for name, layer in layers.items()}
    masks = C.MagnitudePruner(0.6, scope="layer").prune(model)
    for name, w in weights.items():
        k = round(0.6 * w.size)
        assert (~masks[name]).sum() == k, f"layer {name}: expected exactly round(0.6 * {w.size}) = {k} pruned weights"
        wrong = int((masks[name] != _expected_keep(np.abs(w), k)).sum())
        assert wrong == 0, (f"layer {name}: the pruned weights must be the {k} smallest |w| (equal |w|: lower "
                            f"index first); {wrong} weights were decided the other way")
        pruned = C.prunable_layers(model)[name].weight.data
        assert pruned.dtype == np.float32 and np.array_equal(pruned, np.where(masks[name], w, 0)), \
            "prune() must set the pruned weights to zero in the model, leave the kept ones unchanged and keep float32"
    first, *others = weights
    model = _model(1)
    masks = C.MagnitudePruner({first: 0.5}).prune(model)
    assert (~masks[first]).sum() == round(0.5 * weights[first].size), \
        "a per-layer sparsity dict must prune each named layer to its own fraction"
    assert all(masks[name].all() for name in others), "layers missing from the sparsity dict must stay dense"


def test_global_pruning_single_threshold():
    model = _model(2)
    weights = [layer.weight.data.copy() for layer in C.prunable_layers(model).values()]
    masks = list(C.MagnitudePruner(0.8, scope="global").prune(model).values())
    pruned = np.concatenate([np.abs(w)[~m] for w, m in zip(weights, masks)])
    kept = np.concatenate([np.abs(w)[m] for w, m in zip(weights, masks)])
    assert pruned.size == round(0.8 * sum(w.size for w in weights)), \
        "global pruning must remove round(sparsity * total prunable weights)"
    assert pruned.max() <= kept.min(), "global pruning must rank all layers together (one threshold)"
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    expected = _split(_expected_keep(flat, round(0.8 * flat.size)), weights)
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected)), \
        "global masks must be the one flat ranking cut back into each layer's shape, in layer order"


def _prune_global(model, sparsity):
    """Reference one-shot global magnitude pruning, in place: zero the round(sparsity * total)
    smallest |w| over all prunable layers (one stable ranking); returns the model."""
    layers = list(C.prunable_layers(model).values())
    weights = [layer.weight.data for layer in layers]
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    for layer, keep in zip(layers, _split(_expected_keep(flat, round(sparsity * flat.size)), weights)):
        layer.weight.data = np.where(keep, layer.weight.data, 0).astype(np.float32)
    return model


def _taylor_scores(model, batches):
    """Reference |w * dL/dw| summed over `batches`, one fresh backward per batch, in eval mode."""
    model.eval()
    total = {name: 0.0 for name in C.prunable_layers(model)}
    for x, y in batches:
        model.zero_grad()
        cross_entropy(model(x), y).backward()
        for name, layer in C.prunable_layers(model).items():
            total[name] = total[name] + np.abs(layer.weight.data * layer.weight.grad)
    model.zero_grad()
    model.train()
    return total


def test_taylor_importance():
    tt.manual_seed(3)
    model = Sequential(Linear(4, 6), ReLU(), Dropout(0.5), Linear(6, 3))
    rng = np.random.default_rng(0)
    batches = [(Tensor(rng.normal(size=(5, 4)).astype(np.float32)), rng.integers(0, 3, 5)) for _ in range(3)]
    expected = _taylor_scores(model, batches[:2])
    scores = C.taylor_importance(model, batches, num_batches=2)
    for name, want in expected.items():
        assert np.allclose(scores[name], want, rtol=1e-4, atol=1e-7), \
            f"Taylor importance of layer {name} must be |w * dL/dw| summed over the first num_batches batches " \
            "(clear the gradients before each batch, run the model in eval mode)"


def test_taylor_pruning_exact_count():
    x, y = load_digits("train")
    batches = [(Tensor(x[:64]), y[:64])]
    model = _model(8)
    scores = _taylor_scores(model, batches)
    first = next(iter(scores))
    k = round(0.05 * scores[first].size)
    assert (scores[first] == 0).sum() > k, "test precondition: the first layer has more tied zero scores than k"
    masks = C.MagnitudePruner(0.05, importance="taylor").prune(model, batches)
    for name, score in scores.items():
        n = round(0.05 * score.size)
        assert (~masks[name]).sum() == n, (
            f"Taylor pruning of layer {name} removed {(~masks[name]).sum()} weights where {n} were asked: "
            f"{int((score == 0).sum())} scores tie at 0, so keep_mask must count positions, not threshold values")
        assert score[~masks[name]].max() <= score[masks[name]].min() + 1e-12, \
            f"Taylor pruning of layer {name} must remove the lowest |w * dL/dw|"


def test_fine_tune_keeps_pruned_weights_zero():
    loader = _loader()
    for name, make in (("SGD with momentum", lambda p: SGD(p, lr=0.1, momentum=0.9)), ("Adam", lambda p: Adam(p, lr=1e-2))):
        model = _model(4)
        optimizer = make(model.parameters())
        tt.train_epoch(model, loader, optimizer)
        masks = C.prune_magnitude(model, 0.7)
        C.fine_tune(model, masks, loader, epochs=1, optimizer=optimizer)
        for layer_name, layer in C.prunable_layers(model).items():
            assert np.all(layer.weight.data[~masks[layer_name]] == 0), \
                f"fine_tune with {name}: pruned weights of layer {layer_name} came back (mask the gradient and re-apply the mask after each step)"
            assert layer.weight.grad is not None and np.all(layer.weight.grad[~masks[layer_name]] == 0), \
                f"fine_tune with {name}: MaskedOptimizer.step must zero the gradient of pruned weights (layer {layer_name})"


def test_polynomial_schedule():
    schedule = C.PolynomialSchedule(0.0, 0.9, steps=3)
    expected = [0.9 - 0.9 * (1 - t / 3) ** 3 for t in (1, 2, 3)]
    assert np.allclose(list(schedule), expected), \
        f"PolynomialSchedule must follow s_t = s_f + (s_i - s_f)(1 - t/n)^3: expected {expected}, got {list(schedule)}"
    square = C.PolynomialSchedule(0.2, 0.8, steps=4, power=2)
    for t, want in ((-3, 0.2), (0, 0.2), (1, 0.8 - 0.6 * 0.75 ** 2), (3, 0.8 - 0.6 * 0.25 ** 2), (4, 0.8), (9, 0.8)):
        assert square(t) == pytest.approx(want), \
            f"PolynomialSchedule(0.2, 0.8, 4, power=2)({t}) must be {want} (t is clipped to [0, steps]), got {square(t)}"


def test_progressive_prune():
    model = _model(5)
    pruned, history = C.progressive_prune(model, 0.85, steps=3, train_loader=_loader(), epochs_per_step=1,
                                          verbose=False, return_history=True)
    assert pruned is model, "progressive_prune prunes the model it is given and returns it"
    assert C.measure_sparsity(model) == pytest.approx(0.85, abs=2e-3), "progressive_prune must end at target_sparsity"
    assert len(history) == 3 and history[0]["sparsity"] < history[-1]["sparsity"], \
        "progressive_prune must raise sparsity step by step"


def test_progressive_prune_follows_the_schedule():
    one_shot = [layer.weight.data for layer in C.prunable_layers(_prune_global(_model(9), 0.8)).values()]
    # lr=1e-10 moves no weight by more than 1e-6; fine_tune's own default Adam(lr=1e-3) would
    for epochs, lr, case in ((0, 1e-2, "with no fine-tuning epoch"), (1, 1e-10, "with a tiny lr")):
        model = _model(9)
        C.progressive_prune(model, 0.8, steps=3, train_loader=_loader(), epochs_per_step=epochs, scope="global",
                            lr=lr, verbose=False)
        got = [layer.weight.data for layer in C.prunable_layers(model).values()]
        assert all(np.array_equal(g == 0, w == 0) and np.allclose(g, w, rtol=0, atol=1e-6)
                   for g, w in zip(got, one_shot)), (
            f"progressive_prune {case} must equal one-shot global magnitude pruning: prune each step with "
            f"the given scope, fine-tune epochs_per_step epochs with the one Adam(lr) optimizer")


def test_lottery_ticket_rewind():
    def build():
        tt.manual_seed(6)
        return MLP(hidden=(16,))

    init = build().state_dict()
    result = C.lottery_ticket(build, _loader(), rounds=2, rate_per_round=0.5, epochs=1, verbose=False)
    for name, keep in result["masks"].items():
        ticket = result["rewind_weights"][f"{name}.weight"]
        assert np.array_equal(ticket[keep], init[f"{name}.weight"][keep]), \
            "lottery_ticket must rewind the kept weights to their initial values"
        assert (~keep).mean() == pytest.approx(0.75, abs=0.01), \
            "each round must prune rate_per_round of the SURVIVING weights (2 rounds of 50% -> 75%)"
    # round 1 prunes the dense-trained weights by |w|: train the same model the same way (plain Adam)
    dense = build()
    tt.train_epoch(dense, _loader(), Adam(dense.parameters(), lr=1e-3))
    first = C.lottery_ticket(build, _loader(), rounds=1, rate_per_round=0.5, epochs=1, verbose=False)["masks"]
    for name, layer in C.prunable_layers(dense).items():
        w = layer.weight.data
        assert np.array_equal(first[name], _expected_keep(np.abs(w), round(0.5 * w.size))), \
            f"round 1 of lottery_ticket must prune layer {name}'s smallest |w| after the dense training"
        assert not np.any(result["masks"][name] & ~first[name]), \
            f"round 2 revived weights of layer {name} pruned in round 1: dead weights must rank first and stay dead"


def test_sensitivity_analysis():
    model = load_pretrained("mlp")
    x, y = load_digits("test")
    loader = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=96)
    before = model.state_dict()
    dtypes = set()
    for layer in C.prunable_layers(model).values():
        layer.register_forward_hook(lambda module, inputs, output: dtypes.add(module.weight.data.dtype))
    analysis = C.sensitivity_analysis(model, loader, sparsities=(0.5, 0.9))
    assert dtypes == {np.dtype(np.float32)}, f"the pruned weights must stay float32 while evaluated, got {dtypes}"
    assert set(analysis["table"]) == set(C.prunable_layers(model)), "one row per prunable layer"
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), \
        "sensitivity_analysis must restore the model's weights"
    assert analysis["baseline"] == evaluate(model, loader), "baseline must be the dense model's accuracy"
    for name, row in analysis["table"].items():
        for sparsity, accuracy in row.items():
            alone = copy.deepcopy(model)
            layer = C.prunable_layers(alone)[name]
            w = layer.weight.data
            layer.weight.data = np.where(_expected_keep(np.abs(w), round(sparsity * w.size)), w, 0).astype(np.float32)
            want = evaluate(alone, loader)
            assert accuracy == want, (f"sensitivity of layer {name} at {sparsity}: expected the accuracy {want} of "
                                      f"pruning that layer ALONE by |w|, got {accuracy}")


def test_pruning_validation():
    valid = C.MagnitudePruner(0.5).prune(_model())
    assert all((~m).sum() == round(0.5 * m.size) for m in valid.values()), "valid arguments must prune"
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            C.MagnitudePruner(bad)
    with pytest.raises(ValueError, match="scope"):
        C.MagnitudePruner(0.5, scope="channel")
    model = _model()
    model[1].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError):
        C.prune_magnitude(model, 0.5)


# -------------------- Section 3: structured pruning

def _randomized(model, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (scale * rng.standard_normal(p.shape)).astype(np.float32)
    return model.eval()


def _cnn():
    return _randomized(Sequential(Conv2d(1, 6, 3, padding=1), ReLU(), MaxPool2d(2),
                                  Conv2d(6, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(),
                                  Linear(32, 6), ReLU(), Dropout(0.2), Linear(6, 3)))


def _run(model, x):
    with no_grad():
        return model(Tensor(x)).data


def test_filter_norm_ranking():
    conv = Conv2d(1, 4, 2)
    conv.weight.data = np.array([[1, 1, 1, 1], [3, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]],
                                dtype=np.float32).reshape(4, 1, 2, 2)
    keep = C.prune_structured(conv, 2)
    assert sorted(np.asarray(keep).tolist()) == [0, 1], \
        "prune_structured must drop the filters with the smallest L1 norm (sum |w| over the whole filter)"
    assert np.asarray(C.prune_structured(conv, 3, criterion="l1")).tolist() == [0], \
        "with criterion='l1' the filter [3,0,0,0] (L1 = 3) goes before [1,1,1,1] (L1 = 4)"
    assert np.asarray(C.prune_structured(conv, 3, criterion="l2")).tolist() == [1], \
        "with criterion='l2' the filter [1,1,1,1] (L2 = 2) goes before [3,0,0,0] (L2 = 3)"
    assert np.asarray(C.prune_structured(conv, 1)).tolist() == [0, 1, 2], \
        "kept indices must be sorted, and equal norms must keep the lower index"
    conv = _randomized(Conv2d(3, 5, 3))
    rows = conv.weight.data.reshape(5, -1).astype(np.float64)
    for criterion, want in (("l1", np.abs(rows).sum(axis=1)), ("l2", np.sqrt((rows ** 2).sum(axis=1)))):
        got = C.unit_norms(conv, criterion)
        assert np.allclose(got, want, rtol=1e-12), f"unit_norms({criterion!r}) must be {want}, got {got}"


def test_structured_dependent_shapes():
    net = _cnn()
    small = C.StructuredPruner(0.5).prune(net)
    assert small[0].weight.shape == (3, 1, 3, 3), "Conv2d filters were not removed (expected 3 of 6 kept)"
    assert small[3].weight.shape == (4, 3, 3, 3) and small[3].in_channels == 3, \
        "the next Conv2d must lose the input channels of the removed filters (and update in_channels)"
    assert small[7].weight.shape == (3, 16) and small[7].in_features == 16, \
        "after Flatten, each removed channel must remove its H*W feature columns from the Linear"
    assert small[10].weight.shape == (3, 3), "Linear -> Linear: the removed neurons' columns must go"


def test_structured_equals_masked_original():
    net = _cnn()
    net[7] = _randomized(Linear(32, 6, bias=False))       # a layer without bias is pruned too
    pruner = C.StructuredPruner(0.5)
    small = pruner.prune(copy.deepcopy(net))     # prune works in place: keep `net` as the reference
    masked = copy.deepcopy(net)
    layers = dict(masked.named_modules())
    for name in ("0", "3", "7"):
        w = layers[name].weight.data
        norms = np.abs(w.reshape(len(w), -1)).sum(axis=1)
        drop = np.argsort(norms, kind="stable")[: len(w) // 2]
        layers[name].weight.data[drop] = 0.0
        if layers[name].bias is not None:
            layers[name].bias.data[drop] = 0.0
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    assert np.allclose(_run(small, x), _run(masked, x), atol=1e-5), \
        "the pruned model must compute exactly what the original computes with the removed units zeroed " \
        "(check the feature-group order after Flatten and that biases are sliced with their rows)"


def test_structured_in_place_keeps_class_and_classifier():
    net = _randomized(SimpleCNN(channels=(6, 8)))
    names = list(net.state_dict())
    small = C.StructuredPruner(0.5).prune(net)
    assert small is net, "StructuredPruner.prune must shrink the model it is given and return it (in place)"
    assert type(net) is SimpleCNN, "the pruned model must keep its class"
    assert net[0].out_channels == 3 and net[3].in_channels == 3, "prune must shrink the model's own layers"
    assert net[-1].out_features == 10, "the classifier's outputs (the classes) must never be pruned"
    assert list(net.state_dict()) == names, "the parameters must keep their names and order"


def test_structured_refuses_skip_connection():
    class SkipConnection(Sequential):
        """x + layers(x): its layer list is not its computation."""

        def forward(self, x):
            return x + super().forward(x)

    layers = [Linear(4, 4), ReLU(), Linear(4, 4)]
    skip = _randomized(SkipConnection(*layers))
    before = {k: v.copy() for k, v in skip.state_dict().items()}
    with pytest.raises(ValueError) as err:
        C.StructuredPruner(0.5).prune(skip)
    assert "SkipConnection" in str(err.value), "the refusal must name the class whose forward it cannot follow"
    assert all(np.array_equal(before[k], v) for k, v in skip.state_dict().items()), \
        "a refused model must be left untouched"
    plain = _randomized(Sequential(*copy.deepcopy(layers)))
    C.StructuredPruner(0.5).prune(plain)
    assert plain[0].weight.shape == (2, 4) and plain[2].weight.shape == (4, 2), \
        "the same layers in a plain Sequential must be pruned: only the custom forward is refused"


def test_structured_validation():
    for ratio in (1.0, -0.5):
        with pytest.raises(ValueError, match="ratio"):
            C.StructuredPruner(ratio)
    with pytest.raises(ValueError, match="criterion"):
        C.StructuredPruner(0.5, criterion="l7")
    with pytest.raises(ValueError):
        C.StructuredPruner(0.5).prune(Sequential(Flatten(), Linear(64, 10)))
    with pytest.raises(ValueError):
        C.prune_structured(Conv2d(1, 3, 2), 3)


def _blocks(identity=(0,)):
    """Three TransformerBlocks (the ones in `identity` compute x + 0 + 0 = x), then a head."""
    net = _randomized(Sequential(TransformerBlock(8, 2), TransformerBlock(8, 2), TransformerBlock(8, 2), LayerNorm(8),
                                 TokenMean(), Linear(8, 3)), seed=1, scale=0.5)
    for i in identity:
        for layer in (net[i].attn.proj, net[i].mlp[2]):
            layer.weight.data[:] = 0.0
            layer.bias.data[:] = 0.0
    return net


def test_prune_layers_drops_least_important_block():
    x = np.random.default_rng(2).standard_normal((16, 5, 8)).astype(np.float32)
    net = _blocks(identity=(0,))
    original = copy.deepcopy(net)
    small, _ = C.prune_layers(net, 1, inputs=x, metric="output")
    assert small is net and len(net) == 5, "prune_layers must remove n blocks from the model itself and return it"
    assert np.allclose(_run(net, x), _run(original, x), atol=1e-5), \
        "the identity block (importance 0) is the one that must be removed"
    with pytest.raises(ValueError):
        C.prune_layers(net, 2, inputs=x)     # two blocks left: at most one may go
    _, table = C.prune_layers(_blocks(identity=(0, 1)), 1, inputs=x, metric="output")
    assert [row["removed"] for row in table] == [False, True, False], \
        "two blocks tie at importance 0: the LATER one must be removed first"
    # metric="accuracy" on labels the model predicts: importance = 1 - accuracy without the block
    net = _blocks(identity=())
    labels = _run(net, x).argmax(axis=1)
    loader = DataLoader(TensorDataset(x, labels), batch_size=8)
    expected = []
    for i in range(3):
        skipped = copy.deepcopy(net)
        del skipped[i]
        expected.append(1.0 - evaluate(skipped, loader))
    _, table = C.prune_layers(net, 1, loader=loader, metric="accuracy")
    got = [row["importance"] for row in table]
    assert np.allclose(got, expected), \
        f"accuracy importance = accuracy(model) - accuracy(model without the block): expected {expected}, got {got}"
    lowest = max(i for i in range(3) if expected[i] == min(expected))
    assert [row["removed"] for row in table] == [i == lowest for i in range(3)], \
        "metric='accuracy' must remove the block whose removal costs the least accuracy"


# -------------------- Section 4: knowledge distillation

_S = np.array([[2.0, -1.0, 0.5], [0.0, 1.5, -0.5]])   # student logits
_T = np.array([[3.0, 0.0, -2.0], [-1.0, 2.5, 1.0]])   # teacher logits
_Y = np.array([0, 2])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kd(temperature, alpha, classes=3):
    return C.KnowledgeDistiller(Linear(4, classes), Linear(4, classes), temperature=temperature, alpha=alpha)


def test_kd_loss_value():
    T, alpha = 4.0, 0.7
    got = _kd(T, alpha).loss(Tensor(_S, dtype=np.float64), _T, _Y).item()
    p, q = _softmax(_T / T), _softmax(_S / T)
    kl = np.sum(p * np.log(p / q)) / len(_S)                  # batchmean
    ce = -np.mean(np.log(_softmax(_S)[np.arange(2), _Y]))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    wrong = {
        "KD loss is missing the T**2 factor": alpha * kl + (1 - alpha) * ce,
        "KD loss has alpha and 1 - alpha swapped (alpha must weight the soft term)":
            (1 - alpha) * T * T * kl + alpha * ce,
        "KD loss uses KL(student || teacher); it must be KL(teacher || student)":
            alpha * T * T * np.sum(q * np.log(q / p)) / len(_S) + (1 - alpha) * ce,
        "KD loss averages the KL over classes too (reduction='mean'); use 'batchmean'":
            alpha * T * T * kl / 3 + (1 - alpha) * ce,
        "KD loss computes the hard cross-entropy at temperature T; it must use T = 1":
            alpha * T * T * kl - (1 - alpha) * np.mean(np.log(q[np.arange(2), _Y])),
    }
    if abs(got - expected) > 1e-8:
        for message, value in wrong.items():
            assert abs(got - value) > 1e-5, message
    assert got == pytest.approx(expected, abs=1e-8), f"KD loss is {got}, expected {expected}"
    # float32 student with the teacher logits given as a Tensor
    got32 = _kd(T, alpha).loss(Tensor(_S), Tensor(_T), Tensor(_Y)).item()
    assert got32 == pytest.approx(expected, abs=1e-5), "KD loss wrong for float32 Tensors"
    huge = _kd(1.0, 0.5).loss(Tensor(_S * 1e4), _T * 1e4, _Y).item()
    assert np.isfinite(huge), "KD loss overflows for large logits: use log_softmax"


def test_kd_gradient():
    rng = np.random.default_rng(0)
    s, t, y = rng.standard_normal((4, 5)), 2 * rng.standard_normal((4, 5)), np.array([0, 3, 1, 4])
    T, alpha = 3.0, 0.6
    kd = _kd(T, alpha, classes=5)
    student = Tensor(s, requires_grad=True, dtype=np.float64)
    teacher = Tensor(t, requires_grad=True, dtype=np.float64)
    kd.loss(student, teacher, y).backward()
    assert teacher.grad is None, "gradient reached the teacher logits: treat them as constants"
    assert student.grad is not None, "no gradient reached the student logits"
    eps, numeric = 1e-6, np.zeros_like(s)
    for index in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (kd.loss(Tensor(up, dtype=np.float64), t, y).item()
                          - kd.loss(Tensor(down, dtype=np.float64), t, y).item()) / (2 * eps)
    assert np.allclose(student.grad, numeric, atol=1e-7), \
        "KD gradient w.r.t. the student logits disagrees with finite differences"
    closed = (alpha * T * (_softmax(s / T) - _softmax(t / T)) + (1 - alpha) * (_softmax(s) - np.eye(5)[y])) / 4
    assert np.allclose(student.grad, closed, atol=1e-10), "KD gradient differs from its closed form"


def test_kd_temperature_scaling():
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((4, 10)), rng.standard_normal((4, 10))
    norms = []
    for T in (1.0, 2.0, 4.0, 8.0):
        student = Tensor(s, requires_grad=True, dtype=np.float64)
        _kd(T, 1.0, classes=10).loss(student, t, np.zeros(4, dtype=np.int64)).backward()
        norms.append(np.linalg.norm(student.grad))
    assert max(norms) / min(norms) < 1.5, \
        f"soft-term gradient should keep its scale across T = 1..8 (T**2 factor): {np.round(norms, 4)}"


def test_teacher_frozen():
    x, y = load_digits("train")
    loader = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=32, shuffle=True, seed=0)
    tt.manual_seed(0)
    teacher = Sequential(Flatten(), Linear(64, 16), ReLU(), Dropout(0.5), Linear(16, 10))
    student = MLP(hidden=(8,))
    before = teacher.state_dict()
    student_before = student.state_dict()
    modes = []
    teacher.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    teacher.train()
    trained, history = C.distill(teacher, student, loader, epochs=2, lr=1e-2, verbose=False, return_history=True)
    assert trained is student, "distill must train the student it is given and return it"
    assert modes, "the teacher was never called"
    assert not any(modes), "the teacher must run in eval mode during distillation"
    assert teacher.training, "the teacher's training mode must be restored afterwards"
    for name, p in teacher.named_parameters():
        assert np.array_equal(p.data, before[name]), f"teacher weight {name} changed during distillation"
        assert p.grad is None, f"teacher weight {name} received a gradient (run it under no_grad)"
    assert any(not np.array_equal(p, student_before[n]) for n, p in student.state_dict().items()), \
        "the student did not train"
    assert len(history["loss"]) == 2 and len(history["accuracy"]) == 2, "history must hold one entry per epoch"
    with pytest.raises(ValueError, match="teacher"):
        C.KnowledgeDistiller(teacher, student).train(loader, 1, Adam(teacher.parameters()), verbose=False)


def test_distill_training_step():
    x, y = load_digits("train")

    def setup():
        tt.manual_seed(0)
        teacher, student = MLP(hidden=(16,)), MLP(hidden=(8,))
        loader = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=32, shuffle=True, seed=0)
        return teacher, student, loader, Adam(student.parameters(), lr=1e-2)

    teacher, student, loader, optimizer = setup()
    history = C.KnowledgeDistiller(teacher, student, temperature=2.0, alpha=0.7).train(loader, 2, optimizer,
                                                                                        verbose=False)
    # the reference: the same steps written out with the core functions
    teacher, reference, loader, optimizer = setup()
    teacher.eval()
    losses = []
    for _ in range(2):
        total = 0.0
        for xb, yb in loader:
            with no_grad():
                soft_targets = softmax(Tensor(teacher(xb).data / 2.0)).data
            logits = reference(xb)
            loss = (kl_div(log_softmax(logits * 0.5), soft_targets, reduction="batchmean") * (0.7 * 4.0)
                    + cross_entropy(logits, yb) * 0.3)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
        losses.append(total / 96)
    for (name, p), q in zip(student.named_parameters(), reference.parameters()):
        assert np.allclose(p.data, q.data, rtol=1e-5, atol=1e-6), (
            f"after 2 epochs the student's {name} differs from the reference training: per batch, teacher "
            f"logits under no_grad, student forward, KD loss, zero_grad, backward, step")
    assert np.allclose(history["loss"], losses, rtol=1e-5), \
        f"history['loss'] must be the mean KD loss per epoch: expected {losses}, got {history['loss']}"


def test_kd_validation():
    loss = _kd(4.0, 0.5).loss(Tensor(_S), _T, _Y).item()
    assert np.isfinite(loss) and loss > 0, "valid arguments must give a finite, positive KD loss"
    teacher, student = MLP(hidden=(8,)), MLP(hidden=(4,))
    for T in (0.0, -2.0):
        with pytest.raises(ValueError, match="temperature"):
            C.KnowledgeDistiller(teacher, student, temperature=T)
    for alpha in (-0.5, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            C.KnowledgeDistiller(teacher, student, alpha=alpha)
    with pytest.raises(ValueError) as err:
        C.KnowledgeDistiller(teacher, MLP(hidden=(4,), num_classes=7))
    assert "10" in str(err.value) and "7" in str(err.value), \
        "a class-count mismatch must name both counts"
    kd = C.KnowledgeDistiller(Sequential(Flatten()), Sequential(Flatten()))
    with pytest.raises(ValueError) as err:
        kd.loss(Tensor(np.zeros((2, 6))), np.zeros((2, 9)), np.array([0, 1]))
    assert "6" in str(err.value) and "9" in str(err.value), \
        "logits with different class counts must raise ValueError naming both counts"


# -------------------- Section 5: sparse inference and the compression pipeline

_W = np.array([[0, 5, 0, 0],
               [0, 0, 0, 0],      # an empty row: indptr must repeat
               [1, 0, 0, 2],
               [0, 0, 0, 3]], dtype=np.float32)


def _pruned(name, sparsity=0.9):
    model = load_pretrained(name)
    C.prune_magnitude(model, sparsity)
    return model


def test_csr_from_dense_canonical():
    A = C.CSRMatrix.from_dense(_W)
    assert A.data.tolist() == [5, 1, 2, 3], f"data must list the nonzeros row by row, got {A.data.tolist()}"
    assert A.indices.tolist() == [1, 0, 3, 3], f"indices must be the column of each value, got {A.indices.tolist()}"
    assert A.indptr.tolist() == [0, 1, 1, 3, 4], (
        f"indptr must be [0, 1, 1, 3, 4] (length rows + 1, starting at 0, repeated for the empty row); "
        f"got {A.indptr.tolist()}: off by one?")
    assert A.nnz == 4 and A.shape == (4, 4), "nnz or shape is wrong"
    assert np.array_equal(A.to_dense(), _W), "to_dense does not give back the matrix"
    W = np.array([[0.0, 0.0, 7.0, 0.0, -1.0], [2.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    B = C.CSRMatrix.from_dense(W)
    assert B.indices.tolist() == [2, 4, 0], "columns must be sorted within each row (canonical CSR)"
    assert B.nbytes == B.data.nbytes + B.indices.nbytes + B.indptr.nbytes, "nbytes must be data + indices + indptr"
    E = C.CSRMatrix.from_dense(np.zeros((3, 2), np.float32))
    assert E.nnz == 0 and E.indptr.tolist() == [0, 0, 0, 0], "an all-zero matrix has nnz 0 and indptr all 0"


def test_csr_to_dense_sums_duplicates():
    A = C.CSRMatrix(data=[1.0, 2.0, 4.0], indices=[1, 1, 0], indptr=[0, 2, 3], shape=(2, 3))
    assert np.array_equal(A.to_dense(), [[0, 3, 0], [4, 0, 0]]), \
        f"to_dense must SUM duplicate entries (row 0 stores column 1 twice: 1 + 2 = 3), got {A.to_dense().tolist()}"
    Q = C.CSRMatrix(data=np.array([3, -2], np.int8), indices=[2, 0], indptr=[0, 0, 2], shape=(2, 3))
    assert Q.to_dense().dtype == np.float32 and np.array_equal(Q.to_dense(), [[0, 0, 0], [-2, 0, 3]]), \
        "to_dense of int8 values must give float32"


def test_csr_matvec():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((12, 9)).astype(np.float32) * (rng.random((12, 9)) < 0.3)
    W[[0, 6, 11]] = 0.0
    for M in (W, _W, np.zeros((3, 4), np.float32), np.ones((3, 4), np.float32), np.zeros((0, 4), np.float32)):
        A = C.CSRMatrix.from_dense(M)
        x = rng.standard_normal(M.shape[1]).astype(np.float32)
        X = rng.standard_normal((M.shape[1], 5)).astype(np.float32)
        y = C.csr_matvec(A, x)
        assert y.shape == (M.shape[0],), f"csr_matvec must return shape (rows,), got {y.shape}"
        assert y.dtype == np.float32, (f"csr_matvec of float32 values and a float32 x must return float32 (the "
                                       f"products, sums and the zeros of empty rows in that dtype), got {y.dtype}")
        assert np.allclose(y, M.astype(np.float64) @ x, atol=1e-5), "csr_matvec differs from the dense product"
        assert np.allclose(C.csr_matmul(A, X), M.astype(np.float64) @ X, atol=1e-5), \
            "csr_matmul differs from the dense product (empty rows? reduceat?)"
    for values in (W, W.astype(np.int8)):             # the cached flat arrays: documented dtypes, no wider copy
        columns, vals, starts, nonempty = C.row_segments(C.CSRMatrix.from_dense(values))
        assert columns.dtype == np.intp and vals.dtype == np.float32 and starts.dtype == np.intp, (
            f"row_segments of {values.dtype} values must give intp columns and starts and float32 values (the "
            f"cache lives as long as the matrix), got {columns.dtype}, {vals.dtype}, {starts.dtype}")
        assert nonempty.tolist() == [r for r in range(12) if values[r].any()], \
            "row_segments' rows must list the non-empty rows when some row is empty"
    # a batch of 64 columns of a denser matrix takes the dense-panel path (BLAS on row blocks)
    Wd = rng.standard_normal((50, 40)).astype(np.float32) * (rng.random((50, 40)) < 0.4)
    Wd[[0, 17, 49]] = 0.0
    Xd = rng.standard_normal((40, 64)).astype(np.float32)
    for budget in (C.GATHER_BUDGET, 640):               # 640 values: panels of 16 rows
        assert np.allclose(C.csr_matmul(C.CSRMatrix.from_dense(Wd), Xd, gather_budget=budget),
                           Wd.astype(np.float64) @ Xd, atol=1e-4), \
            f"csr_matmul of a 40% dense matrix with 64 columns (gather_budget={budget}) differs from the " \
            "dense product: check how the dense panels place each row's values and cover every row block"


def test_csr_matmul_bounded_memory():
    rng = np.random.default_rng(3)
    rows, cols, batch = 3000, 64, 32
    W = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        W[r, rng.choice(cols, 8, replace=False)] = rng.standard_normal(8)
    W[7] = 0.0
    A = C.CSRMatrix.from_dense(W)
    X = rng.standard_normal((cols, batch)).astype(np.float32)
    want = W.astype(np.float64) @ X
    for budget in (1, 300, 4096):                      # 1 row, 1 row, 16 rows per block (3000 = 187 * 16 + 8)
        assert np.allclose(C.csr_matmul(A, X, gather_budget=budget), want, atol=1e-4), \
            f"csr_matmul(gather_budget={budget}) differs from the dense product: check the block boundaries"
    A.padded_rows()                                     # the cached ELLPACK form is not part of the product
    budget = 4096
    tracemalloc.start()
    try:
        out = C.csr_matmul(A, X, gather_budget=budget)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    limit = out.nbytes + 4 * budget * X.itemsize + (64 << 10)
    assert peak <= limit, (
        f"csr_matmul(gather_budget={budget}) peaked at {peak:,} bytes, more than the output ({out.nbytes:,}) + "
        f"a few gathered blocks ({limit:,}): gather X in blocks of rows, not all {rows * 8 * batch:,} values at once")


def _both(first, second):
    """One trace function running two (either may be None; a local tracer returning None keeps itself)."""
    if first is None or second is None:
        return first or second

    def trace(frame, event, arg):
        return _both(first(frame, event, arg) or (first if event != "call" else None),
                     second(frame, event, arg) or (second if event != "call" else None))
    return trace


def _lines_run_in_package(fn) -> int:
    """How many lines of the compression package's modules run during fn() (sys.settrace).
    A tracer already installed (a coverage tool, scripts/grading_map.py) keeps running."""
    package_dir = os.path.dirname(os.path.abspath(C.__file__)) + os.sep
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):
        return local if os.path.abspath(frame.f_code.co_filename).startswith(package_dir) else None

    outer = sys.gettrace()
    sys.settrace(_both(outer, tracer))
    try:
        fn()
    finally:
        sys.settrace(outer)
    return count


def test_csr_kernels_vectorized():
    def work(rows):
        W = np.zeros((rows, 4), np.float32)
        W[np.arange(rows), np.arange(rows) % 4] = 2.0
        W[rows // 2] = 0.0                                     # an empty row too
        A = C.CSRMatrix.from_dense(W)
        y = C.csr_matvec(A, np.arange(4, dtype=np.float32))
        Y = C.csr_matmul(A, np.ones((4, 2), np.float32))
        Z = C.csr_matmul(A, np.ones((4, 32), np.float32))      # 25% dense, 32 columns: the dense-panel path
        assert np.allclose(y, W @ np.arange(4)) and np.allclose(Y, W @ np.ones((4, 2))) and \
            np.allclose(Z, W @ np.ones((4, 32))), "wrong result on a tall matrix"

    small, large = _lines_run_in_package(lambda: work(40)), _lines_run_in_package(lambda: work(4000))
    assert small > 0, "no line of the compression package was traced: this check would prove nothing"
    assert large <= small + 5, (f"from_dense + csr_matvec + csr_matmul ran {small} lines of Python for 40 rows "
                                f"but {large} for 4000 rows: a Python loop over rows or nonzeros (or one dense "
                                f"panel per row instead of per block of rows)?")


def test_csr_validation():
    good = dict(data=[5.0, 1.0], indices=[1, 0], indptr=[0, 1, 1, 2], shape=(3, 2))
    assert np.array_equal(C.CSRMatrix(**good).to_dense(), [[0, 5], [0, 0], [1, 0]]), \
        "a valid CSRMatrix must hold its values (to_dense)"
    assert np.array_equal(C.CSRMatrix.from_dense(_W).to_dense(), _W), "from_dense -> to_dense must round-trip"
    cases = [("indptr", dict(indptr=[0, 1, 2])), ("indptr", dict(indptr=[1, 1, 1, 2])),
             ("indptr", dict(indptr=[0, 2, 1, 2])), ("indptr", dict(indptr=[0, 1, 1, 3])),
             ("indices", dict(indices=[1, 2])), ("indices", dict(indices=[1.0, 0.0])),
             ("data", dict(data=[5.0])), ("shape", dict(shape=(3, -1)))]
    for name, change in cases:
        with pytest.raises(ValueError) as info:
            C.CSRMatrix(**{**good, **change})
        assert name in str(info.value), f"CSRMatrix({change}) must raise ValueError naming {name!r}"


def test_quantized_csr_storage():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((40, 200)).astype(np.float32) * (rng.random((40, 200)) < 0.2)
    Q = C.CSRMatrix.from_dense(W).quantize("row")
    assert Q.values.dtype == np.int8, "values must be stored as int8"
    assert Q.indices.dtype == np.uint8, f"200 columns fit uint8 indices, got {Q.indices.dtype}"
    assert Q.indptr.dtype == np.uint16, f"indptr holds up to nnz={Q.nnz} (needs uint16), got {Q.indptr.dtype}"
    assert Q.scale.shape == (40,) and Q.scale.dtype == np.float32, "per-row scales must be float32, one per row"
    err = np.abs(Q.dequantize().to_dense() - W)
    assert (err <= Q.scale[:, None] / 2 * (1 + 1e-6)).all(), "int8 round-trip error exceeds scale / 2"
    assert Q.nbytes == Q.values.nbytes + Q.scale.nbytes + Q.indices.nbytes + Q.indptr.nbytes, "wrong nbytes"
    wide = C.CSRMatrix.from_dense(np.ones((1, 300), np.float32)).quantize()
    assert wide.indices.dtype == np.uint16, "300 columns need uint16 indices"
    W[3] = 0.0                                              # an empty row: scale 1
    W[5] = 0.0
    W[5, :3] = [1.0, 1e-4, -0.5]                             # 1e-4 rounds to 0 at scale 1/127: dropped
    peaks = np.abs(W).max(axis=1)
    for per, scale_shape, peak in (("row", (40,), peaks), ("tensor", (), np.abs(W).max())):
        Q = C.CSRMatrix.from_dense(W).quantize(per)
        want_scale = np.where(peak > 0, peak / 127, 1.0)
        assert Q.scale.shape == scale_shape and np.allclose(Q.scale, want_scale, rtol=1e-6), \
            f"per={per!r}: scale must be max|w| / 127 (1 for an empty row), shape {scale_shape}"
        scale = Q.scale[:, None] if per == "row" else Q.scale
        q = np.clip(np.rint(W / scale), -127, 127)
        assert Q.nnz == np.count_nonzero(q) and np.array_equal(Q.values, q[q != 0]), \
            f"per={per!r}: values must be rint(w / scale) in row-major order, without the ones that round to 0"
        assert np.allclose(Q.dequantize().to_dense(), q * scale, rtol=1e-6, atol=0), \
            f"per={per!r}: dequantize must give values * scale of each value's row (or the one scale)"


def test_to_sparse_equivalence():
    x = Tensor(load_digits("test")[0][:32])
    for name in ("mlp", "cnn"):
        dense = _pruned(name)
        sparse = C.to_sparse(dense)
        assert not any(isinstance(m, (Linear, Conv2d)) for m in sparse.modules()), \
            f"to_sparse left a dense Linear/Conv2d in the 90%-pruned {name}"
        assert any(isinstance(m, Linear) for m in dense.modules()), "to_sparse must not modify its input"
        with no_grad():
            want, got = dense(x).data, sparse(x).data
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), f"sparse {name} outputs differ from dense"
    nested = Sequential(Sequential(Linear(4, 4), ReLU()), Linear(4, 2))
    nested[0][0].weight.data[:, :3] = 0.0
    nested[1].weight.data[:, :2] = 0.0                       # exactly 50% zeros
    out = C.to_sparse(nested, min_sparsity=0.75)
    assert isinstance(out[0][0], C.SparseLinear), "to_sparse must reach layers inside nested Sequentials"
    assert isinstance(out[1], Linear), "a layer below min_sparsity must stay dense"
    out = C.to_sparse(nested, min_sparsity=0.5)
    assert isinstance(out[1], C.SparseLinear), "a layer whose sparsity equals min_sparsity must be converted (>=)"
    nested[1].weight.data[:, :2] = 1.0
    out = C.to_sparse(nested, min_sparsity=0.5)
    assert isinstance(out[1], Linear), "a layer below min_sparsity must stay dense"
    with pytest.raises(ValueError):
        C.to_sparse(nested, min_sparsity=1.5)


def test_compressed_roundtrip(tmp_path):
    model = C.to_sparse(_pruned("mlp"), quantize=True)
    path = tmp_path / "mlp.npz"
    C.save_compressed(model, path)
    with np.load(path, allow_pickle=False) as archive:
        dtypes = {k: archive[k].dtype for k in archive.files}
    assert np.dtype(np.int8) in dtypes.values(), "sparse values must be saved as int8"
    assert not any(d == np.float32 and "indices" in k for k, d in dtypes.items()), "indices saved as floats"
    loaded = C.load_compressed(path)
    x = Tensor(load_digits("test")[0][:32])
    with no_grad():
        assert np.array_equal(loaded(x).data, model(x).data), "the loaded model computes something else"
    dense_bytes = 4 * sum(p.size for p in load_pretrained("mlp").parameters())
    assert C.model_nbytes_compressed(model) * 10 <= dense_bytes, "90% sparse int8 CSR must be >= 10x smaller"


def test_compressed_file_errors(tmp_path):
    model = C.to_sparse(_pruned("mlp"), quantize=True)
    path = tmp_path / "mlp.npz"
    C.save_compressed(model, path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for content in (raw[: len(raw) // 2], b"", b"definitely not a zip"):
        bad.write_bytes(content)
        with pytest.raises(ValueError):
            C.load_compressed(bad)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(str(arrays["__spec__"]))
    layer = sorted(header["sparse"])[0]
    broken = dict(arrays, **{f"sparse:{layer}:indptr": arrays[f"sparse:{layer}:indptr"][::-1].copy()})
    np.savez(bad, **broken)
    with pytest.raises(ValueError) as err:
        C.load_compressed(bad)
    assert str(bad) in str(err.value) and repr(layer) in str(err.value), \
        f"an invalid sparse layer must raise ValueError naming the file and the layer {layer!r}, got: {err.value}"
    header["sparse"][layer] = "int8"                          # a kind that is not a {"kind": ...} entry
    np.savez(bad, **dict(arrays, __spec__=np.array(json.dumps(header))))
    with pytest.raises(ValueError):
        C.load_compressed(bad)
    arrays.pop(f"sparse:{layer}:indptr")
    np.savez(bad, **arrays)
    with pytest.raises(ValueError):
        C.load_compressed(bad)


def _masked_training(model, loader, epochs, optimizer):
    """Reference fine-tuning: per batch, forward, zero_grad, backward, the gradient of every
    zero weight of a prunable layer masked, optimizer step, the zero weights re-zeroed."""
    layers = C.prunable_layers(model)
    masks = {name: layer.weight.data != 0 for name, layer in layers.items()}
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            for name, layer in layers.items():
                layer.weight.grad = layer.weight.grad * masks[name]
            optimizer.step()
            for name, layer in layers.items():
                layer.weight.data = np.where(masks[name], layer.weight.data, 0).astype(np.float32)
    return model


def _same_weights(report, reference) -> bool:
    """Every sparse layer of the compressed model holds the reference layer's weight."""
    sparse = C.sparse_layers(report.model)
    return all(np.array_equal(sparse[name].weight.to_dense() == 0, layer.weight.data == 0)
               and np.allclose(sparse[name].weight.to_dense(), layer.weight.data, rtol=1e-5, atol=1e-6)
               for name, layer in C.prunable_layers(reference).items())


def test_compress_pipeline(capsys):
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    test = DataLoader(TensorDataset(xt[:96], yt[:96]), batch_size=96)

    def train():
        return DataLoader(TensorDataset(x[:128], y[:128]), batch_size=32, shuffle=True, seed=0)

    model = load_pretrained("mlp")
    before = model.state_dict()
    light = _prune_global(copy.deepcopy(model), 0.3)        # some layers end below 50% sparsity
    start = time.perf_counter()
    report = C.compress(model, None, test, sparsity=0.3, fine_tune_epochs=0, steps=3, quantize=False,
                        latency_repeats=1)
    elapsed = time.perf_counter() - start
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), \
        "compress must work on a copy: the model it was given changed"
    assert report.accuracy_pruned == report.accuracy_fine_tuned == evaluate(light, test), \
        "with fine_tune_epochs=0, compress must score one-shot global magnitude pruning (pruned = fine-tuned)"
    assert not any(isinstance(m, (Linear, Conv2d)) for m in report.model.modules()), \
        "compress must convert every Linear/Conv2d to its sparse twin, however sparse (min_sparsity=0)"
    assert _same_weights(report, light) and all(
        layer.qweight is None for layer in C.sparse_layers(report.model).values()), \
        "with quantize=False the compressed model must hold the pruned float32 weights"
    assert 0 <= report.fine_tune_seconds <= elapsed, \
        f"fine_tune_seconds must be the time spent fine-tuning, got {report.fine_tune_seconds}"
    quantized = C.compress(model, None, test, sparsity=0.8, fine_tune_epochs=0, steps=1, per="tensor",
                           latency_repeats=1)
    assert all(layer.qweight is not None and layer.qweight.scale.shape == ()
               for layer in C.sparse_layers(quantized.model).values()), \
        "quantize=True with per='tensor' must store int8 weights with one scale per layer"

    # one step: one-shot pruning, then fine-tuning with Adam(lr) for all the epochs
    one_shot = _prune_global(copy.deepcopy(model), 0.8)
    report = C.compress(model, train(), test, sparsity=0.8, fine_tune_epochs=2, steps=1, quantize=False, lr=2e-3,
                        latency_repeats=1)
    reference = _prune_global(copy.deepcopy(model), 0.8)
    _masked_training(reference, train(), 2, Adam(reference.parameters(), lr=2e-3))
    assert report.accuracy_pruned == evaluate(one_shot, test), "accuracy_pruned is one-shot pruning, before fine-tuning"
    assert _same_weights(report, reference) and report.accuracy_fine_tuned == evaluate(reference, test), \
        "steps=1: compress must prune once, then fine-tune fine_tune_epochs epochs with Adam(lr) and the masks"

    # two steps: progressive pruning along the cubic schedule (0.7, then 0.8), with
    # max(1, fine_tune_epochs // steps) epochs per step: 1 // 2 -> 1, 3 // 2 = 1, then 4 // 2 = 2
    for epochs in (1, 3, 4):
        report = C.compress(model, train(), test, sparsity=0.8, fine_tune_epochs=epochs, steps=2, quantize=False,
                            lr=2e-3, latency_repeats=1)
        reference, loader = copy.deepcopy(model), train()
        optimizer = Adam(reference.parameters(), lr=2e-3)
        for sparsity in (0.8 - 0.8 * 0.5 ** 3, 0.8):
            _masked_training(_prune_global(reference, sparsity), loader, max(1, epochs // 2), optimizer)
        assert _same_weights(report, reference) and report.accuracy_fine_tuned == evaluate(reference, test), (
            f"steps=2, fine_tune_epochs={epochs}: compress must prune progressively (the given scope and lr, one "
            f"Adam throughout) with max(1, fine_tune_epochs // steps) = {max(1, epochs // 2)} epochs per step")
    assert capsys.readouterr().out == "", "compress reports through its return value: it must not print"
