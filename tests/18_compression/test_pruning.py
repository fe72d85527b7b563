"""Sections 1-2 of module 18: sparsity metrics and unstructured pruning, against oracles
computed here independently (sorting by hand, finite differences, the schedule formula)."""
import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import SGD, Adam, Conv2d, DataLoader, Linear, ReLU, Sequential, TensorDataset
from tinytorch.datasets import load_digits
from tinytorch.models import MLP
from tinytorch.optimization.compression import (
    MagnitudePruner, PolynomialSchedule, count_params, fine_tune, lottery_ticket, measure_sparsity,
    model_flops, progressive_prune, prunable_layers, prune_magnitude, sensitivity_analysis,
    sensitivity_targets, taylor_importance)


def small_loader(n=192, batch_size=64, seed=0):
    x, y = load_digits("train")
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=batch_size, shuffle=True, seed=seed)


def random_model(seed=0):
    tt.manual_seed(seed)
    return Sequential(Conv2d(1, 4, 3, padding=1), ReLU(), tt.Flatten(), Linear(256, 12), ReLU(), Linear(12, 10))


# ----------------------------------------------------------------------------- metrics
def test_count_params_and_sparsity_by_hand():
    model = Sequential(Linear(3, 2), ReLU(), Linear(2, 2, bias=False))
    model[0].weight.data = np.array([[0, 1, 2], [0, 0, 3]], dtype=np.float32)
    model[0].bias.data = np.array([0, 0], dtype=np.float32)
    model[2].weight.data = np.array([[1, 0], [2, 3]], dtype=np.float32)
    assert count_params(model) == 6 + 2 + 4
    assert count_params(model, nonzero=True) == 3 + 0 + 3
    assert measure_sparsity(model) == pytest.approx(4 / 10)  # bias zeros do not count


def test_model_flops_counts_conv_and_linear_macs():
    model = random_model()
    # conv: 4 output channels * 8 * 8 positions * (1 * 3 * 3); linears: 256*12 + 12*10
    assert model_flops(model, (1, 8, 8)) == 4 * 64 * 9 + 256 * 12 + 12 * 10


def test_nothing_prunable_is_an_error():
    with pytest.raises(ValueError, match="prunable"):
        measure_sparsity(Sequential(ReLU()))
    with pytest.raises(ValueError, match="prunable"):
        MagnitudePruner(0.5).prune(Sequential(ReLU()))


# ----------------------------------------------------------------------------- magnitude
@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 0.99])
def test_layer_scope_prunes_exactly_round_sparsity_n_smallest(sparsity):
    model = random_model(1)
    original = {name: layer.weight.data.copy() for name, layer in prunable_layers(model).items()}
    masks = MagnitudePruner(sparsity, scope="layer").prune(model)
    for name, layer in prunable_layers(model).items():
        w = original[name].ravel()
        k = round(sparsity * w.size)  # torch.nn.utils.prune's count for a float amount
        pruned_by_hand = set(np.argsort(np.abs(w), kind="stable")[:k].tolist())
        assert set(np.flatnonzero(~masks[name].ravel()).tolist()) == pruned_by_hand
        assert np.array_equal(layer.weight.data, np.where(masks[name], original[name], 0))


def test_global_scope_uses_one_threshold_across_layers():
    model = random_model(2)
    weights = [layer.weight.data.copy() for layer in prunable_layers(model).values()]
    masks = MagnitudePruner(0.7, scope="global").prune(model)
    kept = np.concatenate([np.abs(w)[m] for w, m in zip(weights, masks.values())])
    pruned = np.concatenate([np.abs(w)[~m] for w, m in zip(weights, masks.values())])
    total = sum(w.size for w in weights)
    assert pruned.size == round(0.7 * total)
    assert pruned.max() <= kept.min()
    per_layer = [1 - m.mean() for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.05, "global pruning should give layers different sparsities"


def test_per_layer_sparsity_dict():
    model = random_model(3)
    masks = MagnitudePruner({"3": 0.5}).prune(model)
    assert masks["0"].all() and masks["5"].all()
    assert (~masks["3"]).sum() == round(0.5 * 256 * 12)
    with pytest.raises(ValueError, match="layers the model does not have"):
        MagnitudePruner({"nope": 0.5}).prune(model)


def test_taylor_importance_matches_finite_differences():
    tt.manual_seed(4)
    model = Sequential(Linear(3, 2))
    x, y = tt.Tensor(np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], dtype=np.float32)), np.array([1, 0])
    scores = taylor_importance(model, [(x, y)])["0"]
    w = model[0].weight.data.astype(np.float64)
    grad = np.zeros_like(w)
    eps = 1e-3
    for idx in np.ndindex(w.shape):  # dL/dw by central differences, independent of autograd
        for sign in (1, -1):
            model[0].weight.data = w.copy()
            model[0].weight.data[idx] += sign * eps
            grad[idx] += sign * tt.cross_entropy(model(x), y).item() / (2 * eps)
    model[0].weight.data = w.astype(np.float32)
    np.testing.assert_allclose(scores, np.abs(w * grad), rtol=2e-2, atol=1e-5)
    with pytest.raises(ValueError, match="data"):
        MagnitudePruner(0.5, importance="taylor").prune(model)


