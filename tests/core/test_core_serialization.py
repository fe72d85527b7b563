"""save_model / load_model / read_metadata: round trips and every way a file can be bad."""
import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest
from npz_craft import npy_bytes, zip_bytes

from tinytorch.core import (Conv2d, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, Module, ReLU, Sequential, Tanh,
                            Tensor, TransformerBlock, build_module, load_model, manual_seed, module_spec,
                            read_metadata, save_model)
from tinytorch.models import MLP, SimpleCNN, TinyTransformer


def images(n=3, seed=0):
    return Tensor(np.random.default_rng(seed).uniform(0, 1, (n, 1, 8, 8)))


def outputs(model, x):
    return model.eval()(x).data


@pytest.fixture
def saved_mlp(tmp_path):
    path = tmp_path / "mlp.npz"
    manual_seed(0)  # the same bytes every run
    save_model(MLP(hidden=(16,)), path)
    return path


def edited_mlp():
    model = MLP(hidden=(32, 16))
    model[1] = Linear(64, 20)  # structural edits: narrower first layer, ...
    model[3] = Linear(20, 16)
    del model[4]  # ... one ReLU removed, Tanh appended before the head
    model.append(Tanh())
    return model


@pytest.mark.parametrize("build", [MLP, SimpleCNN, TinyTransformer, lambda: SimpleCNN(channels=(8, 16)),
                                   lambda: TinyTransformer(dim=16, depth=1, num_heads=2), edited_mlp],
                         ids=["mlp", "cnn", "transformer", "cnn-8-16", "transformer-small", "edited-mlp"])
def test_round_trip_gives_identical_outputs_and_class(tmp_path, build):
    manual_seed(4)
    model = build()
    path = tmp_path / "model.npz"
    save_model(model, path)
    manual_seed(99)  # a different initialisation must not matter
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    assert [(n, p.shape) for n, p in loaded.named_parameters()] == [(n, p.shape) for n, p in model.named_parameters()]
    assert not loaded.training
    x = images()
    np.testing.assert_array_equal(outputs(loaded, x), outputs(model, x))


def test_simple_cnn_with_smaller_channels_keeps_its_shapes(tmp_path):
    model = SimpleCNN(channels=(8, 16))
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded[0].weight.shape == (8, 1, 3, 3) and loaded[3].weight.shape == (16, 8, 3, 3)
    assert loaded[7].weight.shape == (10, 16 * 2 * 2)


def test_layer_configs_survive(tmp_path):
    model = Sequential(Conv2d(1, 2, (3, 2), stride=(2, 1), padding=(1, 0), bias=False), MaxPool2d(2),
                       Flatten(), Dropout(0.25), LayerNorm(12, eps=1e-3), Linear(12, 3, bias=False))
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert [m.config() for m in loaded] == [m.config() for m in model]
    assert loaded[0].bias is None and loaded[0].stride == (2, 1) and loaded[0].padding == (1, 0)
    x = images(2)
    np.testing.assert_array_equal(outputs(loaded, x), outputs(model, x))


def test_metadata_round_trip(tmp_path):
    meta = {"test_accuracy": 0.975, "epochs": 3, "note": "hello"}
    save_model(Linear(2, 2), tmp_path / "m.npz", metadata=meta)
    assert read_metadata(tmp_path / "m.npz") == meta
    save_model(Linear(2, 2), tmp_path / "n.npz")
    assert read_metadata(str(tmp_path / "n.npz")) == {}


def test_file_needs_no_pickle_and_holds_named_float32_arrays(saved_mlp):
    with np.load(saved_mlp, allow_pickle=False) as archive:
        files = set(archive.files)
        header = json.loads(str(archive["__spec__"]))
        assert archive["1.weight"].dtype == np.float32 and archive["1.weight"].shape == (16, 64)
    assert files == {"__spec__", "1.weight", "1.bias", "3.weight", "3.bias"}
    assert header["format"] == "tinytorch-model" and header["model"]["type"] == "MLP"


def test_save_is_atomic_and_overwrites(tmp_path):
    path = tmp_path / "m.npz"
    save_model(Linear(2, 2), path)
    save_model(Linear(3, 3), path)
    assert load_model(path).weight.shape == (3, 3)
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "nope.npz")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_file_raises_value_error(tmp_path, saved_mlp, keep):
    data = saved_mlp.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match="truncated.npz"):
        load_model(bad)


