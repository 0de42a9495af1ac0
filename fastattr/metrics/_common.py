"""Shared argument handling of the metrics: model-or-engine, images, pixel saliency, targets."""
from __future__ import annotations

import torch
from torch import nn

from fastattr.engine import Engine


def as_engine(model, batch_size: int | None = None) -> Engine:
    """An Engine (probability output) for `model`; an Engine passed in is returned as is."""
    if isinstance(model, Engine):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or fastattr Engine, got {type(model).__name__}")
    return Engine(model, output="probability", batch_size=batch_size)


def check_images(images: torch.Tensor, engine: Engine, name: str = "images") -> torch.Tensor:
    """(N, C, H, W) float pixels in [0, 1] on the engine's device, float32."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected an (N, C, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name}: expected float pixels in [0, 1], got dtype {images.dtype}")
    return images.detach().to(device=engine.device, dtype=torch.float32)


def pixel_saliency(attributions: torch.Tensor, shape: tuple[int, int, int], absolute: bool = False,
                   name: str = "attributions") -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) map -> (N, H, W) float32 ranking score: channel sum of A (of |A| if absolute)."""
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(attributions).__name__}")
    a = attributions.detach().float()
    if absolute:
        a = a.abs()
    if a.dim() == 4:
        a = a.sum(1)
    if a.dim() != 3 or tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected (N, C, H, W) or (N, H, W) matching (N, H, W)={tuple(shape)}, "
                         f"got {tuple(attributions.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    return a


def resolve_targets(targets, engine: Engine, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (N,) int64, logits of the images (N, K)); targets None -> the model's argmax."""
    logits = engine.logits(images)
    n, k = logits.shape
    if targets is None:
        return logits.argmax(1), logits
    t = torch.as_tensor(targets, device=images.device).long().reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.shape[0] != n:
        raise ValueError(f"targets: expected {n} class indices, got {t.shape[0]}")
    if bool(((t < 0) | (t >= k)).any()):
        raise ValueError(f"targets: class indices must be in [0, {k}), got {t.tolist()}")
    return t.contiguous(), logits


def top_masks(saliency: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Masks of the `counts[j]` most salient pixels per image. saliency (N, H, W), counts (S,) ->
    (N, S, H, W) bool. Ties are broken by pixel index (stable sort), so the order is deterministic."""
    n, h, w = saliency.shape
    order = torch.argsort(saliency.reshape(n, -1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1).contiguous())
    return (rank[:, None, :] < counts.to(rank.device)[None, :, None]).reshape(n, -1, h, w)
