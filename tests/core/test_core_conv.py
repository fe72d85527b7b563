"""Conv2d and MaxPool2d against naive loops, plus finite-difference gradients."""
import numpy as np
import pytest

from gradcheck import module_gradcheck
from tinytorch.core import Conv2d, MaxPool2d, Tensor


@pytest.fixture
def rng():
    return np.random.default_rng(3)


def naive_conv2d(x, w, b, stride, padding):
    """Cross-correlation by explicit loops over every output pixel."""
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, oc, ho, wo))
    for i in range(n):
        for o in range(oc):
            for r in range(ho):
                for s in range(wo):
                    patch = xp[i, :, r * sh:r * sh + kh, s * sw:s * sw + kw]
                    out[i, o, r, s] = np.sum(patch * w[o]) + (b[o] if b is not None else 0.0)
    return out


CONV_CASES = [  # (in, out, kernel, stride, padding, bias, H, W)
    (1, 2, 3, 1, 0, True, 5, 5),
    (2, 3, 3, 1, 1, True, 5, 6),
    (2, 3, 3, 2, 0, False, 7, 6),
    (2, 2, 3, 2, 1, True, 6, 7),
    (3, 2, (2, 3), (1, 2), (1, 0), False, 5, 6),
    (1, 1, 1, 1, 0, True, 3, 3),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_forward_matches_naive_loops(rng, case):
    cin, cout, k, stride, padding, bias, h, w = case
    conv = Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias)
    x = rng.standard_normal((2, cin, h, w)).astype(np.float32)
    out = conv(Tensor(x))
    expected = naive_conv2d(x.astype(np.float64), conv.weight.data.astype(np.float64),
                            None if conv.bias is None else conv.bias.data, conv.stride, conv.padding)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


def test_conv2d_output_size_formula():
    conv = Conv2d(1, 4, 3, stride=2, padding=1)
    assert conv(Tensor(np.zeros((3, 1, 8, 8)))).shape == (3, 4, 4, 4)
    assert Conv2d(1, 4, 3)(Tensor(np.zeros((1, 1, 8, 8)))).shape == (1, 4, 6, 6)


@pytest.mark.parametrize("case", CONV_CASES[:5], ids=str)
def test_conv2d_gradients(rng, case):
    cin, cout, k, stride, padding, bias, h, w = case
    conv = Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias)
    module_gradcheck(conv, rng.standard_normal((2, cin, h, w)))


def test_conv2d_weight_shape_and_params():
    conv = Conv2d(3, 5, 3, bias=False)
    assert conv.weight.shape == (5, 3, 3, 3)
    assert [n for n, _ in conv.named_parameters()] == ["weight"]


def test_conv2d_rejects_wrong_input(rng):
    conv = Conv2d(2, 3, 3)
    with pytest.raises(ValueError):
        conv(Tensor(rng.standard_normal((1, 3, 5, 5))))
    with pytest.raises(ValueError):
        conv(Tensor(rng.standard_normal((2, 5, 5))))


def naive_maxpool(x, k):
    n, c, h, w = x.shape
    out = np.zeros((n, c, h // k, w // k))
    for i in range(n):
        for j in range(c):
            for r in range(h // k):
                for s in range(w // k):
                    out[i, j, r, s] = x[i, j, r * k:(r + 1) * k, s * k:(s + 1) * k].max()
    return out


@pytest.mark.parametrize("k,h,w", [(2, 4, 4), (2, 5, 7), (3, 6, 8), (1, 2, 3)])
def test_maxpool_forward_matches_loop(rng, k, h, w):
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    out = MaxPool2d(k)(Tensor(x))
    np.testing.assert_array_equal(out.data, naive_maxpool(x, k))


@pytest.mark.parametrize("k,h,w", [(2, 4, 4), (2, 5, 7), (3, 6, 6)])
def test_maxpool_gradients(rng, k, h, w):
    module_gradcheck(MaxPool2d(k), rng.standard_normal((2, 2, h, w)))


def test_maxpool_gradient_goes_to_first_maximum_of_a_tied_window():
    x = Tensor(np.ones((1, 1, 2, 4)), requires_grad=True)
    MaxPool2d(2)(x).sum().backward()
    np.testing.assert_array_equal(x.grad[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_maxpool_ragged_edge_gets_zero_gradient(rng):
    x = Tensor(rng.standard_normal((1, 1, 5, 5)), requires_grad=True)
    MaxPool2d(2)(x).sum().backward()
    assert np.all(x.grad[0, 0, 4, :] == 0) and np.all(x.grad[0, 0, :, 4] == 0)
    assert x.grad.sum() == 4  # one winner per 2x2 window
