"""Module / Parameter / Sequential: registration, names, state_dict, modes, editing, hooks."""
import numpy as np
import pytest

from tinytorch.core import (SGD, Dropout, LayerNorm, Linear, Module, Parameter, ReLU, Sequential, Tanh,
                            Tensor, has_extra_state, manual_seed)
from tinytorch.models import TinyTransformer


def x_batch(n=4, d=3, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal((n, d)))


class TwoBranch(Module):
    def __init__(self):
        super().__init__()
        self.scale = Parameter(np.array([2.0]))
        self.left = Linear(3, 2)
        self.right = Sequential(Linear(3, 4), ReLU(), Linear(4, 2))

    def forward(self, x):
        return (self.left(x) + self.right(x)) * self.scale


# ------------------------------------------------------------------ registration and names
def test_parameter_is_float32_and_requires_grad():
    p = Parameter(np.arange(3))
    assert p.dtype == np.float32 and p.requires_grad and isinstance(p, Tensor)


def test_named_parameters_dotted_names_in_registration_order():
    names = [n for n, _ in TwoBranch().named_parameters()]
    assert names == ["scale", "left.weight", "left.bias", "right.0.weight", "right.0.bias",
                     "right.2.weight", "right.2.bias"]
    seq = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in seq.named_modules()] == ["", "0", "1", "2"]


def test_tiny_transformer_parameter_names():
    names = [n for n, _ in TinyTransformer(dim=8, depth=2, num_heads=2).named_parameters()]
    assert names[:3] == ["0.position", "0.proj.weight", "0.proj.bias"]  # own params first, as PyTorch
    assert "1.attn.qkv.weight" in names and "2.mlp.2.bias" in names
    assert names[-4:] == ["3.weight", "3.bias", "5.weight", "5.bias"]
    assert len(names) == len(set(names))


def test_parameters_are_the_same_objects_as_attributes():
    m = TwoBranch()
    params = m.parameters()
    assert params[0] is m.scale and params[1] is m.left.weight
    assert len(params) == 7


def test_reassigning_or_deleting_attributes_updates_registration():
    lin = Linear(3, 2)
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    m = TwoBranch()
    del m.left
    assert not any(n.startswith("left") for n, _ in m.named_parameters())
    m.left = Tanh()  # a parameter-free module replaces the Linear
    assert isinstance(dict(m.named_modules())["left"], Tanh)
    m.scale = 3.0  # a plain value is no longer a parameter
    assert "scale" not in dict(m.named_parameters())


def test_module_subclass_must_call_init_first():
    class Broken(Module):
        def __init__(self):
            self.w = Parameter(np.ones(2))

    with pytest.raises(AttributeError):
        Broken()


def test_forward_not_implemented():
    with pytest.raises(NotImplementedError):
        Module()(Tensor([1.0]))


def test_shared_module_parameters_are_listed_and_updated_once():
    # PyTorch de-duplicates shared parameters; otherwise an optimizer steps tied weights twice.
    lin = Linear(2, 2)
    model = Sequential(lin, Tanh(), lin)
    assert len(model.parameters()) == 2
    x = Tensor(np.ones((1, 2)))
    model(x).sum().backward()
    before, grad = lin.weight.data.copy(), lin.weight.grad.copy()
    SGD(model.parameters(), lr=0.1).step()
    np.testing.assert_allclose(lin.weight.data, before - 0.1 * grad, rtol=1e-6)


def test_zero_grad_clears_every_parameter():
    m = TwoBranch()
    m(x_batch()).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


# ------------------------------------------------------------------ state_dict
def test_state_dict_round_trip_reproduces_outputs():
    manual_seed(1)
    a = TwoBranch()
    manual_seed(2)
    b = TwoBranch()
    x = x_batch()
    assert not np.allclose(a(x).data, b(x).data)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_state_dict_is_a_copy_with_dotted_keys():
    m = TwoBranch()
    state = m.state_dict()
    assert list(state) == [n for n, _ in m.named_parameters()]
    state["left.weight"][:] = 123.0
    assert not np.any(m.left.weight.data == 123.0)


def test_load_state_dict_copies_and_casts_to_float32():
    lin = Linear(2, 2)
    w = np.ones((2, 2), dtype=np.float64)
    lin.load_state_dict({"weight": w, "bias": np.zeros(2)})
    assert lin.weight.dtype == np.float32
    w[:] = 5
    np.testing.assert_array_equal(lin.weight.data, np.ones((2, 2)))