def test_random_bytes_and_empty_file_raise_value_error(tmp_path):
    for name, content in [("random.npz", np.random.default_rng(0).bytes(4096)), ("empty.npz", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=name):
            load_model(path)


@pytest.mark.parametrize("where", [0.02, 0.1, 0.3, 0.5])
def test_corrupted_bytes_inside_the_archive_raise_value_error(tmp_path, saved_mlp, where):
    data = bytearray(saved_mlp.read_bytes())
    start = int(len(data) * where)
    for i in range(start, start + 32):
        data[i] ^= 0xFF
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        load_model(bad)


def test_npz_without_spec(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, weight=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="__spec__"):
        load_model(path)


def test_plain_npy_file_raises_value_error(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError):
        load_model(path)


def rewrite(path, out, header=None, **changes):
    """Copy the archive at `path` to `out`, replacing the header and/or some arrays."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    if header is not None:
        arrays["__spec__"] = np.array(json.dumps(header))
    arrays.update(changes)
    np.savez(out, **{k: v for k, v in arrays.items() if v is not None})
    return out


def test_weights_not_matching_spec_shape(tmp_path, saved_mlp):
    bad = rewrite(saved_mlp, tmp_path / "shape.npz", **{"3.weight": np.zeros((10, 15), np.float32)})
    with pytest.raises(ValueError, match="do not match.*3.weight"):
        load_model(bad)


def test_weights_missing_or_extra(tmp_path, saved_mlp):
    with pytest.raises(ValueError, match="3.bias"):
        load_model(rewrite(saved_mlp, tmp_path / "missing.npz", **{"3.bias": None}))
    with pytest.raises(ValueError, match="9.weight"):
        load_model(rewrite(saved_mlp, tmp_path / "extra.npz", **{"9.weight": np.zeros(3, np.float32)}))


def test_spec_with_wrong_format_version_or_unknown_layer(tmp_path, saved_mlp):
    with np.load(saved_mlp, allow_pickle=False) as archive:
        header = json.loads(str(archive["__spec__"]))
    for i, change in enumerate([{"format": "something-else"}, {"version": 99},
                                {"model": {"type": "NoSuchLayer", "module": "elsewhere", "config": {}}}]):
        with pytest.raises(ValueError):
            load_model(rewrite(saved_mlp, tmp_path / f"h{i}.npz", header=dict(header, **change)))


@pytest.mark.parametrize("header", [
    [1, 2, 3],  # valid JSON, not an object
    "just a string",
    {"format": "tinytorch-model", "version": 1},  # no "model" entry
    {"format": "tinytorch-model", "version": 1, "model": {"type": "Linear", "module": "tinytorch.core.layers",
                                                          "config": {"in_features": 2, "nonsense": 1}}},
    {"format": "tinytorch-model", "version": 1, "model": {"type": "Gone", "module": "tinytorch.no_such_module"}},
], ids=["list", "string", "no-model", "bad-config", "bad-module"])
def test_malformed_spec_raises_value_error(tmp_path, saved_mlp, header):
    with pytest.raises(ValueError):
        load_model(rewrite(saved_mlp, tmp_path / "malformed.npz", header=header))


def test_spec_that_is_not_json(tmp_path, saved_mlp):
    with np.load(saved_mlp, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["__spec__"] = np.array("{not json")
    np.savez(tmp_path / "nojson.npz", **arrays)
    with pytest.raises(ValueError):
        load_model(tmp_path / "nojson.npz")


# ------------------------------------------------------------------ models save_model must refuse
class KeepsCounts(Linear):
    """A real layer with state outside its Parameters (like the compression package's CSR weights)."""

    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features)
        self.calls = 0

    def get_extra_state(self):
        return {"calls": self.calls}

    def set_extra_state(self, state):
        self.calls = state["calls"]


def test_save_model_refuses_a_layer_with_extra_state(tmp_path):
    path = tmp_path / "m.npz"
    save_model(Linear(2, 2), path)
    before = path.read_bytes()
    model = Sequential(Linear(2, 3), ReLU(), Sequential(KeepsCounts(3, 2)))
    with pytest.raises(ValueError) as err:
        save_model(model, path)
    message = str(err.value)
    for part in ("'2.0'", "KeepsCounts", "Parameters only", "tinytorch.optimization.compression.save_compressed"):
        assert part in message
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]
    with pytest.raises(ValueError, match="the model itself"):
        save_model(KeepsCounts(2, 2), tmp_path / "other.npz")
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_model_refuses_classes_load_model_could_not_rebuild(tmp_path):
    class Outside(Module):  # defined in this test module, not in tinytorch
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match="Outside.*tinytorch"):
        save_model(Sequential(Linear(2, 2), Outside()), tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("metadata", [{"accuracy": np.float32(0.9)}, {"when": object()}, {"ok": 1, "bad": {2, 3}},
                                      [("accuracy", 0.9)], "accuracy=0.9"],
                         ids=["numpy-float", "object", "set", "list", "string"])
def test_unencodable_metadata_raises_value_error_before_writing(tmp_path, metadata):
    path = tmp_path / "m.npz"
    save_model(Linear(2, 2), path, metadata={"v": 1})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="metadata"):
        save_model(Linear(3, 3), path, metadata=metadata)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]


