"""The training loop (`fit`) and `evaluate`: what every later module reuses."""
from __future__ import annotations

import time

import numpy as np

from .functional import cross_entropy
from .tensor import no_grad


def predict(model, loader) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for every batch of `loader`, in eval mode without a graph."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    with no_grad():
        for x, y in loader:
            logits.append(model(x).data)
            labels.append(y.data)
    model.train(was_training)
    if not logits:
        raise ValueError("loader is empty: it yielded no (inputs, labels) batch to predict")
    return np.concatenate(logits), np.concatenate(labels)


def evaluate(model, loader) -> float:
    """Top-1 accuracy of `model` on `loader`, a float in [0, 1]."""
    logits, labels = predict(model, loader)
    return float((logits.argmax(axis=1) == labels).mean())


def train_epoch(model, loader, optimizer, loss_fn=cross_entropy) -> tuple[float, float]:
    """One pass over `loader`; returns (mean loss, accuracy) over the samples seen."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.data.argmax(axis=1) == y.data).sum())
        seen += len(y)
    if seen == 0:
        raise ValueError("loader is empty: it yielded no (inputs, labels) sample to train on")
    return total_loss / seen, correct / seen


def fit(model, train_loader, optimizer, epochs: int, loss_fn=cross_entropy, val_loader=None,
        verbose: bool = True) -> dict:
    """Train for `epochs`, printing one line per epoch; returns the history as lists."""
    history = {"loss": [], "accuracy": [], "val_accuracy": [], "seconds": []}
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss, acc = train_epoch(model, train_loader, optimizer, loss_fn)
        val = evaluate(model, val_loader) if val_loader is not None else None
        seconds = time.perf_counter() - start
        for key, value in zip(history, (loss, acc, val, seconds)):
            history[key].append(value)
        if verbose:
            val_text = f"  val_acc {val:.2%}" if val is not None else ""
            print(f"epoch {epoch}/{epochs}  loss {loss:.4f}  acc {acc:.2%}{val_text}  {seconds:.1f}s")
    return history


__all__ = ["predict", "evaluate", "train_epoch", "fit"]
