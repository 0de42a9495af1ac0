"""Packing of (images x path points) into engine chunks, and the two integrators (Riemann, IDGI)
that turn per-point gradients into maps. Memory is bounded by the chunk, not by the steps."""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, Iterator

import torch

from fastattr.host_checks import rows_nonzero_finite
from fastattr.kernels.path_accumulate import grad_rows
from fastattr.methods.base import MethodContext
from fastattr.ops.path_accumulate import path_accumulate_

PointFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (img idx (B,), step idx (B,)) -> (B,C,H,W)
ConsumeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


def progress_bar(ctx: MethodContext, total: int, desc: str) -> contextlib.AbstractContextManager:
    """A tqdm bar on ctx.engine for `total` gradient evaluations when ctx.progress is set (else a
    null context: no generator per call)."""
    return _progress_bar(ctx, total, desc) if ctx.progress else contextlib.nullcontext()


@contextlib.contextmanager
def _progress_bar(ctx: MethodContext, total: int, desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="grad", leave=False)
    old, ctx.engine.progress = ctx.engine.progress, bar
    try:
        yield
    finally:
        ctx.engine.progress = old
        bar.close()


# Indices and targets of every point are built once when there are at most this many points (3
# int64 per point: 96 MB); per chunk they are then views (fewer small ops per chunk matter for
# cheap models). Beyond it they are computed per chunk, so memory never grows with the steps.
PREBUILT_POINTS = 1 << 22
# Walks of at most this many points keep their indices between calls (walk_plan: 16 bytes per
# point, 1 MB at most per plan): a repeated call on a cheap model then builds none (arange, //, %:
# three ops of 10-50 us each right after the previous call's chunks, bench/bench_overhead.py).
CACHED_PLAN_POINTS = 1 << 16


def walk_plan(n: int, steps: int, size: int, device: torch.device):
    """(images (P,), image chunks, step chunks) of walk_path's order for n images of `steps`
    points in chunks of `size`: point p is image p // steps, step p % steps. Read-only (small
    plans are shared between calls)."""
    if n * steps <= CACHED_PLAN_POINTS:
        return _cached_plan(n, steps, size, device)
    return _plan(n, steps, size, device)


@functools.lru_cache(maxsize=32)
def _cached_plan(n: int, steps: int, size: int, device: torch.device):
    return _plan(n, steps, size, device)


def _plan(n: int, steps: int, size: int, device: torch.device):
    with torch.inference_mode(False):  # normal tensors: usable inside and outside inference mode
        idx = torch.arange(n * steps, device=device)
        images, keys = idx // steps, idx % steps
        return images, images.split(size), keys.split(size)


def walk_columns(ctx: MethodContext, steps: int, values: torch.Tensor) -> Iterator[torch.Tensor]:
    """values[k] (B, ...) for each chunk of walk_path(ctx, steps, ...), in walk order, k the
    chunk's steps; values (steps, ...) per-step values (a rule's path fractions or weights). For
    one image the chunks' steps are consecutive, so these are views (no op per chunk)."""
    n, size = ctx.inputs.shape[0], ctx.engine.batch_size
    if n == 1:
        yield from values.split(size)
        return
    total = n * steps
    if total <= PREBUILT_POINTS:
        for k in walk_plan(n, steps, size, values.device)[2]:
            yield values.index_select(0, k)
        return
    for start, stop in ctx.engine.chunks(total):
        yield values.index_select(0, torch.arange(start, stop, device=values.device) % steps)