def test_circular_metadata_raises_value_error(tmp_path):
    loop = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="metadata"):
        save_model(Linear(2, 2), tmp_path / "m.npz", metadata=loop)


# ------------------------------------------------------------------ children recorded in the spec
def edited_transformer():
    """TinyTransformer whose first block has replaced children of other types and configs."""
    model = TinyTransformer(dim=8, depth=2, num_heads=2)
    block = model[1]
    block.norm1 = LayerNorm(8, eps=1e-2)  # same Parameters, different config: only the spec can tell
    block.attn.qkv = Linear(8, 24, bias=False)
    block.attn.proj = Sequential(Linear(8, 8), Tanh())  # a different type in place of a Linear
    block.mlp[2] = Linear(16, 8, bias=False)
    model[0].proj = Linear(4, 8, bias=False)
    return model


def test_replaced_children_round_trip_in_place(tmp_path):
    manual_seed(3)
    model = edited_transformer()
    path = tmp_path / "t.npz"
    save_model(model, path)
    manual_seed(11)
    loaded = load_model(path)
    assert [(n, type(m).__name__, m.config()) for n, m in loaded.named_modules()] == \
        [(n, type(m).__name__, m.config()) for n, m in model.named_modules()]
    assert [n for n, _ in loaded[1].named_children()] == ["norm1", "attn", "norm2", "mlp"]
    assert loaded[1].norm1.eps == 1e-2 and loaded[1].attn.qkv.bias is None
    x = Tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)))
    np.testing.assert_array_equal(outputs(loaded, x), outputs(model, x))


def test_a_custom_container_as_the_root_round_trips(tmp_path):
    block = TransformerBlock(8, 2, mlp_ratio=3)
    block.mlp = Sequential(Linear(8, 5), Tanh(), Linear(5, 8))
    save_model(block, tmp_path / "b.npz")
    loaded = load_model(tmp_path / "b.npz")
    assert type(loaded) is TransformerBlock and [type(m).__name__ for m in loaded.mlp] == ["Linear", "Tanh", "Linear"]
    x = Tensor(np.random.default_rng(1).standard_normal((2, 4, 8)))
    np.testing.assert_array_equal(outputs(loaded, x), outputs(block, x))


def test_spec_children_match_module_tree():
    spec = module_spec(edited_transformer())
    block = spec["layers"][1]
    assert list(block["children"]) == ["norm1", "attn", "norm2", "mlp"]
    assert block["children"]["attn"]["children"]["proj"]["type"] == "Sequential"
    assert "children" not in block["children"]["norm1"]  # no children: no key, as in files saved before


