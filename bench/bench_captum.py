"""fastattr.captum against captum on captum users' own code, and SmoothGrad against the floor.

    python bench/bench_captum.py [--repeats 5] [--images 1] [--steps 32] [--nsamples 32]

The captum call as its users write it: EfficientNet-Lite0 at 224x224 behind a lambda that applies
softmax, IntegratedGradients(...).attribute(x, target=t, n_steps=32, method="gausslegendre",
internal_batch_size=8), once with `from captum.attr import ...` and once with
`from fastattr.captum import ...`. Prints the largest difference (relative to captum's largest
magnitude; the issue asks <= 1e-3), the same with channels_last=False (NCHW, as captum feeds the
model: what is left of the difference is the channels-last convolutions' rounding, which depends on
the thread count), and how far each float32 map is from a float64 run of the same model (captum's IG
of model.double() on double inputs; fastattr.captum's float64 map equals it to ~1e-15), then
interleaved medians (bench/harness.py) with ratios to the
model-only floor for the same number of gradient evaluations, and the captum / fastattr.captum
ratio. SmoothGrad rows: fastattr.smoothgrad (vanilla, nsamples copies) and NoiseTunnel(Saliency)
of both libraries, against the floor for nsamples gradient evaluations per image.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402

import fastattr  # noqa: E402
import fastattr.captum as fc  # noqa: E402


def floor_images(model, images, passes, batch, channels_last=None):
    """The floor for `passes` gradient evaluations of each image (sequentially, as the libraries go)."""
    runs = [floor_fn(model, img, passes, batch, channels_last=channels_last) for img in images]
    return lambda: [r() for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--images", type=int, default=1, help="bundled photos explained per call")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8, help="internal_batch_size (points per forward+backward)")
    ap.add_argument("--nsamples", type=int, default=32, help="SmoothGrad / NoiseTunnel noisy copies per image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("ig", "smoothgrad"), help="time one of the two tables (the accuracy lines "
                    "are printed either way)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    model = load_default_model()
    photos = list(bundled_images().values())[: args.images]
    x = torch.stack(photos)
    with torch.no_grad():
        target = model(x).argmax(1)
    fwd = lambda inp: model(inp).softmax(-1)  # noqa: E731  (what a captum user passes)
    ig_kw = dict(target=target, n_steps=args.steps, method="gausslegendre", internal_batch_size=args.batch)
    nt_kw = dict(nt_type="smoothgrad", nt_samples=args.nsamples, nt_samples_batch_size=args.batch, stdevs=0.15,
                 target=target)
    print(f"threads={torch.get_num_threads()} images={len(photos)} steps={args.steps} batch={args.batch} "
          f"nsamples={args.nsamples} repeats={args.repeats}\n")

    ref = IntegratedGradients(fwd).attribute(x, **ig_kw)
    ours = fc.IntegratedGradients(fwd).attribute(x, **ig_kw)
    rel = ((ours - ref).abs().max() / ref.abs().max()).item()
    print(f"fastattr.captum vs captum IG (gausslegendre, {args.steps} steps): max |diff| / max |captum| = "
          f"{rel:.2e} ({'ok' if rel <= 1e-3 else 'ABOVE'} 1e-3)")
    nchw = fc.IntegratedGradients(fwd).attribute(x, channels_last=False, **ig_kw)
    rel_nchw = ((nchw - ref).abs().max() / ref.abs().max()).item()
    print(f"  with channels_last=False (NCHW inputs, as captum's): {rel_nchw:.2e} "
          "(the rest of the difference is channels-last convolution rounding)")
    model64 = copy.deepcopy(model).double()
    ref64 = IntegratedGradients(lambda inp: model64(inp).softmax(-1)).attribute(x.double(), **ig_kw)
    err64 = lambda a: ((a.double() - ref64).abs().max() / ref64.abs().max()).item()  # noqa: E731
    print(f"  against float64 (captum IG of model.double(), double inputs): max |map - f64| / max |f64| = "
          f"{err64(ours):.4e} fastattr.captum (channels-last), {err64(nchw):.4e} fastattr.captum NCHW, "
          f"{err64(ref):.4e} captum")
    torch.manual_seed(0)
    ref_nt = NoiseTunnel(Saliency(fwd)).attribute(x, **nt_kw)
    torch.manual_seed(0)
    ours_nt = fc.NoiseTunnel(fc.Saliency(fwd)).attribute(x, **nt_kw)
    rel_nt = ((ours_nt - ref_nt).abs().max() / ref_nt.abs().max()).item()
    print(f"fastattr.captum vs captum NoiseTunnel(Saliency), same seed: {rel_nt:.2e}\n")

    n = len(photos)
    if args.only != "smoothgrad":
        time_ig(args, model, photos, x, fwd, ig_kw, n)
    if args.only != "ig":
        time_smoothgrad(args, model, photos, x, target, fwd, nt_kw)


def time_ig(args, model, photos, x, fwd, ig_kw, n) -> None:
    from captum.attr import IntegratedGradients

    cands = {
        "floor": floor_images(model, photos, args.steps, args.batch),
        "floor NCHW": floor_images(model, photos, args.steps, args.batch, channels_last=False),
        "captum IG": lambda: IntegratedGradients(fwd).attribute(x, **ig_kw),
        "fastattr.captum IG": lambda: fc.IntegratedGradients(fwd).attribute(x, **ig_kw),
    }
    t = interleaved(cands, repeats=args.repeats, warmup=args.warmup)
    print(report(t, title=f"IG, EfficientNet-Lite0 224x224, {n} image(s), {args.steps} steps, softmax lambda"))
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"\ncaptum / fastattr.captum: {med['captum IG'] / med['fastattr.captum IG']:.3f}x faster "
          f"(issue 14 asks >= 1.25x)")


def time_smoothgrad(args, model, photos, x, target, fwd, nt_kw) -> None:
    from captum.attr import NoiseTunnel, Saliency

    sg = {
        "floor": floor_images(model, photos, args.nsamples, args.batch),
        "fastattr.smoothgrad (vanilla)": lambda: fastattr.smoothgrad(
            model, x, target, nsamples=args.nsamples, batch_size=args.batch,
            generator=torch.Generator().manual_seed(0)),
        "captum NoiseTunnel(Saliency)": lambda: NoiseTunnel(Saliency(fwd)).attribute(x, **nt_kw),
        "fastattr.captum NoiseTunnel(Saliency)": lambda: fc.NoiseTunnel(fc.Saliency(fwd)).attribute(x, **nt_kw),
    }
    t2 = interleaved(sg, repeats=args.repeats, warmup=args.warmup)
    print("\n" + report(t2, title=f"SmoothGrad, {args.nsamples} noisy copies per image "
                                  f"(floor: the same {args.nsamples} gradient evaluations per image)"))
    m2 = {k: statistics.median(v) for k, v in t2.items()}
    print(f"\nfastattr.smoothgrad / floor: {m2['fastattr.smoothgrad (vanilla)'] / m2['floor']:.3f}x "
          f"(issue 14 asks <= 1.05x); captum NoiseTunnel / fastattr.captum NoiseTunnel: "
          f"{m2['captum NoiseTunnel(Saliency)'] / m2['fastattr.captum NoiseTunnel(Saliency)']:.3f}x")


if __name__ == "__main__":
    main()
