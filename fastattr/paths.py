"""Packing of (images x path points) into engine chunks, and the two integrators (Riemann, IDGI)
that turn per-point gradients into maps. Memory is bounded by the chunk, not by the steps."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from fastattr.methods.base import MethodContext
from fastattr.ops.path_accumulate import path_accumulate_

PointFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (img idx (B,), step idx (B,)) -> (B,C,H,W)
ConsumeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


@contextlib.contextmanager
def progress_bar(ctx: MethodContext, total: int, desc: str):
    """A tqdm bar on ctx.engine for `total` gradient evaluations when ctx.progress is set."""
    if not ctx.progress:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="grad", leave=False)
    old, ctx.engine.progress = ctx.engine.progress, bar
    try:
        yield
    finally:
        ctx.engine.progress = old
        bar.close()


def walk_path(ctx: MethodContext, steps: int, point: PointFn, consume: ConsumeFn, desc: str = "path") -> None:
    """Evaluate `steps` points per image, packed image-major into chunks of the engine's batch
    size: point(i, k) builds a chunk's points, consume(i, k, y, g) receives f_c and gradients."""
    n = ctx.inputs.shape[0]
    # Indices and targets of every point, built once: per chunk they are views (fewer small ops
    # per chunk matter for cheap models). 3 int64 per point: 24 MB for a million points.
    idx = torch.arange(n * steps, device=ctx.inputs.device)
    i_all, k_all = idx // steps, idx % steps
    t_all = ctx.targets.index_select(0, i_all)
    with progress_bar(ctx, n * steps, desc), ctx.engine.session():
        for start, stop in ctx.engine.chunks(n * steps):
            i, k = i_all[start:stop], k_all[start:stop]
            y, g = ctx.engine.value_and_grad(point(i, k), t_all[start:stop])
            consume(i, k, y, g)


class RiemannSum:
    """acc[i] += w[k] * g  for every evaluated point (i, k). w (steps,) per-step weights."""

    def __init__(self, like: torch.Tensor, weights: torch.Tensor):
        self.acc = torch.zeros(like.shape[0], like[0].numel(), dtype=torch.float32, device=like.device)
        self.weights = weights.to(like.device, torch.float64)
        self.start_scores = torch.full((like.shape[0],), float("nan"), device=like.device)

    def __call__(self, i, k, y, g) -> None:
        path_accumulate_(self.acc, g.reshape(g.shape[0], -1), self.weights[k], i, False)
        first = k == 0
        if first.any():
            self.start_scores[i[first]] = y[first]

    def result(self, like: torch.Tensor) -> torch.Tensor:
        return self.acc.view_as(like)


class IdgiSum:
    """IDGI on a path p_0..p_m per image: acc[i] += g_k**2 (y_{k+1} - y_k) / sum(g_k**2).

    Gradients are taken at p_0..p_{m-1}; y_m = end_scores[i] (f_c at the input end, from a
    forward pass). Points arrive image-major in chunks, so at most one point per chunk boundary
    waits for its successor's output (`pending`)."""

    def __init__(self, like: torch.Tensor, steps: int, end_scores: torch.Tensor):
        n = like.shape[0]
        self.steps = steps
        self.acc = torch.zeros(n, like[0].numel(), dtype=torch.float32, device=like.device)
        self.end_scores = end_scores.float()
        self.start_scores = torch.full((n,), float("nan"), device=like.device)
        self.pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (i, y, g) of 1 point

    def __call__(self, i, k, y, g) -> None:
        g = g.reshape(g.shape[0], -1)
        first = k == 0
        if first.any():
            self.start_scores[i[first]] = y[first]
        if self.pending is not None:  # its successor is this chunk's first point
            pi, py, pg = self.pending
            path_accumulate_(self.acc, pg, y[:1] - py, pi, True)
            self.pending = None
        last = k == self.steps - 1
        next_y = torch.empty_like(y)
        next_y[last] = self.end_scores[i[last]]
        next_y[:-1] = torch.where(last[:-1], next_y[:-1], y[1:])
        if not last[-1]:  # successor is in the next chunk
            self.pending = (i[-1:], y[-1:], g[-1:].clone())
            i, y, g, next_y = i[:-1], y[:-1], g[:-1], next_y[:-1]
        path_accumulate_(self.acc, g, next_y - y, i, True)

    def result(self, like: torch.Tensor) -> torch.Tensor:
        assert self.pending is None, "IDGI path ended with a point waiting for its successor"
        return self.acc.view_as(like)
