"""count_parameters, layer_macs (hand-counted) and median_time."""
import numpy as np

from tinytorch.core import (Conv2d, Dropout, Flatten, Linear, ReLU, Sequential, count_parameters, format_table,
                            layer_macs, median_time)
from tinytorch.models import MLP, SimpleCNN, TinyTransformer


def test_count_parameters_by_hand():
    assert count_parameters(MLP(in_features=64, hidden=(30,), num_classes=10)) == 64 * 30 + 30 + 30 * 10 + 10
    assert count_parameters(Conv2d(3, 4, 3, bias=False)) == 4 * 3 * 9


def test_layer_macs_linear_mlp():
    macs = layer_macs(MLP(in_features=64, hidden=(30, 20), num_classes=10), (1, 8, 8))
    assert macs == {"1": 64 * 30, "3": 30 * 20, "5": 20 * 10}


def test_layer_macs_conv_stride_padding():
    model = Sequential(Conv2d(2, 3, 3, stride=2, padding=1), ReLU(), Conv2d(3, 5, (1, 2)), Flatten(),
                       Linear(5 * 4 * 3, 7))
    macs = layer_macs(model, (2, 8, 8))
    # conv0: out 3 x 4 x 4, each a 2*3*3 dot product; conv2: out 5 x 4 x 3 from 3*1*2 inputs
    assert macs == {"0": 3 * 4 * 4 * 2 * 9, "2": 5 * 4 * 3 * 3 * 2, "4": 60 * 7}


def test_layer_macs_simple_cnn():
    macs = layer_macs(SimpleCNN(channels=(4, 8)), (1, 8, 8))
    assert macs == {"0": 4 * 8 * 8 * 1 * 9, "3": 8 * 4 * 4 * 4 * 9, "7": 8 * 2 * 2 * 10}


def test_layer_macs_counts_every_token_of_a_linear():
    model = TinyTransformer(dim=8, depth=1, num_heads=2, mlp_ratio=2)
    macs = layer_macs(model, (1, 8, 8))
    t = 16  # 4x4 patches of 2x2 pixels
    assert macs == {"0.proj": t * 4 * 8, "1.attn.qkv": t * 8 * 24, "1.attn.proj": t * 8 * 8,
                    "1.mlp.0": t * 8 * 16, "1.mlp.2": t * 16 * 8, "4": 8 * 10}


def test_layer_macs_leaves_model_untouched():
    model = Sequential(Linear(4, 4), Dropout(0.5))
    before = model.state_dict()
    layer_macs(model, (4,))
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    layer_macs(model, (4,))
    assert not model.training


def test_median_time_positive_float_and_call_count():
    calls = []

    def work():
        calls.append(1)
        np.linalg.inv(np.eye(20) + 0.1)

    t = median_time(work, repeats=5, warmup=2)
    assert isinstance(t, float) and t > 0
    assert len(calls) == 7


def test_format_table_by_hand():
    rows = [{"name": "a", "sparsity": 0.5, "ms": 1.23456, "params": 12345}, {"name": "bb", "sparsity": 1.0}]
    lines = format_table(rows).splitlines()
    assert lines == ["name  sparsity     ms  params",
                     "----  --------  -----  ------",
                     "   a    50.00%  1.235  12,345",
                     "  bb   100.00%               "]
    assert format_table([]) == "(empty)"
    assert format_table(rows, ["params"]).splitlines()[2] == "12,345"


def test_format_table_keeps_one_number_of_decimals_per_column():
    rows = [{"ms": 46.07}, {"ms": 56.0}, {"ms": 4.366}, {"ms": 0.0}, {"ms": float("nan")}]
    assert format_table(rows).splitlines()[2:] == ["46.070", "56.000", " 4.366", " 0.000", "   nan"]
    tiny = [{"grad": 0.1795}, {"grad": 0.003269}]
    assert format_table(tiny).splitlines()[2:] == ["0.179500", "0.003269"]
