"""Shared argument handling of the metrics: model-or-engine, images, pixel saliency, targets, and
the small checks every metric function applies to its options (errors name the parameter)."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import nn

from fastattr import validation as v
from fastattr.engine import Engine

# -- option checks ------------------------------------------------------------------------------
def check_count(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer option in [minimum, maximum] (Python or numpy integer, not bool) -> int."""
    if minimum == 1:
        return v.check_positive_int(value, name, allow_none=False, maximum=maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: must lie in [{minimum}, {maximum if maximum is not None else 'inf'}], got {value}")
    return int(value)


def check_optional_count(value, name: str) -> int | None:
    """None or an integer >= 1 -> None or int."""
    return v.check_positive_int(value, name, allow_none=True)


def check_number(value, name: str, *, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number (Python or numpy, not bool) with lo <= value <= hi -> float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name}: must lie in {rng}, got {value}")
    return value


def check_flag(value, name: str) -> bool:
    """A bool option (Python or numpy bool) -> bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__}")
    return bool(value)


def check_choice(value, name: str, choices) -> str:
    """One of `choices` (validation.check_choice)."""
    return v.check_choice(value, name, choices)


def target_argument(target, targets):
    """`target` (the keyword fastattr.attribute uses) or its alias `targets`; both -> TypeError."""
    if targets is not None:
        if target is not None:
            raise TypeError("target: given twice (target= and its alias targets=); pass target only")
        return targets
    return target


# -- tensors --------------------------------------------------------------------------------------
def as_engine(model, batch_size: int | None = None) -> Engine:
    """An Engine (probability output) for `model`; an Engine passed in is returned as is."""
    batch_size = check_optional_count(batch_size, "batch_size")
    if isinstance(model, Engine):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or fastattr Engine, got {type(model).__name__}")
    return Engine(model, output="probability", batch_size=batch_size)


def check_images(images: torch.Tensor, engine: Engine | None, name: str = "images") -> torch.Tensor:
    """(N, C, H, W) finite float pixels, N >= 1, on the engine's device, float32."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected an (N, C, H, W) tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name}: expected an (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected float pixels in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty (N = 0)")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    device = engine.device if engine is not None else images.device
    if engine is not None:  # chunk size for this image size, as explain does (unless fixed by the caller)
        engine.fit_batch(images[0].numel())
    return images.detach().to(device=device, dtype=torch.float32)


def check_masks(masks, shape: tuple[int, int, int], name: str = "masks") -> torch.Tensor:
    """Binary masks of `shape` (N, H, W): bool, or numbers that are all 0 or 1 -> bool on the CPU."""
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name}: expected an {shape} bool tensor, got {type(masks).__name__}")
    if tuple(masks.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (N, H, W), got {tuple(masks.shape)}")
    m = masks.detach().cpu()
    if m.dtype != torch.bool:
        if m.is_complex() or bool(((m != 0) & (m != 1)).any()):
            raise ValueError(f"{name}: expected binary masks (bool or 0/1 values)")
        m = m.bool()
    return m


def pixel_saliency(attributions: torch.Tensor, shape: tuple[int, int, int], absolute: bool = False,
                   name: str = "attributions") -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) map -> (N, H, W) float64 ranking score: channel sum of A (of |A| if
    absolute). Summed in float64, so a finite float32 map of any magnitude (1e38) ranks without
    overflow; a float64 map whose sum would overflow is scaled by a power of two first (exact)."""
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(attributions).__name__}")
    if attributions.is_complex():
        raise TypeError(f"{name}: expected a real tensor, got {attributions.dtype}")
    if attributions.dim() not in (3, 4) or (attributions.shape[0], *attributions.shape[-2:]) != tuple(shape):
        raise ValueError(f"{name}: expected (N, C, H, W) or (N, H, W) matching (N, H, W)={tuple(shape)}, "
                         f"got {tuple(attributions.shape)}")
    a = attributions.detach().double()
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    if absolute:
        a = a.abs()
    if a.dim() == 4:
        s = a.sum(1)
        if not bool(torch.isfinite(s).all()):  # float64 maps near 1e308: scale by 2^-k (exact)
            k = math.frexp(float(a.abs().max()))[1]
            s = torch.ldexp(a, torch.tensor(-k, dtype=torch.float64)).sum(1)
        a = s
    return a


def check_target(target, n: int, num_classes: int, device) -> torch.Tensor:
    """An int, or (N,) integer class indices -> (N,) int64 on device (validation.check_target:
    floats, bools, strings are TypeErrors; indices outside [0, num_classes) ValueErrors)."""
    return v.check_target(target, n, num_classes, device)


def check_finite_scores(scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """scores (P, K) of points made from images[p] (P,): a NaN/inf score is a ValueError naming
    the first such image (a metric must not turn it into a NaN AUC)."""
    bad = ~torch.isfinite(scores).all(1)
    if bool(bad.any()):
        i = int(images[bad.nonzero()[0, 0]])
        raise ValueError(f"model: produced non-finite scores (NaN or inf) on a perturbed copy of images[{i}]")
    return scores


def resolve_target(target, engine: Engine, images: torch.Tensor) -> torch.Tensor:
    """(N,) int64 targets: the model's argmax on images when target is None (one chunked forward)."""
    logits = engine.logits(images)
    if target is None:
        return logits.argmax(1)
    return check_target(target, images.shape[0], logits.shape[1], images.device).contiguous()


def pixel_ranks(saliency: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel by decreasing saliency (0 = most salient), ties broken by pixel index
    (stable sort), so the order is deterministic. saliency (N, H, W) -> (N, H*W) int64."""
    n = saliency.shape[0]
    order = torch.argsort(saliency.reshape(n, -1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand(n, -1).contiguous())
    return rank


def top_masks(saliency: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Masks of the `counts[j]` most salient pixels per image. saliency (N, H, W), counts (S,) ->
    (N, S, H, W) bool (ranked as pixel_ranks)."""
    n, h, w = saliency.shape
    rank = pixel_ranks(saliency)
    return (rank[:, None, :] < counts.to(rank.device)[None, :, None]).reshape(n, -1, h, w)
