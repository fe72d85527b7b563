"""Corrupt-file fuzzing of load_model: 2,000 seeded damaged copies of real saved models.

Each copy is bit-flipped, truncated, spliced from two files or partly overwritten. Loading it
must either give a model whose outputs equal, bit for bit, those of a model it came from, or
raise ValueError (naming the file); any other exception fails the test. tracemalloc's peak
during each load must stay below PEAK_FACTOR x the larger of the copy's and its source's size
plus PEAK_CONSTANT: damage can never make load_model allocate what the file does not hold.
"""
import tracemalloc

import numpy as np
import pytest

from tinytorch.core import Linear, Tanh, Tensor, load_model, manual_seed, save_model
from tinytorch.models import MLP, SimpleCNN, TinyTransformer

N_FLIPS, N_TRUNCATIONS, N_SPLICES, N_OVERWRITES = 1000, 300, 450, 250
PEAK_FACTOR, PEAK_CONSTANT = 4, 1 << 20


def edited_transformer():
    model = TinyTransformer(dim=8, depth=1, num_heads=2)
    model[1].attn.proj = Linear(8, 8, bias=False)  # a replaced child: the spec records "children"
    return model


def edited_mlp():
    model = MLP(hidden=(24, 12))
    model[2] = Tanh()
    return model


SOURCES = {"mlp": lambda: MLP(hidden=(16,)), "mlp-wide": lambda: MLP(hidden=(96,)), "mlp-edited": edited_mlp,
           "cnn": lambda: SimpleCNN(channels=(4, 8)), "transformer": edited_transformer}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{name: (file bytes, outputs on a fixed batch)} of freshly saved models."""
    x = Tensor(np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)))
    folder = tmp_path_factory.mktemp("sources")
    saved = {}
    for i, (name, build) in enumerate(SOURCES.items()):
        manual_seed(i)
        model = build().eval()
        path = folder / f"{name}.npz"
        save_model(model, path, metadata={"name": name})
        saved[name] = (path.read_bytes(), model(x).data)
    return saved, x


def damaged_copies(sources, rng):
    """Yield (data, names of the files it came from) for every kind of damage."""
    names = list(sources)
    for _ in range(N_FLIPS):
        name = names[rng.integers(len(names))]
        data = bytearray(sources[name][0])
        n = len(data)
        for _ in range(rng.integers(1, 9)):
            # half anywhere (mostly compressed data), half in the zip structure: the first
            # member's local header or the central directory and end record at the tail
            pos = rng.integers(n) if rng.random() < 0.5 else \
                (rng.integers(min(n, 120)) if rng.random() < 0.3 else n - 1 - rng.integers(min(n, 700)))
            data[pos] ^= 1 << rng.integers(8)
        yield bytes(data), {name}
    for _ in range(N_TRUNCATIONS):
        name = names[rng.integers(len(names))]
        data = sources[name][0]
        yield data[:rng.integers(len(data))], {name}
    for _ in range(N_SPLICES):
        a, b = (names[i] for i in rng.integers(len(names), size=2))
        head, tail = sources[a][0], sources[b][0]
        yield head[:rng.integers(len(head) + 1)] + tail[rng.integers(len(tail) + 1):], {a, b}
    for _ in range(N_OVERWRITES):
        name = names[rng.integers(len(names))]
        data = bytearray(sources[name][0])
        start = rng.integers(len(data))
        length = int(rng.integers(1, 64))
        data[start:start + length] = rng.bytes(length)[:len(data) - start]
        yield bytes(data), {name}


def test_damaged_files_load_identically_or_raise_value_error(sources, tmp_path):
    saved, x = sources
    path = tmp_path / "damaged.npz"
    outcomes = {"loaded": 0, "refused": 0}
    failures = []
    tracemalloc.start()
    try:
        for i, (data, origins) in enumerate(damaged_copies(saved, np.random.default_rng(20240611))):
            path.write_bytes(data)
            bound = PEAK_FACTOR * max([len(data)] + [len(saved[o][0]) for o in origins]) + PEAK_CONSTANT
            tracemalloc.reset_peak()
            try:
                model = load_model(path)
            except ValueError as err:
                outcomes["refused"] += 1
                if "damaged.npz" not in str(err):
                    failures.append((i, f"message does not name the file: {err}"))
            except Exception as err:  # noqa: BLE001 - collecting every other type is the point
                failures.append((i, f"{type(err).__name__}: {err}"))
            else:
                outcomes["loaded"] += 1
                out = model(x).data
                if not any(np.array_equal(out, saved[o][1]) for o in origins):
                    failures.append((i, f"loaded a model whose outputs match none of {origins}"))
            peak = tracemalloc.get_traced_memory()[1]
            if peak > bound:
                failures.append((i, f"peak {peak} bytes > {bound} for a {len(data)}-byte file"))
    finally:
        tracemalloc.stop()
    assert failures == [], failures[:10]
    assert sum(outcomes.values()) == N_FLIPS + N_TRUNCATIONS + N_SPLICES + N_OVERWRITES
    # both paths are exercised: harmless damage (e.g. to a timestamp) loads, the rest is refused
    assert outcomes["loaded"] >= 10 and outcomes["refused"] >= 1000, outcomes
