"""Side by side, one run: dataset throughput of `fastattr run` and single-image latency of
`fastattr.Explainer`, each against the model-only floor.

    python bench/bench_runner.py [--model effnet|tiny] [--images 64] [--steps 32] [--repeats 3]
                                 [--latency-model tiny|effnet] [--calls 50] [--latency-steps 32]
                                 [--compile] [--skip-throughput] [--skip-latency] [--skip-verification]

Throughput: IDGI-IG over a folder of generated JPEGs (crops of the bundled photos, decoded in
the runner's DataLoader workers, maps written as float32 shards) vs the floor = the same number
of forward+backward passes (images x steps) on the same model, batch and threads. Candidates run
interleaved, medians reported. Latency: per-call wall time of Explainer(x), fastattr.attribute
and the floor for one image, interleaved call by call; p50 and p99 over --calls calls.
Resume verification: the time verify_shards takes over a finished run folder of --images maps.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report, tiny_model  # noqa: E402

import fastattr  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402
from fastattr.runner import run  # noqa: E402


def make_folder(root: Path, n: int) -> Path:
    """n JPEGs (random 300-400 px crops of the bundled photos, flipped half the time)."""
    import skimage.data as skd
    from PIL import Image

    from fastattr.images import BUNDLED

    rng = np.random.default_rng(0)
    photos = [getattr(skd, name)() for name in BUNDLED]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = photos[i % len(photos)]
        h, w = rng.integers(300, min(p.shape[:2]) + 1, size=2)
        top, left = rng.integers(0, p.shape[0] - h + 1), rng.integers(0, p.shape[1] - w + 1)
        crop = p[top:top + h, left:left + w]
        if i % 2:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(root / f"img{i:04d}.jpg", quality=92)
    return root


def load(name: str) -> torch.nn.Module:
    if name == "tiny":
        return tiny_model(num_classes=1000)
    from fastattr.models import load_default_model

    return load_default_model()


def throughput(args, threads: int) -> None:
    model = load(args.model)
    batch = default_batch_size(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "images", args.images)
        image = fastattr.images.load_image(next(folder.iterdir()))
        counter = iter(range(10**6))

        startup = []

        def runner():
            t0 = time.perf_counter()
            s = run(folder, Path(tmp) / f"out{next(counter)}", model=model, idgi=True, steps=args.steps,
                    progress=False, threads=threads, workers=args.workers)
            assert s.ok == args.images, s
            startup.append(time.perf_counter() - t0 - s.seconds)  # everything but the shard loop

        cands = {"floor": floor_fn(model, image, args.images * args.steps, batch), "fastattr run": runner}
        times = interleaved(cands, repeats=args.repeats, warmup=1)
    print(report(times, title=f"throughput: IDGI-IG {args.steps} steps, {args.images} images, "
                             f"{args.model}, batch {batch}, {threads} threads"))
    for k, v in times.items():
        print(f"- {k}: {args.images / statistics.median(v):.3f} images/s")
    ratio = statistics.median(times["floor"]) / statistics.median(times["fastattr run"])
    print(f"- runner throughput / floor throughput = {ratio:.3f} (target >= 0.95)")
    print(f"- one run's fixed cost outside its shard loop (checks, discovery, model sha256, preflight, "
          f"lock, verification, manifest): {1e3 * statistics.median(startup):.0f} ms median\n")


def verification(args) -> None:
    """What resuming costs before any computation: verify_shards (size + sha256 of every shard and
    a stat comparison per image) on a finished run folder, against the time it took to write it."""
    from fastattr.runner import discover
    from fastattr.runner.run import verify_shards

    model = load("tiny")
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "images", args.images)
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        s = run(folder, out, model=model, steps=2, size=224, progress=False, shard_size=16, workers=0)
        t_run = time.perf_counter() - t0
        images = discover(folder)
        nbytes = sum(p.stat().st_size for p in out.glob("shard-*.safetensors"))
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            assert verify_shards(out, s.shards, images) == []
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    print(f"### resume verification: {s.shards} shards, {nbytes / 1e6:.1f} MB of float32 224x224 maps")
    print(f"- verify_shards: {1e3 * t:.1f} ms ({nbytes / 1e6 / t:.0f} MB/s); writing them (tiny model, "
          f"2 steps) took {t_run:.2f} s\n")


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def latency(args) -> None:
    model = load(args.latency_model)
    image = fastattr.images.bundled_images()["chelsea"]
    batch = default_batch_size(torch.device("cpu"))
    opts = dict(idgi=True, steps=args.latency_steps)
    cands = {
        "floor": floor_fn(model, image, args.latency_steps, batch),
        "fastattr.attribute": lambda: fastattr.attribute(model, image[None], **opts),
        "Explainer": fastattr.Explainer(model, **opts),
    }
    if args.compile:
        cands["Explainer(compile=True)"] = fastattr.Explainer(model, compile=True, **opts)
    for name, fn in cands.items():  # warm-up (and compilation) outside the timed calls
        fn(image) if isinstance(fn, fastattr.Explainer) else fn()
    times = {k: [] for k in cands}
    for _ in range(args.calls):
        for name, fn in cands.items():
            t0 = time.perf_counter()
            fn(image) if isinstance(fn, fastattr.Explainer) else fn()
            times[name].append(time.perf_counter() - t0)
    p50f = percentile(times["floor"], 50)
    p50a = percentile(times["fastattr.attribute"], 50)
    print(f"### latency: one image, IDGI-IG {args.latency_steps} steps, {args.latency_model}, "
          f"{args.calls} calls, batch {batch}")
    print("| candidate | p50 ms | p99 ms | p50 x floor | p50 x attribute |\n|---|---|---|---|---|")
    for name, ts in times.items():
        p50, p99 = percentile(ts, 50), percentile(ts, 99)
        print(f"| {name} | {1e3 * p50:.2f} | {1e3 * p99:.2f} | {p50 / p50f:.3f} | {p50 / p50a:.3f} |")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="effnet", choices=("effnet", "tiny"))
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="runner decoding workers (default: runner's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--latency-model", default="tiny", choices=("effnet", "tiny"))
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--latency-steps", type=int, default=32)
    p.add_argument("--compile", action="store_true", help="also time Explainer(compile=True)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--skip-verification", action="store_true")
    args = p.parse_args()
    from fastattr.runner.distributed import cpu_count

    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} threads, {cpu_count()} cores\n")
    if not args.skip_throughput:
        throughput(args, threads)
    if not args.skip_latency:
        latency(args)
    if not args.skip_verification:
        verification(args)


if __name__ == "__main__":
    main()
