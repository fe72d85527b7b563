"""Checkpoint 18, part: structured pruning and layer dropping (section 3)."""
import copy

import numpy as np
import pytest

from tinytorch.core import (Conv2d, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, ReLU, Sequential, Tensor,
                            TransformerBlock, no_grad)
from tinytorch.models import SimpleCNN, TokenMean
from tinytorch.optimization import compression as C

POINTS = {
    "test_filter_norm_ranking": 2,
    "test_structured_dependent_shapes": 2,
    "test_structured_equals_masked_original": 3,
    "test_structured_classifier_and_input_untouched": 1,
    "test_structured_validation": 1,
    "test_prune_layers_drops_least_important_block": 2,
}


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
    pruner = C.StructuredPruner(0.5)
    small = pruner.prune(net)
    masked = copy.deepcopy(net)
    layers = dict(masked.named_modules())
    for name in ("0", "3", "7"):
        w = net._modules[name].weight.data
        norms = np.abs(w.reshape(len(w), -1)).sum(axis=1)
        drop = np.argsort(norms, kind="stable")[: len(w) // 2]
        layers[name].weight.data[drop] = 0.0
        layers[name].bias.data[drop] = 0.0
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8)).astype(np.float32)
    assert np.allclose(_run(small, x), _run(masked, x), atol=1e-5), \
        "the pruned model must compute exactly what the original computes with the removed units zeroed " \
        "(check the feature-group order after Flatten and that biases are sliced with their rows)"


def test_structured_classifier_and_input_untouched():
    net = _randomized(SimpleCNN(channels=(6, 8)))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    small = C.StructuredPruner(0.5).prune(net)
    assert type(small) is SimpleCNN, "prune must return a model of the same class (a deep copy)"
    assert small[-1].out_features == 10, "the classifier's outputs (the classes) must never be pruned"
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items()), \
        "StructuredPruner.prune must not modify the model it is given"


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


def test_prune_layers_drops_least_important_block():
    net = _randomized(Sequential(TransformerBlock(8, 2), TransformerBlock(8, 2), LayerNorm(8), TokenMean(),
                                 Linear(8, 3)), seed=1, scale=0.5)
    for layer in (net[0].attn.proj, net[0].mlp[2]):  # block 0 now computes x + 0 + 0 = x
        layer.weight.data[:] = 0.0
        layer.bias.data[:] = 0.0
    x = np.random.default_rng(2).standard_normal((16, 5, 8)).astype(np.float32)
    small, _ = C.prune_layers(net, 1, inputs=x, metric="output")
    assert len(small) == 4 and len(net) == 5, "prune_layers must remove n blocks from a copy"
    assert np.allclose(_run(small, x), _run(net, x), atol=1e-5), \
        "the identity block (importance 0) is the one that must be removed"
    with pytest.raises(ValueError):
        C.prune_layers(net, 2, inputs=x)
