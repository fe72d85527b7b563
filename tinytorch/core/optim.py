"""Optimizers with per-parameter state, following torch.optim's update rules."""
from __future__ import annotations

import numpy as np

from .tensor import no_grad


class Optimizer:
    """Holds the parameters and a `state` dict keyed by parameter (momentum, Adam moments)."""

    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.lr = float(lr)
        self.state: dict = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        with no_grad():
            for p in self.params:
                if p.grad is not None:
                    p.data = self._update(p, p.grad).astype(p.data.dtype, copy=False)

    def _update(self, p, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class SGD(Optimizer):
    """p -= lr * v with v = momentum * v + (grad + weight_decay * p) (torch.optim.SGD)."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)

    def _update(self, p, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        if self.momentum:
            state = self.state.setdefault(p, {})
            velocity = state.get("momentum_buffer")
            velocity = grad.copy() if velocity is None else self.momentum * velocity + grad
            state["momentum_buffer"] = velocity
            grad = velocity
        return p.data - self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight_decay adds L2 to the gradient
    as torch.optim.Adam does (not AdamW)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = tuple(betas), float(eps), float(weight_decay)

    def _update(self, p, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * p.data
        beta1, beta2 = self.betas
        state = self.state.setdefault(p, {"step": 0, "exp_avg": np.zeros_like(p.data),
                                          "exp_avg_sq": np.zeros_like(p.data)})
        state["step"] += 1
        state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * grad
        state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * grad * grad
        m_hat = state["exp_avg"] / (1 - beta1 ** state["step"])
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
        return p.data - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
