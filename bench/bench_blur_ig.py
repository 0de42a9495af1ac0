"""Side by side, one run: the Blur IG blur pyramid and end-to-end Blur IG against the model-only
floor and PAIR saliency's BlurIG.

    python bench/bench_blur_ig.py [--repeats 3] [--steps 32] [--pyramid-steps 100] [--skip-e2e]

1. Pyramid: what Blur IG needs besides gradients for `pyramid-steps` steps of one 224x224x3 image:
   fastattr::gaussian_blur at sigma_i and sigma_i + grad_step (PAIR's finite difference, 2 blurs
   per step) and blur + exact d/dsigma, vs PAIR's per-step pair of scipy.ndimage blurs, and vs the
   banded-matrix (Toeplitz GEMM) formulation run through MKL in float32 (the algorithm choice).
2. End to end on EfficientNet-Lite0, `steps` steps, one photo: fastattr blur_ig (finite, exact,
   IDGI) vs the floor (the same number of forward+backward passes, same batch and threads) and
   PAIR BlurIG (batch_size=8). All candidates interleaved; medians and ratios printed as markdown.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402
from peers import pair_call_model_function  # noqa: E402

import fastattr  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402
from fastattr.kernels.gaussian_blur import blur_matrices  # noqa: E402
from fastattr.methods.blur_ig import blur_sigmas, finite_difference_blurs  # noqa: E402
from fastattr.ops.gaussian_blur import gaussian_blur  # noqa: E402


def pair_pyramid(image_hwc: np.ndarray, sigmas: list[float], grad_step: float):
    """PAIR's blur work per step: gaussian_blur(x, s) and gaussian_blur(x, s + grad_step)."""
    from saliency.core.blur_ig import gaussian_blur as pair_blur

    def run():
        for s in sigmas:
            x_step = pair_blur(image_hwc, s)
            _ = (pair_blur(image_hwc, s + grad_step) - x_step) / grad_step

    return run


def gemm_pyramid(image: torch.Tensor, sigmas: torch.Tensor, grad_step: float, chunk: int = 8):
    """The same 2 blurs per step as banded Toeplitz products B_h X B_w^T in float32 (MKL)."""

    def run():
        x = image[None]
        for s0 in range(0, len(sigmas), chunk):
            s = torch.cat([sigmas[s0:s0 + chunk], sigmas[s0:s0 + chunk] + grad_step])
            bh, _ = blur_matrices(s, image.shape[1], False)
            bw, _ = blur_matrices(s, image.shape[2], False)
            bh, bw = bh.float()[:, None], bw.float()[:, None]
            _ = (bh @ x) @ bw.transpose(-1, -2)

    return run


def op_pyramid(image: torch.Tensor, sigmas: torch.Tensor, grad_step: float, exact: bool, chunk: int = 8):
    """The method's blur work chunk by chunk as Blur IG does it (8 steps per engine chunk)."""

    def run():
        x = image[None] if exact else image[None].double()  # finite blurs in float64, as the method
        for s0 in range(0, len(sigmas), chunk):
            s = sigmas[s0:s0 + chunk]
            if exact:
                gaussian_blur(x, s, torch.zeros(len(s), dtype=torch.long), derivative=True)
            else:
                finite_difference_blurs(x, s, torch.zeros(len(s), dtype=torch.long), grad_step)

    return run


def pair_blur_ig(model, image: torch.Tensor, target: int, steps: int, batch_size: int = 8):
    """PAIR BlurIG map (H, W, C) for one CHW image, softmax probability like fastattr's default."""
    import saliency.core as saliency

    return saliency.BlurIG().GetMask(image.permute(1, 2, 0).numpy(), pair_call_model_function(model),
                                     {"target": target}, steps=steps, batch_size=batch_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--pyramid-steps", type=int, default=100)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from fastattr.images import bundled_images

    image = bundled_images()["chelsea"]
    batch = default_batch_size(torch.device("cpu"))
    print(f"threads={torch.get_num_threads()} batch={batch} repeats={args.repeats}\n")

    sig = blur_sigmas(50.0, args.pyramid_steps, False)[:-1]  # the steps' sigmas, as Blur IG uses them
    hwc = image.permute(1, 2, 0).numpy().copy()
    t = interleaved({
        "PAIR scipy pair of blurs": pair_pyramid(hwc, sig.tolist(), 0.01),
        "fastattr op, 2 blurs (finite)": op_pyramid(image, sig, 0.01, exact=False),
        "fastattr op, blur + exact d/dsigma": op_pyramid(image, sig, 0.01, exact=True),
        "float32 Toeplitz GEMM, 2 blurs": gemm_pyramid(image, sig, 0.01),
    }, repeats=args.repeats, warmup=0)
    print(report(t, floor="PAIR scipy pair of blurs",
                 title=f"blur pyramid, {args.pyramid_steps} steps, 224x224x3 (x floor = x PAIR)"))
    med = {k: statistics.median(v) for k, v in t.items()}
    pair = med["PAIR scipy pair of blurs"]
    print("\nspeed-up over PAIR: " + ", ".join(f"{k}: {pair / v:.1f}x" for k, v in med.items() if "PAIR" not in k))

    if args.skip_e2e:
        return
    from fastattr.models import load_default_model

    model = load_default_model()
    x = image[None]
    target = int(model(x).argmax())
    steps = args.steps
    cands = {
        "floor": floor_fn(model, image, steps, batch),  # the engine's memory format (channels-last)
        "floor NCHW": floor_fn(model, image, steps, batch, channels_last=False),
        "fastattr blur_ig (finite)": lambda: fastattr.attribute(model, x, target, method="blur_ig", steps=steps),
        "fastattr blur_ig (exact)": lambda: fastattr.attribute(model, x, target, method="blur_ig", steps=steps,
                                                               derivative="exact"),
        "fastattr IDGI blur_ig": lambda: fastattr.attribute(model, x, target, method="blur_ig", steps=steps,
                                                            idgi=True),
        "PAIR BlurIG (batch 8)": lambda: pair_blur_ig(model, image, target, steps, batch_size=8),
    }
    t2 = interleaved(cands, repeats=args.repeats)
    print("\n" + report(t2, title=f"EfficientNet-Lite0 224x224, {steps} steps, 1 image"))
    m2 = {k: statistics.median(v) for k, v in t2.items()}
    fin = m2["fastattr blur_ig (finite)"]
    print(f"\nPAIR / fastattr finite: {m2['PAIR BlurIG (batch 8)'] / fin:.2f}x; "
          f"fastattr finite / floor: {fin / m2['floor']:.3f}x; "
          f"exact / floor: {m2['fastattr blur_ig (exact)'] / m2['floor']:.3f}x")


if __name__ == "__main__":
    main()