def test_files_saved_before_children_were_recorded_still_load(tmp_path, saved_mlp):
    manual_seed(2)
    model = TinyTransformer(dim=8, depth=1, num_heads=2)
    save_model(model, tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz", allow_pickle=False) as archive:
        header = json.loads(str(archive["__spec__"]))

    def strip(spec):
        spec.pop("children", None)
        for child in spec.get("layers", []):
            strip(child)
        return spec

    strip(header["model"])
    assert "children" not in json.dumps(header)
    loaded = load_model(rewrite(tmp_path / "new.npz", tmp_path / "old.npz", header=header))
    np.testing.assert_array_equal(outputs(loaded, images()), outputs(model, images()))


def test_children_names_must_match_the_constructor(tmp_path):
    save_model(TransformerBlock(8, 2), tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz", allow_pickle=False) as archive:
        header = json.loads(str(archive["__spec__"]))
    header["model"]["children"]["extra"] = header["model"]["children"].pop("norm2")
    with pytest.raises(ValueError, match="children.*extra"):
        load_model(rewrite(tmp_path / "b.npz", tmp_path / "bad.npz", header=header))


# ------------------------------------------------------------------ hostile specs
def spec_file(tmp_path, model_spec, name="hostile.npz", **arrays):
    header = {"format": "tinytorch-model", "version": 1, "model": model_spec, "metadata": {}}
    path = tmp_path / name
    np.savez_compressed(path, __spec__=np.array(json.dumps(header)), **arrays)
    return path


LINEAR = {"type": "Linear", "module": "tinytorch.core.layers", "config": {"in_features": 2, "out_features": 2}}


def nested(depth):
    spec = {"type": "ReLU", "module": "tinytorch.core.layers", "config": {}}
    for _ in range(depth):
        spec = {"type": "Sequential", "module": "tinytorch.core.layers", "layers": [spec]}
    return spec


@pytest.mark.parametrize("model_spec", [
    {"type": "system", "module": "os", "config": {"command": "echo hacked"}},
    dict(LINEAR, module="builtins"),  # a real layer name from a module that is not tinytorch
    dict(LINEAR, module="numpy"),
    dict(LINEAR, module="tinytorch_evil.layers"),
    dict(LINEAR, module="tinytorch.core.conv"),  # tinytorch, but not where Linear is defined
    dict(LINEAR, module="tinytorch.no_such_module"),
    dict(LINEAR, type="NoSuchLayer"),
    dict(LINEAR, type="Module", module="tinytorch.core.module"),
    dict(LINEAR, module="tinytorch.core.__init__"),
    dict(LINEAR, type=["Linear"]),
    dict(LINEAR, config=[2, 2]),
    dict(LINEAR, config={"in_features": {"nested": 2}, "out_features": 2}),
    dict(LINEAR, config={"in_features": 2, "out_features": 2, "not an identifier": 1}),
    dict(LINEAR, config={"in_features": "two", "out_features": 2}),
    dict(LINEAR, config={"in_features": -3, "out_features": 2}),
    dict(LINEAR, config={"in_features": 2}),
    dict(LINEAR, extra_key=1),
    dict(LINEAR, layers=[]),
    {"type": "Dropout", "module": "tinytorch.core.layers", "config": {"p": 2.0}},
    {"type": "Sequential", "module": "tinytorch.core.layers", "layers": "ReLU"},
    {"type": "Sequential", "module": "tinytorch.core.layers", "layers": [LINEAR, 5]},
    {"type": "Sequential", "module": "tinytorch.core.layers", "config": {}},
    {"type": "TransformerBlock", "module": "tinytorch.core.attention", "config": {"dim": 8, "num_heads": 2},
     "children": ["norm1"]},
    nested(100),
], ids=["os-system", "builtins", "numpy", "prefix-lookalike", "wrong-home", "no-module", "unregistered",
        "base-class", "dunder-module", "type-not-str", "config-list", "config-dict-value", "config-key",
        "config-type", "config-negative", "config-missing", "unknown-key", "layers-on-linear", "dropout-p",
        "layers-str", "layers-item", "sequential-config", "children-list", "nested-100"])
def test_hostile_or_malformed_specs_raise_value_error_naming_the_file(tmp_path, model_spec):
    path = spec_file(tmp_path, model_spec, **{"weight": np.zeros((2, 2), np.float32), "bias": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="hostile.npz"):
        load_model(path)


def test_deeply_nested_spec_raises_value_error_not_recursion_error(tmp_path):
    # 5000 levels: json.loads itself overflows the stack (RecursionError escaped before)
    depth = 5000
    layer = '{"type": "Sequential", "module": "tinytorch.core.layers", "layers": ['
    model = layer * depth + json.dumps(nested(0)) + "]}" * depth
    text = '{"format": "tinytorch-model", "version": 1, "metadata": {}, "model": ' + model + "}"
    path = tmp_path / "hostile.npz"
    np.savez_compressed(path, __spec__=np.array(text))
    with pytest.raises(ValueError, match="hostile.npz"):
        load_model(path)


def test_build_module_limits_depth_and_validates_max_elements():
    assert type(build_module(nested(60))) is Sequential
    with pytest.raises(ValueError, match="deeper than 64"):
        build_module(nested(65))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_elements"):
            build_module(LINEAR, max_elements=bad)
    assert build_module(LINEAR, max_elements=6).weight.shape == (2, 2)
    with pytest.raises(ValueError, match="allocation budget"):
        build_module(LINEAR, max_elements=5)


def test_build_module_budget_counts_constructor_children_it_replaces():
    model = edited_transformer()
    spec = json.loads(json.dumps(module_spec(model)))
    n_params = sum(p.size for p in model.parameters())
    rebuilt = build_module(spec, max_elements=2 * n_params)
    assert [type(m) for m in rebuilt.modules()] == [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match="allocation budget"):
        build_module(spec, max_elements=n_params)  # the replaced Linears were allocated first


def test_small_file_declaring_a_huge_layer_is_refused_without_allocating_it(tmp_path):
    path = spec_file(tmp_path, {"type": "Linear", "module": "tinytorch.core.layers",
                                "config": {"in_features": 8000, "out_features": 8000}})
    assert path.stat().st_size < 500
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="hostile.npz.*allocation budget"):
            load_model(path)  # Linear(8000, 8000) would allocate 256 MB (float32) plus temporaries
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_non_float_weights_are_refused(tmp_path):
    path = spec_file(tmp_path, LINEAR, weight=np.array([["1.5", "2"], ["3", "4"]]), bias=np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="hostile.npz.*float"):
        load_model(path)


# ------------------------------------------------------------------ hostile archives
def hostile_archive(tmp_path, members, deflate=False):
    path = tmp_path / "hostile.npz"
    path.write_bytes(zip_bytes(members, deflate=deflate))
    return path


def spec_member(model_spec=LINEAR):
    header = {"format": "tinytorch-model", "version": 1, "model": model_spec, "metadata": {}}
    buffer = io.BytesIO()
    np.save(buffer, np.array(json.dumps(header)))
    return ("__spec__.npy", buffer.getvalue(), None)


def assert_refused_with_little_memory(path, limit=8 << 20):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=path.name):
            load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit


def test_npy_header_declaring_a_trillion_floats_is_refused(tmp_path):
    weight = npy_bytes((10**12,), "<f4", data=b"\0" * 16)
    path = hostile_archive(tmp_path, [spec_member(), ("weight.npy", weight, None), ("bias.npy", npy_bytes((2,), data=b"\0" * 8), None)])
    assert_refused_with_little_memory(path)


@pytest.mark.parametrize("declared", [2**33, 2**40 + 7])
def test_zip_directory_declaring_a_huge_member_is_refused(tmp_path, declared):
    # the header and the declared size agree (4 bytes per float): only the expansion bound can say no
    weight = npy_bytes(((declared - 128) // 4,), data=b"\0" * 64)
    path = hostile_archive(tmp_path, [spec_member(), ("weight.npy", weight, declared)], deflate=True)
    assert_refused_with_little_memory(path)


def test_real_zip_bomb_is_refused_before_decompressing(tmp_path):
    # 96 MiB of zeros deflate to ~100 kB: more than 64 x the file size and the 64 MiB floor
    n = 24 << 20
    header = npy_bytes((n,))
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__spec__.npy", spec_member()[1])
        with archive.open("weight.npy", "w", force_zip64=True) as member:
            member.write(header)
            zeros = bytes(1 << 20)
            for _ in range(n * 4 >> 20):
                member.write(zeros)
    assert path.stat().st_size < 200_000
    assert_refused_with_little_memory(path)


def test_pickled_object_arrays_are_refused_and_never_unpickled(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    path = hostile_archive(tmp_path, [spec_member(), ("weight.npy", buffer.getvalue(), None)])
    with pytest.raises(ValueError, match="hostile.npz.*object"):
        load_model(path)


def test_a_class_re_exported_by_a_tinytorch_package_loads(tmp_path):
    # Files name the module a class was defined in when saved; if the class later moves into a
    # submodule, the package that re-exports it keeps those files loadable.
    model = Sequential(Linear(2, 3), Tanh())
    spec = module_spec(model)
    spec["layers"][0]["module"] = "tinytorch.core"  # re-exports tinytorch.core.layers.Linear
    path = spec_file(tmp_path, spec, **{"0.weight": model[0].weight.data, "0.bias": model[0].bias.data})
    x = Tensor(np.ones((1, 2)))
    np.testing.assert_array_equal(outputs(load_model(path), x), outputs(model, x))
    spec["layers"][0]["module"] = "tinytorch.core.conv"  # does not export Linear
    with pytest.raises(ValueError, match="unknown layer type 'Linear'"):
        load_model(spec_file(tmp_path, spec, "other.npz"))
    spec["layers"][0].update(type="Tensor", module="tinytorch.core")  # exported, but not a Module
    with pytest.raises(ValueError, match="unknown layer type 'Tensor'"):
        load_model(spec_file(tmp_path, spec, "tensor.npz"))


# ------------------------------------------------------------------ layers used twice
def test_a_layer_used_twice_is_saved_once_and_shared_again(tmp_path):
    """Sequential(lin, Tanh(), lin): one set of weights in the file, one layer after loading
    (a file written before shared layers were recorded could not be loaded back)."""
    manual_seed(4)
    lin = Linear(4, 4)
    model = Sequential(lin, Tanh(), lin)
    save_model(model, tmp_path / "tied.npz")
    with np.load(tmp_path / "tied.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["0.bias", "0.weight", "__spec__"]
        assert json.loads(str(archive["__spec__"]))["model"]["layers"][2] == {"same_as": "0"}
    loaded = load_model(tmp_path / "tied.npz")
    assert loaded[0] is loaded[2] and loaded[0] is not loaded[1]
    x = Tensor(np.random.default_rng(2).standard_normal((3, 4)))
    np.testing.assert_array_equal(outputs(loaded, x), outputs(model, x))


def test_a_shared_block_inside_a_container_and_a_nested_sequential(tmp_path):
    manual_seed(5)
    block = TransformerBlock(8, 2, mlp_ratio=2)
    shared_mlp = block.mlp
    model = Sequential(block, Sequential(shared_mlp, LayerNorm(8)), shared_mlp)
    save_model(model, tmp_path / "shared.npz")
    loaded = load_model(tmp_path / "shared.npz")
    assert loaded[1][0] is loaded[0].mlp and loaded[2] is loaded[0].mlp
    x = Tensor(np.random.default_rng(3).standard_normal((2, 4, 8)))
    np.testing.assert_array_equal(outputs(loaded, x), outputs(model, x))


def test_named_modules_and_parameters_list_every_name_on_request():
    lin = Linear(2, 2)
    model = Sequential(lin, ReLU(), lin)
    assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
    assert [n for n, _ in model.named_modules(remove_duplicate=False)] == ["", "0", "1", "2"]
    assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == \
        ["0.weight", "0.bias", "2.weight", "2.bias"]
    model.append(model)  # a module that contains itself
    with pytest.raises(ValueError, match="contains itself"):
        list(model.named_modules(remove_duplicate=False))


def test_weights_tied_between_two_layers_or_a_cycle_are_refused_before_writing(tmp_path):
    path = tmp_path / "m.npz"
    save_model(MLP(hidden=(4,)), path)
    before = path.read_bytes()
    first, second = Linear(4, 4), Linear(4, 4)
    second.weight = first.weight  # the same Parameter in two different layers
    cyclic = Sequential(Linear(4, 4))
    cyclic.append(cyclic)
    for model, words in ((Sequential(first, Tanh(), second), "'2.weight' is the same Parameter as '0.weight'"),
                         (cyclic, "contains itself")):
        with pytest.raises(ValueError, match=words):
            save_model(model, path)
        assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.npz"]


@pytest.mark.parametrize("layers", [
    [{"same_as": "1"}, LINEAR],                 # names a layer built after it
    [LINEAR, {"same_as": "5"}],                 # names no layer
    [LINEAR, {"same_as": 0}],                   # not a dotted name
    [LINEAR, {"same_as": "0", "type": "Linear"}],  # not alone
    [{"same_as": ""}],                          # the model that contains it: a cycle
], ids=["forward", "unknown", "not-str", "extra-key", "cycle"])
def test_malformed_same_as_raises_value_error_naming_the_file(tmp_path, layers):
    path = spec_file(tmp_path, {"type": "Sequential", "module": "tinytorch.core.layers", "layers": layers},
                     **{"0.weight": np.zeros((2, 2), np.float32), "0.bias": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="hostile.npz.*same_as"):
        load_model(path)
