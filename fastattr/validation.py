"""Argument checks of the public API: every error names the parameter at fault."""
from __future__ import annotations

import inspect
import numbers
import warnings

import torch
from torch import nn


def check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if model.training:
        warnings.warn(
            "model: is in training mode (dropout/batch-norm make gradients random and batch-dependent); "
            "call model.eval() first", UserWarning, stacklevel=3)


def check_inputs(inputs) -> torch.Tensor:
    """inputs must be a finite floating (N, C, H, W) tensor."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs: expected a torch.Tensor (N, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs: expected a 4-D tensor (N, C, H, W), got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs: expected a floating-point tensor, got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs: the batch is empty (N = 0)")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs: contains NaN or inf")
    return inputs


def check_baseline(baseline, inputs: torch.Tensor) -> torch.Tensor:
    """None (zeros), a number, or a tensor broadcastable to inputs -> (N, C, H, W) float32."""
    if baseline is None:
        return torch.zeros_like(inputs)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return torch.full_like(inputs, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline: expected None, a number or a tensor, got {type(baseline).__name__}")
    try:
        out = torch.broadcast_to(baseline.to(inputs.device, inputs.dtype), inputs.shape)
    except RuntimeError:
        raise ValueError(f"baseline: shape {tuple(baseline.shape)} does not broadcast to inputs "
                         f"{tuple(inputs.shape)}") from None
    if not torch.isfinite(out).all():
        raise ValueError("baseline: contains NaN or inf")
    return out.contiguous()


def check_target(target, n: int, num_classes: int, device) -> torch.Tensor | None:
    """None (argmax, resolved later), an int, or an (N,) integer tensor/sequence -> (N,) int64."""
    if target is None:
        return None
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        t = torch.full((n,), int(target), dtype=torch.long)
    else:
        t = torch.as_tensor(target)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"target: expected integer class indices, got {t.dtype}")
        t = t.reshape(-1).long()
        if t.numel() == 1 and n > 1:
            t = t.expand(n)
        if t.numel() != n:
            raise ValueError(f"target: expected {n} class indices (one per image), got {t.numel()}")
    if (t < 0).any() or (t >= num_classes).any():
        raise ValueError(f"target: class indices must lie in [0, {num_classes}), got {t.tolist()}")
    return t.to(device)


def check_positive_int(value, name: str, *, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")
    return int(value)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; choose from {sorted(choices)}")
    return value


def check_method_options(fn, method: str, options: dict) -> None:
    """Every key of `options` must be a keyword parameter of method function fn(ctx, ...)."""
    params = list(inspect.signature(fn).parameters.values())[1:]  # the first one is ctx
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = [k for k in options if k not in known]
    if unknown:
        raise TypeError(f"{unknown[0]}: unknown option of method {method!r}; "
                        f"its options are {known if known else 'none'}")
