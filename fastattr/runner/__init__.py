"""Dataset-scale runner: `fastattr run INPUT --out DIR` (also under `torchrun -m fastattr run`).

Output folder:
- shard-NNNNNN.safetensors: tensors "maps" (n_ok, 3, size, size) and "index" (n_ok,) for the
  images NNNNNN*shard_size ... of the sorted input list, manifest records in the header;
- shard-NNNNNN.check: the shard's size and sha256, verified when the run is resumed (a shard that
  does not match, or whose image files changed size or mtime since, is computed again);
- manifest.jsonl: one JSON record per input image, in input order (path, label, target,
  class_name, score, baseline_score, delta, grad_evals, status, error, shard, row, file_bytes,
  file_mtime_ns);
- run.json: the options; a re-run with other options or other input files is refused once a
  shard exists (the model is compared by its sha256, not by how its path was written);
- .fastattr-lock: held by the run writing the folder; a second run on it is refused, naming the
  holder's pid.

Every option, the model and the input list are checked before anything is written. Re-running the
same command after a kill resumes; for deterministic methods the folder is then byte-identical to
an uninterrupted run's when the thread count per process is the same. Multi-node runs need `--out`
on a file system all nodes share (rank 0 merges the manifest).
"""
from __future__ import annotations

import argparse
import json
import sys

from fastattr.runner.files import ImageList, discover
from fastattr.runner.manifest import read_manifest
from fastattr.runner.run import RunSummary, run
from fastattr.runner.shards import WriteError, load_shard

__all__ = ["run", "RunSummary", "discover", "ImageList", "load_shard", "read_manifest", "WriteError",
           "add_run_arguments", "main_run"]


def _method_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, true/false, null, lists
    except ValueError:
        return key, value  # a bare string


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fastattr run` (method options shared with `fastattr explain`)."""
    from fastattr.cli import _add_method_arguments, positive_int

    parser.add_argument("input", help="folder of images (recursive; PNG/JPEG/WebP) or an ImageFolder tree")
    parser.add_argument("--out", required=True, help="output folder (shards, manifest.jsonl, run.json)")
    _add_method_arguments(parser)
    parser.add_argument("--method-option", "-O", action="append", type=_method_option, default=[],
                        metavar="KEY=VALUE", help="extra method option (JSON value), repeatable")
    parser.add_argument("--target", default="predicted",
                        help="'predicted' (argmax, default), 'label' (ImageFolder class index) or a class index")
    parser.add_argument("--size", type=positive_int, default=224, help="image side in pixels (default: 224)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="map storage type (default float32; float16 halves the size)")
    parser.add_argument("--shard-size", type=positive_int, default=64, help="images per shard file (default: 64)")
    parser.add_argument("--images-per-call", type=positive_int, default=16,
                        help="images whose path points are packed together (default: 16)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes per rank (default: 2)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads per rank (default: cores on the node / ranks on the node)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main_run(args) -> int:
    """`fastattr run`: compute, print a summary (rank 0); 1 on an output write error."""
    try:
        s = run(args.input, args.out, model=args.model, trust_pickle=args.trust_pickle, method=args.method, idgi=args.idgi,
                steps=args.steps, rule=args.rule, backward=args.backward, output=args.output,
                batch_size=args.batch_size, compile=args.compile, channels_last=args.channels_last,
                precision=args.precision, size=args.size,
                target=args.target, dtype=args.dtype, shard_size=args.shard_size,
                images_per_call=args.images_per_call, workers=args.workers, threads=args.threads,
                device=args.device, progress=not args.no_progress, method_options=dict(args.method_option))
    except WriteError as exc:
        print(f"fastattr run: error: {exc}", file=sys.stderr)
        return 1
    if s.ok is not None:
        rate = f", {s.computed_images / s.seconds:.2f} images/s" if s.computed_images and s.seconds > 0 else ""
        print(f"fastattr run: {s.images} images in {s.shards} shards ({s.computed} computed now{rate}): "
              f"{s.ok} ok, {s.failed} failed; manifest {s.out / 'manifest.jsonl'}", file=sys.stderr)
    return 0