def test_load_state_dict_strict_missing_and_unexpected_keys():
    m = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    state = m.state_dict()
    missing = dict(state)
    del missing["2.bias"]
    with pytest.raises(ValueError, match="2.bias"):
        m.load_state_dict(missing)
    unexpected = dict(state, **{"3.weight": np.zeros(1)})
    with pytest.raises(ValueError, match="3.weight"):
        m.load_state_dict(unexpected)
    # non-strict: the matching keys are loaded, the rest ignored
    new = {k: np.full_like(v, 0.5) for k, v in missing.items()}
    new["extra"] = np.zeros(3)
    m.load_state_dict(new, strict=False)
    np.testing.assert_array_equal(m[0].weight.data, 0.5)
    np.testing.assert_array_equal(m[2].bias.data, state["2.bias"])


def test_load_state_dict_shape_mismatch_raises_even_when_not_strict():
    m = Sequential(Linear(2, 3))
    bad = m.state_dict()
    bad["0.weight"] = np.zeros((2, 3))
    for strict in (True, False):
        with pytest.raises(ValueError, match="0.weight"):
            m.load_state_dict(bad, strict=strict)


# ------------------------------------------------------------------ train / eval
def test_train_eval_propagate_to_every_submodule():
    m = TinyTransformer(dim=8, depth=2, num_heads=2)
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())
    m.train(False)
    assert not any(mod.training for mod in m.modules())


def test_dropout_inside_sequential_follows_mode():
    manual_seed(0)
    m = Sequential(Linear(4, 50), Dropout(0.5))
    x = x_batch(8, 4)
    m.eval()
    a, b = m(x).data, m(x).data
    np.testing.assert_array_equal(a, b)
    m.train()
    out = m(x).data
    assert np.mean(out == 0) > 0.3
    nonzero = out != 0
    np.testing.assert_allclose(out[nonzero], 2 * a[nonzero], rtol=1e-5)


# ------------------------------------------------------------------ Sequential editing
def test_sequential_indexing_len_iter():
    layers = [Linear(2, 3), ReLU(), Linear(3, 1)]
    seq = Sequential(*layers)
    assert len(seq) == 3
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    assert list(seq) == layers
    part = seq[1:]
    assert isinstance(part, Sequential) and len(part) == 2 and part[0] is layers[1]
    assert [n for n, _ in part.named_parameters()] == ["1.weight", "1.bias"]
    x = x_batch(5, 2)
    np.testing.assert_allclose(seq(x).data, part(layers[0](x)).data)
    with pytest.raises(IndexError):
        seq[3]


def test_sequential_setitem_delitem_append_renumber():
    seq = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    new = Linear(2, 3)
    seq[0] = new
    assert seq[0] is new and len(seq) == 3
    del seq[1]
    assert len(seq) == 2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    x = x_batch(4, 2)
    np.testing.assert_allclose(seq(x).data, seq[1](new(x)).data)
    del seq[0]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert seq.append(Tanh()) is seq and len(seq) == 2 and isinstance(seq[1], Tanh)


def test_sequential_rejects_non_modules():
    with pytest.raises(ValueError):
        Sequential(Linear(2, 2), "relu")


def test_sequential_failed_setitem_leaves_model_unchanged():
    layers = [Linear(2, 3), ReLU(), Linear(3, 1)]
    seq = Sequential(*layers)
    with pytest.raises(ValueError):
        seq[1] = "not a module"
    assert list(seq) == layers


def test_sequential_from_layers_keeps_subclass_without_init():
    class Wide(Sequential):
        def __init__(self, width):
            super().__init__(Linear(2, width), ReLU())

    layers = [Linear(2, 5), Tanh()]
    obj = Wide.from_layers(layers)
    assert type(obj) is Wide and list(obj) == layers


def test_sequential_setitem_keeps_the_position_of_the_replaced_layer():
    first, relu, last = Linear(2, 3), ReLU(), Linear(3, 1)
    seq = Sequential(first, relu, last)
    new = Linear(2, 3)
    seq[0] = new
    assert list(seq) == [new, relu, last]  # the old pop-and-reinsert put `new` last
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2"]
    tanh = Tanh()
    setattr(seq, "1", tanh)
    assert list(seq) == [new, tanh, last]
    seq[-1] = Linear(3, 1)
    assert seq[0] is new and seq[1] is tanh and seq[2] is not last
    x = x_batch(4, 2)
    np.testing.assert_array_equal(seq(x).data, seq[2](tanh(new(x))).data)  # forward in the same order
    with pytest.raises(IndexError):
        seq[3] = ReLU()


