"""Argument checks shared by the library: each returns the value in a canonical form or
raises a ValueError that names the argument and what is allowed.

NumPy scalars (`np.int64(3)`, `np.float32(0.5)`) are accepted wherever Python numbers are;
booleans and strings never are.
"""
import numbers

import numpy as np

from .tensor import Tensor


def check_int(name: str, value, minimum: int = None) -> int:
    """`value` as a Python int (Python or NumPy integer, not bool), >= `minimum` if given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_number(name: str, value) -> float:
    """`value` as a finite Python float (Python or NumPy real number, not bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not np.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_fraction(name: str, value, high_inclusive: bool = False) -> float:
    """A number in [0, 1) (or [0, 1] with high_inclusive=True), as a Python float."""
    interval = "[0, 1]" if high_inclusive else "[0, 1)"
    try:
        value = check_number(name, value)
    except ValueError:
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}") from None
    if not (0.0 <= value <= 1.0 if high_inclusive else 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return value


def check_choice(name: str, value, allowed: tuple):
    """`value` if it is one of the strings `allowed`, else ValueError listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def check_loader(name: str, loader) -> None:
    """ValueError if `loader` is None or has a length of 0 (it would yield no batch)."""
    if loader is None:
        raise ValueError(f"{name} must be an iterable of (inputs, labels) batches, got None")
    if hasattr(loader, "__len__") and len(loader) == 0:
        raise ValueError(f"{name} is empty: it yields no (inputs, labels) batch")


def check_finite_weights(layers: dict) -> None:
    """ValueError if the `.weight` of any layer of {name: layer} holds NaN or inf (such
    weights cannot be ranked by magnitude)."""
    for name, layer in layers.items():
        if not np.isfinite(layer.weight.data).all():
            raise ValueError(f"layer {name!r} has NaN or inf weights: they cannot be ranked")


def check_matrix_shape(name: str, value) -> tuple:
    """(rows, cols) as two non-negative Python ints (Python or NumPy integers, not bool)."""
    message = f"{name} must be a pair (rows, cols) of non-negative ints, got {value!r}"
    try:
        dims = tuple(value)
    except TypeError:
        raise ValueError(message) from None
    if len(dims) != 2 or not all(isinstance(d, (int, np.integer))
                                 and not isinstance(d, (bool, np.bool_)) and d >= 0
                                 for d in dims):
        raise ValueError(message)
    return int(dims[0]), int(dims[1])


def check_index_array(name: str, value) -> np.ndarray:
    """`value` as a 1-D array of any signed or unsigned integer dtype (not copied)."""
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {array.dtype}")
    return array


def check_real_array(name: str, value) -> np.ndarray:
    """`value` (an array, a Tensor's data or a nested list) as an array of real numbers
    (bool, int or float dtype; complex, string and object arrays are refused)."""
    array = np.asarray(value.data if isinstance(value, Tensor) else value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be an array of real numbers, got dtype {array.dtype}")
    return array
