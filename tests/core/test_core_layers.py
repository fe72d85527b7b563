"""Linear, activations, Flatten, Dropout and LayerNorm: NumPy formulas and finite differences."""
import numpy as np
import pytest

from gradcheck import leaf, module_gradcheck
from tinytorch.core import Dropout, Flatten, LayerNorm, Linear, ReLU, Tanh, Tensor, manual_seed


@pytest.fixture
def rng():
    return np.random.default_rng(7)


# ------------------------------------------------------------------ Linear
def test_linear_shapes_and_init_bound():
    manual_seed(0)
    layer = Linear(50, 20)
    assert layer.weight.shape == (20, 50) and layer.bias.shape == (20,)
    assert layer.weight.dtype == np.float32
    bound = 1 / np.sqrt(50)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    assert layer.weight.data.std() > bound / 4  # not all zeros / constant


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 3), (3,)], ids=str)
def test_linear_forward_matches_numpy(rng, shape):
    layer = Linear(3, 2)
    x = rng.standard_normal(shape).astype(np.float32)
    out = layer(Tensor(x))
    expected = x @ layer.weight.data.T + layer.bias.data
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.data, expected, rtol=1e-6, atol=1e-6)


def test_linear_without_bias(rng):
    layer = Linear(3, 2, bias=False)
    assert layer.bias is None
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    x = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(Tensor(x)).data, x @ layer.weight.data.T, rtol=1e-6, atol=1e-6)
    module_gradcheck(layer, rng.standard_normal((4, 3)))


@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 3)], ids=str)
def test_linear_gradients(rng, shape):
    module_gradcheck(Linear(3, 2), rng.standard_normal(shape))


def test_linear_float32_gradient_matches_formula(rng):
    """The float32 path (default dtypes) gives the textbook gradients."""
    layer = Linear(3, 2)
    x = Tensor(rng.standard_normal((5, 3)), requires_grad=True)
    g = rng.standard_normal((5, 2)).astype(np.float32)
    (layer(x) * g).sum().backward()
    np.testing.assert_allclose(layer.weight.grad, g.T @ x.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad, g @ layer.weight.data, rtol=1e-5, atol=1e-6)
    assert layer.weight.grad.dtype == np.float32


# ------------------------------------------------------------------ activations, Flatten
def test_relu_and_tanh_modules(rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(ReLU()(Tensor(x)).data, np.maximum(x, 0), rtol=1e-6)
    np.testing.assert_allclose(Tanh()(Tensor(x)).data, np.tanh(x), rtol=1e-6)


def test_flatten_keeps_batch_axis_and_gradient(rng):
    x = rng.standard_normal((2, 3, 2, 2))
    out = Flatten()(Tensor(x))
    assert out.shape == (2, 12)
    np.testing.assert_allclose(out.data, x.reshape(2, 12), rtol=1e-6)
    module_gradcheck(Flatten(), x)


# ------------------------------------------------------------------ Dropout
def test_dropout_train_mode_zeroes_about_p_and_scales_the_rest():
    manual_seed(3)
    drop = Dropout(0.3)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(200, 500)).astype(np.float32)
    out = drop(Tensor(x)).data
    dropped = out == 0
    assert abs(dropped.mean() - 0.3) < 0.01
    np.testing.assert_allclose(out[~dropped], x[~dropped] / 0.7, rtol=1e-6)
    assert abs(out.mean() - x.mean()) < 0.01  # inverted dropout keeps the expectation


def test_dropout_eval_mode_and_p_zero_are_identity(rng):
    x = rng.standard_normal((10, 10)).astype(np.float32)
    drop = Dropout(0.5).eval()
    np.testing.assert_array_equal(drop(Tensor(x)).data, x)
    np.testing.assert_array_equal(Dropout(0.0)(Tensor(x)).data, x)


def test_dropout_masks_differ_between_calls_and_repeat_with_seed():
    x = Tensor(np.ones((20, 20)))
    drop = Dropout(0.5)
    manual_seed(11)
    first, second = drop(x).data, drop(x).data
    assert not np.array_equal(first, second)
    manual_seed(11)
    np.testing.assert_array_equal(drop(x).data, first)


def test_dropout_gradient_uses_the_same_mask():
    manual_seed(5)
    x = Tensor(np.full((30, 30), 2.0), requires_grad=True)
    out = Dropout(0.25)(x)
    out.sum().backward()
    np.testing.assert_allclose(x.grad, out.data / 2.0, rtol=1e-6)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_invalid_p(p):
    with pytest.raises(ValueError):
        Dropout(p)


# ------------------------------------------------------------------ LayerNorm
def test_layernorm_forward_matches_numpy(rng):
    ln = LayerNorm(5, eps=1e-5)
    ln.weight.data = rng.standard_normal(5).astype(np.float32)
    ln.bias.data = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((2, 3, 5)) * 3 + 1
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)  # biased, as PyTorch
    expected = (x - mean) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data
    np.testing.assert_allclose(ln(Tensor(x)).data, expected, rtol=1e-4, atol=1e-5)


def test_layernorm_default_output_is_standardised(rng):
    out = LayerNorm(64)(Tensor(rng.standard_normal((4, 64)) * 10 + 3)).data
    np.testing.assert_allclose(out.mean(axis=-1), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=-1), 1, atol=1e-3)


def test_layernorm_gradients(rng):
    ln = LayerNorm(4)
    ln.weight.data = rng.standard_normal(4).astype(np.float32)
    ln.bias.data = rng.standard_normal(4).astype(np.float32)
    module_gradcheck(ln, rng.standard_normal((2, 3, 4)))


def test_module_gradcheck_on_float32_params_is_done_in_float64(rng):
    ln = LayerNorm(3)
    module_gradcheck(ln, rng.standard_normal((2, 3)))
    assert all(p.dtype == np.float64 for p in ln.parameters())
    x = leaf(rng.standard_normal((2, 3)))
    assert ln(x).dtype == np.float64
