"""Module 17, precision: symmetric int8 quantization and the bytes it saves.

q = round(w / scale) clipped to [-127, 127], scale = max|w| / 127 per tensor or per channel
(symmetric: zero stays exactly zero, which keeps pruned weights pruned).
"""
from __future__ import annotations

import numpy as np


def int8_scale(w: np.ndarray, axis: int | None = None) -> np.ndarray:
    """max|w| / 127 over the whole tensor (axis=None) or per slice along `axis`
    (e.g. axis=0: one scale per output channel). All-zero slices get scale 1.

    The float32 scale is never below the exact max|w| / 127 (it is rounded up), so
    |w / scale| <= 127 and every value keeps the error bound scale / 2, even when max|w| is
    subnormal and max|w| / 127 would round down, or to 0, in float32.
    """
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        peak = np.abs(w).max(initial=0.0)
    else:
        reduce_axes = tuple(a for a in range(w.ndim) if a != axis % w.ndim)
        peak = np.abs(w).max(axis=reduce_axes, keepdims=True, initial=0.0)
    exact = np.asarray(peak, dtype=np.float64) / 127.0
    scale = exact.astype(np.float32)
    scale = np.where(scale < exact, np.nextafter(scale, np.float32(np.inf)), scale)
    return np.where(peak > 0, scale, 1.0).astype(np.float32)


def quantize_int8(w: np.ndarray, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scale) with w ≈ q * scale; `axis` as in int8_scale."""
    w = np.asarray(w, dtype=np.float32)
    if not np.isfinite(w).all():
        raise ValueError("quantize_int8: w contains NaN or inf")
    scale = int8_scale(w, axis)
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale


def quantization_error(w: np.ndarray, axis: int | None = None) -> float:
    """Largest absolute error of the int8 round trip (at most scale / 2)."""
    q, scale = quantize_int8(w, axis)
    return float(np.abs(dequantize_int8(q, scale) - w).max(initial=0.0))


def model_nbytes(model, bytes_per_value: int = 4) -> int:
    """Bytes to store every parameter at `bytes_per_value` (4 = float32, 1 = int8)."""
    return sum(p.size for p in model.parameters()) * bytes_per_value
