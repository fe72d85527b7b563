"""Checkpoint 18, Compression: the capabilities a finished module 18 must have.

Each test is one graded capability, run by `tito checkpoint run 18` and `tito grade 18`
against the package as exported (tinytorch/optimization/compression.py). Every assertion
names what is wrong, so a student sees which idea is missing, not just a traceback.
Points per capability are defined here, in POINTS (tests not listed are worth 1).
"""
import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import SGD, Adam, DataLoader, Linear, ReLU, Sequential, TensorDataset
from tinytorch.datasets import load_digits
from tinytorch.models import MLP
from tinytorch.optimization import compression as C

POINTS = {
    "test_sparsity_metrics": 1,
    "test_magnitude_pruning_exact_count": 2,
    "test_global_pruning_single_threshold": 2,
    "test_taylor_importance": 1,
    "test_fine_tune_keeps_pruned_weights_zero": 2,
    "test_polynomial_schedule": 1,
    "test_progressive_prune": 1,
    "test_lottery_ticket_rewind": 2,
    "test_sensitivity_analysis": 1,
    "test_pruning_validation": 1,
}


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


def test_magnitude_pruning_exact_count():
    model = _model(1)
    weights = {name: layer.weight.data.copy() for name, layer in C.prunable_layers(model).items()}
    masks = C.MagnitudePruner(0.6, scope="layer").prune(model)
    for name, w in weights.items():
        k = round(0.6 * w.size)
        assert (~masks[name]).sum() == k, f"layer {name}: expected exactly round(0.6 * {w.size}) = {k} pruned weights"
        smallest = np.sort(np.abs(w).ravel())[:k]
        assert np.allclose(np.sort(np.abs(w[~masks[name]])), smallest), \
            f"layer {name}: the pruned weights must be the ones with the smallest |w|"
        assert np.all(C.prunable_layers(model)[name].weight.data[~masks[name]] == 0), \
            "prune() must set the pruned weights to zero in the model"


def test_global_pruning_single_threshold():
    model = _model(2)
    weights = [layer.weight.data.copy() for layer in C.prunable_layers(model).values()]
    masks = list(C.MagnitudePruner(0.8, scope="global").prune(model).values())
    pruned = np.concatenate([np.abs(w)[~m] for w, m in zip(weights, masks)])
    kept = np.concatenate([np.abs(w)[m] for w, m in zip(weights, masks)])
    assert pruned.size == round(0.8 * sum(w.size for w in weights)), \
        "global pruning must remove round(sparsity * total prunable weights)"
    assert pruned.max() <= kept.min(), "global pruning must rank all layers together (one threshold)"


def test_taylor_importance():
    tt.manual_seed(3)
    model = Sequential(Linear(4, 3))
    x, y = tt.Tensor(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)), np.array([0, 1, 2, 0, 1])
    scores = C.taylor_importance(model, [(x, y)])["0"]
    tt.cross_entropy(model(x), y).backward()
    expected = np.abs(model[0].weight.data * model[0].weight.grad)
    assert np.allclose(scores, expected, rtol=1e-4, atol=1e-7), "Taylor importance must be |w * dL/dw|"


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


def test_polynomial_schedule():
    schedule = C.PolynomialSchedule(0.0, 0.9, steps=3)
    expected = [0.9 - 0.9 * (1 - t / 3) ** 3 for t in (1, 2, 3)]
    assert np.allclose(list(schedule), expected), \
        f"PolynomialSchedule must follow s_t = s_f + (s_i - s_f)(1 - t/n)^3: expected {expected}, got {list(schedule)}"


def test_progressive_prune():
    model = _model(5)
    masks, history = C.progressive_prune(model, 0.85, steps=3, train_loader=_loader(), epochs_per_step=1, verbose=False)
    assert C.measure_sparsity(model) == pytest.approx(0.85, abs=2e-3), "progressive_prune must end at target_sparsity"
    assert len(history) == 3 and history[0]["sparsity"] < history[-1]["sparsity"], \
        "progressive_prune must raise sparsity step by step"


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


def test_sensitivity_analysis():
    model = _model(7)
    x, y = load_digits("test")
    loader = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64)
    before = model.state_dict()
    analysis = C.sensitivity_analysis(model, loader, sparsities=(0.5, 0.9))
    assert set(analysis["table"]) == set(C.prunable_layers(model)), "one row per prunable layer"
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()), \
        "sensitivity_analysis must restore the model's weights"


def test_pruning_validation():
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="sparsity"):
            C.MagnitudePruner(bad)
    with pytest.raises(ValueError, match="scope"):
        C.MagnitudePruner(0.5, scope="channel")
    model = _model()
    model[1].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError):
        C.prune_magnitude(model, 0.5)
