"""`fastattr eval [DATA] [--model FILE] [--masks DIR] [--maps RUN_DIR] --out DIR`: the papers' metrics
for every registered method variant (with and without IDGI for path methods, standard and guided
backward) on a folder of images or the bundled evaluation set, at dataset scale (resumable,
torchrun), written as table.md / table.csv (95% bootstrap intervals), per_image.csv, curves.png
and maps.png. The loop lives in fastattr/evaluation/."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastattr.evaluation.scoring import METRICS
from fastattr.evaluation.variants import Variant, variants

__all__ = ["add_eval_arguments", "main_eval", "run_eval", "Variant", "variants", "METRICS"]


def _model_id(spec: str) -> dict:
    from fastattr.runner.shards import file_sha256

    return {"model": spec, "model_sha256": None if spec == "default" else file_sha256(spec)}


def _target(text, labels_known: bool):
    if text in (None, "predicted"):
        return "predicted"
    if text == "label":
        if not labels_known:
            raise ValueError("target: 'label' needs an ImageFolder tree (every image inside a class folder)")
        return "label"
    try:
        t = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"target: expected 'predicted', 'label' or a class index, got {text!r}") from None
    if t < 0:
        raise ValueError(f"target: class index must be >= 0, got {t}")
    return t


def _count(value, name: str, minimum: int = 1):
    if value is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def run_eval(data=None, out="fastattr_eval", *, model: str = "default", masks=None, maps=None,
             methods: list[str] | None = None, metrics: list[str] | None = None, steps: int = 16,
             rule: str = "left", output: str = "probability", batch_size: int | None = None,
             target: str | int | None = None, size: int = 224, min_pred: float | None = None,
             max_images: int | None = None, shard_size: int = 64, images_per_call: int = 16, sample: int = 6,
             bootstrap: int = 1000, workers: int | None = None, metric_workers: int | None = None,
             threads: int | None = None, device: str | None = None, progress: bool = True,
             trust_pickle: bool = False, seed: int = 0):
    """The eval of the command line as a function; returns the EvalSummary of this rank."""
    from fastattr.evaluation.loop import check_metrics, evaluate
    from fastattr.evaluation.maps_run import RunMaps
    from fastattr.evaluation.sources import BundledSource, FolderSource
    from fastattr.evalset import MIN_PROB
    from fastattr.methods import METHODS
    from fastattr.methods.integrated_gradients import RULES
    from fastattr.runner.distributed import cpu_count
    from fastattr.validation import check_choice

    for name, value in (("steps", steps), ("size", size), ("shard_size", shard_size),
                        ("images_per_call", images_per_call), ("max_images", max_images),
                        ("batch_size", batch_size), ("threads", threads)):
        _count(value, name)
    for name, value in (("sample", sample), ("bootstrap", bootstrap), ("workers", workers),
                        ("metric_workers", metric_workers)):
        _count(value, name, 0)
    check_choice(rule, "rule", RULES)
    check_choice(output, "output", ("probability", "logit"))
    run_maps = RunMaps(maps) if maps is not None else None
    if run_maps is not None:  # the run's options, images and model
        opts = run_maps.options
        if size not in (224, opts["size"]):
            raise ValueError(f"size: the maps of {maps} are {opts['size']} px; omit --size")
        size = opts["size"]
        data = data if data is not None else run_maps.config["input"]
        if model == "default" and opts["model"] != "default":
            if not Path(str(opts["model"])).is_file():
                raise ValueError(f"model: the run's model {opts['model']!r} is not a file here; pass --model")
            model = opts["model"]
        steps, rule, output = opts["steps"], opts["rule"], opts["output"]
        rows = [run_maps.variant]
    else:
        rows = variants(methods)
    if data is None:
        if masks is not None or maps is not None:
            raise ValueError("--masks/--maps: need DATA (a folder of images)")
        if model != "default":
            raise ValueError("model: the bundled evaluation set is made for the bundled model; give DATA too")
        source = BundledSource(max_images)
        tgt = "label" if target in (None, "label") else _target(target, True)
        min_pred = MIN_PROB if min_pred is None else min_pred
        desc = (f"the bundled evaluation set ({len(source)} images: photos and composites of real objects "
                f"on real textures with exact masks), EfficientNet-Lite0, targets = the set's labels")
    else:
        source = FolderSource(data, size, masks, max_images)
        tgt = _target(target, source.labels is not None)
        min_pred = 0.8 if min_pred is None else min_pred
        desc = f"{len(source)} images under {Path(data).name}/ at {size} px, model {model}, target {tgt}"
    if run_maps is not None:
        run_maps.check_images(source.names)
        if tgt != "predicted" or run_maps.options["target"] != "predicted":
            tgt = "run"  # the metrics explain the class the run's maps were made for
    metrics = check_metrics(metrics, source.size, bool(masks) or source.kind == "bundled")
    from fastattr.models import load_model

    net = load_model(model, trust_pickle=trust_pickle)
    if metric_workers is None:  # image side of PIC in processes: the cores of this rank
        per_rank = max(1, cpu_count() // max(1, int(__import__("os").environ.get("LOCAL_WORLD_SIZE", "1"))))
        metric_workers = per_rank if per_rank > 1 else 0
    steps_txt = f"steps={steps} for path methods" + (f", rule={rule}" if rule != "left" else "")
    if run_maps is not None:
        o = run_maps.options
        steps_txt = (f"maps from the run in {Path(maps).name}/ ({o['method']}{' + IDGI' if o['idgi'] else ''}, "
                     f"steps={o['steps']}, rule={o['rule']}, backward={o['backward']}, output={o['output']}, "
                     f"options {o['method_options']})")
    header = (f"# fastattr eval: {desc}; {steps_txt}\n\n"
              "Insertion/deletion: black base, probability curve, 21 points, mean AUC over images. "
              f"SIC/AIC pair: PAIR's compute_pic_metric with min_pred={min_pred}, median (SIC) / mean (AIC) "
              "curve over the images PAIR keeps. SIC/AIC ent, MS-SSIM: IDGI-paper variant, 25 bokeh "
              "thresholds, 100 bins over all images. Localization (images with masks): ROC-AUC, best F1, "
              "best MAE of the signed channel sum, and ROC-AUC of |A|. Best per column in bold.")
    return evaluate(source, out, model=net, model_id=_model_id(model), variants=rows, metrics=metrics,
                    steps=steps, rule=rule, output=output, batch_size=batch_size,
                    target=tgt if tgt != "run" else "predicted", min_pred=float(min_pred), shard_size=shard_size,
                    images_per_call=images_per_call, sample=sample, bootstrap=bootstrap, seed=seed,
                    workers=workers, metric_workers=metric_workers, threads=threads, device=device,
                    progress=progress, maps_run=run_maps, header=header)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fastattr eval`."""
    parser.add_argument("data", nargs="?", default=None,
                        help="folder of images (recursive) or ImageFolder tree; default: the bundled evaluation set")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled EfficientNet-Lite0) or a model file (as for fastattr run)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a pickled whole-module --model file (runs code from the file)")
    parser.add_argument("--masks", default=None,
                        help="folder of binary mask images with the images' relative names (enables localization)")
    parser.add_argument("--maps", default=None,
                        help="output folder of a `fastattr run`: evaluate its maps (no gradient evaluations)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="methods to evaluate (default: every registered method)")
    parser.add_argument("--metrics", nargs="+", default=None, choices=METRICS,
                        help="metrics to compute (default: every one that applies to the data)")
    parser.add_argument("--steps", type=int, default=16, help="steps of path methods (default: 16)")
    parser.add_argument("--rule", default="left", help="IG integration rule (default: left)")
    parser.add_argument("--output", default="probability", choices=("probability", "logit"),
                        help="what the maps explain (the metrics always read probabilities)")
    parser.add_argument("--batch-size", type=int, default=None, help="points per model call (default: per device)")
    parser.add_argument("--target", default=None,
                        help="'predicted' (default for folders), 'label' (ImageFolder index; default for the "
                             "bundled set) or a class index")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default: 224)")
    parser.add_argument("--min-pred", type=float, default=None,
                        help="PIC pair: skip images whose p(class) is below this (default: PAIR's 0.8; 0.5 "
                             "for the bundled set)")
    parser.add_argument("--out", default="fastattr_eval", help="output folder (default: fastattr_eval)")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    parser.add_argument("--shard-size", type=int, default=64, help="images per shard file (default: 64)")
    parser.add_argument("--images-per-call", type=int, default=16,
                        help="images explained and scored together (default: 16)")
    parser.add_argument("--sample", type=int, default=6, help="images shown in maps.png (default: 6)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples for the 95%% intervals (0: none; default 1000)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes per rank (default: 2)")
    parser.add_argument("--metric-workers", type=int, default=None,
                        help="processes for the image side of SIC/AIC per rank (default: the rank's cores)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per rank (default: cores / ranks)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda:LOCAL_RANK if present)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main_eval(args) -> int:
    """`fastattr eval`: evaluate, print the markdown table (rank 0); 1 on an output write error."""
    from fastattr.runner.shards import WriteError

    try:
        s = run_eval(args.data, args.out, model=args.model, masks=args.masks, maps=args.maps, methods=args.methods,
                     metrics=args.metrics, steps=args.steps, rule=args.rule, output=args.output,
                     batch_size=args.batch_size, target=args.target, size=args.size, min_pred=args.min_pred,
                     max_images=args.max_images, shard_size=args.shard_size, images_per_call=args.images_per_call,
                     sample=args.sample, bootstrap=args.bootstrap, workers=args.workers,
                     metric_workers=args.metric_workers, threads=args.threads, device=args.device,
                     progress=not args.no_progress, trust_pickle=args.trust_pickle)
    except WriteError as exc:
        print(f"fastattr eval: error: {exc}", file=sys.stderr)
        return 1
    if s.table is not None:
        print(s.table.read_text(encoding="utf-8"))
        rate = f", {s.computed_images / s.seconds:.3f} images/s" if s.computed_images and s.seconds > 0 else ""
        files = ", ".join(str(s.out / f) for f in ("table.md", "table.csv", "per_image.csv", "curves.png", "maps.png")
                          if (s.out / f).exists())
        print(f"fastattr eval: {s.images} images in {s.shards} shards ({s.computed} computed now{rate}, "
              f"{s.seconds:.0f} s); {s.failed} could not be read; wrote {files}", file=sys.stderr)
    return 0
