"""Timing helpers shared by every bench script: interleaved repeats, medians, the model-only floor.

Timings on a shared 2-core machine are noisy; comparisons are made between candidates measured in
the same run, interleaved round by round, and reported as medians and ratios.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Iterator

import torch
from torch import nn

from fastattr.engine import uses_conv2d


def tiny_model(num_classes: int = 10, seed: int = 0) -> nn.Module:
    """One conv, pool, linear: costs almost nothing, so per-step library overhead dominates."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                         nn.Flatten(), nn.Linear(128, num_classes)).eval()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """The model's parameters with requires_grad off while the block runs (no parameter
    gradients, as in the engine's sessions); every flag restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def engine_format(model: nn.Module, channels_last: bool | None = None) -> torch.memory_format:
    """The memory format the engine feeds `model` (channels-last for conv models) unless given."""
    if channels_last is None:
        channels_last = uses_conv2d(model)
    return torch.channels_last if channels_last else torch.contiguous_format


def floor_fn(model: nn.Module, image: torch.Tensor, passes: int, batch: int,
             output: str = "probability", channels_last: bool | None = None) -> Callable[[], None]:
    """The model-only floor: `passes` points of f_c forward+backward w.r.t. the input, in chunks
    of `batch`, parameters frozen, no attribution arithmetic. image (C, H, W). channels_last None:
    the memory format the engine feeds this model (channels-last for conv models)."""
    fmt = engine_format(model, channels_last)

    def run():
        with frozen(model):
            done = 0
            while done < passes:
                n = min(batch, passes - done)
                x = image.expand(n, *image.shape).clone(memory_format=fmt).requires_grad_(True)
                logits = model(x)
                y = logits.softmax(-1)[:, 0] if output == "probability" else logits[:, 0]
                torch.autograd.grad(y.sum(), x)
                done += n

    return run


def handwritten_ig_fn(model: nn.Module, image: torch.Tensor, steps: int, batch: int, target: int = 0,
                      output: str = "probability", channels_last: bool | None = None
                      ) -> Callable[[], torch.Tensor]:
    """The least an IG implementation does beyond the floor: f_c at the input (one forward, for
    the completeness delta), then per chunk the points a_k x (zero baseline, left rule) built by
    one multiply in the model's memory format, one forward+backward, the gradients summed; map
    x * sum / steps (C, H, W). No checks, no target choice, nothing reusable: a lower bound for
    what any library pays over the floor."""
    x = image[None].contiguous(memory_format=engine_format(model, channels_last))
    alphas = (torch.arange(steps, dtype=image.dtype) / steps).view(-1, *([1] * image.dim()))

    def score(logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1)[:, target] if output == "probability" else logits[:, target]

    def run() -> torch.Tensor:
        with frozen(model):
            with torch.no_grad():
                score(model(x))
            acc = torch.zeros_like(x[0])
            for a in alphas.split(batch):
                pts = (a * x).requires_grad_(True)
                (g,) = torch.autograd.grad(score(model(pts)).sum(), pts)
                acc.add_(g.sum(0))
            return acc * x[0] / steps

    return run


def interleaved(cands: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter, shuffle: bool = False) -> dict[str, list[float]]:
    """Times (s, by `clock`: wall time by default) of each candidate, run round-robin `repeats`
    times after `warmup` rounds. shuffle: each round in a new order (seeded): a call's time depends
    on what ran just before it (on the tiny model, any candidate right after the NCHW floor took
    5-8 us per step more than after PAIR's batch-8 loop, 2026-12-08), so a fixed order charges one
    candidate for its neighbour."""
    import random

    rng = random.Random(0)
    for _ in range(warmup):
        for fn in cands.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(repeats):
        order = list(cands.items())
        if shuffle:
            rng.shuffle(order)
        for name, fn in order:
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def report(times: dict[str, list[float]], floor: str = "floor", title: str = "") -> str:
    """Markdown table: median seconds, ratio to the floor candidate, spread (min-max)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med.get(floor)
    lines = [f"### {title}" if title else "", "| candidate | median s | x floor | min-max s |", "|---|---|---|---|"]
    for k, m in med.items():
        ratio = f"{m / base:.3f}" if base else "-"
        lines.append(f"| {k} | {m:.4f} | {ratio} | {min(times[k]):.4f}-{max(times[k]):.4f} |")
    return "\n".join(l for l in lines if l)
