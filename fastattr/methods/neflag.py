"""NeFLAG (Negative Flux Aggregation, paper Algorithm 1; SPEC.md "NeFLAG"): per image, n samples
start on the eps-sphere around x and follow the sign iteration until f_c drops below f_c(x).

Random draws (the order a sample-by-sample oracle must follow to reproduce a map): images are
visited in order 0..N-1, and when image i's samples enter the batch its n start directions are
drawn at once from `generator` on the CPU, shape (n, *x.shape[1:]) (written (n, C, H, W) below),
float32 (then cast to the points' dtype, so a float64 model sees the same draws):
  norm="linf":  s = 2 * torch.randint(0, 2, (n, C, H, W), generator=g, dtype=torch.float32) - 1
  norm="l2"  :  u = torch.randn((n, C, H, W), generator=g);  s = u / |u|_2 (per sample)
and sample j of image i starts at x_i + eps * s[j]. Nothing else is random, so the map does not
depend on batch_size or device (up to float rounding), and only n*D floats of one image's starts
are live at a time (not N*n*D).

Samples of all images share engine chunks: a pool of active samples is topped up image by image,
each chunk takes up to batch_size of them, and finished samples leave the pool (compaction), so a
sample costs exactly as many gradient evaluations as it needs (1..m).
"""
from __future__ import annotations

import contextlib
import numbers

import torch

from fastattr import validation as v
from fastattr.methods.base import MethodContext, MethodResult, register_method
from fastattr.ops.neflag_step import neflag_step_

NORMS = ("linf", "l2")


def check_options(eps, n, m, norm, generator) -> tuple[float, int, int, str]:
    """Validate NeFLAG's options; errors name the parameter."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps: expected a number, got {type(eps).__name__}")
    if not (float(eps) > 0 and float(eps) < float("inf")):
        raise ValueError(f"eps: must be a finite number > 0 (the sphere radius), got {eps}")
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")
    if norm not in NORMS:
        raise ValueError(f"norm: unknown value {norm!r}; choose from {list(NORMS)}")
    v.check_generator(generator)
    return float(eps), int(n), int(m), norm


def sphere_starts(n: int, shape: tuple[int, ...], norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """n unit directions of the norm's sphere, drawn on the CPU in the documented order -> (n, *shape)."""
    if norm == "linf":
        return 2 * torch.randint(0, 2, (n, *shape), generator=generator, dtype=torch.float32) - 1
    u = torch.randn((n, *shape), generator=generator, dtype=torch.float32)
    return u / u.flatten(1).norm(dim=1).view(n, *([1] * len(shape)))


@contextlib.contextmanager
def _sample_bar(ctx: MethodContext, total: int):
    """A tqdm bar over finished samples when ctx.progress is set (gradient evaluations per sample
    vary, so samples, not evaluations, have a known total)."""
    if not ctx.progress:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="NeFLAG", unit="sample", leave=False)
    try:
        yield bar
    finally:
        bar.close()


@register_method("neflag", path=False)
def neflag(ctx: MethodContext, *, eps: float = 0.1, n: int = 20, m: int = 20, norm: str = "linf",
           generator: torch.Generator | None = None) -> MethodResult:
    """NeFLAG map (N, ...): sum over n samples of F(x~) * (x - x~) at the negative-flux point
    (or after m evaluations). baseline is unused; baseline_scores = f_c(x), so delta = sum(map)."""
    eps, n, m, norm = check_options(eps, n, m, norm, generator)
    if ctx.steps is not None:
        raise ValueError("steps: method 'neflag' has no path steps; use m= (max gradient evaluations "
                         "per sample) and n= (samples per image)")
    x = ctx.inputs
    engine = ctx.engine
    num, shape = x.shape[0], tuple(x.shape[1:])
    dim = x[0].numel()
    xf = x.reshape(num, dim)
    acc = torch.zeros(num, dim, dtype=x.dtype, device=x.device)
    negative = torch.zeros(num, dtype=torch.long, device=x.device)
    evals = torch.zeros(num, dtype=torch.long, device=x.device)

    # The pool of active samples: points (P, D), their image and evaluations so far.
    points = x.new_empty(0, dim)
    image = torch.empty(0, dtype=torch.long, device=x.device)
    used = torch.empty(0, dtype=torch.long, device=x.device)
    next_image = 0
    batch = engine.batch_size
    with _sample_bar(ctx, num * n) as bar, engine.session():
        while True:
            # Top up so the next chunk is full; drawing whole images keeps the draw order fixed.
            while points.shape[0] < batch and next_image < num:
                s = sphere_starts(n, shape, norm, generator).to(x.device, x.dtype).reshape(n, dim)
                points = torch.cat([points, torch.add(xf[next_image], s, alpha=eps)])
                image = torch.cat([image, torch.full((n,), next_image, dtype=torch.long, device=x.device)])
                used = torch.cat([used, torch.zeros(n, dtype=torch.long, device=x.device)])
                next_image += 1
            if points.shape[0] == 0:
                break
            b = min(batch, points.shape[0])
            chunk, idx = points[:b], image[:b]  # a contiguous view: the op moves the points in place
            y, g = engine.value_and_grad(chunk.view(b, *shape), ctx.targets[idx], images=idx)
            used[:b] += 1
            last = used[:b] >= m
            neg = y < ctx.scores[idx]  # the op decides the same way; kept here only for the report
            done = neflag_step_(acc, chunk, xf, g.reshape(b, dim), y, ctx.scores, idx, last, eps,
                                norm == "l2")
            negative.index_add_(0, idx, neg.long())
            evals.index_add_(0, idx[done], used[:b][done])
            keep = torch.cat([~done, torch.ones(points.shape[0] - b, dtype=torch.bool, device=x.device)])
            points, image, used = points[keep], image[keep], used[keep]
            if bar is not None:
                bar.update(int(done.sum()))
    extras = {
        "negative_flux": negative.cpu(),  # (N,) samples per image that reached negative flux
        "samples": n,
        "mean_grad_evals": float(evals.sum()) / (num * n),  # per sample, 1..m
        "grad_evals_per_image": evals.cpu(),  # (N,)
        "norm": norm,
        "eps": eps,
    }
    return MethodResult(acc.view_as(x), ctx.scores.clone(), extras)
