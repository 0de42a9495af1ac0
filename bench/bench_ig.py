"""Side by side, one run: IG and IDGI-IG against the model-only floor, captum and PAIR.

    python bench/bench_ig.py [--repeats 5] [--tiny-repeats 60] [--steps 32] [--skip-compile]

Models: the bundled EfficientNet-Lite0 at 224x224 (one photo), and a tiny conv-pool-linear model
that exposes per-step library overhead. All candidates run interleaved in one process with the
same threads; medians and ratios to the floor are printed as markdown. A subprocess per steps
value measures peak memory (ru_maxrss) for steps=32 vs steps=1024.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report, tiny_model  # noqa: E402
from peers import captum_ig, pair_ig  # noqa: E402

import fastattr  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402


def candidates(model, image, target, steps, batch, with_compile):
    x = image[None]
    c = {
        "floor": floor_fn(model, image, steps, batch),  # the engine's memory format (channels-last)
        "floor NCHW": floor_fn(model, image, steps, batch, channels_last=False),
        "fastattr IG": lambda: fastattr.attribute(model, x, target, steps=steps, batch_size=batch),
        "fastattr IDGI-IG": lambda: fastattr.attribute(model, x, target, steps=steps, idgi=True, batch_size=batch),
    }
    if with_compile:
        c["fastattr IG compile"] = lambda: fastattr.attribute(model, x, target, steps=steps, batch_size=batch, compile=True)
        c["fastattr IDGI-IG compile"] = lambda: fastattr.attribute(model, x, target, steps=steps, idgi=True,
                                                                 batch_size=batch, compile=True)
    c["captum IG (riemann_left)"] = lambda: captum_ig(model, x, target, steps, internal_batch_size=batch)
    c["PAIR IG (batch 8)"] = lambda: pair_ig(model, image, target, steps, batch_size=8)
    return c


def peak_rss_mb(steps: int) -> float:
    """Peak RSS (MB) of a fresh process running IDGI-IG on EfficientNet-Lite0 with `steps`."""
    code = (
        "import resource, torch, fastattr\n"
        "from fastattr.models import load_default_model\n"
        "from fastattr.images import bundled_images\n"
        "m = load_default_model(); x = bundled_images()['chelsea'][None]\n"
        "fastattr.attribute(m, x, 285, steps=8, idgi=True)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"fastattr.attribute(m, x, 285, steps={steps}, idgi=True)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    # The tiny model's calls take ~10 ms and drift by milliseconds (memory placement, other load):
    # a median of 5 moved its per-step overhead by several us/step between runs; 60 are ~6 s.
    ap.add_argument("--tiny-repeats", type=int, default=60)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    batch = default_batch_size(torch.device("cpu"))
    print(f"threads={torch.get_num_threads()} batch={batch} steps={args.steps} repeats={args.repeats}\n")

    effnet = load_default_model()
    image = bundled_images()["chelsea"]
    t = interleaved(candidates(effnet, image, 285, args.steps, batch, not args.skip_compile), repeats=args.repeats)
    print(report(t, title=f"EfficientNet-Lite0 224x224, {args.steps} steps, 1 image"))
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"\nIDGI over IG: {med['fastattr IDGI-IG'] / med['fastattr IG']:.3f}x")

    tiny = tiny_model()
    small = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    tsteps = 256
    tbatch = default_batch_size(torch.device("cpu"), small.numel())  # the engine's chunk for 32x32
    print(f"\ntiny model: batch={tbatch} for fastattr, the floor and captum; PAIR keeps batch 8")
    t2 = interleaved(candidates(tiny, small, 3, tsteps, tbatch, False), repeats=args.tiny_repeats, shuffle=True)
    print("\n" + report(t2, title=f"tiny model 32x32, {tsteps} steps (per-step overhead)"))
    m2 = {k: statistics.median(v) for k, v in t2.items()}
    over = {k: (m2[k] - m2["floor"]) / tsteps * 1e6 for k in m2 if not k.startswith("floor")}
    print("\nper-step overhead over the floor (us/step): " + ", ".join(f"{k}: {v:.1f}" for k, v in over.items()))
    fa = max(over["fastattr IG"], 1e-3)
    print(f"PAIR / fastattr overhead: {over['PAIR IG (batch 8)'] / fa:.1f}x; "
          f"captum / fastattr overhead: {over['captum IG (riemann_left)'] / fa:.1f}x")

    if not args.skip_memory:
        m32, m1024 = peak_rss_mb(32), peak_rss_mb(1024)
        print(f"\npeak RSS IDGI-IG steps=32: {m32:.0f} MB, steps=1024: {m1024:.0f} MB, ratio {m1024 / m32:.3f}")


if __name__ == "__main__":
    main()
