"""save_model / load_model: weights in an .npz, architecture as a JSON spec inside it.

The file holds one array per parameter (keyed by its dotted name) and a `__spec__` string
describing the module tree, so `load_model(path)` rebuilds the model with no other code.

A model file is untrusted input, so reading it never runs code and never allocates more than
the file justifies:
- nothing is unpickled (object arrays are refused);
- the zip directory and every `.npy` header are checked before anything is decompressed:
  the members may declare at most max(EXPANSION_FACTOR * file size, MIN_EXPANDED_BYTES)
  uncompressed bytes in total (a zip bomb or a header declaring 10**12 floats is refused);
- the spec may only name Module classes defined in (or re-exported by) `tinytorch` modules,
  and the constructors it calls may allocate at most max(ALLOCATION_FACTOR * elements in the
  file, MIN_ALLOCATION_ELEMENTS) parameter elements (a 400-byte file declaring
  Linear(8000, 8000) is refused before the 256 MB weight exists).
Every malformed file raises ValueError naming the file; a missing one FileNotFoundError.

`write_npz_atomic` and `read_npz` are the file layer, shared with the compression package.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import re
import reprlib
import sys
import zipfile

import numpy as np

from . import init
from .layers import Sequential
from .module import Module, has_extra_state, registered_class

FORMAT = "tinytorch-model"
VERSION = 1

# ------------------------------------------------------------------ limits for reading files
MAX_MEMBERS = 10_000            # arrays in one archive (a model has tens to hundreds)
EXPANSION_FACTOR = 64           # declared uncompressed bytes allowed per byte of file ...
MIN_EXPANDED_BYTES = 64 << 20   # ... but at least 64 MiB, for small files of very compressible
                                # (e.g. all-zero) weights; deflate itself can reach ~1000x
MAX_SPEC_CHARS = 1 << 20        # the JSON architecture spec (a real one is a few kB)
MAX_SPEC_DEPTH = 64             # nesting of layer specs (no RecursionError on hostile input)
ALLOCATION_FACTOR = 4           # load_model lets constructors allocate 4x the file's elements
MIN_ALLOCATION_ELEMENTS = 1 << 20  # (the constructors' discarded initial children fit in 4x)
_HEADER_PREFIX = 1 << 16        # bytes read to parse a .npy header (numpy caps it at 10 kB)
_CHUNK = 1 << 20                # bytes decompressed at a time
_ARRAY_KINDS = "biufcUS"        # bool, ints, floats, complex, str: never objects or records
_MODULE_NAME = re.compile(r"tinytorch(\.[A-Za-z][A-Za-z0-9_]*)+\Z")
_SPEC_KEYS = {"type", "module", "config", "layers", "children"}
_SAME_AS = "same_as"            # {"same_as": "0"}: the layer already built at dotted name "0"


class _Malformed(ValueError):
    """A check of read_npz failed (its message needs no exception type in front)."""


# ------------------------------------------------------------------ architecture spec
def module_spec(module: Module) -> dict:
    """JSON-able description of `module`'s class and tree.

    {"type", "module", "layers": [spec, ...]} for a Sequential (its layer list is the truth);
    otherwise {"type", "module", "config": module.config()} plus, if it has children,
    "children": {name: spec} in child order, so replaced children (e.g. a Linear inside a
    TransformerBlock swapped for a different layer) are rebuilt as they are. A layer used a
    second time (e.g. Sequential(lin, Tanh(), lin)) is {"same_as": dotted name of its first
    use}, so the rebuilt model shares it too. ValueError for a module that contains itself.
    """
    return _spec(module, "", {}, ())


def _spec(module: Module, path: str, first_use: dict, ancestors: tuple) -> dict:
    if id(module) in ancestors:
        raise ValueError(f"model: layer {path!r} contains itself: a module tree cannot have a cycle")
    if id(module) in first_use:
        return {_SAME_AS: first_use[id(module)]}
    first_use[id(module)] = path
    ancestors = (*ancestors, id(module))
    cls = type(module)
    spec = {"type": cls.__name__, "module": cls.__module__}
    if isinstance(module, Sequential):
        spec["layers"] = [_spec(layer, _dotted(path, str(i)), first_use, ancestors)
                          for i, layer in enumerate(module)]
    else:
        spec["config"] = module.config()
        children = list(module.named_children())
        if children:
            spec["children"] = {name: _spec(child, _dotted(path, name), first_use, ancestors)
                                for name, child in children}
    return spec


def _dotted(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def build_module(spec: dict, max_elements: int | None = None) -> Module:
    """Rebuild an untrained module tree from `module_spec` output (e.g. parsed from a file).

    Only Module subclasses defined in `tinytorch` modules can be named. With `max_elements`,
    the constructors may allocate at most that many parameter elements in total (through
    `tinytorch.core.init`); more raises ValueError before the allocation. Any malformed spec
    raises ValueError saying where in the spec the problem is.
    """
    if max_elements is None:
        return _build_checked(spec)
    if isinstance(max_elements, bool) or not isinstance(max_elements, (int, np.integer)) or max_elements < 0:
        raise ValueError(f"max_elements must be None or a non-negative int, got {max_elements!r}")
    with init.allocation_budget(int(max_elements)):
        return _build_checked(spec)


def _build_checked(spec) -> Module:
    try:
        return _build(spec, "model", 0, "", {})
    except RecursionError:  # belt and braces: _build limits the depth itself
        raise ValueError(f"the spec nests too deeply (limit {MAX_SPEC_DEPTH} levels)") from None


def _build(spec, where: str, depth: int, path: str, built: dict) -> Module:
    """Build the layer described by `spec` at dotted name `path`; `where` names its place for
    error messages; `built` maps the dotted names of the layers built so far to them."""
    if depth > MAX_SPEC_DEPTH:  # `where` would be MAX_SPEC_DEPTH steps long: not worth printing
        raise ValueError(f"layer specs nest deeper than {MAX_SPEC_DEPTH} levels")
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a layer spec must be a dict, got {type(spec).__name__}")
    if _SAME_AS in spec:
        target = spec[_SAME_AS]
        if len(spec) != 1 or not isinstance(target, str) or target not in built:
            raise ValueError(f"{where}: a {{'same_as': name}} spec must name, alone, a layer built "
                             f"before it, got {reprlib.repr(spec)}")
        return built[target]
    module = _build_new(spec, where, depth, path, built)
    built.setdefault(path, module)  # its children registered themselves while being built
    return module


def _build_new(spec: dict, where: str, depth: int, path: str, built: dict) -> Module:
    unknown = sorted(str(key) for key in set(spec) - _SPEC_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown spec keys {unknown}; allowed are {sorted(_SPEC_KEYS)}")
    cls = _resolve(spec, where)
    if issubclass(cls, Sequential):
        layers = spec.get("layers")
        if not isinstance(layers, list) or "config" in spec or "children" in spec:
            raise ValueError(f"{where}: a {cls.__name__} spec needs a 'layers' list and no 'config' or 'children'")
        return cls.from_layers([_build(s, f"{where}[{i}]", depth + 1, _dotted(path, str(i)), built)
                                for i, s in enumerate(layers)])
    if "layers" in spec:
        raise ValueError(f"{where}: {cls.__name__} is not a Sequential, so its spec cannot have 'layers'")
    config = _checked_config(spec.get("config", {}), where)
    try:
        module = cls(**config)
    except MemoryError:
        raise
    except Exception as err:  # any constructor failure on file-supplied arguments is bad input
        raise ValueError(f"{where}: {cls.__name__}(**{reprlib.repr(config)}) cannot be built: {err}") from err
    if "children" in spec:
        _rebuild_children(module, spec["children"], where, depth, path, built)
    return module


def _resolve(spec: dict, where: str) -> type:
    """The registered class that `spec` names: a Module subclass defined in the tinytorch module
    spec["module"], or one that module re-exports under spec["type"] (see _reexported)."""
    name, home = spec.get("type"), spec.get("module")
    if not isinstance(name, str) or not isinstance(home, str):
        raise ValueError(f"{where}: 'type' and 'module' must be strings, got {name!r} and {home!r}")
    if not _MODULE_NAME.match(home):
        raise ValueError(f"{where}: unknown layer type {name!r} from module {home!r}: only classes "
                         "defined in tinytorch modules can be loaded")
    cls = registered_class(home, name)
    if cls is None and home not in sys.modules:
        try:
            importlib.import_module(home)  # e.g. the compression module that defines SparseLinear
        except MemoryError:
            raise
        except Exception as err:
            raise ValueError(f"{where}: unknown layer type {name!r}: cannot import {home!r} ({err})") from None
        cls = registered_class(home, name)
    if cls is None:
        cls = _reexported(home, name)
    if cls is None:
        raise ValueError(f"{where}: unknown layer type {name!r}: {home!r} defines no Module of that name")
    return cls


def _reexported(home: str, name: str) -> type | None:
    """The registered tinytorch Module class that module `home` exports as `name`, if any.

    A package that re-exports a class moved into one of its submodules (e.g. SparseLinear from
    tinytorch.optimization.compression.sparse) keeps files that name the old home loadable; the
    class must still be a registered Module defined in a tinytorch module under that name.
    """
    exported = getattr(sys.modules.get(home), name, None)
    if not isinstance(exported, type) or exported.__name__ != name or not _MODULE_NAME.match(exported.__module__):
        return None
    return exported if registered_class(exported.__module__, name) is exported else None


def _checked_config(config, where: str) -> dict:
    """`config` if it is a dict of identifier keys to JSON scalars or (nested) lists of them."""
    if not isinstance(config, dict):
        raise ValueError(f"{where}: 'config' must be a dict, got {type(config).__name__}")
    for key, value in config.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{where}: config key {key!r} is not a keyword argument name")
        if not _is_json_value(value, 0):
            raise ValueError(f"{where}: config[{key!r}] must be a JSON number, string, bool, null "
                             f"or a list of them, got {type(value).__name__}")
    return config


def _is_json_value(value, depth: int) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, list) and depth < 4 and all(_is_json_value(v, depth + 1) for v in value)


def _rebuild_children(module: Module, children, where: str, depth: int, path: str,
                      built: dict) -> None:
    """Replace each child of the freshly built `module` whose recorded spec differs from what
    the constructor built (position kept); the child names must be the constructor's."""
    if not isinstance(children, dict):
        raise ValueError(f"{where}: 'children' must be a dict, got {type(children).__name__}")
    constructed = dict(module.named_children())
    if set(children) != set(constructed):
        raise ValueError(f"{where}: the spec lists children {sorted(map(str, children))}, but "
                         f"{type(module).__name__} has {sorted(constructed)}")
    for name, child_spec in children.items():
        child_path = _dotted(path, name)
        if _canonical_spec(constructed[name]) != child_spec:
            setattr(module, name, _build(child_spec, f"{where}.{name}", depth + 1, child_path, built))
        else:  # the constructor's own child, kept: later layers may name it or its descendants
            for layer_name, layer in constructed[name].named_modules(child_path):
                built.setdefault(layer_name, layer)


