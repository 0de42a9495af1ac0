"""Integrated Gradients on the straight path b + a (x - b), Riemann rules or IDGI (SPEC.md)."""
from __future__ import annotations

import functools

import numpy as np
import torch

from fastattr.adaptive import AdaptivePath, check_schedule, point_dots
from fastattr.host_checks import zero_on_host
from fastattr.methods.base import MethodContext, MethodResult, register_method
from fastattr.paths import IdgiSum, RiemannSum, from_path_start, walk_columns, walk_path

RULES = ("left", "right", "middle", "trapezoid", "pair", "gausslegendre")


def rule_points(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Path fractions a_k and weights w_k of a rule (SPEC.md table), float64 (steps,) each (new
    tensors: the caller may change them)."""
    a, w = _rule_points(rule, steps)
    return a.clone(), w.clone()


@functools.lru_cache(maxsize=64)
def _rule_points(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rule_points, computed once per (rule, steps): read-only (integrated_gradients reads them
    without a copy; each op of a call is microseconds on a tiny model)."""
    m = steps
    k = torch.arange(m, dtype=torch.float64)
    w = torch.full((m,), 1.0 / m, dtype=torch.float64)
    if rule == "left":
        return k / m, w
    if rule == "right":
        return (k + 1) / m, w
    if rule == "middle":
        return (k + 0.5) / m, w
    if rule == "pair":  # PAIR: np.linspace(0, 1, m), every point weight 1/m
        return torch.linspace(0, 1, m, dtype=torch.float64), w
    if rule == "trapezoid":
        if m < 2:
            raise ValueError("steps: rule='trapezoid' needs steps >= 2")
        w = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (m - 1)
        return k / (m - 1), w
    if rule == "gausslegendre":  # captum's default: the same float64 numpy operations as its
        # approximation_methods.gauss_legendre_builders, so nodes and weights agree to the bit
        nodes, weights = np.polynomial.legendre.leggauss(m)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * weights)
    raise ValueError(f"rule: unknown rule {rule!r}; choose from {RULES}")


def rows(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Rows i of t (N, ...) in t's memory format: a channels-last t gathers as (N, H, W, C) rows
    (a plain row copy; index_select would transpose to NCHW, and t[i] is as slow)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).index_select(0, i).permute(0, 3, 1, 2)
    return t.index_select(0, i)


# Columns of at most this many steps are kept between calls (_path_columns; 12 bytes per step).
CACHED_COLUMN_STEPS = 1 << 16


