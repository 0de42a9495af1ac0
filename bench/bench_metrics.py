"""Speed of the metrics, side by side in one run (interleaved repeats, medians):

1. insertion + deletion of one image at 21 points (black base) vs the model-only floor: the same
   42 perturbed images through the model, forward only, in chunks of the engine's batch size.
2. pic(variant='pair') vs PAIR's compute_pic_metric (SIC and AIC, as PAIR's notebook: two calls)
   on the same image, map and random mask; plus the WebP-only floor (the 15 lossless encodings
   both must do: PAIR's entropy is a byte length, so no exact implementation can skip them).

    python bench/bench_metrics.py [--repeats 3] [--pic-repeats 2] [--size 224]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from harness import interleaved, report  # noqa: E402

if not hasattr(np, "trapz"):  # saliency 0.2.1 calls np.trapz, removed in numpy 2.4
    np.trapz = np.trapezoid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pic-repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(2)

    from fastattr.engine import Engine
    from fastattr.images import bundled_images
    from fastattr.metrics import deletion, insertion, pic
    from fastattr.metrics.pic import random_masks_like
    from fastattr.metrics.pic_pair import PAIR_THRESHOLDS, default_workers, webp_length
    from fastattr.models import load_default_model

    model = load_default_model()
    eng = Engine(model)
    x = bundled_images(args.size)["coffee"][None]
    # a map with structure (not noise): vanilla gradient magnitude
    import fastattr

    amap = fastattr.attribute(model, x, method="vanilla").abs()
    t = eng.logits(x).argmax(1)
    pts = x.expand(42, -1, -1, -1).clone()

    def floor():
        eng.value(pts, t.expand(42))

    def ins_del():
        insertion(eng, x, amap, t)
        deletion(eng, x, amap, t)

    times = interleaved({"floor": floor, "insertion+deletion": ins_del}, repeats=args.repeats)
    print(report(times, title=f"insertion + deletion, 1 image {args.size}px, 2 x 21 points, batch {eng.batch_size}; "
                              "floor = 42 forwards batched"))

    from saliency.metrics import pic as P

    img = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    sal = amap[0].sum(0).numpy()
    rm = random_masks_like(1, args.size, args.size, seed=0)
    c = int(t)

    def pred(batch, aic):
        xb = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            lg = model(xb)
        return ((lg.argmax(1) == c).float() if aic else lg.softmax(1)[:, c]).numpy().tolist()

    def pair():
        for aic in (False, True):
            try:
                P.compute_pic_metric(img, sal, rm[0].numpy(), lambda b: pred(b, aic), list(PAIR_THRESHOLDS),
                                     min_pred_value=0.5)
            except P.ComputePicMetricError:
                pass

    def ours():
        pic(eng, x, amap, t, random_masks=rm, min_pred=0.5)

    def ours_1proc():
        pic(eng, x, amap, t, random_masks=rm, min_pred=0.5, workers=0)

    from fastattr.metrics.pic_pair import blurred_image, threshold_masks

    blurred = [blurred_image(img, m) for m in [rm[0].numpy()] + threshold_masks(sal, rm[0].numpy(), PAIR_THRESHOLDS)]

    def webp_floor():
        webp_length(img)
        for b in blurred:
            webp_length(b)

    times = interleaved({"webp floor (15 encodings, 1 process)": webp_floor, "PAIR compute_pic_metric x2 (SIC, AIC)": pair,
                         "fastattr pic pair, 1 process": ours_1proc,
                         f"fastattr pic pair, {default_workers()} workers": ours},
                        repeats=args.pic_repeats, warmup=0)
    print(report(times, floor="PAIR compute_pic_metric x2 (SIC, AIC)",
                 title="PIC pair, 1 image; 'x floor' column = time / PAIR's time (lower is better)"))


if __name__ == "__main__":
    main()