def walk_path(ctx: MethodContext, steps: int, point: PointFn, consume: ConsumeFn, desc: str = "path") -> None:
    """Evaluate `steps` points per image, packed image-major into chunks of the engine's batch
    size: point(i, k) builds a chunk's points, consume(i, k, y, g) receives f_c and gradients.
    Chunks arrive in order and cover points 0..N*steps-1 (point p is image p // steps, step p % steps):
    point and consume are called once per chunk in that order (walk_columns relies on it)."""
    n = ctx.inputs.shape[0]
    total = n * steps
    device = ctx.inputs.device
    with progress_bar(ctx, total, desc), ctx.engine.session():
        if total <= PREBUILT_POINTS:
            images, image_chunks, key_chunks = walk_plan(n, steps, ctx.engine.batch_size, device)
            if ctx.target_column is not None:  # one class for all: selected by index (Engine.value_and_grad)
                targets = [ctx.target_column] * len(image_chunks)
            else:
                targets = ctx.targets.index_select(0, images).split(ctx.engine.batch_size)
            for i, k, t in zip(image_chunks, key_chunks, targets):
                y, g = ctx.engine.value_and_grad(point(i, k), t, images=i)
                consume(i, k, y, g)
            return
        for start, stop in ctx.engine.chunks(total):
            idx = torch.arange(start, stop, device=device)
            i, k = idx // steps, idx % steps
            y, g = ctx.engine.value_and_grad(point(i, k), ctx.targets.index_select(0, i), images=i)
            consume(i, k, y, g)