def test_reassigning_a_child_of_a_custom_module_keeps_its_position():
    m = TwoBranch()
    narrow = Linear(3, 2, bias=False)
    m.left = narrow
    assert [n for n, _ in m.named_children()] == ["left", "right"]
    assert [n for n, _ in m.named_parameters()] == ["scale", "left.weight", "right.0.weight", "right.0.bias",
                                                    "right.2.weight", "right.2.bias"]
    m.right[0] = Linear(3, 4)  # nested Sequential inside the custom module
    assert [n for n, _ in m.named_modules()] == ["", "left", "right", "right.0", "right.1", "right.2"]
    x = x_batch()
    expected = (narrow(x) + m.right[2](m.right[1](m.right[0](x)))) * m.scale
    np.testing.assert_array_equal(m(x).data, expected.data)


def test_reassigning_a_parameter_keeps_its_position():
    lin = Linear(3, 2)
    lin.weight = Parameter(np.zeros((2, 3)))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert lin.state_dict()["weight"].sum() == 0


def test_switching_between_module_parameter_and_plain_value():
    m = TwoBranch()
    m.left = Parameter(np.ones(2))  # a Module replaced by a Parameter: now a parameter, no child
    assert [n for n, _ in m.named_children()] == ["right"]
    assert "left" in dict(m.named_parameters())
    m.left = Tanh()
    assert "left" not in dict(m.named_parameters()) and dict(m.named_children())["left"] is m.left
    m.left = None  # neither: the registration goes, the attribute stays
    assert [n for n, _ in m.named_children()] == ["right"] and m.left is None


def test_named_children_lists_direct_children_once_in_order():
    lin = Linear(2, 2)
    seq = Sequential(lin, Tanh(), lin)
    assert [(n, type(c).__name__) for n, c in seq.named_children()] == [("0", "Linear"), ("1", "Tanh")]
    assert list(seq.children()) == [lin, seq[1]]
    assert len(seq) == 3  # the Sequential itself still runs the shared layer twice
    m = TwoBranch()
    assert [n for n, _ in m.named_children()] == ["left", "right"]  # not grandchildren
    assert list(m.children()) == [m.left, m.right]


def test_extra_state_is_detected_by_override():
    class Counter(Module):
        def __init__(self):
            super().__init__()
            self.count = 0

        def get_extra_state(self):
            return {"count": self.count}

        def set_extra_state(self, state):
            self.count = state["count"]

    assert has_extra_state(Counter()) and not has_extra_state(Linear(2, 2))
    with pytest.raises(RuntimeError):
        Linear(2, 2).get_extra_state()


# ------------------------------------------------------------------ hooks
def test_forward_hook_receives_module_inputs_output_and_can_be_removed():
    lin = Linear(3, 2)
    calls = []
    handle = lin.register_forward_hook(lambda mod, inputs, out: calls.append((mod, inputs, out)))
    x = x_batch()
    out = lin(x)
    assert len(calls) == 1
    mod, inputs, hooked_out = calls[0]
    assert mod is lin and inputs == (x,) and hooked_out is out
    handle.remove()
    lin(x)
    assert len(calls) == 1


def test_forward_hooks_run_in_registration_order_on_submodules():
    seq = Sequential(Linear(3, 2), ReLU())
    order = []
    seq[0].register_forward_hook(lambda *a: order.append("first"))
    seq[0].register_forward_hook(lambda *a: order.append("second"))
    seq[1].register_forward_hook(lambda *a: order.append("relu"))
    seq(x_batch())
    assert order == ["first", "second", "relu"]


def test_removing_a_hook_handle_twice_does_not_remove_another_hook():
    lin = Linear(3, 2)
    calls = []
    old = lin.register_forward_hook(lambda *a: calls.append("old"))
    old.remove()
    lin.register_forward_hook(lambda *a: calls.append("new"))
    old.remove()  # idempotent: must not touch the newer hook
    lin(x_batch())
    assert calls == ["new"]


def test_repr_mentions_children_and_config():
    text = repr(Sequential(Linear(2, 3), LayerNorm(3)))
    assert "Linear(in_features=2, out_features=3, bias=True)" in text and "(1): LayerNorm" in text
