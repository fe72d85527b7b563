"""save_model / load_model: weights in an .npz, architecture as a JSON spec inside it.

The file holds one array per parameter (keyed by its dotted name) and a `__spec__` string
describing the module tree, so `load_model(path)` rebuilds the model with no other code.
Everything is read with allow_pickle=False: a model file can never run code.
"""
from __future__ import annotations

import importlib
import json
import os
import zipfile
import zlib

import numpy as np

from .layers import Sequential
from .module import Module

FORMAT = "tinytorch-model"
VERSION = 1


def module_spec(module: Module) -> dict:
    """JSON-able description: {"type", "module", "config"} or {"type", "module", "layers"}."""
    cls = type(module)
    spec = {"type": cls.__name__, "module": cls.__module__}
    if isinstance(module, Sequential):
        spec["layers"] = [module_spec(layer) for layer in module]
    else:
        spec["config"] = module.config()
    return spec


def _resolve(spec: dict) -> type:
    name, home = spec.get("type"), spec.get("module", "")
    if name not in Module.registry and home.startswith("tinytorch."):
        importlib.import_module(home)  # e.g. the compression module that defines SparseLinear
    cls = Module.registry.get(name)
    if cls is None:
        raise ValueError(f"unknown layer type {name!r} (defined in {home!r}); import it before loading")
    return cls


def build_module(spec: dict) -> Module:
    """Rebuild an untrained module tree from `module_spec` output."""
    cls = _resolve(spec)
    if issubclass(cls, Sequential):
        return cls.from_layers([build_module(s) for s in spec["layers"]])
    return cls(**spec.get("config", {}))


def save_model(model: Module, path, metadata: dict | None = None) -> None:
    """Write parameters and architecture to `path` (.npz, compressed), atomically."""
    header = {"format": FORMAT, "version": VERSION, "model": module_spec(model),
              "metadata": metadata or {}}
    arrays = {name: value for name, value in model.state_dict().items()}
    arrays["__spec__"] = np.array(json.dumps(header))
    path = os.fspath(path)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _read(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with loaded as archive:
            arrays = {key: archive[key] for key in archive.files}
        if "__spec__" not in arrays:
            raise ValueError("no __spec__ entry")
        header = json.loads(str(arrays.pop("__spec__")))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{path}: not a valid tinytorch model file ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("model"), dict):
        raise ValueError(f"{path}: not a tinytorch model file (bad __spec__ header)")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported model file version {header.get('version')!r}")
    return header, arrays


def load_model(path) -> Module:
    """Rebuild the model saved at `path`, in eval mode. Raises ValueError on a corrupt,
    truncated or mismatched file, FileNotFoundError if there is none."""
    header, arrays = _read(path)
    try:
        model = build_module(header["model"])
    except (TypeError, KeyError, AttributeError, ImportError) as err:
        raise ValueError(f"{os.fspath(path)}: the architecture spec cannot be built ({err!r})") from None
    try:
        model.load_state_dict(arrays, strict=True)
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: weights do not match the architecture: {err}") from None
    return model.eval()


def read_metadata(path) -> dict:
    """The `metadata` dict stored by save_model (e.g. the recorded test accuracy)."""
    return _read(path)[0]["metadata"]
