"""`fastattr eval [DATA]`: the papers' metrics for every method variant, or for the maps of a
`fastattr run` (--maps), as tables and figures (the work itself is fastattr.evaluation.run_eval)."""
from __future__ import annotations

import sys

from fastattr.cli import options as o


def add_parser(sub) -> None:
    from fastattr.evaluation.scoring import METRICS
    from fastattr.methods import METHODS
    from fastattr.methods.integrated_gradients import RULES

    p = sub.add_parser("eval", help="evaluate methods on the bundled evaluation set (paper-style table)")
    p.add_argument("data", nargs="?", default=None, type=o.folder,
                   help="folder of images (recursive) or ImageFolder tree; default: the bundled evaluation set")
    o.add_model_options(p)
    p.add_argument("--masks", type=o.folder, default=None,
                   help="folder of binary masks (0/1 or 0/255, same aspect ratio as the image) with the images' "
                        "relative names (enables localization)")
    p.add_argument("--maps", type=o.run_folder, default=None,
                   help="output folder of a `fastattr run`: evaluate its maps (no gradient evaluations; method, "
                        "steps, rule, output and target come from the run)")
    p.add_argument("--methods", nargs="+", default=None, choices=sorted(METHODS),
                   help="methods to evaluate (default: every registered method)")
    p.add_argument("--metrics", nargs="+", default=None, choices=METRICS,
                   help="metrics to compute (default: every one that applies to the data)")
    p.add_argument("--steps", type=o.positive_int, default=None, help="steps of path methods (default: 16)")
    p.add_argument("--rule", default=None, choices=RULES, help="IG integration rule (default: left)")
    p.add_argument("--output", default=None, choices=("probability", "logit"),
                   help="what the maps explain (default: probability; the metrics always read probabilities)")
    o.add_batch_size(p)
    o.add_size(p, default=None, note="; with --maps: the run's")
    p.add_argument("--min-pred", type=o.probability, default=None,
                   help="PIC pair: skip images whose p(class) is below this probability (default: PAIR's 0.8; "
                        "0.5 for the bundled set)")
    p.add_argument("--out", type=o.out_folder, default="fastattr_eval", help="output folder (default: fastattr_eval)")
    p.add_argument("--max-images", type=o.positive_int, default=None, help="use only the first N images")
    p.add_argument("--sample", type=o.nonnegative_int, default=6, help="images shown in maps.png (default: 6)")
    p.add_argument("--bootstrap", type=o.nonnegative_int, default=1000,
                   help="bootstrap resamples for the 95%% intervals (0: none; default 1000)")
    p.add_argument("--metric-workers", type=o.nonnegative_int, default=None,
                   help="processes for the image side of SIC/AIC per rank (default: the rank's cores)")
    o.add_dataset_options(p, "'predicted' (default for folders), 'label' (ImageFolder index; default for the "
                             "bundled set) or a class index")
    o.add_progress(p)
    p.set_defaults(func=main)


def main(args) -> int:
    """Evaluate, print the markdown table and a summary (rank 0)."""
    from fastattr.evaluation import run_eval

    s = run_eval(args.data, args.out, model=args.model, masks=args.masks, maps=args.maps, methods=args.methods,
                 metrics=args.metrics, steps=args.steps, rule=args.rule, output=args.output,
                 batch_size=args.batch_size, target=args.target, size=args.size, min_pred=args.min_pred,
                 max_images=args.max_images, shard_size=args.shard_size, images_per_call=args.images_per_call,
                 sample=args.sample, bootstrap=args.bootstrap, workers=args.workers,
                 metric_workers=args.metric_workers, threads=args.threads, device=args.device,
                 progress=not args.no_progress, trust_pickle=args.trust_pickle)
    if s.table is not None:
        print(s.table.read_text(encoding="utf-8"))
        if s.masks_skipped:
            print(f"fastattr eval: {s.masks_skipped}", file=sys.stderr)
        files = ", ".join(str(s.out / f) for f in ("table.md", "table.csv", "per_image.csv", "curves.png", "maps.png")
                          if (s.out / f).exists())
        print(f"fastattr eval: {s.images} images in {s.shards} shards ({s.computed} computed now{o.throughput(s, 3)}, "
              f"{s.seconds:.0f} s); {s.failed} could not be read; wrote {files}", file=sys.stderr)
    return 0
