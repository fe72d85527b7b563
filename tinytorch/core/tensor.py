"""Tensor: a NumPy array that remembers how it was made, so gradients can flow back.

Reverse-mode autograd in the micrograd style: every operation returns a new Tensor that
keeps its parents and a closure (`_backward`) that adds its output gradient into theirs.
`backward()` walks the graph in reverse topological order.  Float32 by default.
"""
from __future__ import annotations

import contextlib

import numpy as np

_GRAD_ENABLED = True


@contextlib.contextmanager
def no_grad():
    """Context manager: operations inside build no graph (inference, optimizer updates)."""
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


def is_grad_enabled() -> bool:
    return _GRAD_ENABLED


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` over the axes NumPy broadcasting added or stretched to reach `shape`."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


class Tensor:
    """An n-dimensional array with optional gradient tracking.

    Args:
        data: array-like; floats become float32 unless `dtype` says otherwise.
        requires_grad: track operations on this tensor and accumulate `.grad` in backward().
    """

    __array_priority__ = 100  # make `ndarray * Tensor` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        array = np.asarray(data.data if isinstance(data, Tensor) else data)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        elif array.dtype.kind == "f" and array.dtype != np.float32:
            array = array.astype(np.float32)
        elif array.dtype.kind in "iub" and requires_grad:
            array = array.astype(np.float32)
        self.data = array
        self.requires_grad = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self._parents: tuple[Tensor, ...] = ()
        self._backward = None

    # ----------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def T(self) -> Tensor:
        return self.transpose()

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{grad})"

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        """The same values (and dtype), cut from the graph."""
        return Tensor(self.data, dtype=self.data.dtype)

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------ graph plumbing
    def _make(self, data: np.ndarray, parents: tuple, backward) -> Tensor:
        """Wrap an op's result; record parents and the backward closure if needed."""
        out = Tensor(data, dtype=data.dtype)
        if _GRAD_ENABLED and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._backward = backward
        return out

    @staticmethod
    def _accumulate(tensor: Tensor, grad: np.ndarray) -> None:
        if not tensor.requires_grad:
            return
        grad = _unbroadcast(grad, tensor.shape).astype(tensor.data.dtype, copy=False)
        tensor.grad = grad.copy() if tensor.grad is None else tensor.grad + grad

    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) into `.grad` of every tensor that requires it.

        `grad` defaults to ones for a scalar; a non-scalar output needs an explicit one.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError("backward() needs `grad` for a non-scalar output")
            grad = np.ones_like(self.data)
        order, seen = [], set()

        def visit(node: Tensor) -> None:  # iterative DFS: deep graphs must not recurse
            stack = [(node, False)]
            while stack:
                current, expanded = stack.pop()
                if expanded:
                    order.append(current)
                    continue
                if id(current) in seen:
                    continue
                seen.add(id(current))
                stack.append((current, True))
                stack.extend((p, False) for p in current._parents)

        visit(self)
        grads = {id(self): np.asarray(grad, dtype=self.data.dtype)}
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:  # a leaf
                self._accumulate(node, g)
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                pg = _unbroadcast(pg, parent.shape)
                grads[id(parent)] = pg if id(parent) not in grads else grads[id(parent)] + pg

    # ------------------------------------------------------------- arithmetic
    def __add__(self, other) -> Tensor:
        other = _wrap(other, self.dtype)
        return self._make(self.data + other.data, (self, other), lambda g: (g, g))

    __radd__ = __add__

    def __neg__(self) -> Tensor:
        return self._make(-self.data, (self,), lambda g: (-g,))

    def __sub__(self, other) -> Tensor:
        return self + (-_wrap(other, self.dtype))

    def __rsub__(self, other) -> Tensor:
        return _wrap(other, self.dtype) + (-self)

    def __mul__(self, other) -> Tensor:
        other = _wrap(other, self.dtype)
        a, b = self.data, other.data
        return self._make(a * b, (self, other), lambda g: (g * b, g * a))

    __rmul__ = __mul__

    def __truediv__(self, other) -> Tensor:
        other = _wrap(other, self.dtype)
        a, b = self.data, other.data
        return self._make(a / b, (self, other), lambda g: (g / b, -g * a / (b * b)))

    def __rtruediv__(self, other) -> Tensor:
        return _wrap(other, self.dtype) / self

    def __pow__(self, exponent: float) -> Tensor:
        if isinstance(exponent, Tensor):
            raise TypeError("only constant exponents are supported")
        a = self.data
        return self._make(a ** exponent, (self,), lambda g: (g * exponent * a ** (exponent - 1),))

    def __matmul__(self, other) -> Tensor:
        other = _wrap(other, self.dtype)
        a, b = self.data, other.data

        def backward(g):
            if a.ndim == 1 and b.ndim == 1:
                return g * b, g * a
            # Promote 1-D operands to matrices (as NumPy does), then undo the promotion.
            a2 = a[None, :] if a.ndim == 1 else a
            b2 = b[:, None] if b.ndim == 1 else b
            g2 = np.expand_dims(g, -2) if a.ndim == 1 else g
            g2 = np.expand_dims(g2, -1) if b.ndim == 1 else g2
            ga = g2 @ np.swapaxes(b2, -1, -2)
            gb = np.swapaxes(a2, -1, -2) @ g2
            if a.ndim == 1:
                ga = _unbroadcast(ga, a2.shape).reshape(a.shape)
            if b.ndim == 1:
                gb = _unbroadcast(gb, b2.shape).reshape(b.shape)
            return ga, gb

        return self._make(a @ b, (self, other), backward)

    def __rmatmul__(self, other) -> Tensor:
        return _wrap(other, self.dtype) @ self

    # ------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims: bool = False) -> Tensor:
        shape = self.shape

        def backward(g):
            if axis is not None and not keepdims:
                g = np.expand_dims(g, axis)
            return (np.broadcast_to(g, shape),)

        return self._make(self.data.sum(axis=axis, keepdims=keepdims), (self,), backward)

    def mean(self, axis=None, keepdims: bool = False) -> Tensor:
        count = self.data.size if axis is None else np.prod([self.shape[a] for a in np.atleast_1d(axis)])
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / float(count))

    def max(self, axis=None, keepdims: bool = False) -> Tensor:
        """Maximum; the gradient is shared equally between tied maxima."""
        out = self.data.max(axis=axis, keepdims=True)
        a = self.data

        def backward(g):
            g = g if keepdims or axis is None else np.expand_dims(g, axis)
            hits = (a == out).astype(a.dtype)
            return (hits / hits.sum(axis=axis, keepdims=True) * g,)

        result = out if keepdims else (out.reshape(()) if axis is None else np.squeeze(out, axis=axis))
        return self._make(result, (self,), backward)

    # ------------------------------------------------------------ shape ops
    def reshape(self, *shape) -> Tensor:
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        original = self.shape
        return self._make(self.data.reshape(shape), (self,), lambda g: (g.reshape(original),))

    def transpose(self, *axes) -> Tensor:
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = tuple(axes) if axes else tuple(reversed(range(self.ndim)))
        inverse = tuple(np.argsort(axes))
        return self._make(self.data.transpose(axes), (self,), lambda g: (g.transpose(inverse),))

    def __getitem__(self, index) -> Tensor:
        index = index.data if isinstance(index, Tensor) else index
        shape, dtype = self.shape, self.dtype

        def backward(g):
            full = np.zeros(shape, dtype=dtype)
            np.add.at(full, index, g)  # add.at: repeated indices accumulate
            return (full,)

        return self._make(self.data[index], (self,), backward)

    # ------------------------------------------------------------ elementwise
    def exp(self) -> Tensor:
        out = np.exp(self.data)
        return self._make(out, (self,), lambda g: (g * out,))

    def log(self) -> Tensor:
        a = self.data
        return self._make(np.log(a), (self,), lambda g: (g / a,))

    def relu(self) -> Tensor:
        a = self.data
        return self._make(np.maximum(a, 0), (self,), lambda g: (g * (a > 0),))

    def tanh(self) -> Tensor:
        out = np.tanh(self.data)
        return self._make(out, (self,), lambda g: (g * (1 - out * out),))

    def sigmoid(self) -> Tensor:
        out = 1.0 / (1.0 + np.exp(-self.data))
        return self._make(out, (self,), lambda g: (g * out * (1 - out),))

    def sqrt(self) -> Tensor:
        return self ** 0.5


def _wrap(value, dtype) -> Tensor:
    """A constant (Python number or array) as a Tensor for an op with a tensor of `dtype`.

    NumPy's promotion picks the type (so int * 0.5 is a float), except that a float64 the
    tensor did not ask for becomes float32, TinyTorch's default.
    """
    if isinstance(value, Tensor):
        return value
    target = np.result_type(dtype, value)
    if target == np.float64 and dtype != np.float64:
        target = np.dtype(np.float32)
    return Tensor(np.asarray(value, dtype=target), dtype=target)
