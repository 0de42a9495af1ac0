"""NeFLAG-n on EfficientNet-Lite0 and the bundled photos: gradient evaluations per sample, and wall
time against the model-only floor for the same number of gradient evaluations.

    python bench/bench_neflag.py [--repeats 5] [--n 20] [--eps 0.1] [--seed 0]

1. Per photo and norm: samples reaching negative flux, mean gradient evaluations per sample (the
   paper reports about 1.7 at eps = 0.1), and completeness-free facts (sum of the map).
2. Timing, interleaved in one process with the same threads and batch: fastattr NeFLAG-n on all
   photos in one call; the floor = the same total number of forward+backward points on the same
   model and batch size (bench/harness.floor_fn); and the plain loop a user would write from
   Algorithm 1 (one sample at a time, batch 1; no public implementation exists to compare with).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402

import fastattr  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402
from fastattr.methods.neflag import sphere_starts  # noqa: E402


def plain_loop(model, x, targets, eps, n, m, seed):
    """Algorithm 1 written directly: one sample at a time, batch 1, the documented draw order."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    out = torch.zeros_like(x)

    def fg(z, c):
        z = z[None].clone().requires_grad_(True)
        y = model(z).softmax(-1)[0, c]
        return y.item(), torch.autograd.grad(y, z)[0][0]

    for i in range(x.shape[0]):
        c = int(targets[i])
        with torch.no_grad():
            fx = model(x[i : i + 1]).softmax(-1)[0, c].item()
        starts = sphere_starts(n, tuple(x.shape[1:]), "linf", gen)
        for j in range(n):
            xt = x[i] + eps * starts[j]
            for _ in range(m):
                y, F = fg(xt, c)
                if y < fx:
                    break
                xt = x[i] - eps * torch.sign(F)
            out[i] += F * (x[i] - xt)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--m", type=int, default=20)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-plain", action="store_true", help="leave out the batch-1 plain loop")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    model = load_default_model()
    photos = bundled_images()
    names = list(photos)
    x = torch.stack([photos[k] for k in names])
    batch = default_batch_size(torch.device("cpu"))
    print(f"threads={torch.get_num_threads()} batch={batch} eps={args.eps} n={args.n} m={args.m} "
          f"photos={names} repeats={args.repeats}\n")

    # 1. Gradient evaluations per sample (deterministic for a seed), both norms.
    print("| photo | norm | target | negative flux | mean grad evals / sample | sum(map) |")
    print("|---|---|---|---|---|---|")
    total_evals = None
    for norm in ("linf", "l2"):
        exp = fastattr.explain(model, x, method="neflag", eps=args.eps, n=args.n, m=args.m, norm=norm,
                               generator=torch.Generator().manual_seed(args.seed))
        per_image = exp.extras["grad_evals_per_image"]
        for i, name in enumerate(names):
            print(f"| {name} | {norm} | {int(exp.target[i])} | {int(exp.extras['negative_flux'][i])}/{args.n} "
                  f"| {int(per_image[i]) / args.n:.2f} | {float(exp.attributions[i].sum()):.4g} |")
        print(f"| all | {norm} | | {int(exp.extras['negative_flux'].sum())}/{args.n * len(names)} "
              f"| {exp.extras['mean_grad_evals']:.3f} | |")
        if norm == "linf":
            total_evals, targets, linf_map = exp.grad_evals, exp.target, exp.attributions
    if not args.skip_plain:  # the timed peer computes the same map (batch-1 vs batched rounding only)
        plain = plain_loop(model, x, targets, args.eps, args.n, args.m, args.seed)
        err = float((plain - linf_map).abs().max() / plain.abs().max())
        print(f"\nplain loop vs fastattr (linf): max |diff| / max |map| = {err:.2e}")

    # 2. Wall time vs the floor with the same number of forward+backward points (linf, Algorithm 1).
    cands = {
        "floor": floor_fn(model, x[0], total_evals, batch),
        f"fastattr NeFLAG-{args.n}": lambda: fastattr.attribute(
            model, x, targets, method="neflag", eps=args.eps, n=args.n, m=args.m,
            generator=torch.Generator().manual_seed(args.seed)),
    }
    if not args.skip_plain:
        cands["plain loop (batch 1)"] = lambda: plain_loop(model, x, targets, args.eps, args.n, args.m, args.seed)
    times = interleaved(cands, repeats=args.repeats)
    print("\n" + report(times, title=f"EfficientNet-Lite0 224x224, {len(names)} photos, NeFLAG-{args.n} "
                                     f"({total_evals} gradient evaluations; floor = same count, batch {batch})"))
    med = {k: statistics.median(v) for k, v in times.items()}
    fa = med[f"fastattr NeFLAG-{args.n}"]
    ratios = sorted(a / b for a, b in zip(times[f"fastattr NeFLAG-{args.n}"], times["floor"]))
    print(f"\nNeFLAG / floor: {fa / med['floor']:.3f}x (median of per-round ratios "
          f"{statistics.median(ratios):.3f}x, range {ratios[0]:.3f}-{ratios[-1]:.3f})")
    if "plain loop (batch 1)" in med:
        print(f"plain loop / fastattr: {med['plain loop (batch 1)'] / fa:.2f}x")


if __name__ == "__main__":
    main()
