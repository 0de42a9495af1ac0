"""Backward modes: which gradient the engine takes. A mode is a factory `model -> context
manager` active while the engine runs forward+backward; it must leave the model unchanged. A mode
that cannot act on some models (guided: TorchScript) registers a check, which refuses them here
for the API (every engine session) and for the command line's preflight alike."""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Callable, ContextManager

from torch import nn

BACKWARDS: dict[str, Callable[[nn.Module], ContextManager]] = {
    "standard": lambda model: contextlib.nullcontext(),
}
# name -> check(model) -> None, or why the mode cannot reach inside that model
_UNREACHABLE: dict[str, Callable[[nn.Module], str | None]] = {}


def register_backward(name: str, factory: Callable[[nn.Module], ContextManager],
                      unreachable: Callable[[nn.Module], str | None] | None = None) -> None:
    """Make `backward=name` available to every method; `unreachable(model)` says why the mode
    cannot act on a model (it would silently give the standard gradient), or None."""
    BACKWARDS[name] = factory
    if unreachable is not None:
        _UNREACHABLE[name] = unreachable


def check_reachable(name: str, model: nn.Module) -> None:
    """ValueError naming `backward` when mode `name` cannot act on `model`: its maps would be the
    standard ones under another name."""
    why = _UNREACHABLE[name](model) if name in _UNREACHABLE else None
    if why is not None:
        raise ValueError(f"backward: {name!r} {why}")


def backward_context(name, model: nn.Module) -> ContextManager:
    """The context manager of backward mode `name` for `model` (or of a factory model -> context
    manager passed in place of a name, for modes that are not offered by name: it checks the model
    itself); a named mode is checked by check_reachable."""
    if callable(name):
        return name(model)
    if name not in BACKWARDS:
        raise ValueError(f"backward: unknown backward mode {name!r}; choose from {sorted(BACKWARDS)}")
    check_reachable(name, model)
    return BACKWARDS[name](model)


for _m in pkgutil.iter_modules(__path__):  # each module registers one mode
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
