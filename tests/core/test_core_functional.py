"""softmax / log_softmax / cross_entropy / kl_div / mse_loss / accuracy."""
import numpy as np
import pytest

from gradcheck import gradcheck, leaf
from tinytorch.core import Tensor, accuracy, cross_entropy, kl_div, log_softmax, mse_loss, relu, softmax


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def np_log_softmax(z, axis=-1):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_log_softmax_and_softmax_values(rng, axis):
    z = rng.standard_normal((3, 4, 5)) * 3
    np.testing.assert_allclose(log_softmax(Tensor(z, dtype=np.float64), axis=axis).data,
                               np_log_softmax(z, axis), rtol=1e-12, atol=1e-12)
    p = softmax(Tensor(z, dtype=np.float64), axis=axis).data
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(axis=axis, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_is_stable_for_huge_logits(dtype):
    z = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0]])
    out = log_softmax(Tensor(z, dtype=dtype)).data
    assert np.all(np.isfinite(out))
    l2 = np.log(2 + np.exp(-1.0))
    np.testing.assert_allclose(out, [[0.0, -1000.0, -2000.0], [-l2, -l2, -1 - l2]], rtol=1e-6, atol=1e-6)
    p = softmax(Tensor(z, dtype=dtype)).data
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("axis", [-1, 0])
def test_log_softmax_and_softmax_gradients(rng, axis):
    x = leaf(rng.standard_normal((3, 4)))
    gradcheck(lambda: log_softmax(x, axis=axis), [x])
    gradcheck(lambda: softmax(x, axis=axis), [x])


def test_cross_entropy_against_hand_computation():
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    targets = np.array([0, 2])
    # -log(e^2 / (e^2 + e^1 + e^0.1)) and -log(e^0.3 / (e^0.5 + e^2.5 + e^0.3))
    l0 = -(2.0 - np.log(np.exp(2.0) + np.exp(1.0) + np.exp(0.1)))
    l1 = -(0.3 - np.log(np.exp(0.5) + np.exp(2.5) + np.exp(0.3)))
    loss = cross_entropy(Tensor(logits, dtype=np.float64), targets)
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), (l0 + l1) / 2, rtol=1e-12)


def test_cross_entropy_accepts_tensor_and_uint8_targets(rng):
    logits = rng.standard_normal((4, 3))
    t = np.array([0, 1, 2, 1])
    ref = cross_entropy(Tensor(logits, dtype=np.float64), t).item()
    assert cross_entropy(Tensor(logits, dtype=np.float64), Tensor(t)).item() == pytest.approx(ref)
    assert cross_entropy(Tensor(logits, dtype=np.float64), t.astype(np.uint8)).item() == pytest.approx(ref)


def test_cross_entropy_uniform_logits_is_log_num_classes():
    assert cross_entropy(Tensor(np.zeros((5, 10))), np.arange(5)).item() == pytest.approx(np.log(10), rel=1e-6)


def test_cross_entropy_is_finite_for_huge_logits():
    logits = Tensor(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]]), requires_grad=True)
    loss = cross_entropy(logits, np.array([1, 1]))
    assert loss.item() == pytest.approx(1000.0, rel=1e-6)
    loss.backward()
    assert np.all(np.isfinite(logits.grad))
    np.testing.assert_allclose(logits.grad, [[0.5, -0.5], [0.0, 0.0]], atol=1e-6)


def test_cross_entropy_gradient(rng):
    x = leaf(rng.standard_normal((4, 5)))
    t = np.array([0, 4, 4, 2])
    gradcheck(lambda: cross_entropy(x, t), [x])
    # closed form: (softmax - onehot) / N
    x.grad = None
    cross_entropy(x, t).backward()
    p = np.exp(np_log_softmax(x.data))
    np.testing.assert_allclose(x.grad, (p - np.eye(5)[t]) / 4, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("targets,shape", [
    (np.array([0.0, 1.0]), (2, 3)),  # float labels
    (np.array([0, 3]), (2, 3)),  # out of range
    (np.array([-1, 0]), (2, 3)),  # negative
    (np.array([0, 1, 2]), (2, 3)),  # wrong length
    (np.array([0, 1]), (2, 3, 1)),  # logits not 2-D
])
def test_cross_entropy_rejects_bad_input(targets, shape):
    with pytest.raises(ValueError):
        cross_entropy(Tensor(np.zeros(shape)), targets)


def np_kl(log_q, p, reduction):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - log_q), 0.0)
    return {"sum": terms.sum(), "mean": terms.mean(), "batchmean": terms.sum() / p.shape[0]}[reduction]


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
def test_kl_div_matches_formula_with_zero_targets(rng, reduction):
    log_q = np_log_softmax(rng.standard_normal((3, 5)))
    p = np.exp(np_log_softmax(rng.standard_normal((3, 5))))
    p[0, 1] = 0.0
    p[0] /= p[0].sum()
    value = kl_div(Tensor(log_q, dtype=np.float64), p, reduction=reduction).item()
    assert value == pytest.approx(np_kl(log_q, p, reduction), rel=1e-6)
    assert np.isfinite(value)


def test_kl_div_float64_precision(rng):
    log_q = np_log_softmax(rng.standard_normal((3, 5)))
    p = np.exp(np_log_softmax(rng.standard_normal((3, 5))))
    value = kl_div(Tensor(log_q, dtype=np.float64), p, reduction="sum").item()
    assert value == pytest.approx(np_kl(log_q, p, "sum"), rel=1e-12)


def test_kl_div_of_identical_distributions_is_zero_and_nonnegative_otherwise(rng):
    log_p = np_log_softmax(rng.standard_normal((4, 6)))
    assert abs(kl_div(Tensor(log_p), np.exp(log_p)).item()) < 1e-6
    other = np_log_softmax(rng.standard_normal((4, 6)))
    assert kl_div(Tensor(other), np.exp(log_p)).item() > 0


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean"])
def test_kl_div_gradient_and_target_gets_none(rng, reduction):
    x = leaf(np_log_softmax(rng.standard_normal((3, 4))))
    target = Tensor(np.exp(np_log_softmax(rng.standard_normal((3, 4)))), requires_grad=True)
    gradcheck(lambda: kl_div(x, target, reduction=reduction), [x])
    kl_div(x, target, reduction=reduction).backward()
    assert target.grad is None


def test_kl_div_rejects_bad_reduction_and_shape():
    with pytest.raises(ValueError):
        kl_div(Tensor(np.zeros((2, 3))), np.full((2, 3), 1 / 3), reduction="none!")
    with pytest.raises(ValueError):
        kl_div(Tensor(np.zeros((2, 3))), np.full((3, 2), 1 / 3))


def test_mse_loss_value_and_gradients(rng):
    pred = leaf(rng.standard_normal((3, 4)))
    target = leaf(rng.standard_normal((3, 4)))
    assert mse_loss(pred, target).item() == pytest.approx(np.mean((pred.data - target.data) ** 2), rel=1e-6)
    gradcheck(lambda: mse_loss(pred, target), [pred, target])
    arr = rng.standard_normal((3, 4))
    gradcheck(lambda: mse_loss(pred, arr), [pred])


def test_relu_function():
    np.testing.assert_array_equal(relu(Tensor([-1.0, 2.0])).data, [0.0, 2.0])


def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert accuracy(logits, np.array([1, 0, 0, 0])) == 0.75
    assert accuracy(Tensor(logits), Tensor(np.array([1, 0, 1, 0]))) == 1.0
    assert isinstance(accuracy(logits, np.array([1, 0, 0, 0])), float)
