"""Side by side, one run: the CPU C++ op fastattr::path_accumulate_ vs the pure-torch reference.

    python bench/bench_path_accumulate.py [--repeats 21] [--steps 8] [--no-floor]

One chunk of S=8 steps of D=3*224*224 fp32 gradients into 2 image rows (steps of one image
repeat, as in a real chunk), Riemann and IDGI modes, interleaved, medians. The floor is the same
S forward+backward passes of the bundled EfficientNet-Lite0 at batch S (what the accumulate rides
on); its ratio shows the op's share of a real chunk.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402

import fastattr  # noqa: E402,F401  (registers torch.ops.fastattr.*)
from fastattr.kernels.path_accumulate import path_accumulate_ref  # noqa: E402
from fastattr.ops._library import HAS_C  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--no-floor", action="store_true", help="skip the EfficientNet-Lite0 floor")
    args = p.parse_args()
    torch.set_num_threads(2)
    if not HAS_C:
        sys.exit("fastattr._C is not built: the C++ op cannot be measured")

    S, D, N = args.steps, 3 * 224 * 224, 2
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(S, D, generator=gen)
    coef = torch.rand(S, generator=gen, dtype=torch.float64)
    index = torch.arange(S) * N // S  # image-major: the first half of the steps to row 0
    acc = torch.zeros(N, D)
    op = torch.ops.fastattr.path_accumulate_

    cands = {}
    if not args.no_floor:
        from fastattr.images import bundled_images
        from fastattr.models import load_default_model

        cands["floor"] = floor_fn(load_default_model(), bundled_images()["chelsea"], S, S)
    for mode, idgi in (("Riemann", False), ("IDGI", True)):
        cands[f"C++ op {mode}"] = lambda idgi=idgi: op(acc, grads, coef, index, idgi)
        cands[f"torch ref {mode}"] = lambda idgi=idgi: path_accumulate_ref(acc, grads, coef, index, idgi)
    times = interleaved(cands, repeats=args.repeats, warmup=2)
    print(report(times, floor="floor", title=f"path_accumulate_ S={S} D={D} fp32, "
                                                f"{torch.get_num_threads()} threads"))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for mode in ("Riemann", "IDGI"):
        print(f"{mode}: torch ref / C++ op = {med[f'torch ref {mode}'] / med[f'C++ op {mode}']:.2f}x")


if __name__ == "__main__":
    main()
