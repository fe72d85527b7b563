"""Module and Parameter: the containers every layer and model is built from (PyTorch names)."""
from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Callable, Iterator

import numpy as np

from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(np.array(data, dtype=np.float32), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape})"


_hook_ids = itertools.count()


class _HookHandle:
    def __init__(self, hooks: dict, key: int):
        self._hooks, self._key = hooks, key

    def remove(self) -> None:
        self._hooks.pop(self._key, None)


class Module:
    """Base class: assign Parameters and sub-Modules as attributes and they are registered.

    Subclasses implement `forward`; those that take constructor arguments implement
    `config()` returning them, so `save_model`/`load_model` can rebuild the module.
    """

    registry: dict[str, type] = {}  # class name -> class (the latest class of that name)
    # (defining module, class name) -> class: what load_model resolves, so a class of the same
    # name defined elsewhere (a test, a notebook) can never stand in for a tinytorch layer
    _classes: dict[tuple[str, str], type] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Module.registry[cls.__name__] = cls
        Module._classes[(cls.__module__, cls.__name__)] = cls

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value) -> None:
        """Register Parameters and Modules. Re-assigning a registered name keeps its position
        in the order (as PyTorch does), so `seq[0] = layer` keeps the layer first; any other
        value (None, a number, ...) removes the registration."""
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call Module.__init__() in {type(self).__name__}.__init__ first")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value  # an existing key keeps its place in the OrderedDict
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # ---------------------------------------------------------------- calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            hook(self, args, out)
        return out

    def register_forward_hook(self, hook: Callable) -> _HookHandle:
        """Call `hook(module, inputs, output)` after every forward; returns a handle to remove it."""
        key = next(_hook_ids)  # never reused, so a stale handle cannot remove a newer hook
        self._forward_hooks[key] = hook
        return _HookHandle(self._forward_hooks, key)

    # ------------------------------------------------------------- traversal
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """(name, child) for each direct sub-Module in registration order; a child registered
        under two names is listed once, under the first (as in PyTorch)."""
        seen = set()
        for name, child in self._modules.items():
            if id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """This module and every descendant, depth first, with dotted names ("" is the root).

        A module reachable under several names (a layer used twice) is listed once, under the
        first; with remove_duplicate=False under every name (as in PyTorch), and a module
        that contains itself raises ValueError instead of looping forever.
        """
        seen = set()
        stack = [(prefix, self, ())]  # (name, module, ids of its ancestors)
        while stack:
            name, module, ancestors = stack.pop()
            if remove_duplicate and id(module) in seen:
                continue
            if id(module) in ancestors:  # reachable only with remove_duplicate=False
                raise ValueError(f"module {name!r} contains itself: a module tree cannot have a cycle")
            seen.add(id(module))
            yield name, module
            children = module.named_children() if remove_duplicate else module._modules.items()
            stack.extend(reversed([(f"{name}.{child_name}" if name else child_name, child,
                                    (*ancestors, id(module))) for child_name, child in children]))

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "",
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with PyTorch-style dotted names, e.g. ("0.weight", Parameter). A
        parameter or module used twice (tied weights) is listed once, under its first name;
        with remove_duplicate=False under every name (as in PyTorch)."""
        seen = set()
        for name, module in self.named_modules(prefix, remove_duplicate):
            for pname, param in module._parameters.items():
                if not remove_duplicate or id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{name}.{pname}" if name else pname), param

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # ------------------------------------------------------------- state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter array, keyed by dotted name."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters of the same name; shapes must match.

        With strict=True, missing or unexpected keys raise ValueError.
        """
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise ValueError(f"state_dict mismatch: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state.items():
            if name not in own:
                continue
            value = np.asarray(value)
            if value.shape != own[name].shape:
                raise ValueError(
                    f"state_dict shape mismatch for {name!r}: file has {value.shape}, "
                    f"model expects {own[name].shape}")
            own[name].data = np.array(value, dtype=np.float32)  # one copy, never a view of `state`

    def get_extra_state(self):
        """State that is not a Parameter (e.g. a sparse layer's CSR weight), as PyTorch names it.

        A subclass that keeps such state overrides this and `set_extra_state`; `save_model`
        refuses modules that do (see `has_extra_state`), because it stores Parameters only.
        """
        raise RuntimeError(f"{type(self).__name__}.get_extra_state() is not implemented: only "
                           "subclasses that keep extra state override it (see has_extra_state)")

    def set_extra_state(self, state) -> None:
        """Restore what `get_extra_state` returned; subclasses with extra state override it."""
        raise RuntimeError(f"{type(self).__name__}.set_extra_state() is not implemented: only "
                           "subclasses that keep extra state override it (see has_extra_state)")

    def config(self) -> dict:
        """Constructor keyword arguments that rebuild this module (empty if none)."""
        return {}

    # ------------------------------------------------------------- display
    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


def has_extra_state(module: Module) -> bool:
    """True if `module`'s class overrides get_extra_state (PyTorch's rule for extra state)."""
    return type(module).get_extra_state is not Module.get_extra_state


def registered_class(module_name: str, class_name: str) -> type | None:
    """The Module subclass named `class_name` defined in module `module_name`, or None."""
    return Module._classes.get((module_name, class_name))
