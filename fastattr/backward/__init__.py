"""Backward modes: which gradient the engine takes. A mode is a factory `model -> context
manager` active while the engine runs forward+backward; it must leave the model unchanged."""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Callable, ContextManager

from torch import nn

BACKWARDS: dict[str, Callable[[nn.Module], ContextManager]] = {
    "standard": lambda model: contextlib.nullcontext(),
}


def register_backward(name: str, factory: Callable[[nn.Module], ContextManager]) -> None:
    """Make `backward=name` available to every method."""
    BACKWARDS[name] = factory


def backward_context(name, model: nn.Module) -> ContextManager:
    """The context manager of backward mode `name` for `model` (or of a factory model -> context
    manager passed in place of a name, for modes that are not offered by name)."""
    if callable(name):
        return name(model)
    if name not in BACKWARDS:
        raise ValueError(f"backward: unknown backward mode {name!r}; choose from {sorted(BACKWARDS)}")
    return BACKWARDS[name](model)


for _m in pkgutil.iter_modules(__path__):  # each module registers one mode
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