def _canonical_spec(module: Module):
    """module_spec as it reads back from JSON (tuples become lists), or None if not JSON-able."""
    try:
        return json.loads(json.dumps(module_spec(module)))
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------ npz files
def write_npz_atomic(path, arrays: dict, compress: bool = True) -> int:
    """Write {name: array} to the .npz file `path` atomically; returns the file size in bytes.

    The archive is written to a unique temporary file in the same directory, flushed to disk
    and then renamed over `path`, so a reader sees either the old or the new complete file.
    On any failure (an array that cannot be converted, a full disk, KeyboardInterrupt, a failed
    rename) the temporary file is removed and the error re-raised: an existing file at `path`
    is left byte-identical. Object arrays are refused (ValueError): nothing is pickled.
    """
    path = os.fspath(path)
    if not isinstance(arrays, dict) or not all(isinstance(k, str) and k for k in arrays):
        raise ValueError("arrays must be a dict mapping non-empty str names to arrays")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            _write_zip(f, arrays, compress)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return size


def _create_temp(directory: str, base: str) -> tuple[int, str]:
    """(fd, path) of a new, uniquely named file in `directory`. Like tempfile.mkstemp (O_EXCL,
    random name), but created with mode 0o666 minus the umask, as an ordinary file would be,
    rather than mkstemp's 0o600: the file becomes the saved model."""
    while True:
        tmp = os.path.join(directory, f".{base}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def _write_zip(f, arrays: dict, compress: bool) -> None:
    """The .npz layout np.savez writes: one `name.npy` member per array."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as archive:
        for name, value in arrays.items():
            array = np.asanyarray(value)
            if array.dtype.hasobject:
                raise ValueError(f"arrays[{name!r}] has dtype {array.dtype}: object arrays are not saved "
                                 "(they would need pickle)")
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_npz(path, what: str = "model file") -> dict[str, np.ndarray]:
    """{name: array} of the .npz file `path`, read without pickle and without trusting it.

    Raises FileNotFoundError if there is no file, and ValueError naming `path` (and `what` it
    should be) for anything else wrong: not a zip, damaged, encrypted, members that are not
    `.npy` arrays, duplicate names, more than MAX_MEMBERS members, object or record dtypes,
    headers that disagree with the member sizes, or more than
    max(EXPANSION_FACTOR * file size, MIN_EXPANDED_BYTES) uncompressed bytes declared — the
    last checks happen before anything is decompressed.
    """
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"no {what} at {path}") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read this {what} ({err})") from None
    with f:  # one open file: a concurrent os.replace of `path` cannot mix two versions
        try:
            return _read_archive(f, os.fstat(f.fileno()).st_size)
        except MemoryError:
            raise
        except Exception as err:  # zipfile and numpy raise many types on damaged input
            detail = str(err) if isinstance(err, _Malformed) else f"{type(err).__name__}: {err}"
            raise ValueError(f"{path}: not a valid {what} ({detail})") from None


def _read_archive(f, file_size: int) -> dict:
    limit = max(EXPANSION_FACTOR * file_size, MIN_EXPANDED_BYTES)
    with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _Malformed(f"{len(infos)} members, more than the {MAX_MEMBERS} allowed")
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise _Malformed("duplicate member names")
        for info in infos:
            _check_member_entry(info)
        declared = sum(info.file_size for info in infos)
        if declared > limit:
            raise _Malformed(f"the members declare {declared} uncompressed bytes, more than the {limit} "
                             f"allowed for a {file_size}-byte file")
        return {info.filename[:-len(".npy")]: _read_member(archive, info) for info in infos}


def _check_member_entry(info: zipfile.ZipInfo) -> None:
    """What the zip directory says about one member, checked before decompressing it."""
    if not info.filename.endswith(".npy") or info.filename == ".npy":
        raise _Malformed(f"member {info.filename!r} is not a .npy array")
    if info.flag_bits & 0x1:
        raise _Malformed(f"member {info.filename!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Malformed(f"member {info.filename!r} uses unsupported compression method {info.compress_type}")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise _Malformed(f"stored member {info.filename!r} declares {info.file_size} bytes but holds "
                         f"{info.compress_size}")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy member: its header is parsed and checked against the member's declared size
    before the array is allocated; the data is then decompressed in bounded chunks."""
    with archive.open(info) as member:
        prefix = member.read(min(info.file_size, _HEADER_PREFIX))
        stream = io.BytesIO(prefix)
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise _Malformed(f"member {info.filename!r}: unsupported .npy version {version}")
        if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None \
                or dtype.kind not in _ARRAY_KINDS or dtype.itemsize == 0:
            raise _Malformed(f"member {info.filename!r}: dtype {dtype} is not allowed (plain numbers "
                             "and strings only; object arrays would need pickle)")
        if any(d < 0 for d in shape):
            raise _Malformed(f"member {info.filename!r}: negative size in shape {shape}")
        count = 1
        for d in shape:
            count *= d
        header_size = stream.tell()
        data_size = info.file_size - header_size
        if count * dtype.itemsize != data_size:
            raise _Malformed(f"member {info.filename!r}: the header declares {shape} of {dtype} "
                             f"({count * dtype.itemsize} bytes) but the member holds {data_size} bytes of data")
        flat = np.empty(count, dtype=dtype)
        raw = flat.view(np.uint8)
        first = prefix[header_size:]
        raw[:len(first)] = np.frombuffer(first, dtype=np.uint8)
        filled = len(first)
        while filled < data_size:
            chunk = member.read(min(data_size - filled, _CHUNK))
            if not chunk:
                raise _Malformed(f"member {info.filename!r} ends early")
            raw[filled:filled + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            filled += len(chunk)
        if member.read(1):  # reaching the end also makes zipfile verify the CRC-32
            raise _Malformed(f"member {info.filename!r} holds more data than declared")
    return flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)


# ------------------------------------------------------------------ model files
def save_model(model: Module, path, metadata: dict | None = None) -> None:
    """Write parameters and architecture to `path` (.npz, compressed), atomically.

    `metadata` (a JSON-serializable dict) is stored alongside and read by `read_metadata`.
    Refuses (ValueError, nothing written) models that load_model could not rebuild: layers
    that keep state outside Parameters (they override get_extra_state, e.g. the sparse layers
    of the compression package, which `save_compressed` stores) and classes defined outside
    tinytorch modules.
    """
    if not isinstance(model, Module):
        raise ValueError(f"model must be a Module, got {type(model).__name__}")
    _check_saveable(model)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"metadata must be JSON-serializable (numbers, strings, bools, None, lists "
                         f"and dicts): {err}") from None
    header = {"format": FORMAT, "version": VERSION, "model": module_spec(model), "metadata": metadata}
    try:
        text = json.dumps(header)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model: every layer's config() must be JSON-serializable: {err}") from None
    arrays = dict(model.state_dict())
    arrays["__spec__"] = np.array(text)
    write_npz_atomic(path, arrays, compress=True)


