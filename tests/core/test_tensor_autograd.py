"""Tensor ops and reverse-mode autograd, checked against finite differences and NumPy."""
import numpy as np
import pytest

from gradcheck import gradcheck, leaf
from tinytorch.core import Tensor, is_grad_enabled, no_grad

rng = np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _reseed():
    """Every test draws the same data whatever the order or selection of tests."""
    global rng
    rng = np.random.default_rng(1234)


def randn(*shape):
    return rng.standard_normal(shape)


def positive(*shape):
    return rng.uniform(0.5, 2.0, size=shape)


# ------------------------------------------------------------------ construction / dtype
def test_float_data_becomes_float32_by_default():
    assert Tensor(np.ones(3, dtype=np.float64)).dtype == np.float32
    assert Tensor([1.5, 2.5]).dtype == np.float32


def test_explicit_float64_dtype_is_kept_through_ops():
    x = Tensor(np.ones((2, 2)), dtype=np.float64)
    assert x.dtype == np.float64
    assert (x * 2.0 + 1.0).dtype == np.float64
    assert (x @ x).sum().dtype == np.float64


def test_integer_data_stays_integer_unless_grad_is_required():
    assert Tensor(np.arange(3)).dtype.kind == "i"
    assert Tensor(np.arange(3), requires_grad=True).dtype == np.float32


def test_integer_tensor_times_python_float_is_not_truncated():
    # Python floats must not be cast to the int dtype of the tensor (NumPy semantics: 1*0.5 = 0.5).
    x = Tensor(np.array([1, 2, 3]))
    np.testing.assert_allclose((x * 0.5).data, [0.5, 1.0, 1.5])
    np.testing.assert_allclose((x + 0.5).data, [1.5, 2.5, 3.5])


def test_float64_tensor_with_python_constants_keeps_float64_precision():
    # Constants joining a float64 op must not be rounded to float32 on the way in.
    x = Tensor(np.array([1.0, 3.0]), dtype=np.float64)
    np.testing.assert_array_equal((x * 0.1).data, np.array([1.0, 3.0]) * 0.1)
    np.testing.assert_array_equal((x + 1e-9).data, np.array([1.0, 3.0]) + 1e-9)
    m = np.array([[0.1, 0.7]])
    np.testing.assert_array_equal((m @ x).data, m @ np.array([1.0, 3.0]))
    np.testing.assert_array_equal(x.mean().data, 2.0)
    y = Tensor(np.arange(3.0), dtype=np.float64)
    np.testing.assert_array_equal(y.mean(axis=0).data, 1.0)
    np.testing.assert_array_equal((y / 3.0).data, np.arange(3.0) / 3.0)


def test_ndarray_on_the_left_dispatches_to_tensor():
    x = leaf(randn(3))
    a = np.array([2.0, -3.0, 0.5])  # exact in float32, so dtype handling cannot blur the check
    out = a * x
    assert isinstance(out, Tensor)
    np.testing.assert_allclose(out.data, a * x.data)
    out = a + x
    assert isinstance(out, Tensor)
    np.testing.assert_allclose((a - x).data, a - x.data)
    np.testing.assert_allclose((a / (x * x + 1)).data, a / (x.data ** 2 + 1))


# ------------------------------------------------------------------ elementwise gradients
BINARY_SHAPES = [
    ((3, 4), (3, 4)),
    ((3, 1), (1, 4)),
    ((2, 3, 4), (4,)),
    ((4,), (2, 3, 4)),
    ((3, 4), ()),
    ((1, 1), (2, 3)),
    ((2, 1, 4), (3, 1)),
]


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=str)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_op_gradients_with_broadcasting(op, shapes):
    a = leaf(randn(*shapes[0]))
    b = leaf(positive(*shapes[1]) if op == "div" else randn(*shapes[1]))
    f = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b}[op]
    expected = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}[op](a.data, b.data)
    np.testing.assert_allclose(f().data, expected)
    gradcheck(f, [a, b])


@pytest.mark.parametrize("op", ["radd", "rsub", "rmul", "rdiv"])
def test_reflected_ops_with_constants(op):
    x = leaf(positive(2, 3))
    c = rng.integers(-3, 4, size=(2, 3)).astype(np.float64)
    f = {"radd": lambda: 2.5 + x, "rsub": lambda: 2.5 - x, "rmul": lambda: c * x,
         "rdiv": lambda: 3.0 / x}[op]
    expected = {"radd": 2.5 + x.data, "rsub": 2.5 - x.data, "rmul": c * x.data, "rdiv": 3.0 / x.data}[op]
    np.testing.assert_allclose(f().data, expected)
    gradcheck(f, [x])


def test_neg_gradient():
    x = leaf(randn(3, 2))
    np.testing.assert_allclose((-x).data, -x.data)
    gradcheck(lambda: -x, [x])


