"""Section 3 of module 18: structured pruning (filter/neuron removal) and layer dropping,
checked against oracles computed here: norms summed in plain Python loops, the original
model with the removed units zeroed ("masked"), and column indices written out by hand."""
import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinytorch.core import (Conv2d, DataLoader, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, ReLU,
                            Sequential, Tanh, Tensor, TensorDataset, TransformerBlock, load_model,
                            no_grad, save_model)
from tinytorch.models import MLP, SimpleCNN, TinyTransformer, TokenMean, load_pretrained
from tinytorch.optimization.compression import (StructuredPruner, block_candidates, prune_layers,
                                                prune_structured, unit_norms)


def randomize(model, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = (scale * rng.standard_normal(p.shape)).astype(np.float32)
    return model.eval()


def naive_norms(weight, criterion="l1"):
    out = []
    for i in range(weight.shape[0]):
        values = [float(v) for v in weight[i].ravel()]
        out.append(sum(abs(v) for v in values) if criterion == "l1" else sum(v * v for v in values) ** 0.5)
    return out


def naive_keep(weight, n_remove, criterion="l1"):
    norms = naive_norms(weight, criterion)
    order = sorted(range(len(norms)), key=lambda i: (norms[i], -i))  # ties: higher index goes first
    return sorted(order[n_remove:])


def masked(model, kept):
    """The original with every removed unit's weight row and bias entry set to zero."""
    out = copy.deepcopy(model)
    layers = dict(out.named_modules())
    for name, keep in kept.items():
        drop = sorted(set(range(layers[name].weight.shape[0])) - set(int(k) for k in keep))
        layers[name].weight.data[drop] = 0.0
        if layers[name].bias is not None:
            layers[name].bias.data[drop] = 0.0
    return out


def outputs(model, x):
    with no_grad():
        return model(Tensor(x)).data


def tiny_cnn():
    return Sequential(Conv2d(1, 6, 3, padding=1), ReLU(), MaxPool2d(2),
                      Conv2d(6, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(),
                      Linear(8 * 2 * 2, 6), ReLU(), Dropout(0.2), Linear(6, 3))


# ------------------------------------------------------------------- prune_structured
def test_norms_by_hand_l1_l2_and_ties():
    conv = Conv2d(1, 4, 2)
    conv.weight.data = np.array([[1, 1, 1, 1], [3, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]],
                                dtype=np.float32).reshape(4, 1, 2, 2)
    assert unit_norms(conv, "l1").tolist() == [4, 3, 1, 1]
    assert unit_norms(conv, "l2").tolist() == pytest.approx([2, 3, 1, 1])
    assert prune_structured(conv, 1).tolist() == [0, 1, 2]          # tie 2 vs 3: 3 goes
    assert prune_structured(conv, 3).tolist() == [0]
    assert prune_structured(conv, 3, criterion="l2").tolist() == [1]
    keep = prune_structured(conv, 0)
    assert keep.tolist() == [0, 1, 2, 3] and keep.dtype == np.int64


def test_prune_structured_linear_neurons_and_layer_untouched():
    lin = Linear(3, 3)
    lin.weight.data = np.array([[1, -2, 0], [0, 0, 2.5], [-1, 1, 1]], dtype=np.float32)
    lin.bias.data = np.array([100, -100, 0], dtype=np.float32)   # biases do not count
    before = lin.weight.data.copy()
    assert prune_structured(lin, 1, "l1").tolist() == [0, 2]
    assert prune_structured(lin, 1, "l2").tolist() == [0, 1]
    assert prune_structured(lin, 2, "l1").tolist() == [0]          # tie 0 vs 2 (L1 = 3): 2 goes
    assert np.array_equal(lin.weight.data, before)


@settings(max_examples=30, deadline=None)
@given(out=st.integers(1, 12), remove=st.integers(0, 11), seed=st.integers(0, 10_000),
       criterion=st.sampled_from(["l1", "l2"]))
def test_prune_structured_matches_loop_oracle(out, remove, seed, criterion):
    remove = remove % out
    conv = Conv2d(2, out, 3)
    rng = np.random.default_rng(seed)
    conv.weight.data = rng.integers(-2, 3, conv.weight.shape).astype(np.float32)  # many ties
    assert prune_structured(conv, remove, criterion).tolist() == naive_keep(conv.weight.data, remove, criterion)


@pytest.mark.parametrize("args, word", [((4,), "num_filters_to_remove"), ((-1,), "num_filters_to_remove"),
                                        ((1.5,), "num_filters_to_remove"), ((1, "l3"), "criterion")])
def test_prune_structured_validation(args, word):
    conv = Conv2d(1, 4, 2)
    with pytest.raises(ValueError, match=word):
        prune_structured(conv, *args)


def test_prune_structured_rejects_nan_and_other_layers():
    conv = Conv2d(1, 4, 2)
    conv.weight.data[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prune_structured(conv, 1)
    with pytest.raises(ValueError, match="Linear or Conv2d"):
        prune_structured(ReLU(), 1)


# ------------------------------------------------------------------- StructuredPruner
def test_all_dependent_shapes_and_feature_groups():
    net = randomize(tiny_cnn())
    pruner = StructuredPruner(0.5)
    small = pruner.prune(copy.deepcopy(net))   # in place: keep the original as the oracle
    want = {"0": naive_keep(net[0].weight.data, 3), "3": naive_keep(net[3].weight.data, 4),
            "7": naive_keep(net[7].weight.data, 3)}
    assert {k: v.tolist() for k, v in pruner.kept.items()} == want
    # Conv -> Conv: output filters and the next layer's input channels
    assert small[0].weight.shape == (3, 1, 3, 3) and small[0].out_channels == 3
    assert np.array_equal(small[0].bias.data, net[0].bias.data[want["0"]])
    assert small[3].weight.shape == (4, 3, 3, 3) and small[3].in_channels == 3
    assert np.array_equal(small[3].weight.data, net[3].weight.data[want["3"]][:, want["0"]])
    # Conv -> Flatten -> Linear: channel c is columns 4c .. 4c+3 (2x2 spatial)
    columns = []
    for c in want["3"]:
        columns += [4 * c, 4 * c + 1, 4 * c + 2, 4 * c + 3]
    assert small[7].weight.shape == (3, 16) and small[7].in_features == 16 and small[7].out_features == 3
    assert np.array_equal(small[7].weight.data, net[7].weight.data[want["7"]][:, columns])
    # Linear -> Linear: columns; the classifier keeps its 3 outputs and its bias
    assert small[10].weight.shape == (3, 3) and small[10].in_features == 3 and small[10].out_features == 3
    assert np.array_equal(small[10].weight.data, net[10].weight.data[:, want["7"]])
    assert np.array_equal(small[10].bias.data, net[10].bias.data)
    x = np.random.default_rng(1).standard_normal((7, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(outputs(small, x), outputs(masked(net, want), x), atol=1e-5)


def test_prune_works_in_place_and_keeps_class_and_parameter_order():
    net = randomize(SimpleCNN(channels=(6, 8)))
    names = list(dict(net.named_parameters()))
    layers = [id(m) for m in net.modules()]
    small = StructuredPruner(0.5).prune(net)
    assert small is net and type(net) is SimpleCNN, "prune shrinks the model it is given and returns it"
    assert [id(m) for m in net.modules()] == layers, "the same layer objects, with smaller parameters"
    assert net[0].out_channels == 3 and net[3].in_channels == 3 and net[3].out_channels == 4
    assert list(dict(net.named_parameters())) == names  # state_dict order kept


def _nan_in_second_layer(net):
    net[2].weight.data[1, 1] = np.nan
    return net


@pytest.mark.parametrize("ratio, spoil, word", [(0.9, lambda net: net, "all 2 units"),
                                                (0.5, _nan_in_second_layer, "NaN")])
def test_failed_prune_leaves_the_model_untouched(ratio, spoil, word):
    """Every check runs before the first layer is shrunk: a refusal about layer "2" must not
    leave layer "0" already shrunk."""
    net = spoil(randomize(Sequential(Linear(4, 6), ReLU(), Linear(6, 2), ReLU(), Linear(2, 2))))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=word):
        StructuredPruner(ratio).prune(net)
    after = net.state_dict()
    assert list(after) == list(before)
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)


@settings(max_examples=15, deadline=None)
@given(c1=st.integers(2, 7), c2=st.integers(2, 7), hidden=st.integers(2, 9),
       ratio=st.sampled_from([0.0, 0.2, 1 / 3, 0.5, 0.6]), criterion=st.sampled_from(["l1", "l2"]),
       seed=st.integers(0, 1000))
def test_structured_equals_masked_original(c1, c2, hidden, ratio, criterion, seed):
    net = randomize(Sequential(Conv2d(1, c1, 3, padding=1), ReLU(), MaxPool2d(2),
                               Conv2d(c1, c2, 3), Tanh(), Flatten(),
                               Linear(c2 * 2 * 2, hidden), ReLU(), Linear(hidden, 4)), seed)
    pruner = StructuredPruner(ratio, criterion)
    small = pruner.prune(copy.deepcopy(net))
    for name, n in [("0", c1), ("3", c2), ("6", hidden)]:
        assert len(pruner.kept[name]) == n - int(round(ratio * n))
    x = np.random.default_rng(seed).standard_normal((3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(outputs(small, x), outputs(masked(net, pruner.kept), x), atol=1e-4)


def test_nested_sequentials_and_mlp():
    nested = randomize(Sequential(Sequential(Linear(4, 6), ReLU()), Sequential(Linear(6, 4), ReLU()),
                                  Linear(4, 2)))
    pruner = StructuredPruner(1 / 3)
    small = pruner.prune(copy.deepcopy(nested))
    assert list(pruner.kept) == ["0.0", "1.0"]
    assert small[0][0].weight.shape == (4, 4) and small[1][0].weight.shape == (3, 4)
    assert small[2].weight.shape == (2, 3)
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(outputs(small, x), outputs(masked(nested, pruner.kept), x), atol=1e-5)
    mlp = load_pretrained("mlp")
    small = StructuredPruner(0.5).prune(mlp)
    assert [layer.weight.shape for layer in small if isinstance(layer, Linear)] == [(150, 64), (50, 150), (10, 50)]


def test_pruned_model_saves_and_loads(tmp_path):
    net = randomize(SimpleCNN(channels=(6, 8)))
    small = StructuredPruner(0.5).prune(net)
    save_model(small, tmp_path / "small.npz")
    loaded = load_model(tmp_path / "small.npz")
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(outputs(loaded, x), outputs(small, x))


def test_layers_before_unsupported_modules_are_left_alone():
    # Linear -> LayerNorm -> Linear: removing a unit would change the normalisation
    net = randomize(Sequential(Linear(4, 6), ReLU(), Linear(6, 5), LayerNorm(5), Linear(5, 2)))
    pruner = StructuredPruner(0.5)
    small = pruner.prune(net)
    assert list(pruner.kept) == ["0"]
    assert small[2].weight.shape == (5, 3) and small[4].weight.shape == (2, 5)


class SkipBlock(Sequential):
    """A Sequential subclass whose forward adds a skip connection: x + layers(x)."""

    def forward(self, x):
        return x + super().forward(x)


def test_skip_connection_subclass_nested_is_one_opaque_step():
    """Inside a plain Sequential, a child with its own forward is opaque: its layers are not
    pruned, and the layer feeding it is not a producer (its consumer is not a plain layer)."""
    net = randomize(Sequential(Linear(4, 6), ReLU(), Linear(6, 5), SkipBlock(Linear(5, 5), Tanh()),
                               Linear(5, 2)))
    pruner = StructuredPruner(0.5)
    small = pruner.prune(copy.deepcopy(net))
    assert list(pruner.kept) == ["0"]
    assert small[2].weight.shape == (5, 3) and small[3][0].weight.shape == (5, 5)
    x = np.random.default_rng(8).standard_normal((4, 4)).astype(np.float32)
    np.testing.assert_allclose(outputs(small, x), outputs(masked(net, pruner.kept), x), atol=1e-5)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan"), "half", True])
def test_ratio_validation(ratio):
    with pytest.raises(ValueError, match=r"ratio.*\[0, 1\)"):
        StructuredPruner(ratio)


def test_pruner_validation():
    with pytest.raises(ValueError, match="l1"):
        StructuredPruner(0.5, criterion="l0")
    for model in (Sequential(Flatten(), Linear(64, 10)), TinyTransformer(), Sequential(ReLU())):
        with pytest.raises(ValueError, match="nothing to prune"):
            StructuredPruner(0.5).prune(model)
    with pytest.raises(ValueError, match="all 2 units"):
        StructuredPruner(0.9).prune(Sequential(Linear(4, 2), ReLU(), Linear(2, 2)))
    net = tiny_cnn()
    net[3].weight.data[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StructuredPruner(0.5).prune(net)
    with pytest.raises(ValueError, match="Sequential"):
        StructuredPruner(0.5).prune(Linear(4, 4))


def test_pretrained_cnn_two_thirds_shapes_and_macs():
    cnn = load_pretrained("cnn")
    small = StructuredPruner(2 / 3).prune(copy.deepcopy(cnn))
    assert [small[0].out_channels, small[3].in_channels, small[3].out_channels] == [21, 21, 43]
    assert small[7].in_features == 43 * 4
    x = np.random.default_rng(4).standard_normal((4, 1, 8, 8)).astype(np.float32)
    kept = {"0": prune_structured(cnn[0], 43), "3": prune_structured(cnn[3], 85)}
    np.testing.assert_allclose(outputs(small, x), outputs(masked(cnn, kept), x), atol=1e-4)


# ------------------------------------------------------------------------ prune_layers
def block_model(seed=1):
    net = randomize(Sequential(TransformerBlock(8, 2), TransformerBlock(8, 2), TransformerBlock(8, 2),
                               LayerNorm(8), TokenMean(), Linear(8, 3)), seed, scale=0.5)
    for layer in (net[2].attn.proj, net[2].mlp[2]):   # block 2 becomes the identity
        layer.weight.data[:] = 0.0
        layer.bias.data[:] = 0.0
    return net


def test_block_candidates_are_shape_preserving_composites():
    x = np.zeros((2, 5, 8), dtype=np.float32)
    assert block_candidates(block_model(), x) == [0, 1, 2]
    assert block_candidates(load_pretrained("transformer"), np.zeros((2, 1, 8, 8), np.float32)) == [1, 2]


def test_prune_layers_output_metric_removes_identity_block():
    net = block_model()
    original = copy.deepcopy(net)                  # prune_layers works in place
    x = np.random.default_rng(5).standard_normal((16, 5, 8)).astype(np.float32)
    small, table = prune_layers(net, 1, inputs=x)
    assert small is net and len(net) == 5
    assert [row["block"] for row in table] == [0, 1, 2]
    assert [row["removed"] for row in table] == [False, False, True]
    assert table[2]["importance"] == 0.0 and table[0]["importance"] > 0 and table[1]["importance"] > 0
    # oracle for the other scores: skip the block by hand
    skip0 = Sequential(*[original[i] for i in range(1, 6)])
    want = float(np.mean((outputs(skip0, x) - outputs(original, x)) ** 2))
    assert table[0]["importance"] == pytest.approx(want, rel=1e-5)
    assert [type(m) for m in net] == [type(original[i]) for i in (0, 1, 3, 4, 5)]
    np.testing.assert_allclose(outputs(net, x), outputs(original, x), atol=1e-5)


def test_prune_layers_accuracy_metric_and_two_blocks():
    net = block_model()
    original = copy.deepcopy(net)
    x = np.random.default_rng(6).standard_normal((24, 5, 8)).astype(np.float32)
    labels = outputs(net, x).argmax(axis=1)
    loader = DataLoader(TensorDataset(x, labels), batch_size=8)
    small, table = prune_layers(net, 2, loader)
    drops = {row["block"]: row["importance"] for row in table}
    assert drops[2] == 0.0
    for i in (0, 1):
        skipped = Sequential(*[layer for j, layer in enumerate(original) if j != i]).eval()
        acc = float((outputs(skipped, x).argmax(axis=1) == labels).mean())
        assert drops[i] == pytest.approx(1.0 - acc)
    assert sum(row["removed"] for row in table) == 2 and table[2]["removed"]
    assert small is net and len(net) == 4 and type(net) is Sequential


def test_prune_layers_on_pretrained_transformer_keeps_class():
    model = load_pretrained("transformer")
    x = np.random.default_rng(7).random((32, 1, 8, 8)).astype(np.float32)
    small, table = prune_layers(model, 1, inputs=x, metric="output")
    assert small is model and type(model) is TinyTransformer and len(model) == 5
    assert sum(row["removed"] for row in table) == 1
    assert outputs(model, x).shape == (32, 10)


@pytest.mark.parametrize("kwargs, word", [
    ({"n": 3}, "n must be"), ({"n": -1}, "n must be"), ({"n": 1.0}, "n must be"),
    ({"n": 1, "metric": "loss"}, "metric"), ({"n": 1, "no_inputs": True}, "loader")])
def test_prune_layers_validation(kwargs, word):
    net = block_model()
    x = np.zeros((2, 5, 8), dtype=np.float32)
    inputs = None if kwargs.pop("no_inputs", False) else x
    with pytest.raises(ValueError, match=word):
        prune_layers(net, inputs=inputs, **kwargs)
    assert len(net) == 6, "a refused call must not remove any block"
    with pytest.raises(ValueError, match="Sequential"):
        block_candidates(TransformerBlock(8, 2), x)
    with pytest.raises(ValueError, match="no removable block"):   # single layers are not blocks
        prune_layers(MLP(), 0, inputs=np.zeros((2, 64), np.float32))