@pytest.mark.parametrize("kwargs, word", [
    (dict(sparsity=1.0), "sparsity"), (dict(sparsity=-0.01), "sparsity"), (dict(sparsity=float("nan")), "sparsity"),
    (dict(sparsity="0.5"), "sparsity"), (dict(sparsity=0.5, scope="row"), "scope"),
    (dict(sparsity=0.5, importance="random"), "importance"), (dict(sparsity={"0": 0.5}, scope="global"), "scope")])
def test_pruner_rejects_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MagnitudePruner(**kwargs)


def test_nan_weights_are_rejected():
    model = random_model()
    model[3].weight.data[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prune_magnitude(model, 0.5)


# ----------------------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("make_optimizer", [lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
                                            lambda p: Adam(p, lr=1e-2)], ids=["sgd-momentum", "adam"])
def test_masks_persist_through_optimizer_state(make_optimizer):
    loader = small_loader()
    tt.manual_seed(5)
    model = MLP(hidden=(24,))
    optimizer = make_optimizer(model.parameters())
    tt.train_epoch(model, loader, optimizer)  # optimizer state now holds nonzero momentum
    masks = prune_magnitude(model, 0.75)
    fine_tune(model, masks, loader, epochs=2, optimizer=optimizer)
    for name, layer in prunable_layers(model).items():
        assert np.all(layer.weight.data[~masks[name]] == 0), f"pruned weights in layer {name} revived"
        assert np.count_nonzero(layer.weight.data[masks[name]]) > 0.9 * masks[name].sum()


def test_fine_tune_rejects_foreign_masks():
    with pytest.raises(ValueError, match="mask"):
        fine_tune(random_model(), {"0": np.ones((2, 2), dtype=bool)}, small_loader(), epochs=1)


# ----------------------------------------------------------------------------- schedules
def test_polynomial_schedule_values():
    schedule = PolynomialSchedule(0.1, 0.8, steps=5, power=3)
    for t in range(6):
        assert schedule(t) == pytest.approx(0.8 + (0.1 - 0.8) * (1 - t / 5) ** 3)
    assert list(schedule) == [schedule(t) for t in range(1, 6)]
    linear = PolynomialSchedule(0.0, 0.5, steps=2, power=1)
    assert list(linear) == pytest.approx([0.25, 0.5])
    for bad in (dict(initial=0.0, final=1.0, steps=3), dict(initial=0.0, final=0.5, steps=0)):
        with pytest.raises(ValueError):
            PolynomialSchedule(**bad)


def test_progressive_prune_works_in_place_and_returns_the_model():
    """Like torch.nn.utils.prune: the model itself is pruned and returned; the history is
    opt-in. The last step prunes to exactly round(target * n) weights per layer (layer scope)."""
    tt.manual_seed(6)
    model = MLP(hidden=(32,))
    out, history = progressive_prune(model, 0.8, steps=3, train_loader=small_loader(), epochs_per_step=1,
                                     verbose=False, return_history=True)
    assert out is model
    sparsities = [row["sparsity"] for row in history]
    assert [row["step"] for row in history] == [1, 2, 3] and sparsities == sorted(sparsities)
    for name, layer in prunable_layers(model).items():
        w = layer.weight.data
        assert np.count_nonzero(w == 0) == round(0.8 * w.size), name
    cheap = MLP(hidden=(8,))
    assert progressive_prune(cheap, 0.5, steps=1, train_loader=small_loader(), epochs_per_step=0,
                             verbose=False) is cheap
    assert measure_sparsity(cheap) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="train_loader"):
        progressive_prune(model, 0.9)


# ----------------------------------------------------------------------------- lottery ticket
def test_lottery_ticket_rewinds_kept_weights_to_init():
    def build():
        tt.manual_seed(7)
        return MLP(hidden=(20,))

    init = build().state_dict()
    result = lottery_ticket(build, small_loader(), rounds=2, rate_per_round=0.4, epochs=1, verbose=False)
    for name, keep in result["masks"].items():
        ticket = result["rewind_weights"][f"{name}.weight"]
        np.testing.assert_array_equal(ticket[keep], init[f"{name}.weight"][keep])
        assert np.all(ticket[~keep] == 0)
        # two rounds of 40% of the survivors: 1 - 0.6**2 = 64% pruned (up to rounding)
        assert (~keep).mean() == pytest.approx(0.64, abs=0.01)
    assert len(result["accuracy"]) == 3
    with pytest.raises(ValueError, match="rewind"):
        lottery_ticket(build, small_loader(), rewind="late")


# ----------------------------------------------------------------------------- sensitivity
def test_sensitivity_analysis_restores_model_and_targets():
    model = random_model(8)
    x, y = load_digits("test")
    loader = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64)
    before = model.state_dict()
    analysis = sensitivity_analysis(model, loader, sparsities=(0.0, 0.9))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert set(analysis["table"]) == {"0", "3", "5"}
    assert all(row[0.0] == analysis["baseline"] for row in analysis["table"].values())
    fake = {"baseline": 0.95, "table": {"a": {0.5: 0.95, 0.8: 0.94, 0.9: 0.90}}}
    assert sensitivity_targets(fake, max_drop=0.01) == {"a": 0.8}