@pytest.mark.parametrize("exponent", [2, 3, 0.5, -1.0, 1.5])
def test_pow_gradient(exponent):
    x = leaf(positive(2, 3))
    np.testing.assert_allclose((x ** exponent).data, x.data ** exponent)
    gradcheck(lambda: x ** exponent, [x])


def test_pow_integer_exponent_on_negative_values():
    x = leaf(-positive(4))
    gradcheck(lambda: x ** 3, [x])


def test_pow_with_tensor_exponent_is_rejected():
    with pytest.raises(TypeError):
        Tensor([1.0]) ** Tensor([2.0])


@pytest.mark.parametrize("name", ["exp", "log", "relu", "tanh", "sigmoid", "sqrt"])
def test_unary_gradients(name):
    data = positive(3, 4) if name in ("log", "sqrt") else randn(3, 4)
    if name == "relu":  # keep away from the kink at 0
        data = np.where(np.abs(data) < 0.05, 0.5, data)
    x = leaf(data)
    reference = {"exp": np.exp, "log": np.log, "relu": lambda a: np.maximum(a, 0), "tanh": np.tanh,
                 "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "sqrt": np.sqrt}[name]
    np.testing.assert_allclose(getattr(x, name)().data, reference(x.data), rtol=1e-12)
    gradcheck(lambda: getattr(x, name)(), [x])


def test_relu_gradient_is_exactly_mask():
    x = leaf([-2.0, -0.5, 0.5, 3.0])
    x.relu().sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 1, 1])


def test_composite_expression_uses_a_tensor_several_times():
    x = leaf(positive(3))
    y = leaf(randn(3))
    f = lambda: (x * y + x.exp() * x - (x / y.tanh()).log().sigmoid() * x) ** 2  # noqa: E731
    # log of a possibly negative ratio is NaN: keep y positive so x / tanh(y) > 0
    y.data[:] = np.abs(y.data) + 0.2
    gradcheck(f, [x, y])


# ------------------------------------------------------------------ matmul
MATMUL_SHAPES = [
    ((3, 4), (4, 2)),
    ((4,), (4,)),
    ((4,), (4, 3)),
    ((3, 4), (4,)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_forward_and_gradients(shapes):
    a, b = leaf(randn(*shapes[0])), leaf(randn(*shapes[1]))
    out = a @ b
    expected = np.matmul(a.data, b.data)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.data, expected, rtol=1e-12)
    gradcheck(lambda: a @ b, [a, b])


def test_rmatmul_with_ndarray_on_the_left():
    m = rng.integers(-3, 4, size=(2, 3)).astype(np.float64)  # exact in any float dtype
    x = leaf(randn(3, 4))
    out = m @ x
    assert isinstance(out, Tensor)
    np.testing.assert_allclose(out.data, m @ x.data)
    gradcheck(lambda: m @ x, [x])


# ------------------------------------------------------------------ reductions
AXES = [(None, False), (None, True), (0, False), (1, True), (-1, False), (-1, True), ((0, 2), False),
        ((0, 2), True)]


@pytest.mark.parametrize("axis,keepdims", AXES, ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
def test_reduction_forward_and_gradient(name, axis, keepdims):
    x = leaf(randn(2, 3, 4))
    out = getattr(x, name)(axis=axis, keepdims=keepdims)
    expected = getattr(np, name if name != "max" else "amax")(x.data, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected, rtol=1e-6)  # value; precision is tested above
    gradcheck(lambda: getattr(x, name)(axis=axis, keepdims=keepdims), [x])


def test_max_gradient_is_shared_between_ties():
    x = leaf([[1.0, 3.0, 3.0], [5.0, 2.0, 5.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [0.5, 0, 0.5]])
    x.grad = None
    x.max().backward()
    np.testing.assert_allclose(x.grad, [[0, 0, 0], [0.5, 0, 0.5]])


def test_mean_of_broadcast_product_reduces_gradient_back_to_input_shape():
    w = leaf(randn(1, 4))
    x = leaf(randn(5, 4))
    gradcheck(lambda: (x * w).mean(axis=0) + (x - w).sum(), [w, x])


# ------------------------------------------------------------------ shape ops and indexing
def test_reshape_forward_and_gradient():
    x = leaf(randn(2, 6))
    assert x.reshape(3, 4).shape == (3, 4)
    assert x.reshape((4, 3)).shape == (4, 3)
    assert x.reshape(-1).shape == (12,)
    gradcheck(lambda: x.reshape(3, 2, 2) * Tensor(np.arange(12.0).reshape(3, 2, 2), dtype=np.float64), [x])


@pytest.mark.parametrize("axes", [(), ((1, 0, 2),), (2, 0, 1), ((0, 2, 1),)], ids=str)
def test_transpose_forward_and_gradient(axes):
    x = leaf(randn(2, 3, 4))
    expected = np.transpose(x.data, *axes) if axes and isinstance(axes[0], tuple) else np.transpose(x.data, axes or None)
    np.testing.assert_array_equal(x.transpose(*axes).data, expected)
    gradcheck(lambda: x.transpose(*axes), [x])


def test_T_property_reverses_axes():
    x = leaf(randn(2, 3))
    np.testing.assert_array_equal(x.T.data, x.data.T)
    gradcheck(lambda: x.T, [x])


INDICES = [
    1,
    -1,
    slice(1, 3),
    (slice(None), 2),
    (slice(None, None, -1), slice(0, 4, 2)),
    np.array([0, 0, 2, 0]),  # repeated fancy indices must accumulate
    (np.array([0, 2, 2]), np.array([1, 1, 1])),
    np.array([True, False, True]),
    (Ellipsis, None, 1),
]


@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_indexing_forward_and_gradient(index):
    x = leaf(randn(3, 4))
    np.testing.assert_array_equal(x[index].data, x.data[index])
    gradcheck(lambda: x[index], [x])


def test_repeated_fancy_index_gradient_counts_repeats():
    x = leaf(np.zeros(4))
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


def test_index_with_an_integer_tensor():
    x = leaf(randn(5))
    idx = Tensor(np.array([4, 0, 4]))
    np.testing.assert_array_equal(x[idx].data, x.data[[4, 0, 4]])
    gradcheck(lambda: x[idx], [x])


# ------------------------------------------------------------------ backward() semantics
def test_backward_on_non_scalar_requires_grad_argument():
    x = leaf(randn(3))
    y = x * 2.0
    with pytest.raises(RuntimeError):
        y.backward()
    y.backward(np.array([1.0, 10.0, 100.0]))
    np.testing.assert_allclose(x.grad, [2.0, 20.0, 200.0])


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError):
        Tensor([1.0]).sum().backward()


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 7.0])
    x.zero_grad()
    assert x.grad is None


