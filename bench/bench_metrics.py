"""Speed (and exactness) of the metrics on EfficientNet-Lite0, per image, side by side in one run
(interleaved repeats, medians):

1. insertion + deletion (black base, 2 x 21 points) in one stream of model calls, and as two
   calls, against the floor: the same 42 images through the model, forward only, in chunks of
   the engine's batch size.
2. SIC/AIC pair: fastattr pic (both curves from one pass) against PAIR's compute_pic_metric
   called twice (SIC, AIC, as PAIR's notebook does) on the same image, map and random mask; and
   the floors an exact implementation cannot go below: the 15 lossless WebP encodings (PAIR's
   entropy is their byte length), the 14 Delaunay triangulations of the kept pixels (qhull's
   choice in degenerate cells decides the blurred pixels; see README), the 15 forwards.
3. SIC/AIC idgi with entropy and with MS-SSIM (no peer implementation exists).
4. --accuracy: on the bundled photos with vanilla and IG + IDGI maps, fastattr's blurred images
   against PAIR's create_blurred_image (differing pixels) and its SIC/AIC AUCs against
   compute_pic_metric (max |difference|). Deterministic; slow (PAIR takes ~15 s per call).

    python bench/bench_metrics.py [--repeats 5] [--pic-repeats 3] [--size 224] [--accuracy]
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


def _pair_pred(model, c: int, aic: bool):
    def pred(batch):
        xb = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            lg = model(xb).double()
        return ((lg.argmax(1) == c).double() if aic else lg.softmax(1)[:, c]).numpy().tolist()

    return pred


def _pair_call(P, img, sal, rm, pred):
    from fastattr.metrics.pic_pair import PAIR_THRESHOLDS

    try:
        return P.compute_pic_metric(img, sal, rm, pred, list(PAIR_THRESHOLDS), min_pred_value=0.5)
    except P.ComputePicMetricError:
        return None


def accuracy(model, size: int) -> None:
    """fastattr's PIC pair against PAIR on real photos: blurred images and AUCs."""
    from saliency.metrics import pic as P

    import fastattr
    from fastattr.images import bundled_images
    from fastattr.metrics import pic
    from fastattr.metrics.pic import random_masks_like
    from fastattr.metrics.pic_pair import PAIR_THRESHOLDS, blurred_image, threshold_masks

    print("### PIC pair against PAIR on the bundled photos (deterministic)")
    print("| photo | map | blurred images | differing pixels | SIC AUC |diff| | AIC AUC |diff| |")
    print("|---|---|---|---|---|---|")
    for name, x in bundled_images(size).items():
        x = x[None]
        for label, kw in (("vanilla", {"method": "vanilla"}), ("ig + IDGI", {"method": "ig", "idgi": True, "steps": 16})):
            amap = fastattr.attribute(model, x, **kw)
            res = pic(model, x, amap, random_masks=random_masks_like(1, size, size, seed=0), min_pred=0.5, workers=0)
            img = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            sal = amap[0].double().sum(0).numpy()
            rm = random_masks_like(1, size, size, seed=0)[0].numpy()
            masks = [rm] + threshold_masks(sal, rm, PAIR_THRESHOLDS)
            diff = sum(int((blurred_image(img, m) != P.create_blurred_image(img, m)).any(-1).sum()) for m in masks)
            c = int(res.targets[0])
            d = []
            for kind, aic in (("sic", False), ("aic", True)):
                r = _pair_call(P, img, sal, rm, _pair_pred(model, c, aic))
                ours = float(res.per_image[f"{kind}_auc"][0])
                d.append("both skip" if r is None and np.isnan(ours) else f"{abs(ours - r.auc):.2e}" if r else "PAIR skips")
            print(f"| {name} | {label} | {len(masks)} | {diff} | {d[0]} | {d[1]} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pic-repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accuracy", action="store_true", help="also compare with PAIR on the bundled photos")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import fastattr
    from fastattr.engine import Engine
    from fastattr.images import bundled_images
    from fastattr.metrics import deletion, insertion, insertion_deletion, pic
    from fastattr.metrics.pic import random_masks_like
    from fastattr.metrics.pic_pair import PAIR_THRESHOLDS, blurred_image, default_workers, threshold_masks, webp_length
    from fastattr.models import load_default_model

    model = load_default_model()
    if args.accuracy:
        accuracy(model, args.size)
    if args.skip_speed:
        return
    eng = Engine(model)
    x = bundled_images(args.size)["coffee"][None]
    # a map with structure (not noise): the IDGI-IG map
    amap = fastattr.attribute(model, x, method="ig", idgi=True, steps=16)
    t = eng.logits(x).argmax(1)
    pts = x.expand(42, -1, -1, -1).clone()

    def floor():
        eng.value(pts, t.expand(42))

    times = interleaved({"floor": floor,
                         "insertion_deletion (one stream)": lambda: insertion_deletion(eng, x, amap, t),
                         "insertion + deletion (two calls)": lambda: (insertion(eng, x, amap, t), deletion(eng, x, amap, t))},
                        repeats=args.repeats)
    print(report(times, title=f"insertion + deletion, 1 image {args.size}px, 2 x 21 points, batch {eng.batch_size}; "
                              "floor = the same 42 forwards"))

    from saliency.metrics import pic as P
    from scipy.spatial import Delaunay

    img = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    sal = amap[0].double().sum(0).numpy()
    rm = random_masks_like(1, args.size, args.size, seed=0)
    c = int(t)
    masks = [rm[0].numpy()] + threshold_masks(sal, rm[0].numpy(), PAIR_THRESHOLDS)
    blurred = [blurred_image(img, m) for m in masks]
    points = []
    for m in masks:
        m = m.copy()
        m[[0, 0, -1, -1], [0, -1, 0, -1]] = True
        points.append(np.argwhere(m).astype(np.float64))
    x15 = torch.from_numpy(np.stack([img] + blurred)).permute(0, 3, 1, 2).float() / 255

    def pair():
        for aic in (False, True):
            _pair_call(P, img, sal, rm[0].numpy(), _pair_pred(model, c, aic))

    cands = {
        "PAIR compute_pic_metric x2 (SIC, AIC)": pair,
        "fastattr pic pair, 1 process": lambda: pic(eng, x, amap, t, random_masks=rm, min_pred=0.5, workers=0),
        f"fastattr pic pair, {default_workers()} workers": lambda: pic(eng, x, amap, t, random_masks=rm, min_pred=0.5),
        "floor: 15 WebP encodings": lambda: [webp_length(b) for b in [img] + blurred],
        "floor: 14 Delaunay triangulations": lambda: [Delaunay(p) for p in points],
        "floor: 15 forwards": lambda: eng.logits(x15),
    }
    times = interleaved(cands, repeats=args.pic_repeats, warmup=0)
    print(report(times, floor="PAIR compute_pic_metric x2 (SIC, AIC)",
                 title="SIC/AIC pair, 1 image; 'x floor' column = time / PAIR's time (lower is better)"))

    cands = {
        "fastattr pic idgi entropy, 1 process": lambda: pic(eng, x, amap, t, variant="idgi", info="entropy", workers=0),
        f"fastattr pic idgi entropy, {default_workers()} workers": lambda: pic(eng, x, amap, t, variant="idgi",
                                                                             info="entropy"),
        "fastattr pic idgi MS-SSIM": lambda: pic(eng, x, amap, t, variant="idgi", info="msssim", workers=0),
        "floor: 26 forwards": lambda: eng.logits(x.expand(26, -1, -1, -1).contiguous()),
    }
    times = interleaved(cands, repeats=args.pic_repeats, warmup=1)
    print(report(times, floor="floor: 26 forwards", title="SIC/AIC idgi, 1 image (25 bokeh images + the input)"))


if __name__ == "__main__":
    main()
