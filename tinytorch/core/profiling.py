"""Counting, timing and reporting: parameters, multiply-accumulates per layer, median wall time,
and aligned text tables of the results."""
from __future__ import annotations

import time

import numpy as np

from .conv import Conv2d
from .layers import Linear
from .tensor import Tensor, no_grad


def count_parameters(model) -> int:
    return sum(p.size for p in model.parameters())


def layer_macs(model, input_shape: tuple) -> dict[str, int]:
    """Multiply-accumulates of every Linear and Conv2d for one input of `input_shape`
    (without the batch axis), found by running a forward pass with hooks.

    Linear: in_features * out_features per output row; Conv2d: out elements * in * kh * kw.
    """
    macs, handles = {}, []

    def hook_for(name):
        def hook(module, inputs, output):
            rows = output.size // output.shape[-1] if isinstance(module, Linear) else 0
            if isinstance(module, Linear):
                macs[name] = rows * module.in_features * module.out_features
            else:
                kh, kw = module.kernel_size
                macs[name] = output.size * module.in_channels * kh * kw
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (Linear, Conv2d)):
            handles.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(Tensor(np.zeros((1, *input_shape), dtype=np.float32)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return macs


def median_time(fn, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def best_median_times(fns: dict, rounds: int = 3, repeats: int = 7) -> dict:
    """{name: seconds}: the fastest of `rounds` medians (`median_time`) of `repeats` calls of
    each function of `fns` ({name: callable without arguments}), the functions interleaved
    round by round so that a slow phase of the machine hits all of them alike. Load from other
    programs can only add time, hence the minimum."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], median_time(fn, repeats=repeats))
    return best


def format_table(rows: list, columns: list | None = None) -> str:
    """Rows of dicts as an aligned text table, a header rule under the column names.

    `columns` picks and orders the keys (default: the first row's). Floats in [0, 1] under a
    name containing 'sparsity' or 'accuracy' print as percentages; other floats with the same
    number of decimals down a column, enough for 4 significant digits of its smallest nonzero
    value (at most 8); ints with thousands separators.
    """
    if not rows:
        return "(empty)"
    columns = columns or list(rows[0])

    def decimals(key):
        sizes = [abs(r[key]) for r in rows if isinstance(r.get(key), float) and np.isfinite(r[key])
                 and r[key] != 0]
        return min(8, max(0, 3 - int(np.floor(np.log10(min(sizes)))))) if sizes else None

    places = {key: decimals(key) for key in columns}

    def cell(key, value):
        if isinstance(value, float) and ("sparsity" in key or "accuracy" in key):
            return f"{value:.2%}"
        if isinstance(value, float):
            return f"{value:.{places[key]}f}" if places[key] is not None and np.isfinite(value) \
                else f"{value:.4g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    text = [[str(c) for c in columns]] + [[cell(c, r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in text) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
