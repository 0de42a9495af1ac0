"""Expected gradients (SPEC.md "Expected gradients / GradientShap"; captum's GradientShap): per image,
n samples, each a reference drawn from a distribution, optional Gaussian noise on the input and a
random point of the straight path between them:

    x_s = x + stdev * eps_s,  p_s = a_s x_s + (1 - a_s) r_s,  A = mean_s (x_s - r_s) * g(p_s)

Random draws (the order a sample-by-sample oracle must follow to reproduce a map), from `generator`
on the CPU, N images of shape (N, *S), M references:

    idx   = torch.randint(0, M, (N, n), generator=g)                      # the references r_s
    a     = torch.rand((N, n), generator=g, dtype=torch.float64)          # the path fractions a_s
    then for image i = 0..N-1 in order, when its samples enter the walk, if stdev > 0:
    eps_i = torch.randn((n, *S), generator=g, dtype=torch.float32)        # the noise (cast to the points' dtype)

and sample s of image i is p = a[i, s] * x_s + (1 - a[i, s]) * r_{idx[i, s]} in the points' dtype
(a rounded to it). Nothing else is random, so the map does not depend on batch_size or the device
(up to float rounding). The N * n points go through the engine's chunks image-major; only the noise of
the images in the current chunk is live (n x image size), the references are gathered per chunk.
"""
from __future__ import annotations

import numbers

import torch

from fastattr import model_io
from fastattr import validation as v
from fastattr.engine import select_output
from fastattr.methods.base import MethodContext, MethodResult, register_method
from fastattr.ops.path_accumulate import path_accumulate_
from fastattr.paths import walk_path


def check_options(n, references, stdev, generator, x: torch.Tensor) -> tuple[int, torch.Tensor, float]:
    """Expected gradients' options against inputs x (N, ...); errors name the parameter. -> (n, the
    references (M, ...) on x's device in its dtype, stdev)."""
    n = v.check_positive_int(n, "n", allow_none=False)
    if isinstance(stdev, bool) or not isinstance(stdev, numbers.Real):
        raise TypeError(f"stdev: expected a number, got {type(stdev).__name__}")
    if not (float(stdev) >= 0 and float(stdev) < float("inf")):
        raise ValueError(f"stdev: must be finite and >= 0 (the input noise), got {stdev}")
    v.check_generator(generator)
    if references is None:
        refs = torch.zeros((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
    else:
        if not isinstance(references, torch.Tensor) or references.is_complex() or references.dtype == torch.bool:
            raise TypeError("references: expected None (one reference: zeros) or a real tensor (M, ...) of "
                            f"references, got {type(references).__name__ if not isinstance(references, torch.Tensor) else references.dtype}")
        if references.dim() == 1 and tuple(x.shape[1:]) == (1,):  # rank-1 inputs (walked as (N, 1)): M scalars
            references = references[:, None]
        if references.dim() != x.dim() or tuple(references.shape[1:]) != tuple(x.shape[1:]) or references.shape[0] < 1:
            raise ValueError(f"references: expected a tensor (M, {', '.join(map(str, x.shape[1:]))}) of M >= 1 references "
                             f"for inputs of shape {tuple(x.shape)}, got shape {tuple(references.shape)}")
        refs = references.detach().to(x.device, x.dtype)
        if not torch.isfinite(refs).all():
            raise ValueError("references: contains NaN or inf (in the points' dtype)")
    return int(n), refs.contiguous(), float(stdev)


@register_method("expected_gradients", path=False)
def expected_gradients(ctx: MethodContext, *, n: int = 50, references: torch.Tensor | None = None,
                       stdev: float = 0.0, generator: torch.Generator | None = None) -> MethodResult:
    """Expected-gradients map (N, ...): mean over n samples of (x_s - r_s) * g(p_s). references (M, ...):
    the distribution the references are drawn from (None: zeros, one reference); stdev: Gaussian noise
    on the input (captum's stdevs); generator seeds the draws. baseline_scores: the mean of f_c over the
    references, so delta is the Monte-Carlo estimate's completeness gap."""
    x = ctx.inputs
    if ctx.steps is not None:
        raise ValueError("steps: method 'expected_gradients' has no path steps; use n= (samples per image)")
    n, refs, stdev = check_options(n, references, stdev, generator, x)
    num, shape = x.shape[0], tuple(x.shape[1:])
    engine = ctx.engine
    idx = torch.randint(0, refs.shape[0], (num, n), generator=generator).to(x.device)
    fractions = torch.rand((num, n), generator=generator, dtype=torch.float64).to(x.device, x.dtype)
    col = (-1,) + (1,) * len(shape)
    noise: dict[int, torch.Tensor] = {}  # image -> (n, *shape) noise, for the images of the current chunk
    drawn = [0]  # images whose noise has been drawn (in order)

    def noisy(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """x_s for the chunk's points (image i, sample k)."""
        xs = x.index_select(0, i)
        if stdev == 0:
            return xs
        first, last = int(i[0]), int(i[-1])
        while drawn[0] <= last:
            noise[drawn[0]] = torch.randn((n, *shape), generator=generator, dtype=torch.float32).to(x.device, x.dtype)
            drawn[0] += 1
        for old in [j for j in noise if j < first]:
            del noise[old]
        eps = torch.stack([noise[img][s] for img, s in zip(i.tolist(), k.tolist())])
        return xs + stdev * eps

    chunk = {}

    def point(i, k):
        xs = noisy(i, k)
        r = refs.index_select(0, idx[i, k])
        a = fractions[i, k].view(col)
        chunk.update(diff=xs - r)
        return a * xs + (1 - a) * r

    acc = torch.zeros(num, x[0].numel(), dtype=x.dtype, device=x.device)
    coef = torch.full((1,), 1.0 / n, dtype=torch.float64, device=x.device)

    def consume(i, k, y, g):
        rows = (chunk["diff"] * g).reshape(g.shape[0], -1)
        path_accumulate_(acc, rows, coef.expand(g.shape[0]), i, False)

    walk_path(ctx, n, point, consume, desc="expected gradients")
    # E_r f_c(r) per image: the references' logits once, each image's target picked from all of them
    logits = engine.logits(refs)
    m = refs.shape[0]
    ref_scores = select_output(logits.repeat(num, 1), ctx.targets.repeat_interleave(m), engine.output).view(num, m)
    model_io.check_scores_finite(ref_scores.mean(1), "at a reference")  # names the image whose target it was
    return MethodResult(acc.view_as(x), ref_scores.mean(1),
                        {"samples": n, "references": m, "stdev": stdev})
