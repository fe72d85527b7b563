"""MLP, SimpleCNN, TinyTransformer and PatchEmbedding: shapes, structure and a patch oracle."""
import numpy as np
import pytest

from tinytorch.core import Conv2d, Linear, MaxPool2d, Tensor, TransformerBlock, manual_seed
from tinytorch.models import MLP, PatchEmbedding, SimpleCNN, TinyTransformer, TokenMean


def batch(n=3, c=1, side=8):
    return Tensor(np.random.default_rng(0).uniform(0, 1, (n, c, side, side)))


def test_mlp_structure_and_output():
    model = MLP()
    assert [type(m).__name__ for m in model] == ["Flatten", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert (model[1].in_features, model[1].out_features, model[5].out_features) == (64, 300, 10)
    assert model(batch()).shape == (3, 10)
    assert model(Tensor(np.zeros((2, 64)))).shape == (2, 10)
    assert MLP(hidden=()).__len__() == 2


def test_simple_cnn_structure_and_output():
    model = SimpleCNN()
    convs = [m for m in model if isinstance(m, Conv2d)]
    assert [(c.in_channels, c.out_channels, c.padding) for c in convs] == [(1, 64, (1, 1)), (64, 128, (1, 1))]
    assert sum(isinstance(m, MaxPool2d) for m in model) == 2
    assert model(batch(2)).shape == (2, 10)
    small = SimpleCNN(in_channels=3, channels=(4, 6), num_classes=5, image_size=12)
    assert small(batch(2, 3, 12)).shape == (2, 5)
    assert small[-1].in_features == 6 * 3 * 3


def test_tiny_transformer_structure_and_output():
    model = TinyTransformer(dim=16, depth=3, num_heads=4)
    assert len(model) == 3 + 4
    assert sum(isinstance(m, TransformerBlock) for m in model) == 3
    assert isinstance(model[-2], TokenMean) and isinstance(model[-1], Linear)
    assert model(batch(2)).shape == (2, 10)
    del model[1]  # blocks can be removed and the model still runs
    assert model(batch(2)).shape == (2, 10)


def test_patch_embedding_matches_explicit_patches():
    manual_seed(0)
    emb = PatchEmbedding(image_size=4, patch_size=2, in_channels=2, dim=3)
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4))
    out = emb(Tensor(x, dtype=np.float64)).data
    assert out.shape == (2, 4, 3)
    w, b, pos = emb.proj.weight.data, emb.proj.bias.data, emb.position.data
    for n in range(2):
        for r in range(2):
            for s in range(2):
                patch = x[n, :, 2 * r:2 * r + 2, 2 * s:2 * s + 2].reshape(-1)  # (c, i, j) order
                token = r * 2 + s  # row-major over the patch grid
                np.testing.assert_allclose(out[n, token], w @ patch + b + pos[token], rtol=1e-5, atol=1e-6)


def test_patch_embedding_rejects_bad_patch_size():
    with pytest.raises(ValueError):
        PatchEmbedding(image_size=8, patch_size=3)


def test_token_mean():
    x = np.random.default_rng(2).standard_normal((2, 5, 3))
    np.testing.assert_allclose(TokenMean()(Tensor(x)).data, x.mean(axis=1), rtol=1e-6)


def test_models_train_end_to_end_one_step():
    """Every parameter of every model receives a finite gradient from one loss."""
    from tinytorch.core import cross_entropy
    for model in (MLP(hidden=(8,)), SimpleCNN(channels=(2, 3)), TinyTransformer(dim=8, depth=1, num_heads=2)):
        cross_entropy(model(batch(4)), np.array([0, 1, 2, 3])).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.shape == p.shape and np.all(np.isfinite(p.grad)), name


@pytest.mark.parametrize("build", [MLP, lambda: SimpleCNN(channels=(4, 8)), lambda: TinyTransformer(dim=8, num_heads=2)],
                         ids=["mlp", "cnn", "transformer"])
def test_models_compute_in_float32(build):
    model = build()
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert model(Tensor(np.zeros((2, 1, 8, 8), dtype=np.float32))).dtype == np.float32
