"""What every method receives and returns, and the registry behind `method=`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from fastattr.engine import Engine


@dataclass
class MethodContext:
    """Validated inputs of one call. Tensors are on the model's device, float32, detached."""

    engine: Engine
    inputs: torch.Tensor  # (N, C, H, W)
    baseline: torch.Tensor  # (N, C, H, W), broadcast
    targets: torch.Tensor  # (N,) int64
    scores: torch.Tensor  # (N,) f_c(inputs)
    steps: int | None  # None: the method's default
    rule: str
    idgi: bool
    progress: bool = False


@dataclass
class MethodResult:
    """A method's answer: the map, f_c at the path start, and method-specific extras."""

    attributions: torch.Tensor  # (N, C, H, W) float32
    baseline_scores: torch.Tensor  # (N,)
    extras: dict = field(default_factory=dict)


# name -> (function, supports_idgi, supports_rule)
METHODS: dict[str, "MethodSpec"] = {}


@dataclass(frozen=True)
class MethodSpec:
    fn: Callable[..., MethodResult]
    path: bool  # a path method: idgi=True applies
    rules: bool  # honours rule= (IG only)
    default_steps: int | None


def register_method(name: str, *, path: bool, rules: bool = False, default_steps: int | None = None):
    """Decorator: make `method=name` call fn(ctx, **method_options) -> MethodResult."""

    def deco(fn):
        METHODS[name] = MethodSpec(fn, path, rules, default_steps)
        return fn

    return deco
