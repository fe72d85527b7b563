"""MultiHeadSelfAttention and TransformerBlock: a per-head NumPy reference and gradients."""
import numpy as np
import pytest

from gradcheck import module_gradcheck
from tinytorch.core import MultiHeadSelfAttention, Tensor, TransformerBlock


@pytest.fixture
def rng():
    return np.random.default_rng(5)


def np_linear(layer, x):
    return x @ layer.weight.data.astype(np.float64).T + layer.bias.data


def np_attention(attn, x):
    """Loop over batch and heads; q/k/v are the first/second/third `dim` outputs of qkv."""
    b, t, d = x.shape
    h = attn.num_heads
    dh = d // h
    qkv = np_linear(attn.qkv, x)
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    out = np.zeros((b, t, d))
    for i in range(b):
        for head in range(h):
            cols = slice(head * dh, (head + 1) * dh)
            scores = q[i, :, cols] @ k[i, :, cols].T / np.sqrt(dh)
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            weights = scores / scores.sum(axis=1, keepdims=True)
            out[i, :, cols] = weights @ v[i, :, cols]
    return np_linear(attn.proj, out)


def np_layernorm(ln, x):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + ln.eps) * ln.weight.data + ln.bias.data


@pytest.mark.parametrize("dim,heads", [(8, 2), (6, 1), (8, 4)])
def test_attention_forward_matches_reference(rng, dim, heads):
    attn = MultiHeadSelfAttention(dim, heads)
    x = rng.standard_normal((2, 5, dim))
    out = attn(Tensor(x, dtype=np.float64))
    assert out.shape == (2, 5, dim)
    np.testing.assert_allclose(out.data, np_attention(attn, x), rtol=1e-5, atol=1e-6)


def test_attention_is_permutation_equivariant_over_tokens(rng):
    attn = MultiHeadSelfAttention(4, 2)
    x = rng.standard_normal((1, 6, 4))
    perm = rng.permutation(6)
    out = attn(Tensor(x, dtype=np.float64)).data
    out_perm = attn(Tensor(x[:, perm], dtype=np.float64)).data
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-5, atol=1e-6)


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError):
        MultiHeadSelfAttention(6, 4)


def test_attention_gradients(rng):
    module_gradcheck(MultiHeadSelfAttention(4, 2), rng.standard_normal((2, 3, 4)))


def test_transformer_block_forward_matches_reference(rng):
    block = TransformerBlock(8, 2, mlp_ratio=2)
    for ln in (block.norm1, block.norm2):
        ln.weight.data = rng.uniform(0.5, 1.5, 8).astype(np.float32)
        ln.bias.data = rng.standard_normal(8).astype(np.float32) * 0.1
    x = rng.standard_normal((2, 4, 8))
    h = x + np_attention(block.attn, np_layernorm(block.norm1, x))
    fc1, fc2 = block.mlp[0], block.mlp[2]
    expected = h + np_linear(fc2, np.maximum(np_linear(fc1, np_layernorm(block.norm2, h)), 0))
    out = block(Tensor(x, dtype=np.float64))
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


def test_transformer_block_parameter_names():
    names = [n for n, _ in TransformerBlock(4, 2).named_parameters()]
    assert names == ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                     "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                     "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]


def test_transformer_block_gradients(rng):
    block = TransformerBlock(4, 2, mlp_ratio=2)
    module_gradcheck(block, rng.standard_normal((2, 3, 4)))
