"""Finite-difference gradient checking shared by the core tests (written once, used everywhere).

`gradcheck(forward, tensors)` compares the gradients autograd puts in `t.grad` for every
tensor in `tensors` with central differences of the same computation.  The (possibly
non-scalar) output is reduced to a scalar with fixed random weights, so every output
element's gradient path is exercised, not just the sum.  Work in float64: use `leaf()` for
inputs and `to_float64(module)` for a module's parameters.
"""
from __future__ import annotations

import numpy as np

from tinytorch.core import Tensor, no_grad


def leaf(array) -> Tensor:
    """A float64 leaf tensor that requires grad (a contiguous copy, safe to perturb)."""
    return Tensor(np.array(array, dtype=np.float64), requires_grad=True, dtype=np.float64)


def to_float64(module):
    """Cast every parameter of `module` to float64 in place (Parameters are float32 by default)."""
    for p in module.parameters():
        p.data = np.array(p.data, dtype=np.float64)
        p.grad = None
    return module


def _scalar(out: Tensor, weights: np.ndarray) -> Tensor:
    return (out * Tensor(weights, dtype=np.float64)).sum()


def gradcheck(forward, tensors, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5,
              seed: int = 0) -> None:
    """Assert autograd gradients of `forward()` w.r.t. each of `tensors` match finite differences.

    forward: zero-argument callable rebuilding the output Tensor from the current `.data`
    of `tensors` (each a float64 Tensor with requires_grad=True).
    """
    tensors = list(tensors)
    for t in tensors:
        assert t.requires_grad and t.data.dtype == np.float64, "gradcheck needs float64 leaves"
        t.data = np.ascontiguousarray(t.data)
        t.grad = None
    out = forward()
    assert out.requires_grad, "output is not connected to the inputs"
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    _scalar(out, weights).backward()
    analytic = []
    for i, t in enumerate(tensors):
        assert t.grad is not None, f"tensor #{i} (shape {t.shape}) received no gradient"
        assert t.grad.shape == t.shape, f"tensor #{i}: grad shape {t.grad.shape} != {t.shape}"
        analytic.append(np.array(t.grad, dtype=np.float64))

    def value() -> float:
        with no_grad():
            return float(np.sum(np.asarray(forward().data, dtype=np.float64) * weights))

    for i, t in enumerate(tensors):
        flat = t.data.reshape(-1)  # a view: writing into it perturbs t.data
        numeric = np.zeros(flat.size)
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + eps
            plus = value()
            flat[j] = original - eps
            minus = value()
            flat[j] = original
            numeric[j] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic[i], numeric.reshape(t.shape), rtol=rtol, atol=atol,
                                   err_msg=f"gradient mismatch for tensor #{i} of shape {t.shape}")
    for t in tensors:
        t.grad = None


def module_gradcheck(module, x: np.ndarray, forward=None, **kwargs) -> None:
    """Check gradients of `module` (cast to float64) w.r.t. its input and every parameter."""
    to_float64(module)
    xt = leaf(x)
    forward = forward or (lambda: module(xt))
    gradcheck(forward, [xt, *module.parameters()], **kwargs)
