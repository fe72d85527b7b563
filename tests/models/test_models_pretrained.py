"""The shipped pretrained digits models reach the accuracy recorded in their files."""
import numpy as np
import pytest

from tinytorch.core import evaluate
from tinytorch.datasets import digits_loaders
from tinytorch.models import MLP, PRETRAINED, SimpleCNN, TinyTransformer, load_pretrained, pretrained_metadata, pretrained_path

FLOORS = {"mlp": 0.96, "cnn": 0.97, "transformer": 0.93}
CLASSES = {"mlp": MLP, "cnn": SimpleCNN, "transformer": TinyTransformer}


@pytest.fixture(scope="module")
def test_loader():
    return digits_loaders()[1]


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_pretrained_reaches_recorded_accuracy(name, test_loader):
    assert pretrained_path(name).exists(), f"missing weight file {pretrained_path(name)}"
    model = load_pretrained(name)
    assert type(model) is CLASSES[name] and not model.training
    recorded = pretrained_metadata(name)["test_accuracy"]
    accuracy = evaluate(model, test_loader)
    assert accuracy == pytest.approx(recorded, abs=1e-9)
    assert recorded >= FLOORS[name], f"{name}: recorded accuracy {recorded} below floor {FLOORS[name]}"


def test_pretrained_models_are_deterministic(test_loader):
    model = load_pretrained("mlp")
    x, _ = next(iter(test_loader))
    np.testing.assert_array_equal(model(x).data, load_pretrained("mlp")(x).data)


def test_unknown_pretrained_name():
    with pytest.raises(ValueError):
        pretrained_path("resnet")
    with pytest.raises(ValueError):
        load_pretrained("resnet")