def _path_columns(rule: str, steps: int, idgi: bool, dtype: torch.dtype, device: torch.device,
                  dim: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The gradient points' fractions as a column (m, 1, ...) of rank dim in `dtype`, their weights
    (m,) float64, both on device, and a_0 (a float), per rule and step count: read-only, and for
    up to CACHED_COLUMN_STEPS steps built once (the cast, the view and the host read of a_0 were 4
    ops per call). IDGI drops a rule's point at a = 1 (the input itself: the call's score)."""
    if steps <= CACHED_COLUMN_STEPS:
        return _cached_columns(rule, steps, idgi, dtype, device, dim)
    return _columns(rule, steps, idgi, dtype, device, dim)


@functools.lru_cache(maxsize=64)
def _cached_columns(rule, steps, idgi, dtype, device, dim):
    return _columns(rule, steps, idgi, dtype, device, dim)


def _columns(rule, steps, idgi, dtype, device, dim):
    alphas, weights = _rule_points(rule, steps)
    a0 = float(alphas[0])
    if idgi:
        keep = alphas < 1.0
        alphas, weights = alphas[keep], weights[keep]
    with torch.inference_mode(False):  # normal tensors: usable inside and outside inference mode
        column = alphas.to(device, dtype).view((-1,) + (1,) * (dim - 1))
        return column, weights.to(device), a0


def straight_point(ctx: MethodContext, x: torch.Tensor, b: torch.Tensor | None, column: torch.Tensor,
                   float64: bool = False):
    """point(i, k) = b_i + a_k (x_i - b_i) in x's dtype (B, ...), in x's and b's memory format
    (Engine.in_model_format), for walk_path(ctx, len(column), point, ...). b None: a zero baseline,
    points a_k x_i (the same values: x - 0 and 0 + y are exact; only a zero's sign may differ, which
    no sum or ReLU mask sees), one op per chunk and no copy of b. column (m, 1, ...): the a_k
    (float64 when float64=True), read per chunk in walk order (paths.walk_columns: views for one
    image). float64=False: captum's arithmetic in the points' dtype (float32, float64 for a
    float64 model); True: PAIR's numpy arithmetic (float64, rounded once to the points' dtype)."""
    diff = x if b is None else x - b
    m = column.shape[0]
    if float64:
        # Models with ReLU6/hard-swish kinks can change a gradient by percents when a point moves
        # by one float32 ulp, so rule="pair" reproduces PAIR's rounding, not just its formula.
        cols64 = walk_columns(ctx, m, column)  # float64 fractions (the caller's column)
        d64 = diff.double()
        if b is None:
            return lambda i, k: (next(cols64) * rows(d64, i)).to(x.dtype)
        b64 = b.double()

        def point64(i, k):
            return (rows(b64, i) + next(cols64) * rows(d64, i)).to(x.dtype)

        return point64
    cols = walk_columns(ctx, m, column)
    if x.shape[0] == 1:  # one image: broadcast instead of gathering rows (per-chunk overhead)
        if b is None:  # x first: the product takes x's memory format
            return lambda i, k: torch.mul(x, next(cols))
        return lambda i, k: torch.addcmul(b, next(cols), diff)
    if b is None:
        return lambda i, k: torch.mul(rows(x, i), next(cols))

    def point(i, k):
        return torch.addcmul(rows(b, i), next(cols), rows(diff, i))

    return point


@register_method("ig", path=True, rules=True, baseline=True, default_steps=32)
def integrated_gradients(ctx: MethodContext, schedule="uniform", tol=None) -> MethodResult:
    """IG map (N, ...): (x - b) * sum_k w_k g(b + a_k (x - b)); with ctx.idgi the IDGI sum.
    schedule="adaptive": the same budget of steps placed by fastattr.adaptive (tol: stop early)."""
    x, b = ctx.inputs, ctx.baseline
    tol = check_schedule(schedule, tol, ctx.rule)
    if schedule == "adaptive":
        return _adaptive_ig(ctx, tol)
    engine = ctx.engine
    pair = ctx.rule == "pair"
    column, weights, a0 = _path_columns(ctx.rule, ctx.steps, ctx.idgi, torch.float64 if pair else x.dtype,
                                        x.device, x.dim())
    m = column.shape[0]
    # points built in the model's memory format: no copy at the model call (bench_overhead.py)
    zero = zero_on_host(b)  # one host loop: the default baseline's points need no b
    xm, bm = engine.in_model_format(x), None if zero else engine.in_model_format(b)
    if ctx.idgi:
        # IDGI needs gradients on p_0..p_{m-1} and outputs on p_0..p_m with p_m = x; a rule's
        # point at a = 1 is the input itself, whose output (ctx.scores) needs no backward.
        if m == 0:
            return MethodResult(torch.zeros_like(x), ctx.scores.clone(), {})
        acc = IdgiSum(x, m, ctx.scores, channels_last=xm is not x)
        consume = acc
        if a0 > 0.0:  # the segment [b, p_0] goes with the first span: f_c(b), one forward
            images = torch.arange(x.shape[0], device=x.device)
            consume = from_path_start(acc, engine.value(b, ctx.targets, images=images))
        walk_path(ctx, m, straight_point(ctx, xm, bm, column, float64=pair), consume, desc="IDGI-IG")
        attributions = acc.result(x).clone(memory_format=torch.contiguous_format)
    else:
        acc = RiemannSum(x, weights, channels_last=xm is not x, columns=walk_columns(ctx, m, weights))
        walk_path(ctx, m, straight_point(ctx, xm, bm, column, float64=pair), acc, desc="IG")
        attributions = ((x if zero else x - b) * acc.result(x)).contiguous()
    if ctx.idgi or a0 == 0.0:  # f_c at the path start p_0 was evaluated already
        baseline_scores = acc.start_scores
    else:
        baseline_scores = engine.value(b, ctx.targets, images=torch.arange(x.shape[0], device=x.device))
    return MethodResult(attributions, baseline_scores, {"path_start": a0})


def _adaptive_ig(ctx: MethodContext, tol: float | None) -> MethodResult:
    """IG / IDGI-IG on fastattr.adaptive's points: rows (x - b) * g (left rule in a) or g (IDGI)."""
    x, b = ctx.inputs, ctx.baseline
    diff = x - b
    col = (-1,) + (1,) * (x.dim() - 1)

    def point(i, s):
        return torch.addcmul(b.index_select(0, i), s.to(x.dtype).view(col), diff.index_select(0, i))

    def row(i, s, y, g):
        return g if ctx.idgi else diff.index_select(0, i) * g

    def slope(i, s, y, g):  # IDGI: df/da = g . (x - b), for the completeness indicator
        return point_dots(g, diff.index_select(0, i))

    path = AdaptivePath(ctx, ctx.steps, tol, point, row, None if ctx.idgi else (lambda s: s),
                        "IDGI-IG adaptive" if ctx.idgi else "IG adaptive", slope=slope if ctx.idgi else None)
    attributions, start_scores, extras = path.run()
    return MethodResult(attributions, start_scores, dict(extras, path_start=0.0))


@register_method("vanilla", path=False)
def vanilla_gradient(ctx: MethodContext) -> MethodResult:
    """Vanilla gradient map (N, ...): g(x), signed. baseline_scores: f_c at zeros (for delta)."""
    x = ctx.inputs
    grads = torch.empty_like(x)

    def keep(i, k, y, g):
        grads[i] = g

    walk_path(ctx, 1, lambda i, k: x[i], keep, desc="gradient")
    images = torch.arange(x.shape[0], device=x.device)
    return MethodResult(grads, ctx.engine.value(ctx.baseline, ctx.targets, images=images), {})
