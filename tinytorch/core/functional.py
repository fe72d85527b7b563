"""Stateless functions on Tensors: activations, softmax family and losses (PyTorch semantics)."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


def relu(x: Tensor) -> Tensor:
    return x.relu()


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log(softmax(x)) computed as x - max - log(sum(exp(x - max))): no overflow for large x."""
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    probs = np.exp(out)
    return x._make(out, (x,), lambda g: (g - probs * g.sum(axis=axis, keepdims=True),))


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Probabilities along `axis`; stable for large logits (via log_softmax)."""
    return log_softmax(x, axis=axis).exp()


def _labels(targets) -> np.ndarray:
    labels = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"targets must be integer class labels, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def cross_entropy(logits: Tensor, targets) -> Tensor:
    """Mean negative log-likelihood of integer `targets` (N,) under `logits` (N, C)."""
    labels = _labels(targets)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy expects logits (N, C) and targets (N,), got "
                         f"{logits.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"targets must be in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}")
    logp = log_softmax(logits, axis=1)
    return -logp[np.arange(len(labels)), labels].mean()


def mse_loss(prediction: Tensor, target) -> Tensor:
    """Mean squared error over all elements."""
    diff = prediction - target
    return (diff * diff).mean()


def kl_div(log_input: Tensor, target, reduction: str = "batchmean") -> Tensor:
    """KL(target || input) with `log_input` as log-probabilities and `target` as probabilities.

    Matches `torch.nn.functional.kl_div(log_input, target, reduction=...)`: the pointwise term
    is target * (log(target) - log_input), with 0 where target is 0.  "batchmean" divides the
    sum by the batch size (the mathematically correct KL per sample), "sum" and "mean" (over
    all elements) are also available.  The target is treated as a constant (no gradient).
    """
    p = np.asarray(target.data if isinstance(target, Tensor) else target, dtype=log_input.dtype)
    if p.shape != log_input.shape:
        raise ValueError(f"kl_div: target shape {p.shape} does not match input shape {log_input.shape}")
    p_log_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).astype(log_input.dtype)
    total = (Tensor(p_log_p, dtype=log_input.dtype) - log_input * p).sum()
    if reduction == "batchmean":
        return total * (1.0 / log_input.shape[0])
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total * (1.0 / log_input.size)
    raise ValueError(f"reduction must be 'batchmean', 'sum' or 'mean', got {reduction!r}")


def accuracy(logits, targets) -> float:
    """Fraction of rows whose argmax equals the label."""
    scores = logits.data if isinstance(logits, Tensor) else np.asarray(logits)
    return float((scores.argmax(axis=1) == _labels(targets)).mean())
