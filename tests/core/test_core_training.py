"""fit / train_epoch / evaluate / predict."""
import numpy as np
import pytest

from tinytorch.core import (SGD, Adam, DataLoader, Dropout, Linear, Module, Sequential, Tensor, TensorDataset,
                            cross_entropy, evaluate, fit, manual_seed, predict, train_epoch)
from tinytorch.datasets import digits_loaders
from tinytorch.models import MLP


class OracleLogits(Module):
    """Logits = the first 3 input features: accuracy is known by construction."""

    def forward(self, x):
        return x[:, :3]


def test_evaluate_against_known_accuracy_and_restores_mode():
    x = np.eye(3)[[0, 1, 2, 0, 1]]
    y = np.array([0, 1, 2, 1, 1])  # row 3 is wrong: 4/5 correct
    model = OracleLogits()
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    acc = evaluate(model, loader)
    assert isinstance(acc, float) and acc == pytest.approx(0.8)
    assert model.training  # mode restored
    model.eval()
    evaluate(model, loader)
    assert not model.training


def test_predict_runs_in_eval_mode_without_graph():
    manual_seed(0)
    model = Sequential(Linear(4, 3), Dropout(0.9))
    x = np.random.default_rng(0).standard_normal((7, 4))
    loader = DataLoader(TensorDataset(x, np.zeros(7, dtype=np.int64)), batch_size=3)
    logits, labels = predict(model, loader)
    assert logits.shape == (7, 3) and labels.shape == (7,)
    np.testing.assert_allclose(logits, x @ model[0].weight.data.T + model[0].bias.data, rtol=1e-5, atol=1e-6)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_train_epoch_reports_sample_weighted_mean_loss_and_accuracy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 4))
    y = rng.integers(0, 3, size=10)
    model = Linear(4, 3)
    before = cross_entropy(model(Tensor(x)), y).item()
    acc_before = float((model(Tensor(x)).data.argmax(1) == y).mean())
    # a vanishing learning rate leaves the weights (numerically) unchanged, so the epoch's mean
    # loss must equal the full-batch loss even with an uneven last batch (4 + 4 + 2)
    loss, acc = train_epoch(model, DataLoader(TensorDataset(x, y), batch_size=4), SGD(model.parameters(), lr=1e-12))
    assert loss == pytest.approx(before, rel=1e-5)
    assert acc == pytest.approx(acc_before)


def test_fit_on_digits_reduces_loss():
    manual_seed(0)
    model = MLP(hidden=(100, 50))  # narrower than the default 300-100: keeps the test fast
    train, test = digits_loaders(batch_size=64, seed=0)
    history = fit(model, train, Adam(model.parameters(), lr=3e-3), epochs=3, val_loader=test, verbose=False)
    assert len(history["loss"]) == 3 and len(history["val_accuracy"]) == 3
    losses = history["loss"]
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.5 * losses[0]
    acc = evaluate(model, test)
    assert isinstance(acc, float) and 0.0 <= acc <= 1.0
    assert acc > 0.5  # far above the 10% of chance after 3 epochs
    assert history["val_accuracy"][-1] == acc


def test_fit_verbose_prints_one_line_per_epoch(capsys):
    x = np.random.default_rng(1).standard_normal((8, 2))
    loader = DataLoader(TensorDataset(x, np.arange(8) % 2), batch_size=4)
    model = Linear(2, 2)
    fit(model, loader, SGD(model.parameters(), lr=0.1), epochs=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2")


def test_empty_loaders_are_refused_clearly():
    model = Linear(2, 2)
    empty = DataLoader(TensorDataset(np.zeros((0, 2)), np.zeros(0, dtype=np.int64)), batch_size=4)
    for call in (lambda: evaluate(model, empty),
                 lambda: train_epoch(model, empty, SGD(model.parameters(), lr=0.1)),
                 lambda: evaluate(model, [])):
        with pytest.raises(ValueError, match="loader is empty"):
            call()
