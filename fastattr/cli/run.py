"""`fastattr run INPUT --out DIR`: maps of a whole folder to shards, resumable, torchrun-aware
(the work itself is fastattr.runner.run)."""
from __future__ import annotations

import sys

from fastattr.cli import options as o


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="attribution maps for a whole folder of images (resumable, torchrun)")
    p.add_argument("input", type=o.folder, help="folder of images (recursive; PNG/JPEG/WebP) or an ImageFolder tree")
    p.add_argument("--out", type=o.out_folder, required=True, help="output folder (shards, manifest.jsonl, run.json)")
    o.add_method_options(p)
    o.add_model_options(p)
    p.add_argument("--method-option", "-O", action="append", type=o.key_value, default=[],
                   metavar="KEY=VALUE", help="extra method option (JSON value), repeatable")
    o.add_size(p)
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                   help="map storage type (default float32; float16 halves the size)")
    o.add_dataset_options(p, "'predicted' (argmax, default), 'label' (ImageFolder class index) or a class index")
    o.add_progress(p)
    p.set_defaults(func=main)


def main(args) -> int:
    """Compute, print a summary (rank 0)."""
    from fastattr.runner import run

    s = run(args.input, args.out, model=args.model, trust_pickle=args.trust_pickle, method=args.method, idgi=args.idgi,
            steps=args.steps, rule=args.rule, backward=args.backward, output=args.output,
            batch_size=args.batch_size, compile=args.compile, channels_last=args.channels_last,
            precision=args.precision, size=args.size, target=args.target, dtype=args.dtype,
            shard_size=args.shard_size, images_per_call=args.images_per_call, workers=args.workers,
            threads=args.threads, device=args.device, progress=not args.no_progress,
            method_options=dict(args.method_option))
    if s.ok is not None:
        print(f"fastattr run: {s.images} images in {s.shards} shards ({s.computed} computed now"
              f"{o.throughput(s, 2)}): {s.ok} ok, {s.failed} failed; manifest {s.out / 'manifest.jsonl'}",
              file=sys.stderr)
    return 0
