"""Argument checks of the public API: every error names the parameter at fault."""
from __future__ import annotations

import functools
import inspect
import math
import numbers

import torch
from torch import nn

from fastattr.host_checks import all_finite  # noqa: F401  (re-exported: validation.all_finite)


# Path points per image: each costs one forward+backward, and walk_path keeps 3 int64 per point.
# 10**6 is 1000x captum's default and already hours per image on a real model; beyond it a typo
# (steps=10**12) would ask for terabytes instead of failing here.
MAX_STEPS = 10**6


def check_model(model) -> None:
    """model must be an nn.Module (training mode is handled by the engine: explained in eval
    mode, restored afterwards)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")


INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_inputs(inputs, layer=None) -> torch.Tensor:
    """inputs must be a finite real floating tensor (N, ...) of rank >= 1 with N >= 1 and features
    ((N,): N examples of one scalar each); with a layer= also an integer tensor (token ids: the path
    runs in the layer's output space)."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs: expected a torch.Tensor (N, ...), got {type(inputs).__name__}")
    if inputs.dim() < 1:
        raise ValueError(f"inputs: expected a tensor (N, ...) with a batch axis ((N,) for N scalars, (N, D), "
                         f"(N, C, L), (N, C, H, W), (N, T) token ids with layer=...), got a 0-dimensional tensor")
    if not inputs.is_floating_point():
        if inputs.dtype not in INTEGER:
            raise TypeError(f"inputs: expected a floating-point tensor (or integer token ids with layer=), got "
                            f"{inputs.dtype}")
        if layer is None:
            raise TypeError(f"inputs: expected a floating-point tensor, got {inputs.dtype}. Token ids cannot be scaled "
                            "along a path, so integer inputs are attributed at a layer: pass layer= (e.g. "
                            "layer='bert.embeddings', the module that turns ids into vectors) and the path runs in "
                            "that layer's output space (uint8 images: pass x.float() / 255)")
    if inputs.shape[0] == 0:
        raise ValueError("inputs: the batch is empty (N = 0)")
    if math.prod(inputs.shape[1:]) == 0:
        raise ValueError(f"inputs: has no features, shape {tuple(inputs.shape)}")
    if inputs.is_floating_point() and not all_finite(inputs):
        raise ValueError("inputs: contains NaN or inf")
    return inputs


def check_baseline_value(baseline) -> None:
    """None, a finite real number or a finite real tensor (its shape is checked against inputs
    later); errors name `baseline`."""
    if baseline is None:
        return
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not math.isfinite(float(baseline)):
            raise ValueError(f"baseline: must be finite, got {baseline}")
        return
    if isinstance(baseline, numbers.Complex) and not isinstance(baseline, bool):
        raise TypeError(f"baseline: must be real, got the complex number {baseline}")
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline: expected None, a number or a tensor, got {type(baseline).__name__}")
    if baseline.is_complex() or baseline.dtype == torch.bool:
        raise TypeError(f"baseline: expected a real-valued tensor, got {baseline.dtype}")
    if not torch.isfinite(baseline).all():
        raise ValueError("baseline: contains NaN or inf")


def check_baseline(baseline, inputs: torch.Tensor) -> torch.Tensor:
    """None (zeros), a finite real number, or a finite real tensor broadcastable to inputs -> like
    inputs (its dtype and shape)."""
    check_baseline_value(baseline)
    if baseline is None:
        return torch.zeros_like(inputs)
    if not isinstance(baseline, torch.Tensor):
        return torch.full_like(inputs, float(baseline))
    try:
        out = torch.broadcast_to(baseline.to(inputs.device, inputs.dtype), inputs.shape)
    except RuntimeError:
        raise ValueError(f"baseline: shape {tuple(baseline.shape)} does not broadcast to inputs "
                         f"{tuple(inputs.shape)}") from None
    if not torch.isfinite(out).all():  # a float64 baseline beyond float32's range
        raise ValueError("baseline: contains NaN or inf (in the points' dtype)")
    return out.contiguous()


def check_baseline_like(baseline, inputs: torch.Tensor) -> torch.Tensor:
    """check_baseline for floating inputs; for integer inputs (token ids, with layer=) None (zeros),
    an int id, or an integer tensor broadcastable to inputs -> like inputs (captum's baselines)."""
    if inputs.is_floating_point():
        return check_baseline(baseline, inputs)
    if baseline is None:
        return torch.zeros_like(inputs)
    if isinstance(baseline, numbers.Integral) and not isinstance(baseline, bool):
        return torch.full_like(inputs, int(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline: inputs are {inputs.dtype} ids, so the baseline is ids too: None (zeros), an int "
                        f"or an integer tensor like inputs, got {type(baseline).__name__}")
    if baseline.dtype not in INTEGER:
        raise TypeError(f"baseline: inputs are {inputs.dtype} ids, so the baseline is ids too (e.g. pad ids with "
                        f"[CLS]/[SEP] kept), got a {baseline.dtype} tensor")
    try:
        out = torch.broadcast_to(baseline.to(inputs.device, inputs.dtype), inputs.shape)
    except RuntimeError:
        raise ValueError(f"baseline: shape {tuple(baseline.shape)} does not broadcast to inputs "
                         f"{tuple(inputs.shape)}") from None
    return out.contiguous()


def check_target(target, n: int, num_classes: int, device) -> torch.Tensor | None:
    """None (argmax, resolved later), an int, or (N,) integer class indices (tensor, array,
    sequence; one index is broadcast) -> (N,) int64 in [0, num_classes)."""
    if target is None:
        return None
    if isinstance(target, bool) or isinstance(target, (str, bytes)):
        raise TypeError(f"target: expected None, an int or (N,) integer class indices, got {target!r}")
    if isinstance(target, numbers.Integral):
        if not 0 <= int(target) < num_classes:  # Python ints: no overflow for 2**70
            raise ValueError(f"target: class indices must lie in [0, {num_classes}), got {int(target)}")
        return torch.full((n,), int(target), dtype=torch.long, device=device)
    if isinstance(target, numbers.Number):
        raise TypeError(f"target: expected integer class indices, got {type(target).__name__} {target!r}")
    try:
        t = torch.as_tensor(target)
    except OverflowError:
        raise ValueError(f"target: class indices must lie in [0, {num_classes}), got {target!r}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        if "overflow" in str(exc).lower():
            raise ValueError(f"target: class indices must lie in [0, {num_classes}), got {target!r}") from None
        raise TypeError(f"target: expected None, an int or (N,) integer class indices, got "
                        f"{type(target).__name__}") from None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"target: expected integer class indices, got {t.dtype}")
    t = t.reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target: expected {n} class indices (one per image), got {t.numel()}")
    if (t < 0).any() or (t >= num_classes).any():
        raise ValueError(f"target: class indices must lie in [0, {num_classes}), got {t.tolist()}")
    return t.long().to(device)


def check_positive_int(value, name: str, *, allow_none: bool = True, maximum: int | None = None) -> int | None:
    """None (when allowed) or an integer >= 1 (and <= maximum); errors name the parameter."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}: must be <= {maximum}, got {value}")
    return int(value)


def check_generator(generator) -> None:
    """None or a CPU torch.Generator (methods draw on the CPU); errors name `generator`."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator: must be a CPU generator (draws are made on the CPU), got {generator.device}")


def check_nonnegative_int(value, name: str) -> int | None:
    """None or an integer >= 0 (counts where 0 means none: workers, samples); errors name the parameter."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0):
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return None if value is None else int(value)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; choose from {sorted(choices)}")
    return value


@functools.lru_cache(maxsize=None)
def _keyword_options(fn) -> list[str] | None:
    """Keyword parameters of method function fn(ctx, ...) (None: it takes **kwargs). Cached:
    inspect.signature took ~0.1 ms of every call (bench/bench_overhead.py, tiny model)."""
    params = list(inspect.signature(fn).parameters.values())[1:]  # the first one is ctx
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                 inspect.Parameter.POSITIONAL_OR_KEYWORD)]


def check_method_options(fn, method: str, options: dict) -> None:
    """Every key of `options` must be a keyword parameter of method function fn(ctx, ...)."""
    known = _keyword_options(fn)
    if known is None:
        return
    unknown = [k for k in options if k not in known]
    if unknown:
        raise TypeError(f"{unknown[0]}: unknown option of method {method!r}; "
                        f"its options are {known if known else 'none'}")
