"""Measures the cost per point of one forward+backward at several chunk sizes; the engine's
default chunk size per device (fastattr.engine.DEFAULT_BATCH) comes from this, and with --tiny
(the bench's one-conv model on 32x32 inputs) the scaling for small inputs (MAX_BATCH).

    python bench/bench_batch_size.py [--sizes 1 2 4 8 16 32] [--points 64] [--repeats 3] [--tiny]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, tiny_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="the tiny model on 32x32 inputs")
    args = ap.parse_args()
    from fastattr.allocator import tune_for_chunks
    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    tune_for_chunks()  # the malloc policy the engine's CPU sessions apply (fastattr/allocator.py)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        model, image = tiny_model(), torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    else:
        model, image = load_default_model(), bundled_images()["chelsea"]
    model, image = model.to(device), image.to(device)
    cands = {f"batch {b}": floor_fn(model, image, args.points, b) for b in args.sizes}
    times = interleaved(cands, repeats=args.repeats)
    print(f"device={device} threads={torch.get_num_threads()} points={args.points} "
          f"input={tuple(image.shape)}")
    print("| chunk | us per point (median) |\n|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v) / args.points * 1e6:.1f} |")


if __name__ == "__main__":
    main()
