"""Insertion and deletion curves (IDGI paper 4.3, NeFLAG appendix A.2): pixels inserted into /
deleted from an image in saliency order, the class probability read after every step."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastattr import validation as v
from fastattr.engine import select_output
from fastattr.metrics._common import (as_engine, check_choice, check_count, check_finite_scores, check_flag,
                                      check_images,
                                      check_number, check_target, pixel_ranks, pixel_saliency,
                                      target_argument)

BASES = ("black", "blur", "both")
CURVES = ("probability", "probability ratio")
KINDS = ("insertion", "deletion")


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


def stream_curves(engine, x: torch.Tensor, sal: torch.Tensor, target, runs: list[tuple[str, torch.Tensor]],
                  steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """f_c along every curve of `runs` ((kind, base images (N, C, H, W)) each) for images x
    (N, C, H, W) ranked by sal (N, H, W) -> (targets (N,), [(N, steps + 1) per run]).

    All points of all runs form one stream that reaches the model in full engine chunks (only the
    last chunk is partial), built one chunk at a time (memory: one chunk of perturbed images).
    Each curve visits its original image first, so with target None the argmax read there gives
    the target of the image's other points without an extra forward pass."""
    n, c, h, w = x.shape
    p = steps + 1
    counts = torch.round(torch.arange(p, dtype=torch.float64) * (h * w) / steps).long().to(x.device)
    ranks = pixel_ranks(sal.to(x.device))
    # visiting order of the steps of one curve: the original image (all pixels of the input) first
    order = {"insertion": torch.tensor([steps, *range(steps)], device=x.device),
             "deletion": torch.arange(p, device=x.device)}
    tgt = torch.full((n,), -1, dtype=torch.long, device=x.device)
    given = target is not None
    curves = [torch.empty(n, p, device=x.device) for _ in runs]
    flat_x = x.reshape(n, c, h * w)
    for s, e in engine.chunks(len(runs) * n * p):
        j = torch.arange(s, e, device=x.device)
        run_idx, img, q = j // (n * p), (j // p) % n, j % p
        pts = torch.empty(e - s, c, h * w, device=x.device, dtype=x.dtype)
        steps_k = torch.empty_like(q)
        for r in torch.unique(run_idx).tolist():
            sel = (run_idx == r).nonzero().squeeze(1)
            kind, base = runs[r]
            k = order[kind][q[sel]]
            steps_k[sel] = k
            revealed = ranks[img[sel]] < counts[k][:, None]  # (B_r, H*W): the top-k pixels
            keep_input = revealed if kind == "insertion" else ~revealed
            pts[sel] = torch.where(keep_input[:, None, :], flat_x[img[sel]], base.reshape(n, c, h * w)[img[sel]])
        logits = check_finite_scores(engine.logits(pts.reshape(-1, c, h, w)), img)
        if given and s == 0:
            tgt = check_target(target, n, logits.shape[1], x.device)
        elif not given:
            first = (q == 0) & (tgt[img] < 0)  # originals whose image has no target yet
            tgt[img[first]] = logits[first].argmax(1)
        y = select_output(logits, tgt[img], engine.output)
        for r in torch.unique(run_idx).tolist():
            sel = run_idx == r
            curves[r][img[sel], steps_k[sel]] = y[sel]
    return tgt, curves


def _checked(model, images, attributions, target, targets, base, curve, steps, sigma, absolute, batch_size):
    target = target_argument(target, targets)
    check_choice(base, "base", BASES)
    check_choice(curve, "curve", CURVES)
    steps = check_count(steps, "steps", maximum=v.MAX_STEPS)
    sigma = check_number(sigma, "sigma", lo=0.0)
    absolute = check_flag(absolute, "absolute")
    engine = as_engine(model, batch_size)
    x = check_images(images, engine)
    sal = pixel_saliency(attributions, (x.shape[0], *x.shape[2:]), absolute)
    return engine, x, sal, target, steps, sigma


def _scores(kinds, engine, x, sal, target, base, curve, steps, sigma):
    """{kind: (scores (N,), curves (N, steps + 1))} for kinds, all curves in one stream."""
    bases = ("black", "blur") if base == "both" else (base,)
    base_images = {b: _base(x, b, sigma) for b in bases}
    runs = [(k, base_images[b]) for k in kinds for b in bases]
    with engine.session():
        tgt, ys = stream_curves(engine, x, sal, target, runs, steps)
    out = {}
    for i, kind in enumerate(kinds):
        y = torch.stack(ys[i * len(bases):(i + 1) * len(bases)])  # (bases, N, S+1)
        if curve == "probability ratio":
            # the original image is the last insertion point and the first deletion point
            y = y / (y[..., -1:] if kind == "insertion" else y[..., :1]).clamp_min(1e-12)
        y = y.mean(0)
        out[kind] = (torch.trapezoid(y, dx=1.0 / steps, dim=1), y)
    return tgt, out


def insertion(model, images: torch.Tensor, attributions: torch.Tensor, target=None, *, targets=None,
              base: str = "black", curve: str = "probability", steps: int = 20, sigma: float = 20.0,
              absolute: bool = False, return_curves: bool = False, batch_size: int | None = None):
    """Insertion AUC per image (N,) (and curves (N, steps+1) if return_curves): images (N, C, H, W)
    in [0, 1], attributions (N, C, H, W) or (N, H, W); pixels of the input go onto the base
    most-salient first, 1/steps of the pixels per step; higher is better. target: None (argmax),
    an int or (N,) ints (`targets` is an alias)."""
    engine, x, sal, target, steps, sigma = _checked(model, images, attributions, target, targets, base, curve,
                                                    steps, sigma, absolute, batch_size)
    _, out = _scores(("insertion",), engine, x, sal, target, base, curve, steps, sigma)
    return out["insertion"] if return_curves else out["insertion"][0]


def deletion(model, images: torch.Tensor, attributions: torch.Tensor, target=None, *, targets=None,
             base: str = "black", curve: str = "probability", steps: int = 20, sigma: float = 20.0,
             absolute: bool = False, return_curves: bool = False, batch_size: int | None = None):
    """Deletion AUC per image (N,) (and curves (N, steps+1) if return_curves): pixels of the input
    are replaced by the base most-salient first, 1/steps of the pixels per step; lower is better."""
    engine, x, sal, target, steps, sigma = _checked(model, images, attributions, target, targets, base, curve,
                                                    steps, sigma, absolute, batch_size)
    _, out = _scores(("deletion",), engine, x, sal, target, base, curve, steps, sigma)
    return out["deletion"] if return_curves else out["deletion"][0]


def insertion_deletion(model, images: torch.Tensor, attributions: torch.Tensor, target=None, *,
                       targets=None, base: str = "black", curve: str = "probability", steps: int = 20,
                       sigma: float = 20.0, absolute: bool = False,
                       batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Both metrics in one stream of model calls (the points of both curves share full chunks):
    {'insertion', 'deletion': (N,) AUCs, 'insertion_curve', 'deletion_curve': (N, steps+1),
    'target': (N,)}; the same values as insertion() and deletion() called separately."""
    engine, x, sal, target, steps, sigma = _checked(model, images, attributions, target, targets, base, curve,
                                                    steps, sigma, absolute, batch_size)
    tgt, out = _scores(KINDS, engine, x, sal, target, base, curve, steps, sigma)
    return {"insertion": out["insertion"][0], "deletion": out["deletion"][0],
            "insertion_curve": out["insertion"][1], "deletion_curve": out["deletion"][1], "target": tgt}
