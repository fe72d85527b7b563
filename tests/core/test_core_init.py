"""tinytorch.core.init: allocation helpers and the allocation budget that build_module relies on."""
import threading
import tracemalloc

import numpy as np
import pytest

from tinytorch.core import Conv2d, LayerNorm, Linear, MultiHeadSelfAttention, TransformerBlock, init, manual_seed
from tinytorch.models import MLP, PatchEmbedding, SimpleCNN, TinyTransformer


def test_helpers_match_numpy():
    np.testing.assert_array_equal(init.zeros((2, 3)), np.zeros((2, 3), np.float32))
    assert init.zeros(4).dtype == np.float32 and init.ones(3, dtype=np.int8).dtype == np.int8
    np.testing.assert_array_equal(init.ones((3,)), np.ones(3, np.float32))
    manual_seed(5)
    drawn = init.normal((4, 2), std=0.02)
    oracle = (0.02 * np.random.default_rng(5).standard_normal((4, 2))).astype(np.float32)
    np.testing.assert_array_equal(drawn, oracle)
    manual_seed(5)
    w = init.uniform_fan_in((3, 4), fan_in=4)
    np.testing.assert_array_equal(w, np.random.default_rng(5).uniform(-0.5, 0.5, (3, 4)).astype(np.float32))


@pytest.mark.parametrize("shape", [(-1, 2), "3", (2.5,), None])
def test_bad_shapes_raise_value_error(shape):
    with pytest.raises(ValueError, match="shape"):
        init.zeros(shape)


@pytest.mark.parametrize("n", [-1, 2.0, True, "10"])
def test_bad_budget_raises_value_error(n):
    with pytest.raises(ValueError, match="n_elements"):
        with init.allocation_budget(n):
            pass


def test_budget_refuses_before_allocating():
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with init.allocation_budget(1000) as budget:
            init.zeros(600)
            with pytest.raises(ValueError, match="allocation budget"):
                init.ones((20_000, 20_000))  # 1.6 GB if it were allocated
            with pytest.raises(ValueError, match="allocation budget"):
                init.normal(401, std=1.0)  # 600 + 401 > 1000: the second array is refused whole
            init.uniform_fan_in((20, 20), fan_in=20)
            assert budget.remaining == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    init.zeros((300, 300))  # outside the block nothing is limited


def test_nested_budgets_charge_the_outer_one():
    with init.allocation_budget(100) as outer:
        with init.allocation_budget(1000) as inner:
            assert inner.limit == 100  # capped by what the outer budget has left
            init.zeros(60)
        assert outer.remaining == 40
        with pytest.raises(ValueError):
            init.zeros(41)


def test_budget_does_not_limit_other_threads():
    errors = []

    def allocate():
        try:
            init.zeros(10_000)
        except ValueError as err:
            errors.append(err)

    with init.allocation_budget(0):
        thread = threading.Thread(target=allocate)
        thread.start()
        thread.join()
        with pytest.raises(ValueError):
            init.zeros(1)
    assert errors == []


@pytest.mark.parametrize("build", [
    lambda: Linear(7, 5), lambda: Linear(7, 5, bias=False), lambda: Conv2d(3, 4, (3, 2)), lambda: LayerNorm(6),
    lambda: MultiHeadSelfAttention(8, 2), lambda: TransformerBlock(8, 2, 3), lambda: PatchEmbedding(dim=8),
    lambda: MLP(hidden=(12,)), lambda: SimpleCNN(channels=(4, 6)), lambda: TinyTransformer(dim=8, depth=2, num_heads=2),
], ids=["linear", "linear-nobias", "conv", "layernorm", "attention", "block", "patch", "mlp", "cnn", "transformer"])
def test_every_parameter_is_allocated_through_the_budgeted_helpers(build):
    # A budget of exactly the parameter count suffices and one element less is refused:
    # so every constructor allocates its parameters (and nothing else) through tinytorch.core.init.
    n = sum(p.size for p in build().parameters())
    with init.allocation_budget(n) as budget:
        build()
    assert budget.remaining == 0
    with pytest.raises(ValueError, match="allocation budget"):
        with init.allocation_budget(n - 1):
            build()
