"""What every method receives and returns, and the registry behind `method=`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from fastattr.engine import Engine


@dataclass
class MethodContext:
    """Validated inputs of one call. Tensors are on the model's device, detached, in the points'
    dtype (float32; float64 for a float64 model: engine.point_dtype)."""

    engine: Engine
    inputs: torch.Tensor  # (N, ...) any rank >= 2; (N, C, H, W) for methods registered images=True
    baseline: torch.Tensor  # like inputs, broadcast (zeros for methods without a baseline)
    targets: torch.Tensor  # (N,) int64
    scores: torch.Tensor  # (N,) f_c(inputs)
    steps: int | None  # None: the method's default
    rule: str
    idgi: bool
    progress: bool = False
    # The class every example is explained for, when there is one and it is known on the host:
    # chunks then select it by index (walk_path), fewer ops per chunk than gathering targets.
    target_column: int | None = None


@dataclass
class MethodResult:
    """A method's answer: the map, f_c at the path start, and method-specific extras."""

    attributions: torch.Tensor  # like inputs, the points' dtype
    baseline_scores: torch.Tensor  # (N,)
    extras: dict = field(default_factory=dict)
    # (N,) bool or None: images whose path has zero length (start == input, e.g. every blur of a
    # black image is black). Their map is exactly zero and f_c at the start is f_c(x).
    still: torch.Tensor | None = None


METHODS: dict[str, "MethodSpec"] = {}


@dataclass(frozen=True)
class MethodSpec:
    fn: Callable[..., MethodResult]
    path: bool  # a path method: idgi=True applies
    rules: bool  # honours rule= (IG only)
    default_steps: int | None
    baseline: bool = False  # takes baseline= (its path starts there); others refuse baseline=
    images: bool = False  # needs (N, C, H, W) inputs (spatial axes); others take any rank >= 2


def register_method(name: str, *, path: bool, rules: bool = False, default_steps: int | None = None,
                    baseline: bool = False, images: bool = False):
    """Decorator: make `method=name` call fn(ctx, **method_options) -> MethodResult."""

    def deco(fn):
        METHODS[name] = MethodSpec(fn, path, rules, default_steps, baseline, images)
        return fn

    return deco
