"""Train the three reference models on the digits and write their weight files.

    python scripts/train_pretrained.py            # all three, ~2 minutes on 2 cores
    python scripts/train_pretrained.py cnn        # just one

Deterministic: the seed fixes initialisation, dropout and batch order. The test accuracy
reached is recorded in each file's metadata (tinytorch.models.pretrained_metadata) and is
what tests/models/test_pretrained.py checks.
"""
import sys
import time

import numpy as np

import tinytorch as tt
from tinytorch.datasets import digits_loaders
from tinytorch.models import MLP, PRETRAINED, SimpleCNN, TinyTransformer, pretrained_path

RECIPES = {  # name: (model class, epochs); all use Adam(lr=1e-3, weight_decay=1e-4), batch 32
    "mlp": (MLP, 40),
    "cnn": (SimpleCNN, 20),
    "transformer": (TinyTransformer, 30),
}
SEED, LR, WEIGHT_DECAY, BATCH_SIZE = 0, 1e-3, 1e-4, 32


def train(name: str) -> float:
    build, epochs = RECIPES[name]
    tt.manual_seed(SEED)
    model = build()
    train_loader, test_loader = digits_loaders(batch_size=BATCH_SIZE, seed=SEED)
    start = time.perf_counter()
    tt.fit(model, train_loader, tt.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY), epochs, val_loader=test_loader)
    seconds = time.perf_counter() - start
    with tt.no_grad():  # weight decay leaves dead weights at subnormal values (< 1.2e-38): they change
        for p in model.parameters():  # no output but make float32 arithmetic several times slower
            p.data[np.abs(p.data) < np.finfo(np.float32).tiny] = 0.0
    acc = tt.evaluate(model, test_loader)
    tt.save_model(model, pretrained_path(name), metadata={
        "test_accuracy": acc, "epochs": epochs, "lr": LR, "weight_decay": WEIGHT_DECAY, "seed": SEED,
        "optimizer": "Adam", "batch_size": BATCH_SIZE, "train_seconds": round(seconds, 1), "numpy": np.__version__})
    print(f"{name}: test accuracy {acc:.2%} after {epochs} epochs ({seconds:.0f}s)")
    return acc


if __name__ == "__main__":
    for model_name in sys.argv[1:] or list(PRETRAINED):
        train(model_name)
