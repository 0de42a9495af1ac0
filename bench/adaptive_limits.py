"""How far can any placement of IG's points go? The evidence behind docs/adaptive.md "IG's limit".

    python bench/adaptive_limits.py [--images 0 1 4 7] [--dense 768] [--budgets 32 48]

For each image (EfficientNet-Lite0, the bundled evaluation set, the model's label, the default
softmax score) it evaluates IG's integrand v(a) = (x - b) * g(b + a (x - b)) on a dense grid
a = k / dense (cached in --cache) and reports:

1. the variogram D(h) = mean over a of ||v(a + h) - v(a)||^2 on [0.5, 1] at h = 1, 2, 4, ... dense
   steps: D(2h) / D(h) = 2 is a Brownian-like (rough) integrand, 4 a smooth one, and D(h) not going
   to 0 as h -> 0 a "nugget" (white noise). For a Brownian-like integrand the trapezoid rule on
   the sampled points is the best linear estimate of the integral (the posterior mean under a
   Brownian prior is the piecewise-linear interpolant), so only the placement can help;
2. the relative L2 error against the dense trapezoid map, at each budget, of: uniform left (what
   users run), uniform trapezoid, fastattr's adaptive schedule (the library, as users run it),
   an *oracle* bisection that knows the true error of every interval (from the dense grid) and
   splits the worst one, one point at a time: no indicator can place bisection points better;
   and the *best grid* for the trapezoid rule, any placement on a = k / --coarse, found by dynamic
   programming over the true interval errors (it minimises their sum of squares: the intervals'
   errors of a Brownian-like integrand are independent, so this is the expected squared error).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import fastattr


def dense_integrand(model, x, target: int, dense: int, cache: Path, name: str):
    """v (dense + 1, D) float32 and f_c (dense + 1,) on a = k / dense; cached."""
    f = cache / f"dense_{name}_{dense}.pt"
    if f.exists():
        d = torch.load(f)
        return d["v"], d["y"]
    grid = torch.arange(dense + 1, dtype=torch.float64) / dense
    v = torch.empty(dense + 1, x[0].numel())
    y = torch.empty(dense + 1, dtype=torch.float64)
    for c in range(0, dense + 1, 8):
        a = grid[c:c + 8].to(x.dtype).view(-1, 1, 1, 1)
        p = (a * x).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        out = torch.softmax(model(p), 1)[:, target]  # explain's default score (softmax probability)
        (g,) = torch.autograd.grad(out.sum(), p)
        v[c:c + len(a)] = (x * g).flatten(1)
        y[c:c + len(a)] = out.detach().double()
    torch.save({"v": v, "y": y}, f)
    return v, y


def trapezoid(v: torch.Tensor, k: np.ndarray, dense: int) -> torch.Tensor:
    """Trapezoid sum of rows v[k] on the points a = k / dense (sorted, 0 and dense included)."""
    w = np.diff(k) / dense
    c = np.zeros(len(k))
    c[:-1] += w / 2
    c[1:] += w / 2
    return (torch.from_numpy(c).to(v.dtype)[:, None] * v[k]).sum(0)


def interval_errors2(v: torch.Tensor, cum: torch.Tensor, dense: int, a: int, b: np.ndarray) -> np.ndarray:
    """Squared L2 error (len(b),) of the trapezoid rule on [a/dense, b/dense] for each b > a, against
    the dense integral (cum: cumulative dense trapezoid sums, (dense + 1, D))."""
    w = torch.from_numpy((b - a) / dense).to(v.dtype)[:, None]
    err = (cum[b] - cum[a]) - w * (v[a] + v[b]) / 2
    return (err.double() ** 2).sum(1).numpy()


def oracle_bisection(v: torch.Tensor, cum: torch.Tensor, dense: int, budget: int) -> np.ndarray:
    """Grid of `budget` points: 0, 1/3, 2/3, 1 (fastattr's first round at 32), then always the
    interval whose trapezoid error against the dense integral is largest, bisected."""
    k = [0, dense // 3, 2 * dense // 3, dense]

    def err(a, b):  # an interval of one dense step cannot be split
        return float(interval_errors2(v, cum, dense, a, np.array([b]))[0]) if b - a >= 2 else -1.0

    errs = [err(k[t], k[t + 1]) for t in range(len(k) - 1)]
    while len(k) < budget:
        t = int(np.argmax(errs))
        mid = (k[t] + k[t + 1]) // 2
        k.insert(t + 1, mid)
        errs[t:t + 1] = [err(k[t], mid), err(mid, k[t + 2])]
    return np.asarray(k)


def best_grid(v: torch.Tensor, cum: torch.Tensor, dense: int, coarse: int, budget: int,
              cost: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(points k on the dense grid, the interval cost matrix): the `budget` points (0 and 1
    included) on a = k / coarse minimising the sum of squared trapezoid interval errors."""
    idx = np.arange(0, dense + 1, dense // coarse)
    n = len(idx)
    if cost is None:  # cost[a, b]: squared error of the trapezoid on [idx a, idx b]
        cost = np.full((n, n), np.inf)
        for a in range(n - 1):
            cost[a, a + 1:] = interval_errors2(v, cum, dense, idx[a], idx[a + 1:])
    best = np.full((budget, n), np.inf)  # best[k, b]: least cost of k + 1 points from 0 to b
    arg = np.zeros((budget, n), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, budget):
        total = best[k - 1][:, None] + cost
        arg[k] = np.argmin(total, 0)
        best[k] = total[arg[k], np.arange(n)]
    ks = [n - 1]
    for k in range(budget - 1, 0, -1):
        ks.append(arg[k, ks[-1]])
    return idx[np.asarray(ks[::-1])], cost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, nargs="+", default=[0, 1, 4, 7])
    ap.add_argument("--dense", type=int, default=768, help="dense grid a = k / dense (divisible by 3 * 2**k and the budgets)")
    ap.add_argument("--budgets", type=int, nargs="+", default=[32, 48])
    ap.add_argument("--coarse", type=int, default=192, help="the best grid's candidate points a = k / coarse")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/fastattr_bench_adaptive")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from fastattr.evalset import load_evalset
    from fastattr.models import load_default_model

    model = load_default_model().to(memory_format=torch.channels_last)
    ev = load_evalset()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    n = args.dense
    rows = {}
    print(f"threads={args.threads} dense grid k/{n}; relative L2 error to the dense trapezoid map")
    for i in args.images:
        x, t, name = ev.images[i:i + 1], int(ev.labels[i]), ev.names[i]
        v, y = dense_integrand(model, x, t, n, cache, name)
        cum = torch.cat([torch.zeros(1, v.shape[1]), torch.cumsum((v[1:] + v[:-1]) / (2 * n), 0)])
        ref = cum[-1]

        def rel(a):
            return float((a - ref).norm() / ref.norm())

        half = v[n // 2:].double()
        gam = [float(((half[h:] - half[:-h]) ** 2).sum(1).mean()) for h in (1, 2, 4, 8, 16)]
        print(f"\n{name}: variogram on a in [0.5, 1], D(2h)/D(h) for h = 1, 2, 4, 8 dense steps: "
              + ", ".join(f"{gam[j + 1] / gam[j]:.2f}" for j in range(4)) + f" (D(1/{n}) = {gam[0]:.3g})")
        cost = None
        for b in args.budgets:
            left = np.arange(0, n, n // b)
            left_map = (v[left].sum(0) / b)
            unif = np.round(np.arange(b) * n / (b - 1)).astype(int)
            lib = fastattr.explain(model, x, ev.labels[i:i + 1], method="ig", steps=b, schedule="adaptive").attributions
            r = {"uniform left": rel(left_map), "uniform trapezoid": rel(trapezoid(v, unif, n)),
                 "adaptive (fastattr)": rel(lib.flatten()),
                 "oracle bisection": rel(trapezoid(v, oracle_bisection(v, cum, n, b), n))}
            grid, cost = best_grid(v, cum, n, args.coarse, b, cost)
            r["best grid"] = rel(trapezoid(v, grid, n))
            rows.setdefault(b, []).append(r)
            print(f"  {b} evaluations: " + ", ".join(f"{k} {e:.4f}" for k, e in r.items()), flush=True)
    print("\n| evaluations | " + " | ".join(rows[args.budgets[0]][0]) + " |")
    print("|---" * (1 + len(rows[args.budgets[0]][0])) + "|")
    for b, rs in rows.items():
        print(f"| {b} | " + " | ".join(f"{np.median([r[k] for r in rs]):.4f}" for k in rs[0]) + " |")
    print(f"(medians over {len(args.images)} images)")


if __name__ == "__main__":
    main()