def check_rebuildable(model: Module) -> None:
    """ValueError unless `build_module` can rebuild every layer of `model` from its spec: each
    must be a registered Module class defined in a tinytorch module, and a Parameter may be
    shared only by sharing its layer (a spec records shared layers, not a weight tied between
    two different layers). Savers call it before writing, so no file is written that could
    never be loaded again."""
    for name, module in model.named_modules():
        cls = type(module)
        if not _MODULE_NAME.match(cls.__module__) or registered_class(cls.__module__, cls.__name__) is not cls:
            where = f"layer {name!r}" if name else "the model itself"
            raise ValueError(f"model: {where} is a {cls.__name__} defined in {cls.__module__!r}; a file "
                             "can only name Module classes defined in tinytorch modules")
    owners = dict(model.named_modules(remove_duplicate=False))
    first_use = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owner, _, attribute = name.rpartition(".")
        first_name, first_owner, first_attribute = first_use.setdefault(
            id(param), (name, owners[owner], attribute))
        if owners[owner] is not first_owner or attribute != first_attribute:
            raise ValueError(f"model: parameter {name!r} is the same Parameter as {first_name!r} of "
                             "another layer; a file keeps layers used twice, not weights tied "
                             "between two layers")


def _check_saveable(model: Module) -> None:
    for name, module in model.named_modules():
        if has_extra_state(module):
            where = f"layer {name!r}" if name else "the model itself"
            raise ValueError(f"model: {where} ({type(module).__name__}) keeps state outside its Parameters "
                             "(it overrides get_extra_state), but save_model stores Parameters only; save "
                             "such models with tinytorch.optimization.compression.save_compressed")
    check_rebuildable(model)


