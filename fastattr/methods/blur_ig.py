"""Blur IG (PAIR `blur_ig.BlurIG`, SPEC.md "Blur IG"): IG along the path of ever stronger
Gaussian blurs, with PAIR's finite-difference or the exact d blur / d sigma, or IDGI."""
from __future__ import annotations

import math
import numbers

import torch

from fastattr.adaptive import AdaptivePath, check_schedule, point_dots
from fastattr.methods.base import MethodContext, MethodResult, register_method
from fastattr.ops.gaussian_blur import gaussian_blur
from fastattr.paths import IdgiSum, RiemannSum, walk_path

DERIVATIVES = ("finite", "exact")


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {value}")
    return float(value)


def blur_sigmas(max_sigma: float, steps: int, sqrt: bool) -> torch.Tensor:
    """sigma_i = i*max_sigma/steps (sqrt: its square root), i = 0..steps, float64 (steps+1,);
    the same float64 operations as PAIR's list comprehension."""
    s = torch.arange(steps + 1, dtype=torch.float64) * max_sigma / steps
    return s.sqrt() if sqrt else s


def finite_difference_blurs(x64: torch.Tensor, sigma: torch.Tensor, index: torch.Tensor,
                            grad_step: float, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """PAIR's step: blur(x, s) and (blur(x, s + h) - blur(x, s)) / h in `dtype`, for pairs
    (x64[index[p]], sigma[p]). x64 (N, C, H, W) float64 -> two (P, C, H, W) of `dtype`."""
    # PAIR subtracts float32 blurs that scipy computed in float64. Dividing by h = 0.01 amplifies
    # float32 accumulation error 100x (measured at 224 px: 3% of |d| at some pixels, 9% of the
    # map's max off PAIR), so blur in float64, round to float32, then subtract like PAIR.
    both = gaussian_blur(x64, torch.cat([sigma, sigma + grad_step]), torch.cat([index, index])).to(dtype)
    blurred, shifted = both[: len(index)], both[len(index):]
    return blurred, (shifted - blurred) / grad_step


@register_method("blur_ig", path=True, images=True, default_steps=100)
def blur_integrated_gradients(ctx: MethodContext, max_sigma=50.0, grad_step=0.01, sqrt=False,
                              derivative="finite", schedule="uniform", tol=None) -> MethodResult:
    """Blur IG map (N, C, H, W): -sum_i (sigma_{i+1}-sigma_i) * d blur(x, sigma_i)/d sigma * g(blur(x, sigma_i));
    with ctx.idgi, IDGI on the points blur(x, sigma_steps), ..., blur(x, sigma_1), x. A black
    image (every blur of it is black: a path of zero length) gets an exactly zero map.
    schedule="adaptive": the same budget of steps placed by fastattr.adaptive (tol: stop early)."""
    max_sigma = _positive_float(max_sigma, "max_sigma")
    grad_step = _positive_float(grad_step, "grad_step")
    if not isinstance(sqrt, bool):
        raise TypeError(f"sqrt: expected a bool, got {type(sqrt).__name__}")
    if derivative not in DERIVATIVES:
        raise ValueError(f"derivative: unknown value {derivative!r}; choose from {list(DERIVATIVES)}")
    steps = ctx.steps
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps: must be an integer >= 1, got {steps!r}")
    tol = check_schedule(schedule, tol, ctx.rule)
    x = ctx.inputs
    if schedule == "adaptive":
        return _adaptive_blur_ig(ctx, tol, max_sigma, grad_step, sqrt, derivative)
    sigmas = blur_sigmas(max_sigma, steps, sqrt)
    sig_dev = sigmas.to(x.device)
    extras = {"path_end_sigma": float(sigmas[-1]), "derivative": None if ctx.idgi else derivative}
    still = ~x.flatten(1).any(1)

    if ctx.idgi:
        # Path from the most blurred point to the input: p_j = blur(x, sigma_{steps-j}), p_steps = x.
        def point(i, k):
            return gaussian_blur(x, sig_dev[steps - k], i)

        acc = IdgiSum(x, steps, ctx.scores)
        walk_path(ctx, steps, point, acc, desc="IDGI-BlurIG")
        return MethodResult(acc.result(x).clone(), acc.start_scores, extras, still)

    # Points are made chunk by chunk; point() leaves the chunk's d blur / d sigma for consume().
    held: dict[str, torch.Tensor] = {}
    x64 = x.double() if derivative == "finite" else None

    def point(i, k):
        if derivative == "exact":
            blurred, held["d"] = gaussian_blur(x, sig_dev[k], i, derivative=True)
        else:
            blurred, held["d"] = finite_difference_blurs(x64, sig_dev[k], i, grad_step, x.dtype)
        return blurred

    acc = RiemannSum(x, sigmas[1:] - sigmas[:-1])

    def consume(i, k, y, g):
        acc(i, k, y, held.pop("d") * g)

    walk_path(ctx, steps, point, consume, desc="BlurIG")
    images = torch.arange(x.shape[0], device=x.device)
    baseline_scores = ctx.engine.value(gaussian_blur(x, sigmas[-1:]), ctx.targets, images=images)
    return MethodResult(-acc.result(x), baseline_scores, extras, still)


def _adaptive_blur_ig(ctx: MethodContext, tol, max_sigma: float, grad_step: float, sqrt: bool,
                      derivative: str) -> MethodResult:
    """Blur IG on fastattr.adaptive's points. Riemann: s = i / steps of the uniform grid, sigma(s) =
    s * max_sigma (sqrt: its square root), rows -d blur/d sigma * g, weights sigma differences.
    IDGI: s runs from the most blurred point (s = 0) to the input, sigma = sigma(1 - s), rows g."""
    x = ctx.inputs

    def sigma_of(s):  # numpy or torch float64, the same operations as blur_sigmas
        v = s * max_sigma
        return v ** 0.5 if sqrt else v

    extras = {"path_end_sigma": float(sigma_of(1.0)), "derivative": None if ctx.idgi else derivative}
    still = ~x.flatten(1).any(1)
    held: dict[str, torch.Tensor] = {}
    if ctx.idgi:
        def idgi_point(i, s):  # the exact d blur / d sigma too: the slope of the path's output
            blurred, held["d"] = gaussian_blur(x, sigma_of(1 - s), i, derivative=True)
            return blurred

        def slope(i, s, y, g):  # df/ds = g . d blur/d sigma * d sigma/ds, sigma = sigma(1 - s)
            sig = sigma_of(1 - s).to(torch.float64)
            dsig = (max_sigma / (2 * sig) if sqrt else torch.full_like(sig, max_sigma)).cpu()  # |d sigma/ds|
            dots = point_dots(held.pop("d"), g)
            return torch.stack([-dots[:, 0] * dsig, dots[:, 1] * dsig], 1)

        path = AdaptivePath(ctx, ctx.steps, tol, idgi_point, lambda i, s, y, g: g, None, "IDGI-BlurIG adaptive",
                            slope=slope)
        maps, start_scores, more = path.run()
        return MethodResult(maps, start_scores, dict(extras, **more), still)
    x64 = x.double() if derivative == "finite" else None

    def point(i, s):
        sig = sigma_of(s)
        if derivative == "exact":
            blurred, held["d"] = gaussian_blur(x, sig, i, derivative=True)
        else:
            blurred, held["d"] = finite_difference_blurs(x64, sig, i, grad_step, x.dtype)
        return blurred

    def row(i, s, y, g):
        return -(held.pop("d") * g)

    # s runs from the input (sigma 0) away from it: the rows integrate to f(s=0) - f(s=1)
    path = AdaptivePath(ctx, ctx.steps, tol, point, row, sigma_of, "BlurIG adaptive", direction=-1)
    maps, _, more = path.run()
    images = torch.arange(x.shape[0], device=x.device)
    baseline_scores = ctx.engine.value(gaussian_blur(x, [sigma_of(1.0)]), ctx.targets, images=images)
    return MethodResult(maps, baseline_scores, dict(extras, **more), still)
