"""fastattr.captum.GradientShap against captum's GradientShap: same maps for the same seed, time, and
peak memory growth (captum evaluates all n_samples in one batch).

    python bench/bench_gradient_shap.py [--samples 48] [--images 1] [--repeats 3] [--batch 8]
                                        [--threads 2] [--stdevs 0.1] [--skip-timing] [--skip-memory]

EfficientNet-Lite0 (fastattr.models.load_default_model()) at 224x224 behind a softmax lambda, the
bundled photo(s), 3 baselines (black, mid-grey, uniform noise), GradientShap(fwd).attribute(x, baselines,
n_samples=48, stdevs=0.1, target=predicted class), np.random.seed(0) and torch.manual_seed(0) before
each call. Prints:
- accuracy: max |fastattr.captum - captum| / max |captum| with channels-last inputs (fastattr's default
  for conv models) and with channels_last=False (NCHW, captum's format), same seed; captum fed
  channels-last inputs against fastattr.captum; each map's distance to a float64 run of the same draws;
- time: interleaved medians (bench/harness.py) of captum, fastattr.captum (internal_batch_size=--batch)
  and the model-only floor (the same n_samples forward+backward passes in chunks of --batch), wall
  time and process CPU time (on a loaded machine the CPU time is the steadier of the two; with 2
  threads it includes OpenMP spin-waiting, so --threads 1 is the cleanest comparison there);
- memory: peak RSS growth during one call (VmHWM after resetting it through /proc/self/clear_refs,
  minus VmRSS before the call, after a warm-up call), each library in its own fresh process
  (`--child captum|fastattr`).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402


def setup(n_images: int):
    """The model, a softmax lambda over it, the photos (N, 3, 224, 224), 3 baselines and the targets."""
    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    model = load_default_model()
    x = torch.stack(list(bundled_images().values())[:n_images])
    baselines = torch.stack([torch.zeros(3, 224, 224), torch.full((3, 224, 224), 0.5),
                             torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(7))])
    with torch.no_grad():
        target = model(x).argmax(1)
    fwd = lambda inp: model(inp).softmax(-1)  # noqa: E731  (what a captum user passes)
    return model, fwd, x, baselines, target


def run(lib: str, fwd, x, baselines, target, args, **extra):
    """One seeded GradientShap call of `lib` ("captum" or "fastattr")."""
    if lib == "captum":
        from captum.attr import GradientShap
    else:
        from fastattr.captum import GradientShap

        extra = dict(dict(internal_batch_size=args.batch), **extra)
    np.random.seed(0)
    torch.manual_seed(0)
    return GradientShap(fwd).attribute(x, baselines, n_samples=args.samples, stdevs=args.stdevs, target=target,
                                       **extra)


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|."""
    return ((a.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def rel_l2(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm()).item()


def _status_mb(key: str) -> float:
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024


def child(lib: str, args) -> None:
    """Peak RSS growth of one call in this (fresh) process, printed as JSON."""
    torch.set_num_threads(args.threads)
    model, fwd, x, baselines, target = setup(args.images)
    small = argparse.Namespace(**dict(vars(args), samples=2))
    run(lib, fwd, x, baselines, target, small)  # warm-up: lazy initialisation is not the call's memory
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (the peak RSS) to the current RSS
    before = _status_mb("VmRSS")
    run(lib, fwd, x, baselines, target, args)
    print(json.dumps({"lib": lib, "growth_mb": _status_mb("VmHWM") - before, "rss_before_mb": before}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8, help="fastattr.captum internal_batch_size and the floor's chunk")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stdevs", type=float, default=0.1)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", choices=("captum", "fastattr"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args)
        return
    torch.set_num_threads(args.threads)
    model, fwd, x, baselines, target = setup(args.images)
    print(f"threads={torch.get_num_threads()} images={x.shape[0]} samples={args.samples} baselines=3 "
          f"stdevs={args.stdevs} batch={args.batch} repeats={args.repeats}\n")

    ref = run("captum", fwd, x, baselines, target, args)
    maps = {"captum": ref}
    for name, kw in (("channels-last (default)", {}), ("channels_last=False", dict(channels_last=False))):
        maps[name] = run("fastattr", fwd, x, baselines, target, args, **kw)
        print(f"fastattr.captum vs captum GradientShap, same seed, {name}: max |diff| / max |captum| = "
              f"{rel(maps[name], ref):.2e} (relative L2 {rel_l2(maps[name], ref):.2e})")
    # What is left with channels-last inputs is their convolution rounding: captum fed channels-last
    # inputs gives fastattr's map, and both float32 maps are as far from a float64 run of the same draws.
    cl = lambda inp: model(inp.contiguous(memory_format=torch.channels_last)).softmax(-1)  # noqa: E731
    maps["captum, channels-last inputs"] = run("captum", cl, x, baselines, target, args)
    print(f"  captum fed channels-last inputs vs fastattr.captum (default): "
          f"{rel(maps['channels-last (default)'], maps['captum, channels-last inputs']):.2e}")
    model64 = copy.deepcopy(model).double()
    ref64 = run("captum", lambda inp: model64(inp).softmax(-1), x.double(), baselines.double(), target, args)
    print("  against float64 (captum's GradientShap of model.double(), same draws): max |map - f64| / max |f64| = "
          + ", ".join(f"{rel(m, ref64):.2e} {k}" for k, m in maps.items()))

    if not args.skip_timing:
        cands = {
            "floor": lambda: [floor_fn(model, img, args.samples, args.batch)() for img in x],
            "captum GradientShap": lambda: run("captum", fwd, x, baselines, target, args),
            "fastattr.captum GradientShap": lambda: run("fastattr", fwd, x, baselines, target, args),
        }
        cpu = {k: [] for k in cands}

        def cpu_timed(name, fn):
            def call():
                c = time.process_time()
                fn()
                cpu[name].append(time.process_time() - c)
            return call

        t = interleaved({k: cpu_timed(k, f) for k, f in cands.items()}, repeats=args.repeats, warmup=args.warmup)
        print("\n" + report(t, title=f"GradientShap, EfficientNet-Lite0 224x224, {x.shape[0]} image(s), "
                                     f"{args.samples} samples, wall time"))
        for title, times in (("wall", t), ("CPU (process time, all threads)", {k: v[args.warmup:] for k, v in cpu.items()})):
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"{title}: captum / fastattr.captum: "
                  f"{med['captum GradientShap'] / med['fastattr.captum GradientShap']:.3f}x; fastattr.captum / floor: "
                  f"{med['fastattr.captum GradientShap'] / med['floor']:.3f}; captum / floor: "
                  f"{med['captum GradientShap'] / med['floor']:.3f} (medians "
                  + ", ".join(f"{k} {m:.2f} s" for k, m in med.items()) + ")")

    if not args.skip_memory:
        growth = {}
        for lib in ("captum", "fastattr"):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", lib, "--samples", str(args.samples),
                   "--images", str(args.images), "--batch", str(args.batch), "--threads", str(args.threads),
                   "--stdevs", str(args.stdevs)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            growth[lib] = json.loads(out.strip().splitlines()[-1])["growth_mb"]
        print(f"\npeak RSS growth during one call (separate processes): captum {growth['captum']:.0f} MB, "
              f"fastattr.captum {growth['fastattr']:.0f} MB ({growth['fastattr'] / growth['captum']:.2f} of captum's)")


if __name__ == "__main__":
    main()
