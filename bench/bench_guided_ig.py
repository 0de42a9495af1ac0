"""Side by side, one run: Guided IG on 8 images in one call vs PAIR GIG per image and the floor.

    python bench/bench_guided_ig.py [--repeats 3] [--steps 32] [--images 8] [--warmup 1]

EfficientNet-Lite0 at 224x224, the bundled photos (repeated to --images). Candidates run
interleaved in one process with the same threads; medians are reported. Per-image time of
fastattr = its call time / images; PAIR GIG (guided_ig_impl, one image per gradient call, the
only way it runs) is timed on one image. The floor is images x steps forward+backward passes at
the engine's batch size. Also prints the share of fastattr's time spent outside the model (the
GIG path arithmetic: quantiles and masked inner loop).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402
from peers import pair_call_model_function  # noqa: E402

import fastattr  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402
from fastattr.methods import guided_ig as gig_method  # noqa: E402


def shim_pair_numpy() -> None:
    """saliency 0.2.1 calls np.quantile(interpolation=), removed in numpy 2.4: map it to method=."""
    import saliency.core.guided_ig as gig

    shim = types.ModuleType("numpy_shim")
    shim.__getattr__ = lambda name: getattr(np, name)
    shim.quantile = lambda a, q, interpolation="linear", **kw: np.quantile(a, q, method=interpolation, **kw)
    gig.np = shim


def pair_gig(model, image: torch.Tensor, target: int, steps: int) -> np.ndarray:
    """PAIR GuidedIG map (H, W, C) for one CHW image, zero baseline, PAIR defaults otherwise."""
    import saliency.core as saliency

    x = image.permute(1, 2, 0).numpy()
    return saliency.GuidedIG().GetMask(x, pair_call_model_function(model), {"target": target}, x_steps=steps,
                                       x_baseline=np.zeros_like(x))


def time_split(model, x, targets, steps, batch) -> tuple[float, float, float]:
    """(total s, s inside GuidedPath.step, inner iterations per step) of one fastattr GIG call."""
    spent = [0.0]
    original = gig_method.GuidedPath.step

    def timed(self, s, grad):
        t0 = time.perf_counter()
        original(self, s, grad)
        spent[0] += time.perf_counter() - t0

    gig_method.GuidedPath.step = timed
    try:
        t0 = time.perf_counter()
        e = fastattr.explain(model, x, targets, method="guided_ig", steps=steps, batch_size=batch)
        total = time.perf_counter() - t0
    finally:
        gig_method.GuidedPath.step = original
    return total, spent[0], e.extras["inner_iterations"] / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(2)
    shim_pair_numpy()
    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    model = load_default_model()
    photos = list(bundled_images().values())
    x = torch.stack([photos[i % len(photos)] for i in range(args.images)])
    with torch.no_grad():
        targets = model(x).argmax(1)
    n, steps = args.images, args.steps
    batch = default_batch_size(torch.device("cpu"))
    print(f"threads={torch.get_num_threads()} batch={batch} steps={steps} images={n} repeats={args.repeats}\n")

    cands = {
        "floor": floor_fn(model, x[0], n * steps, batch),
        f"fastattr GIG ({n} images)": lambda: fastattr.attribute(model, x, targets, method="guided_ig", steps=steps,
                                                                 batch_size=batch),
        f"fastattr IDGI-GIG ({n} images)": lambda: fastattr.attribute(model, x, targets, method="guided_ig",
                                                                      steps=steps, idgi=True, batch_size=batch),
        "PAIR GIG (1 image)": lambda: pair_gig(model, x[0], int(targets[0]), steps),
    }
    t = interleaved(cands, repeats=args.repeats, warmup=args.warmup)
    print(report(t, title=f"EfficientNet-Lite0 224x224, {steps} steps; floor = {n * steps} passes at batch {batch}"))
    med = {k: statistics.median(v) for k, v in t.items()}
    pair_per_image = med["PAIR GIG (1 image)"]
    print("\n| per image | s | x PAIR GIG | x floor |\n|---|---|---|---|")
    for k in ("floor", f"fastattr GIG ({n} images)", f"fastattr IDGI-GIG ({n} images)"):
        per = med[k] / n
        print(f"| {k} | {per:.4f} | {per / pair_per_image:.3f} | {med[k] / med['floor']:.3f} |")
    print(f"| PAIR GIG | {pair_per_image:.4f} | 1.000 | {pair_per_image / (med['floor'] / n):.3f} |")

    total, path_s, iters = time_split(model, x, targets, steps, batch)
    print(f"\nfastattr GIG split: {total:.3f} s total, {path_s:.3f} s in the GIG path arithmetic "
          f"({100 * path_s / total:.1f}%), {iters:.2f} inner iterations per step")


if __name__ == "__main__":
    main()
