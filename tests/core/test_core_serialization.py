"""save_model / load_model / read_metadata: round trips and every way a file can be bad."""
import json
import os

import numpy as np
import pytest

from tinytorch.core import (Conv2d, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, ReLU, Sequential, Tanh, Tensor,
                            load_model, manual_seed, read_metadata, save_model)
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