def acc_dense(g: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """g (B, ...) laid out so that path_accumulate_ reads its rows in the accumulator's element
    order (it reads a channels-last 4-D tensor in memory order): nhwc, (H, W, C) order, else the
    logical order. As it comes in the usual case (the engine's gradients have the points' layout)."""
    if not nhwc:
        return g if g.is_contiguous() else g.contiguous()
    return g if g.is_contiguous(memory_format=torch.channels_last) else g.contiguous(memory_format=torch.channels_last)


def acc_rows(g: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """g (B, ...) as rows (B, D) in the accumulator's element order (acc_dense): a view when g
    comes in that layout (a permuting copy per chunk was the IDGI sum's largest cost on the tiny
    model of bench/bench_overhead.py)."""
    return grad_rows(acc_dense(g, nhwc))


def acc_maps(acc: torch.Tensor, like: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """The accumulator rows (N, D) as maps like `like` (its shape; channels-last strides when
    accumulated in (H, W, C) order)."""
    if nhwc:
        n, c, h, w = like.shape
        return acc.view(n, h, w, c).permute(0, 3, 1, 2)
    return acc.view_as(like)


class RiemannSum:
    """acc[i] += w[k] * g  for every evaluated point (i, k). w (steps,) per-step weights; acc in
    like's dtype (float32, float64 for a float64 model). channels_last: the gradients of 4-D points
    come channels-last (the engine's format for conv models), so acc holds each map in that order
    and takes them without a copy (a permuting copy per chunk was 1-2 us per point on the tiny
    model of bench/bench_overhead.py); the sum of each element is the same either way. Points
    arrive in walk_path's order (image-major, consecutive chunks), which places each image's step 0.
    columns: the chunks' weights w[k] in that order (paths.walk_columns), else w[k] per chunk."""

    def __init__(self, like: torch.Tensor, weights: torch.Tensor, channels_last: bool = False,
                 columns: Iterator[torch.Tensor] | None = None):
        n = like.shape[0]
        self.acc = torch.zeros(n, math.prod(like.shape[1:]), dtype=like.dtype, device=like.device)
        self.weights = weights.to(like.device, torch.float64)
        self.columns = columns
        self.steps = weights.shape[0]
        self.nhwc = channels_last and like.dim() == 4
        self.start_scores = torch.full((n,), float("nan"), dtype=like.dtype, device=like.device)
        self.seen = 0  # points consumed so far (walk_path's image-major order)

    def __call__(self, i, k, y, g) -> None:
        b = g.shape[0]
        w = self.weights[k] if self.columns is None else next(self.columns)
        path_accumulate_(self.acc, acc_dense(g, self.nhwc), w, i, False)
        # f_c at step 0 of each image: which positions hold one follows from the chunk's place in
        # walk_path's order (point p is image p // steps, step p % steps), so no op runs for chunks
        # without one (a where + index_put per chunk cost microseconds on the tiny model)
        start, self.seen = self.seen, self.seen + b
        first_at = (-start) % self.steps
        if first_at < b:
            img = (start + first_at) // self.steps
            self.start_scores[img:img + len(range(first_at, b, self.steps))] = y[first_at::self.steps]

    def result(self, like: torch.Tensor) -> torch.Tensor:
        """The sums like `like` (its shape; channels-last strides when accumulated so)."""
        return acc_maps(self.acc, like, self.nhwc)


class IdgiSum:
    """IDGI on a path p_0..p_m per image, a step with an all-zero gradient passing its output
    change to the nearest step with a non-zero gradient (SPEC-style rule below).

    Gradients g_k are taken at p_0..p_{m-1}; y_k = f_c(p_k), y_m = end_scores[i] (f_c at the input
    end, from a forward pass). Let j_1 < ... < j_r be the steps whose gradient is not all zero.
    They split the points 0..m into spans [s_t, e_t] with s_1 = 0, e_r = m and
    e_t = s_{t+1} = floor((j_t + j_{t+1}) / 2) + 1, and

        A = sum_t  g_{j_t}**2 * (y_{e_t} - y_{s_t}) / sum(g_{j_t}**2).

    That is: the output change y_{k+1} - y_k of a zero-gradient step k goes to the nearest step
    with a non-zero gradient (|j - k| smallest, a tie to the earlier step); with no zero steps it
    is the authors' formula. sum(A) = y_m - y_0 whenever some step has a non-zero gradient
    (guided backward and dead ReLUs make whole steps zero); with none the map is zero and delta
    reports the output change honestly. A step counts as non-zero when max|g| > 0. A NaN/inf
    gradient makes its image's map NaN (the caller then names the image) instead of vanishing.

    Points arrive image-major in consecutive chunks (walk_path). Memory is bounded by the chunk:
    only the last non-zero step of the image that continues into the next chunk waits (one
    gradient row) for the step that fixes where its span ends, with that image's y values so far
    (m scalars). Which chunk starts or ends mid-image is known from its position.
    The general rule is device arithmetic on (B,) vectors with no host sync (about 40 small ops
    per chunk); on the CPU, where reading a flag costs no queue drain, a chunk whose gradients are
    all non-zero and finite (one host loop: fastattr.host_checks.rows_nonzero_finite) takes the
    authors' formula directly (about 8 ops)."""

    def __init__(self, like: torch.Tensor, steps: int, end_scores: torch.Tensor, channels_last: bool = False):
        n, dt, dev = like.shape[0], like.dtype, like.device
        self.steps = steps
        # channels_last: 4-D gradients come channels-last and acc holds each map in (H, W, C)
        # order (acc_rows: no copy per chunk); each step's sum of squares then runs in that order
        self.nhwc = channels_last and like.dim() == 4
        self.acc = torch.zeros(n, math.prod(like.shape[1:]), dtype=dt, device=dev)
        self.end_scores = end_scores.to(dt)
        self.start_scores = torch.empty(n, dtype=dt, device=dev)  # y_0 per image
        self.y_open = torch.zeros(steps, dtype=dt, device=dev)  # y_k of the image continuing across chunks
        self.grad_bad = torch.zeros(n, dtype=dt, device=dev)  # 0, or NaN: a non-finite gradient
        self.seen = 0  # points consumed so far
        # The held step: the last non-zero step of the image continuing into the next chunk.
        self.held_g = torch.zeros(1, math.prod(like.shape[1:]), dtype=dt, device=dev)
        self.held_k = torch.full((1,), -1, dtype=torch.long, device=dev)  # its step, -1: none yet
        self.held_start = torch.zeros(1, dtype=dt, device=dev)  # y at the start of its span
        self.held_host_k: int | None = None  # held_k when known on the host (after a fast chunk)
        self.fast = dev.type == "cpu"

    def __call__(self, i, k, y, g) -> None:
        b, m = y.shape[0], self.steps
        start, stop = self.seen, self.seen + b
        self.seen = stop
        first_at = (-start) % m  # position of the chunk's first step-0 point
        if first_at < b:
            img = (start + first_at) // m
            self.start_scores[img:img + len(range(first_at, b, m))] = y[first_at::m]
        first_k, last_k = start % m, (stop - 1) % m
        continues_in = first_k > 0  # the first image started in an earlier chunk
        continues_out = last_k < m - 1  # the last image goes on in the next chunk
        fast = self.fast and (not continues_in or self.held_host_k == first_k - 1)
        if fast and rows_nonzero_finite(g):  # one host loop over the rows (7 torch ops otherwise)
            self._all_nonzero(i, y, acc_rows(g, self.nhwc), start, first_k, continues_in, continues_out)
            return
        g = acc_rows(g, self.nhwc)
        amax = g.abs().amax(1)  # (B,): > 0 marks a non-zero gradient; NaN/inf propagate
        self.grad_bad.index_add_(0, i, amax * 0)  # 0, or NaN where amax is NaN/inf
        nz = amax > 0
        if fast and bool(nz.all()):
            self._all_nonzero(i, y, g, start, first_k, continues_in, continues_out)
        else:
            self._general(i, k, y, g, nz, start, first_k, last_k, continues_in, continues_out)

    def _all_nonzero(self, i, y, g, start, first_k, continues_in, continues_out) -> None:
        """Every step of the chunk (and the held one, just before it) has a non-zero gradient:
        each step's span is [k, k+1], the authors' y_{k+1} - y_k."""
        b, m = y.shape[0], self.steps
        next_y = y.roll(-1)  # y_{k+1} at position k (one op; the last is replaced below or held)
        first_end = m - 1 - first_k  # position of the chunk's first last-step
        if first_end < b:  # y_m = f_c(x) after every image's last step
            img = (start + first_end) // m
            count = len(range(first_end, b, m))
            next_y[first_end::m] = self.end_scores[img:img + count]
        coef = next_y - y
        if continues_in:
            path_accumulate_(self.acc, self.held_g, y[:1] - self.held_start, i[:1], True)
        if continues_out:
            self._keep_open(y, start)
            coef[-1:].zero_()  # its span ends in the next chunk: held
            self.held_g = g[-1:].clone()
            self.held_start = y[-1:].clone()
            self.held_k.fill_((start + b - 1) % m)
            self.held_host_k = (start + b - 1) % m
        else:
            self.held_k.fill_(-1)
            self.held_host_k = None
        path_accumulate_(self.acc, g, coef, i, True)

    def _general(self, i, k, y, g, nz, start, first_k, last_k, continues_in, continues_out) -> None:
        """The rule of the class docstring for any chunk, without a host sync."""
        b, m = y.shape[0], self.steps
        self._chunk_y = y
        first_img, last_img = start // m, (start + b - 1) // m
        pos = torch.arange(b, device=y.device)
        to_end = m - 1 - k
        run_start = (pos - k).clamp_min(0)  # first position of the point's image in this chunk
        run_end = (pos + to_end).clamp_max(b - 1)
        completes = pos + to_end <= b - 1  # the image's last step is in this chunk
        # Nearest non-zero step before (prv) and after (nxt) each position, within the chunk.
        prev_incl = torch.where(nz, pos, -1).cummax(0).values
        next_incl = torch.where(nz, pos, b).flip(0).cummin(0).values.flip(0)
        prv = torch.cat([prev_incl.new_full((1,), -1), prev_incl[:-1]])
        nxt = torch.cat([next_incl[1:], next_incl.new_full((1,), b)])
        has_prev = prv >= run_start
        has_next = nxt <= run_end
        k_prev = torch.where(has_prev, k[prv.clamp_min(0)], -1)
        if continues_in:  # before the chunk: the held step of the continuing image
            k_prev = torch.where(~has_prev & (pos < k), self.held_k, k_prev)
        y_start = self._y_at(pos, k, torch.where(k_prev >= 0, (k_prev + k) // 2 + 1, 0))
        k_next = k[nxt.clamp_max(b - 1)]
        y_next = self._y_at(pos, k, ((k + k_next) // 2 + 1).clamp_max(m - 1))
        y_end = torch.where(has_next, y_next, self.end_scores[i])
        coef = torch.where(nz & (has_next | completes), y_end - y_start, 0)
        if continues_in:  # the held step's span ends at this chunk's first non-zero step or at p_m
            c = next_incl[:1]
            found = c <= min(m - 1 - first_k, b - 1)
            e = ((self.held_k + k[c.clamp_max(b - 1)]) // 2 + 1).clamp(0, m - 1)
            h_end = torch.where(found, self._y_at(pos[:1], k[:1], e), self.end_scores[first_img])
            done = (self.held_k >= 0) & (found | (m - 1 - first_k <= b - 1))
            path_accumulate_(self.acc, self.held_g, torch.where(done, h_end - self.held_start, 0),
                             i[:1], True)
        path_accumulate_(self.acc, g, coef, i, True)
        self.held_host_k = None
        if continues_out:  # hold the last non-zero step of the last image (its span is open)
            self._keep_open(y, start)
            q = prev_incl[b - 1:]
            found = q >= max(b - 1 - last_k, 0)
            qc = q.clamp_min(0)
            keep = continues_in and first_img == last_img  # same image: an older held step stays
            old_k = self.held_k if keep else torch.full_like(self.held_k, -1)
            self.held_k = torch.where(found, k[qc], old_k)
            self.held_start = torch.where(found, y_start[qc], self.held_start)
            self.held_g = torch.where(found[:, None], g.index_select(0, qc), self.held_g)
        else:
            self.held_k = torch.full_like(self.held_k, -1)

    def _y_at(self, pos, k, step):
        """y at `step` of the image of the points at positions pos (steps k) of this chunk: in the
        chunk, or (earlier steps of the continuing image) in y_open."""
        at = pos - k + step
        y = self._chunk_y
        return torch.where(at >= 0, y[at.clamp(0, y.shape[0] - 1)], self.y_open[step])

    def _keep_open(self, y, start) -> None:
        """Remember the y values of the chunk's last image, which continues into the next chunk."""
        last_k = (start + y.shape[0] - 1) % self.steps
        first = max(y.shape[0] - 1 - last_k, 0)  # its first position in this chunk
        k0 = (start + first) % self.steps
        self.y_open[k0:last_k + 1] = y[first:]

    def result(self, like: torch.Tensor) -> torch.Tensor:
        assert self.seen == self.acc.shape[0] * self.steps, "IDGI path ended before its last step"
        self.acc.add_(self.grad_bad[:, None])  # + 0, or NaN for an image with a non-finite gradient
        return acc_maps(self.acc, like, self.nhwc)


def from_path_start(consume: ConsumeFn, start_scores: torch.Tensor) -> ConsumeFn:
    """IDGI on points whose first gradient point p_0 lies past the path start b (rules with a_0 > 0:
    right, middle, gausslegendre): the segment [b, p_0] joins the first span (SPEC.md, IDGI's end
    segments). IdgiSum reads y_0 only as the start of its first span, so handing it f_c(b) in place
    of f_c(p_0) gives that span y_{e_1} - f_c(b) (the first step with a non-zero gradient takes the
    segment, as any zero-gradient step's change) and makes its start_scores f_c(b): sum(A) =
    f_c(x) - f_c(b) exactly. start_scores (N,) f_c at b -> a consume function for walk_path."""
    start = start_scores.detach()

    def consume_from_start(i, k, y, g):
        consume(i, k, torch.where(k == 0, start.index_select(0, i).to(y.dtype), y), g)

    return consume_from_start
