"""Insertion and deletion curves (IDGI paper 4.3, NeFLAG appendix A.2): pixels inserted into /
deleted from an image in saliency order, the class probability read after every step."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastattr.metrics._common import as_engine, check_images, pixel_saliency, resolve_targets, top_masks

BASES = ("black", "blur", "both")
CURVES = ("probability", "probability ratio")

# Points per engine.value call: large enough that chunks are full, small enough that the
# perturbed copies (21 x 3 x 224 x 224 float32 = 12.6 MB per image) stay modest in memory.
_MAX_POINTS = 256


def gaussian_blur_base(images: torch.Tensor, sigma: float = 20.0) -> torch.Tensor:
    """Blurred copy of images (N, C, H, W): separable Gaussian over H, W, kernel radius
    int(4 sigma + 0.5), edge pixels replicated (fastattr choice: zero padding would darken the
    border and reflection needs the radius below the image side) -> (N, C, H, W)."""
    if sigma <= 0:
        return images.clone()
    r = int(4.0 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(images.dtype)
    n, c, h, w = images.shape
    x = images.reshape(n * c, 1, h, w)
    # replicate padding of any width: index clamping (F.pad 'replicate' has no width limit either,
    # but clamping keeps one code path for both axes)
    rows = torch.arange(-r, h + r, device=images.device).clamp(0, h - 1)
    cols = torch.arange(-r, w + r, device=images.device).clamp(0, w - 1)
    x = F.conv2d(x[:, :, rows, :], k.view(1, 1, -1, 1))
    x = F.conv2d(x[:, :, :, cols], k.view(1, 1, 1, -1))
    return x.reshape(n, c, h, w)


def _base(images: torch.Tensor, base: str, sigma: float) -> torch.Tensor:
    return torch.zeros_like(images) if base == "black" else gaussian_blur_base(images, sigma)


def _curves(engine, images, sal, targets, base_images, steps: int, insert: bool) -> torch.Tensor:
    """p_c along the curve for each image: (N, steps + 1). All points of a group of images go
    through the engine in one call (chunked there), never one model call per step."""
    n, c, h, w = images.shape
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * (h * w) / steps).long()
    per_group = max(1, _MAX_POINTS // (steps + 1))
    out = []
    for s in range(0, n, per_group):
        e = min(n, s + per_group)
        m = top_masks(sal[s:e], counts)[:, :, None]  # (G, S+1, 1, H, W): the top-k pixels
        x, b = images[s:e, None], base_images[s:e, None]
        pts = torch.where(m, x, b) if insert else torch.where(m, b, x)
        t = targets[s:e].repeat_interleave(steps + 1)
        out.append(engine.value(pts.reshape(-1, c, h, w), t).reshape(e - s, steps + 1))
    return torch.cat(out)


def _run(kind: str, model, images, attributions, targets, base, curve, steps, sigma, absolute,
         return_curves, batch_size):
    if base not in BASES:
        raise ValueError(f"base: expected one of {BASES}, got {base!r}")
    if curve not in CURVES:
        raise ValueError(f"curve: expected one of {CURVES}, got {curve!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int (points = steps + 1), got {steps!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma: expected a finite number >= 0, got {sigma!r}")
    engine = as_engine(model, batch_size)
    x = check_images(images, engine)
    sal = pixel_saliency(attributions, (x.shape[0], *x.shape[2:]), absolute).to(x.device)
    with engine.session():
        if targets is None:
            targets, _ = resolve_targets(None, engine, x)
        else:
            t = torch.as_tensor(targets, device=x.device).long().reshape(-1)
            targets = t.expand(x.shape[0]) if t.numel() == 1 else t
            if targets.shape[0] != x.shape[0]:
                raise ValueError(f"targets: expected {x.shape[0]} class indices, got {targets.shape[0]}")
        runs = ("black", "blur") if base == "both" else (base,)
        ys = []
        for b in runs:
            y = _curves(engine, x, sal, targets, _base(x, b, sigma), steps, kind == "insertion")
            if curve == "probability ratio":
                # the original image is the last insertion point and the first deletion point
                y = y / (y[:, -1:] if kind == "insertion" else y[:, :1]).clamp_min(1e-12)
            ys.append(y)
        y = torch.stack(ys).mean(0)
    score = torch.trapezoid(y, dx=1.0 / steps, dim=1)
    return (score, y) if return_curves else score


def insertion(model, images: torch.Tensor, attributions: torch.Tensor, targets=None, *, base: str = "black",
              curve: str = "probability", steps: int = 20, sigma: float = 20.0, absolute: bool = False,
              return_curves: bool = False, batch_size: int | None = None):
    """Insertion AUC per image (N,) (and curves (N, steps+1) if return_curves): images (N, C, H, W)
    in [0, 1], attributions (N, C, H, W) or (N, H, W); pixels of the input go onto the base
    most-salient first, 1/steps of the pixels per step; higher is better."""
    return _run("insertion", model, images, attributions, targets, base, curve, steps, sigma, absolute,
                return_curves, batch_size)


def deletion(model, images: torch.Tensor, attributions: torch.Tensor, targets=None, *, base: str = "black",
             curve: str = "probability", steps: int = 20, sigma: float = 20.0, absolute: bool = False,
             return_curves: bool = False, batch_size: int | None = None):
    """Deletion AUC per image (N,) (and curves (N, steps+1) if return_curves): pixels of the input
    are replaced by the base most-salient first, 1/steps of the pixels per step; lower is better."""
    return _run("deletion", model, images, attributions, targets, base, curve, steps, sigma, absolute,
                return_curves, batch_size)