def test_scalar_backward_default_seed_is_one():
    x = leaf(2.0)
    (x * x * x).backward()
    np.testing.assert_allclose(x.grad, 12.0)


def test_only_leaves_requiring_grad_get_grad():
    x = leaf(randn(3))
    c = Tensor(randn(3), dtype=np.float64)
    h = x * c
    (h * h).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, 2 * x.data * c.data ** 2)


def test_float32_leaf_receives_float32_grad():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    (x * Tensor(np.full(3, 2.0), dtype=np.float64)).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, 2.0)


def test_deep_chain_does_not_hit_recursion_limit():
    x = leaf([1.0])
    y = x
    for i in range(5000):
        y = y * (2.0 if i % 2 else 0.5) + 1.0  # exact constants: d y / d x stays exactly 1
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_diamond_graph_counts_both_paths_once():
    x = leaf([3.0])
    a = x * 2.0
    b = a + a  # d b / d x = 4
    c = b * a  # = 2a^2 = 8 x^2 -> 16 x
    c.sum().backward()
    np.testing.assert_allclose(x.grad, [48.0])


# ------------------------------------------------------------------ no_grad and detach
def test_no_grad_builds_no_graph():
    x = leaf(randn(3))
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        y = (x * 2.0).exp().sum()
    assert is_grad_enabled()
    assert not y.requires_grad
    assert y._parents == () and y._backward is None
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_restores_state_after_exception_and_nests():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()
    with no_grad():
        with no_grad():
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()


def test_detach_cuts_the_graph():
    x = leaf([1.0, 2.0, 3.0])
    d = x.detach()
    assert not d.requires_grad and d._parents == ()
    np.testing.assert_array_equal(d.data, x.data)
    (x * d).sum().backward()  # d acts as a constant: grad is d, not 2x
    np.testing.assert_allclose(x.grad, [1.0, 2.0, 3.0])


def test_detach_keeps_dtype():
    x = Tensor(np.array([0.1, 0.2]), dtype=np.float64, requires_grad=True)
    d = x.detach()
    assert d.dtype == np.float64
    np.testing.assert_array_equal(d.data, x.data)


def test_gradcheck_helper_catches_a_wrong_backward():
    """The oracle itself must be able to fail: a deliberately wrong closure is rejected."""
    x = leaf(randn(3))

    def tripled_with_wrong_grad():
        return x._make(3.0 * x.data, (x,), lambda g: (2.0 * g,))

    with pytest.raises(AssertionError):
        gradcheck(tripled_with_wrong_grad, [x])
    gradcheck(lambda: x._make(3.0 * x.data, (x,), lambda g: (3.0 * g,)), [x])


def test_basic_properties():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
    assert x.numpy() is x.data
    assert Tensor(3.5).item() == 3.5
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))