def _read(path) -> tuple[dict, dict]:
    """(header, {parameter name: array}) of a save_model file, or ValueError naming it."""
    path = os.fspath(path)
    arrays = read_npz(path, "model file")
    spec = arrays.pop("__spec__", None)
    if spec is None:
        raise ValueError(f"{path}: not a tinytorch model file (no __spec__ entry)")
    if spec.dtype.kind != "U" or spec.ndim != 0 or spec.dtype.itemsize // 4 > MAX_SPEC_CHARS:
        raise ValueError(f"{path}: the __spec__ entry must be a JSON string of at most {MAX_SPEC_CHARS} "
                         f"characters, got {spec.dtype} of shape {spec.shape}")
    try:
        header = json.loads(str(spec))
    except (ValueError, RecursionError) as err:
        raise ValueError(f"{path}: the __spec__ entry is not valid JSON ({err})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("model"), dict):
        raise ValueError(f"{path}: not a tinytorch model file (bad __spec__ header)")
    if header.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported model file version {header.get('version')!r}")
    if not isinstance(header.setdefault("metadata", {}), dict):
        raise ValueError(f"{path}: the metadata in __spec__ must be a dict")
    return header, arrays


def load_model(path) -> Module:
    """Rebuild the model saved at `path`, in eval mode.

    Raises FileNotFoundError if there is no file and ValueError naming the file if it is
    corrupt, truncated, hostile or does not match its architecture. The constructors may
    allocate at most max(ALLOCATION_FACTOR * elements stored, MIN_ALLOCATION_ELEMENTS)
    parameter elements: a model needs 1x, plus the children it replaces.
    """
    header, arrays = _read(path)
    path = os.fspath(path)
    not_float = sorted(name for name, value in arrays.items() if value.dtype.kind != "f")
    if not_float:
        raise ValueError(f"{path}: weights must be float arrays, {not_float[:5]} are not")
    budget = max(ALLOCATION_FACTOR * sum(value.size for value in arrays.values()), MIN_ALLOCATION_ELEMENTS)
    try:
        model = build_module(header["model"], max_elements=budget)
    except ValueError as err:
        raise ValueError(f"{path}: the architecture spec cannot be built: {err}") from None
    extra = [name or type(model).__name__ for name, module in model.named_modules() if has_extra_state(module)]
    if extra:
        raise ValueError(f"{path}: layers {extra} keep state outside Parameters, which a save_model file "
                         "cannot hold; load such files with tinytorch.optimization.compression.load_compressed")
    try:
        model.load_state_dict(arrays, strict=True)
    except ValueError as err:
        raise ValueError(f"{path}: weights do not match the architecture: {err}") from None
    return model.eval()


def read_metadata(path) -> dict:
    """The `metadata` dict stored by save_model (e.g. the recorded test accuracy)."""
    return _read(path)[0]["metadata"]
