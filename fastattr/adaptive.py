"""Adaptive path sampling (schedule="adaptive"; reasoning and measurements in docs/adaptive.md).

A path method integrates along a parameter s in [0, 1] (s = 0 the path start, s = 1 the input).
The uniform schedule evaluates the left rule's grid s_k = k / steps. The adaptive one spends the
same budget of gradient evaluations per image in rounds:

1. a uniform grid with ROUND_SHARE (1/8) of the budget: the trapezoid rule's s_k = k / (n - 1)
   for Riemann sums (IG, Blur IG), the left rule's s_k = k / n for IDGI (gradients before the
   input only);
2. each later round bisects, per image, the MIN_ROUND (4) intervals [s_j, s_{j+1}] with the
   largest error indicator (more when few images refine, to fill an engine chunk), one new point
   per interval; all images that still refine go through one batched walk per round.

Error indicator of an interval: how much its contribution to the map changes between its two
ends, i.e. the left rule's and the right rule's answer on it (the classic adaptive-quadrature
indicator, in map units, L2 over features):

    Riemann (IG, Blur IG):  w_j * || v_{j+1} - v_j ||      v = the point's map row, w_j = the
                                                          interval's width in the integration variable
    IDGI:                   |y_{j+1} - y_j| * || d_{j+1} - d_j ||     d = g**2 / sum(g**2)

The Riemann sums integrate with the trapezoid rule on the final grid: the uniform left rule's
error is first order in the step even where the integrand is smooth, which no placement of
points removes (measured: adaptive left sums were no better than uniform ones on a smooth model).
IDGI's last interval ends at the input, where it takes no gradient: it borrows the difference of
its left neighbour. An interval whose ends agree needs no point: a model linear along the path
stops after round 1.

Per image, extras["error_estimate"] is the root sum of squares of the indicators of its final
intervals relative to the map's L2 norm (an estimate of the relative L2 error, on the safe side:
its calibration against long runs is in docs/adaptive.md). With tol= an image stops refining once its estimate is at most tol
(computed after every round only then: it needs the map), and the evaluations it did not need
are not spent.

Maps: Riemann rows sum with the trapezoid weights of the final (non-uniform) grid; IDGI uses
IdgiSum's rule (paths.IdgiSum) on the sorted points, so it stays exactly complete. With a budget
the first round already spends, the answer is the uniform schedule's (rule="trapezoid" for
Riemann sums).

Memory: every evaluated point's row is kept until the end (it is needed when a neighbour
arrives), budget x D floats per image; images are processed in groups of at most GROUP_BYTES.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from fastattr.methods.base import MethodContext
from fastattr.ops.path_accumulate import path_accumulate_
from fastattr.paths import progress_bar, walk_points

SCHEDULES = ("uniform", "adaptive")
# Share of the budget in the first (uniform) round, and the points per image of later rounds:
# measured on EfficientNet-Lite0, 4 images, 32 evaluations, median error to a 301-step map:
# IG 0.073 / 0.072 / 0.066 and IDGI-IG 0.116 (all three) for shares 1/2, 1/4, 1/8 with rounds
# halving the rest; rounds of 4 points instead: IG 0.064, IDGI 0.109 (1/8), rounds of 8: IG
# 0.074, IDGI 0.146 (1/4) (uniform: IG 0.086, IDGI 0.253). docs/adaptive.md.
ROUND_SHARE = 0.125
MIN_ROUND = 4
GROUP_BYTES = 1 << 29  # stored rows per group of images (512 MB)


def check_schedule(schedule, tol, rule: str) -> float | None:
    """schedule=, tol= of a path method; returns tol as a float (None: no early stop)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: unknown value {schedule!r}; choose from {list(SCHEDULES)}")
    if tol is not None:
        if schedule != "adaptive":
            raise ValueError("tol: applies to schedule='adaptive' (an image stops refining when its error "
                             "estimate is below tol)")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol: must be a finite number >= 0, got {tol!r}")
        tol = float(tol)
    if schedule == "adaptive" and rule not in ("left", "trapezoid"):
        raise ValueError(f"schedule: 'adaptive' places its own points (trapezoid sums on a refined grid; "
                         f"IDGI on the left rule's grid); rule= must be the default or 'trapezoid', got {rule!r}")
    return tol


