"""Adaptive against uniform path sampling on EfficientNet-Lite0 over the bundled evaluation set.

    python bench/bench_adaptive.py [--images 9] [--budgets 8 16 32 48 64 128] [--ref-steps 1024]
                                   [--variants IG IDGI-IG "Blur IG" "IDGI-Blur IG"]
                                   [--skip-accuracy] [--skip-time] [--skip-precision] [--skip-memory]
                                   [--plot docs/adaptive.png] [--cache /tmp/fastattr_bench_adaptive_v2]
                                   [--threads 2] [--repeats 3] [--skip-checks] [--results FILE.json]
    python bench/bench_adaptive.py --plot-only IG.json IDGI.json BLUR.json --plot docs/adaptive.png
    (wall time alone, for a quiet machine: --skip-accuracy --skip-precision --skip-memory)

1. Accuracy: per method variant (IG, IDGI-IG, Blur IG, IDGI-Blur IG), the relative L2 distance
   ||A - A_ref|| / ||A_ref|| per image to a long run, median and quartiles over the images, for
   uniform (the method's default rule) and adaptive schedules at each budget of gradient
   evaluations; and the insertion AUC (black base) of the maps at --insertion-budget and of the
   reference. The reference is the adaptive schedule with --ref-steps (1024) evaluations: a long
   uniform run is not converged on the blur path (301 uniform steps are 0.13 from it, 1025 still
   0.037: the blur changes fastest near sigma = 0, where a uniform sigma grid is coarsest). Its
   first round, k/127, shares only 0 and 1 with the candidates' k/3 * 2**-m. Its own error is
   checked two ways (printed): against the adaptive run with half its budget (self-convergence)
   and against a uniform run with --check-steps (an independent grid; uniform trapezoid for Riemann
   sums, IDGI's left grid). Plot to --plot. tol: evaluations spent and error reached with --tol at
   --tol-budget. error_estimate / real error per image and budget: median, range, and the
   smallest over every variant and budget (the estimate should never be below the error).
2. Wall time per gradient evaluation, one image, 32 evaluations: uniform and adaptive against
   the floor of 32 forward+backward passes (bench/harness.py, interleaved medians).
3. precision="bf16" for the float32 model: time per evaluation against float32, distance of
   the maps to the float32 maps, insertion AUC, over the set.
4. Memory: peak resident memory of adaptive IG with tol=0.1 on one 64 px image at steps = 1000,
   10000, 100000 (and without tol at 64 and 256, and uniform at 64 and 256: the chunks'
   activations), each in its own process (its growth over the process's peak after a warm-up
   call): it follows the evaluations spent, not steps.

References are cached in --cache (default /tmp/fastattr_bench_adaptive_v2; the v1 cache holds
references of the schedule before issue 23) so reruns skip them.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402

import fastattr  # noqa: E402
from fastattr import adaptive  # noqa: E402

# name -> (method, idgi, options of the uniform schedule as users run it)
VARIANTS = {
    "IG": ("ig", False, {}),
    "IDGI-IG": ("ig", True, {}),
    "Blur IG": ("blur_ig", False, {}),
    "IDGI-Blur IG": ("blur_ig", True, {}),
}


def explain(model, x, t, name, steps, **kw):
    method, idgi, opts = VARIANTS[name]
    return fastattr.explain(model, x, t, method=method, idgi=idgi, steps=steps, **{**opts, **kw})


def long_run(model, x, t, name, steps, cache: Path, uniform: bool) -> torch.Tensor:
    """A long run, cached: the adaptive schedule, or (uniform) a uniform grid with trapezoid sums
    for Riemann sums (adaptive's first round with the whole budget, ROUND_SHARE = 1) and IDGI's
    own left grid."""
    kind = "ref" if uniform else "adaptive"  # "ref_": the uniform references of earlier versions
    f = cache / f"{kind}_{name.replace(' ', '_')}_{steps}_{x.shape[0]}.pt"
    if f.exists():
        return torch.load(f)
    _, idgi, _ = VARIANTS[name]
    t0 = time.perf_counter()
    if not uniform:
        a = explain(model, x, t, name, steps, schedule="adaptive").attributions
    elif idgi:
        a = explain(model, x, t, name, steps).attributions
    else:
        old, adaptive.ROUND_SHARE = adaptive.ROUND_SHARE, 1.0
        try:
            a = explain(model, x, t, name, steps + 1, schedule="adaptive").attributions
        finally:
            adaptive.ROUND_SHARE = old
    print(f"  {name}: {'uniform' if uniform else 'adaptive'} run with {steps} steps, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    torch.save(a, f)
    return a


def rel_errors(a: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    return ((a - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).numpy()


def quartiles(e: np.ndarray) -> tuple[float, float, float]:
    q = np.percentile(e, [25, 50, 75])
    return float(q[1]), float(q[0]), float(q[2])


def accuracy(model, x, t, args, cache: Path) -> dict:
    from fastattr.metrics import insertion

    results = {}
    for name in args.variants:
        ins, calib = {}, []
        ref = long_run(model, x, t, name, args.ref_steps, cache, uniform=False)
        if not args.skip_checks:
            half = rel_errors(long_run(model, x, t, name, args.ref_steps // 2, cache, uniform=False), ref)
            check = rel_errors(long_run(model, x, t, name, args.check_steps, cache, uniform=True), ref)
        ins["reference"] = insertion(model, x, ref, t).numpy()
        rows = {"uniform": [], "adaptive": []}
        for b in args.budgets:
            for sched in ("uniform", "adaptive"):
                kw = {"schedule": "adaptive"} if sched == "adaptive" else {}
                e = explain(model, x, t, name, b, **kw)
                err = rel_errors(e.attributions, ref)
                rows[sched].append((b, e.grad_evals / x.shape[0], *quartiles(err)))
                if sched == "adaptive":
                    ratio = e.extras["error_estimate"].numpy() / err
                    calib.append((b, float(np.median(ratio)), float(ratio.min()), float(ratio.max())))
                if b == args.insertion_budget:
                    ins[sched] = insertion(model, x, e.attributions, t).numpy()
        tol_row = None
        if args.tol is not None:
            b = args.tol_budget
            e = explain(model, x, t, name, b, schedule="adaptive", tol=args.tol)
            tol_row = (b, e.grad_evals / x.shape[0], *quartiles(rel_errors(e.attributions, ref)))
        results[name] = {"rows": rows, "insertion": ins, "tol": tol_row}
        print(f"\n### {name}: relative L2 error to adaptive with {args.ref_steps} evaluations (median [q1, q3] "
              f"over {x.shape[0]} images)")
        if not args.skip_checks:
            print(f"reference check: adaptive {args.ref_steps // 2} is {np.median(half):.4f} (max {half.max():.4f}) "
                  f"from it, uniform {args.check_steps} {np.median(check):.4f} (max {check.max():.4f})")
        print("| evaluations | uniform | adaptive |\n|---|---|---|")
        for (b, _, m, lo, hi), (_, ev, am, alo, ahi) in zip(rows["uniform"], rows["adaptive"]):
            print(f"| {b} | {m:.4f} [{lo:.4f}, {hi:.4f}] | {am:.4f} [{alo:.4f}, {ahi:.4f}] ({ev:.1f} evals) |")
        print("error_estimate / error (median, min-max over images): " + "; ".join(
            f"{b}: {m:.2f} ({lo:.2f}-{hi:.2f})" for b, m, lo, hi in calib))
        smallest = min(lo for _, _, lo, _ in calib)
        results[name]["smallest_ratio"] = smallest
        print(f"smallest error_estimate / error over images and budgets: {smallest:.2f}")
        sizes = [r[0] for r in rows["uniform"]]
        if 32 in sizes and 64 in sizes:
            a32, u64 = rows["adaptive"][sizes.index(32)][2], rows["uniform"][sizes.index(64)][2]
            print(f"adaptive 32 ({a32:.4f}) {'<=' if a32 <= u64 else '>'} uniform 64 ({u64:.4f})")
        if "uniform" in ins:
            diff = ins["adaptive"] - ins["uniform"]
            boot = np.random.default_rng(0).choice(diff, (10000, len(diff))).mean(1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            print(f"insertion (black) at {args.insertion_budget}: uniform mean {ins['uniform'].mean():.4f}, "
                  f"adaptive mean {ins['adaptive'].mean():.4f} (difference {diff.mean():+.4f}, 95% bootstrap "
                  f"interval [{lo:+.4f}, {hi:+.4f}]); adaptive >= uniform on "
                  f"{int((diff >= -1e-9).sum())}/{len(x)} images; the reference map {ins['reference'].mean():.4f}")
        if tol_row:
            print(f"tol={args.tol} at budget {tol_row[0]}: {tol_row[1]:.1f} evaluations per image on average "
                  f"(saved {100 * (1 - tol_row[1] / tol_row[0]):.0f}%), median error {tol_row[2]:.4f}")
        for b, _, am, _, _ in rows["adaptive"]:
            print(f"  adaptive {b}: the median error of uniform with {equivalent(rows['uniform'], am)}")
    return results


def equivalent(uniform_rows: list, err: float) -> str:
    """The uniform budget with median error `err`, log-log interpolated between measured budgets."""
    b = np.array([r[0] for r in uniform_rows], dtype=float)
    e = np.array([r[2] for r in uniform_rows])
    if err >= e[0]:
        return f"<= {b[0]:.0f}"
    for k in range(len(b) - 1):
        if e[k] >= err >= e[k + 1]:
            f = (np.log(e[k]) - np.log(err)) / (np.log(e[k]) - np.log(e[k + 1]))
            return f"~{np.exp(np.log(b[k]) + f * (np.log(b[k + 1]) - np.log(b[k]))):.0f}"
    return f"> {b[-1]:.0f}"


def plot(results: dict, path: str, ref_steps: int, n: int) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(results), 3.8), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(results)))
    for ax, (name, res) in zip(axes, results.items()):
        for sched, colour in (("uniform", "tab:grey"), ("adaptive", "tab:red")):
            rows = np.array(res["rows"][sched])
            ax.plot(rows[:, 1], rows[:, 2], "o-", color=colour, label=sched)
            ax.fill_between(rows[:, 1], rows[:, 3], rows[:, 4], color=colour, alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{name} ({res.get('images', n)} images)")
        ax.set_xlabel("gradient evaluations per image")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"relative L2 error to adaptive with {ref_steps} evaluations\n(median over the images, band: quartiles)")
    axes[0].legend()
    fig.suptitle("EfficientNet-Lite0, bundled evaluation set: adaptive vs uniform path sampling")
    fig.savefig(path)
    print(f"\nwrote {path}")


def timing(model, x, t, args) -> None:
    img, tgt = x[:1], t[:1]
    cands = {"floor": floor_fn(model, img[0], 32, 8)}
    for name in ("IDGI-IG", "IG", "Blur IG"):
        cands[f"{name} uniform"] = lambda name=name: explain(model, img, tgt, name, 32)
        cands[f"{name} adaptive"] = lambda name=name: explain(model, img, tgt, name, 32, schedule="adaptive")
    times = interleaved(cands, repeats=args.repeats, warmup=1)
    print("\n" + report(times, title="1 image, 32 gradient evaluations (wall time per evaluation = median / 32)"))
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in ("IDGI-IG", "IG", "Blur IG"):
        print(f"{name}: adaptive / uniform wall time per evaluation = {med[name + ' adaptive'] / med[name + ' uniform']:.3f}")


def precision(model, x, t, args) -> None:
    from fastattr.metrics import insertion

    img, tgt = x[:1], t[:1]
    cands = {"floor": floor_fn(model, img[0], 32, 8)}
    for p in ("fp32", "bf16"):
        cands[f"IDGI-IG {p}"] = lambda p=p: explain(model, img, tgt, "IDGI-IG", 32, precision=p)
    times = interleaved(cands, repeats=args.repeats, warmup=1)
    print("\n" + report(times, title="precision: 1 image, IDGI-IG 32 steps"))
    for name in ("IG", "IDGI-IG"):
        a32 = explain(model, x, t, name, 32).attributions
        a16 = explain(model, x, t, name, 32, precision="bf16").attributions
        dist = rel_errors(a16, a32)
        i32, i16 = insertion(model, x, a32, t).numpy(), insertion(model, x, a16, t).numpy()
        print(f"{name} bf16 vs fp32 maps over {len(x)} images: relative L2 median {np.median(dist):.3f} "
              f"(range {dist.min():.3f}-{dist.max():.3f}); insertion (black) mean fp32 {i32.mean():.4f}, "
              f"bf16 {i16.mean():.4f} (per image min difference {np.min(i16 - i32):+.4f})")


def memory_child(steps: int, tol: float | str | None) -> None:
    """(In its own process) adaptive IG on one 64 px image of the set: prints evaluations spent
    and the growth of the process's peak resident memory over a warm-up call's."""
    import json
    import resource

    import torch.nn.functional as F
    from fastattr.evalset import load_evalset
    from fastattr.models import load_default_model

    model = load_default_model()
    ev = load_evalset().subset(1)
    x = F.interpolate(ev.images[:1], size=64, mode="bilinear", antialias=True)
    fastattr.explain(model, x, ev.labels[:1], method="ig", steps=8, schedule="adaptive")  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    if tol == "uniform":  # the same passes, uniform: the chunks' activations alone
        e = fastattr.explain(model, x, ev.labels[:1], method="ig", steps=steps)
        e.extras["error_estimate"] = torch.tensor([math.nan])
    else:
        e = fastattr.explain(model, x, ev.labels[:1], method="ig", steps=steps, schedule="adaptive", tol=tol)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"evals": e.grad_evals, "peak_growth_mb": (after - before) / 1024,
                      "estimate": float(e.extras["error_estimate"][0])}))


def memory(args) -> None:
    import json
    import subprocess

    row_mb = 3 * 64 * 64 * 4 / 2**20
    print(f"\nmemory: adaptive IG, one 64 px image (a row: {row_mb * 1024:.0f} KB), each in its own process")
    print("| steps | tol | evaluations spent | rows of all steps (MB) | peak RSS growth (MB) | error_estimate |")
    print("|---|---|---|---|---|---|")
    # uniform rows: the chunk's activations (default batch at 64 px: 64 points; adaptive's rounds
    # without tol are up to steps / 8 points, one chunk) are most of the growth, not the rows
    for steps, tol in ((1000, "0.1"), (10000, "0.1"), (100000, "0.1"), (64, "none"), (256, "none"),
                       (64, "uniform"), (256, "uniform")):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(steps), tol,
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {steps} | {tol} | {r['evals']} | {steps * row_mb:.0f} | {r['peak_growth_mb']:.0f} | "
              f"{r['estimate']:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=9)
    ap.add_argument("--budgets", type=int, nargs="+", default=[8, 16, 32, 48, 64, 128])
    ap.add_argument("--ref-steps", type=int, default=1024)
    ap.add_argument("--check-steps", type=int, default=301)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--insertion-budget", type=int, default=32)
    ap.add_argument("--tol", type=float, default=0.1)
    ap.add_argument("--tol-budget", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/fastattr_bench_adaptive_v2")
    ap.add_argument("--plot", default="docs/adaptive.png")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--skip-precision", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-checks", action="store_true", help="no reference checks (adaptive half, uniform)")
    ap.add_argument("--results", help="save the accuracy rows to this JSON file")
    ap.add_argument("--plot-only", nargs="+", metavar="JSON", help="plot saved --results files (merged) and exit")
    ap.add_argument("--memory-child", nargs=2, metavar=("STEPS", "TOL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        tol = args.memory_child[1]
        memory_child(int(args.memory_child[0]), None if tol == "none" else tol if tol == "uniform" else float(tol))
        return
    if args.plot_only:  # runs of some variants each (e.g. Blur IG on fewer images), one figure
        import json

        merged = {}
        for f in args.plot_only:
            saved = json.loads(Path(f).read_text())
            merged.update({k: dict(v, images=saved["images"]) for k, v in saved["results"].items()})
        plot(merged, args.plot, saved["ref_steps"], saved["images"])
        return
    from fastattr.evalset import load_evalset
    from fastattr.models import load_default_model

    model = load_default_model()
    ev = load_evalset().subset(args.images)
    x, t = ev.images, ev.labels
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    print(f"threads={args.threads} images={len(x)} ({', '.join(ev.names)}) budgets={args.budgets}")
    if not args.skip_accuracy:
        results = accuracy(model, x, t, args, cache)
        if args.results:
            import json

            rows = {k: {"rows": v["rows"]} for k, v in results.items()}
            Path(args.results).write_text(json.dumps({"results": rows, "images": len(x), "ref_steps": args.ref_steps}))
        if args.plot:
            plot(results, args.plot, args.ref_steps, len(x))
    if not args.skip_time:
        timing(model, x, t, args)
    if not args.skip_precision:
        precision(model, x, t, args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
