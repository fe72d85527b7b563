"""Counting and timing: parameters, multiply-accumulates per layer, median wall time."""
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