def round_size(left: int, refining: int, batch_size: int, intervals: int) -> int:
    """New points per image in the next round, with `left` evaluations of its budget unspent,
    `refining` images refining and `intervals` intervals on its path: MIN_ROUND, up to twice that
    to fill an engine chunk when few images refine (one image at batch 8: 8; a partly filled
    chunk costs more per point, 65 vs 54 ms per point at 4 vs 8 on EfficientNet-Lite0 here), and
    never more than half the intervals beyond MIN_ROUND (splitting them all is the uniform grid)."""
    fill = min(2 * MIN_ROUND, math.ceil(batch_size / max(1, refining)))
    return min(left, max(MIN_ROUND, fill), max(MIN_ROUND, intervals // 2))


def idgi_coefficients(y: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
    """IDGI span coefficients (paths.IdgiSum's rule) of one image's sorted path: y (n + 1,) f_c at
    p_0..p_n (p_n the input), nonzero (n,) whether g_k is not all zero -> coef (n,) with
    A = sum_k g_k**2 * coef_k / sum(g_k**2)."""
    n = nonzero.shape[0]
    coef = np.zeros(n)
    j = np.flatnonzero(nonzero)
    if len(j) == 0:
        return coef
    bounds = np.concatenate([[0], (j[:-1] + j[1:]) // 2 + 1, [n]])
    coef[j] = y[bounds[1:]] - y[bounds[:-1]]
    return coef


class _Image:
    """One image's evaluated points: slots into the group's row store, sorted by s."""

    def __init__(self):
        self.s: list[float] = []  # sorted positions
        self.slot: list[int] = []  # row of each position in the store
        self.used = 0  # rows used
        self.done = False
        self.estimate = math.nan


class AdaptivePath:
    """The adaptive schedule for one method call. point(i, s) -> points (B, ...) for image indices
    i (B,) and positions s (B,) float64; row(i, s, y, g) -> the (B, D) row to keep per point (the
    Riemann map row, or g for IDGI). weight(s): the Riemann integration variable at s, vectorised
    over numpy arrays (trapezoid sums of the rows); None: IDGI on the points, ending at the input."""

    def __init__(self, ctx: MethodContext, budget: int, tol: float | None,
                 point: Callable, row: Callable, weight: Callable | None, desc: str):
        self.idgi = weight is None
        if not self.idgi and budget < 2:
            raise ValueError(f"steps: schedule='adaptive' integrates with the trapezoid rule, which needs "
                             f"steps >= 2, got {budget}")
        self.ctx, self.budget, self.tol = ctx, budget, tol
        self.point, self.row, self.weight, self.desc = point, row, weight, desc

    def run(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """-> (map (N, ...) in the inputs' dtype, f_c at s = 0 (N,), extras)."""
        x = self.ctx.inputs
        n, d = x.shape[0], x[0].numel()
        per_group = max(1, GROUP_BYTES // (self.budget * d * x.element_size()))
        out = torch.zeros(n, d, dtype=x.dtype, device=x.device)
        start_scores = torch.empty(n, dtype=x.dtype, device=x.device)
        estimate = torch.full((n,), math.nan, dtype=torch.float64)
        evals = torch.zeros(n, dtype=torch.long)
        rounds = 0
        with progress_bar(self.ctx, n * self.budget, self.desc), self.ctx.engine.session():
            for g0 in range(0, n, per_group):
                g1 = min(g0 + per_group, n)
                r = self._group(g0, g1, out, start_scores, estimate, evals)
                rounds = max(rounds, r)
        extras = {"schedule": "adaptive", "error_estimate": estimate, "grad_evals_per_image": evals,
                  "rounds": rounds}
        return out.view_as(x), start_scores, extras

    # -- one group of images ----------------------------------------------------------------
    def _group(self, g0: int, g1: int, out, start_scores, estimate, evals) -> int:
        x, dev = self.ctx.inputs, self.ctx.inputs.device
        count, d = g1 - g0, x[0].numel()
        # zeros: slots not (yet) evaluated take part in _maps' accumulation with coefficient 0
        self.rows = torch.zeros(count * self.budget, d, dtype=x.dtype, device=dev)
        self.diffs: dict[tuple[int, int], float] = {}  # _diff per pair of slots (an interval's ends)
        self.y = np.zeros(count * self.budget)
        self.norms2 = np.zeros(count * self.budget)  # sum(row**2) (IDGI: normalises d)
        self.finite = np.ones(count * self.budget, dtype=bool)
        self.end = self.ctx.scores[g0:g1].double().cpu().numpy()  # f_c at the inputs (s = 1)
        images = [_Image() for _ in range(count)]
        first = max(1 if self.idgi else 2, math.ceil(self.budget * ROUND_SHARE))
        grid = [k / first for k in range(first)] if self.idgi else [k / (first - 1) for k in range(first)]
        new = {j: list(grid) for j in range(count)}
        rounds, maps = 0, None
        while new:
            self._evaluate(g0, images, new)
            rounds += 1
            maps = None
            if self.tol is not None:  # the estimate needs the map's norm: only when tol asks for it
                maps = self._estimate(images, list(new))
                for j in new:
                    images[j].done = images[j].estimate <= self.tol
            new = {}
            refining = [j for j, im in enumerate(images) if not im.done and im.used < self.budget]
            for j in refining:
                im = images[j]
                intervals = len(im.s) if self.idgi else len(im.s) - 1
                ss = self._split(im, j, round_size(self.budget - im.used, len(refining),
                                                   self.ctx.engine.batch_size, intervals))
                if ss:
                    new[j] = ss
                else:  # every interval's ends agree: nothing left to refine
                    im.done = True
        if maps is None:  # (with tol, the last round's maps and estimates are already the final ones)
            maps = self._estimate(images, range(count))
        for j, im in enumerate(images):
            estimate[g0 + j] = im.estimate
            evals[g0 + j] = im.used
        out[g0:g1] = maps
        at_zero = [im.slot[0] for im in images]  # s = 0 is always evaluated (round 1's grid)
        start_scores[g0:g1] = torch.as_tensor(self.y[at_zero], dtype=x.dtype)
        del self.rows, self.diffs
        return rounds

    def _evaluate(self, g0: int, images: list[_Image], new: dict[int, list[float]]) -> None:
        """One batched walk over the new points of every refining image; rows stored in slots."""
        dev = self.ctx.inputs.device
        img, pos, slot = [], [], []
        for j, ss in new.items():
            im = images[j]
            for s in ss:
                img.append(g0 + j)
                pos.append(s)
                slot.append(j * self.budget + im.used)
                k = int(np.searchsorted(im.s, s))
                im.s.insert(k, s)
                im.slot.insert(k, slot[-1])
                im.used += 1
        i_all = torch.tensor(img, dtype=torch.long, device=dev)
        s_all = torch.tensor(pos, dtype=torch.float64, device=dev)
        slots = torch.tensor(slot, dtype=torch.long)

        def point(i, k):
            return self.point(i, s_all[k])

        def consume(i, k, y, g):
            rows = self.row(i, s_all[k], y, g).reshape(len(k), -1)
            sl = slots[k.cpu()]
            self.rows[sl.to(dev)] = rows
            at = sl.numpy()
            self.y[at] = y.double().cpu().numpy()
            self.norms2[at] = rows.double().square().sum(1).cpu().numpy() if self.idgi else 0.0
            self.finite[at] = torch.isfinite(rows.abs().amax(1)).cpu().numpy()

        walk_points(self.ctx, i_all, torch.arange(len(img), device=dev), point, consume)

    # -- indicators and maps ----------------------------------------------------------------
    def _diff(self, a: int, b: int) -> float:
        """|| contribution direction at slot b - at slot a || (IDGI: of g**2 / sum(g**2)), computed
        once per pair (an interval keeps its ends until it is split)."""
        key = (a, b)
        if key in self.diffs:
            return self.diffs[key]
        ra, rb = self.rows[a].double(), self.rows[b].double()
        if self.idgi:
            na, nb = self.norms2[a], self.norms2[b]
            ra = ra.square() / na if na > 0 else torch.zeros_like(ra)
            rb = rb.square() / nb if nb > 0 else torch.zeros_like(rb)
        self.diffs[key] = float((rb - ra).norm())
        return self.diffs[key]

    def _indicators(self, im: _Image, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(indicator (n,), interval ends s (n + 1,)) of image j's intervals [s_t, s_{t+1}]."""
        s = np.asarray(im.s + [1.0]) if self.idgi else np.asarray(im.s)
        n = len(s) - 1
        ind = np.empty(n)
        for t in range(n):
            # IDGI's last interval (no gradient at the input) borrows its neighbour's difference
            a, b = (t, t + 1) if t + 1 < len(im.s) else (t - 1, t)
            if a < 0:  # a single point: no difference to measure
                ind[t] = math.inf
                continue
            diff = self._diff(im.slot[a], im.slot[b])
            if self.idgi:
                y_next = self.y[im.slot[t + 1]] if t + 1 < len(im.s) else self.end[j]
                scale = abs(y_next - self.y[im.slot[t]])
            else:
                scale = float(self.weight(s[t + 1]) - self.weight(s[t]))
            ind[t] = scale * diff
        return np.where(np.isnan(ind), math.inf, ind), s  # (nan_to_num would turn inf into 1.8e308)

    def _split(self, im: _Image, j: int, size: int) -> list[float]:
        """The midpoints of the `size` intervals of image j with the largest indicators (ties: the
        earlier interval); none whose indicator is 0."""
        ind, s = self._indicators(im, j)
        order = np.argsort(-ind, kind="stable")[:size]
        order = order[ind[order] > 0]
        return sorted(float((s[t] + s[t + 1]) / 2) for t in order)

    def _estimate(self, images: list[_Image], which) -> torch.Tensor:
        """The group's maps (count, D); sets the estimate of the images in `which`: the root sum
        of squares of their intervals' indicators relative to the map's L2 norm (0 for a zero map)."""
        maps = self._maps(images)
        for j in which:
            nrm = float(maps[j].norm())
            # root sum of squares: the intervals' errors add like independent vectors (the plain
            # sum over-estimated the error 8-16x on EfficientNet-Lite0; docs/adaptive.md)
            ind = self._indicators(images[j], j)[0]  # inf: an interval not measurable yet (one point)
            total = float(np.sqrt(np.square(ind).sum())) if np.isfinite(ind).all() else math.inf
            images[j].estimate = total / nrm if nrm > 0 else (0.0 if total == 0 else math.inf)
        return maps

    def _maps(self, images: list[_Image]) -> torch.Tensor:
        """The current map of every image of the group (count, D): one fused accumulation over the
        group's whole row store (unused slots have coefficient 0 and are skipped)."""
        x = self.ctx.inputs
        acc = torch.zeros(len(images), x[0].numel(), dtype=x.dtype, device=x.device)
        coef = np.zeros(len(images) * self.budget)
        for j, im in enumerate(images):
            sl = np.asarray(im.slot)
            if self.idgi:
                y = np.concatenate([self.y[sl], [self.end[j]]])
                # a NaN/inf gradient makes its image's map NaN (explain then names the image)
                coef[sl] = np.where(self.finite[sl], idgi_coefficients(y, self.norms2[sl] > 0), math.nan)
            else:  # trapezoid: each node gets half of the width of the intervals beside it
                w = np.diff(self.weight(np.asarray(im.s)))
                coef[sl] = (np.concatenate([[0.0], w]) + np.concatenate([w, [0.0]])) / 2
        index = torch.arange(len(images), device=x.device).repeat_interleave(self.budget)
        path_accumulate_(acc, self.rows, torch.from_numpy(coef).to(x.device, x.dtype), index, self.idgi)
        return acc
