"""SGD and Adam against hand-written torch.optim update rules, with fixed gradient sequences."""
import numpy as np
import pytest

from tinytorch.core import SGD, Adam, Linear, Parameter, Tensor, mse_loss

GRADS = [np.array([0.5, -1.0, 2.0]), np.array([-0.25, 0.5, 1.0]), np.array([1.0, 1.0, -3.0])]
P0 = np.array([1.0, -2.0, 0.5])


def run(optimizer_cls, **kwargs):
    p = Parameter(P0.copy())
    opt = optimizer_cls([p], **kwargs)
    trajectory = []
    for g in GRADS:
        p.grad = g.astype(np.float32)
        opt.step()
        trajectory.append(p.data.copy())
    return trajectory


def sgd_reference(lr, momentum=0.0, weight_decay=0.0):
    p, buf, out = P0.copy(), None, []
    for g in GRADS:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d  # first buffer = gradient
            d = buf
        p = p - lr * d
        out.append(p.copy())
    return out


def adam_reference(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    p, m, v, out = P0.copy(), np.zeros(3), np.zeros(3), []
    b1, b2 = betas
    for t, g in enumerate(GRADS, start=1):
        g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p.copy())
    return out


@pytest.mark.parametrize("kwargs", [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, weight_decay=0.1),
                                    dict(lr=0.1, momentum=0.5, weight_decay=0.01)], ids=str)
def test_sgd_matches_hand_formula(kwargs):
    for got, want in zip(run(SGD, **kwargs), sgd_reference(**kwargs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sgd_momentum_first_step_is_plain_sgd_and_second_is_hand_computed():
    traj = run(SGD, lr=1.0, momentum=0.9)
    np.testing.assert_allclose(traj[0], P0 - GRADS[0], rtol=1e-6)
    np.testing.assert_allclose(traj[1], traj[0] - (0.9 * GRADS[0] + GRADS[1]), rtol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(lr=0.1), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
                                    dict(lr=0.05, weight_decay=0.1)], ids=str)
def test_adam_matches_hand_formula(kwargs):
    for got, want in zip(run(Adam, **kwargs), adam_reference(**kwargs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_adam_first_step_moves_each_coordinate_by_lr():
    # with bias correction, step 1 is lr * g / (|g| + eps): magnitude lr, sign of g
    traj = run(Adam, lr=0.01)
    np.testing.assert_allclose(traj[0], P0 - 0.01 * np.sign(GRADS[0]), rtol=1e-6)


def test_step_skips_parameters_without_grad_and_keeps_float32():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD([a, b], lr=0.5)
    a.grad = np.array([1.0, 2.0], dtype=np.float32)
    opt.step()
    np.testing.assert_allclose(a.data, [0.5, 0.0])
    np.testing.assert_array_equal(b.data, [1.0, 1.0])
    assert a.dtype == np.float32
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_optimizer_state_is_per_parameter():
    a, b = Parameter(np.zeros(1)), Parameter(np.zeros(1))
    opt = SGD([a, b], lr=1.0, momentum=0.5)
    for _ in range(2):
        a.grad, b.grad = np.array([1.0], np.float32), np.array([-2.0], np.float32)
        opt.step()
    np.testing.assert_allclose(a.data, [-(1 + 1.5)])
    np.testing.assert_allclose(b.data, [2 + 3.0])


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_invalid_arguments(cls):
    with pytest.raises(ValueError):
        cls([], lr=0.1)
    with pytest.raises(ValueError):
        cls([Parameter(np.ones(1))], lr=0.0)


@pytest.mark.parametrize("cls,lr", [(SGD, 0.1), (Adam, 0.05)])
def test_optimizers_fit_a_linear_regression(cls, lr):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    y = x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3
    model = Linear(3, 1)
    opt = cls(model.parameters(), lr=lr)
    first = None
    for _ in range(300):
        loss = mse_loss(model(Tensor(x)), Tensor(y))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 * first
    np.testing.assert_allclose(model.weight.data, [[1.5, -2.0, 0.5]], atol=0.05)
