"""`run_eval`: fastattr eval as a Python function (the command line's `fastattr eval` calls it).
Everything is checked before anything is written: the values, the data and masks, a --maps run
against the images and the model, then the model preflight every command shares (loading, the
export's input size, the target, each method variant on this model)."""
from __future__ import annotations

import os
from pathlib import Path

from fastattr import validation as v
from fastattr.errors import UserError, checking_arguments

DEFAULT_STEPS = 16
# options that make maps: with maps= they come from the run, so giving them is refused
MAP_OPTIONS = ("methods", "steps", "rule", "output", "target")


def _check_values(steps, size, shard_size, images_per_call, max_images, batch_size, threads, sample, bootstrap,
                  workers, metric_workers, rule, output, min_pred) -> None:
    from fastattr.methods.integrated_gradients import RULES

    for name, value in (("steps", steps), ("size", size), ("shard_size", shard_size),
                        ("images_per_call", images_per_call), ("max_images", max_images),
                        ("batch_size", batch_size), ("threads", threads)):
        v.check_positive_int(value, name, maximum=v.MAX_STEPS if name == "steps" else None)
    for name, value in (("sample", sample), ("bootstrap", bootstrap), ("workers", workers),
                        ("metric_workers", metric_workers)):
        v.check_nonnegative_int(value, name)
    if rule is not None:
        v.check_choice(rule, "rule", RULES)
    if output is not None:
        v.check_choice(output, "output", ("probability", "logit"))
    if min_pred is not None and not (isinstance(min_pred, (int, float)) and not isinstance(min_pred, bool)
                                     and 0.0 <= float(min_pred) <= 1.0):
        raise ValueError(f"min_pred: must be a probability in [0, 1], got {min_pred!r}")


def run_eval(data=None, out="fastattr_eval", *, model=None, masks=None, maps=None,
             methods: list[str] | None = None, metrics: list[str] | None = None, steps: int | None = None,
             rule: str | None = None, output: str | None = None, batch_size: int | None = None,
             target: str | int | None = None, size: int | None = None, min_pred: float | None = None,
             max_images: int | None = None, shard_size: int = 64, images_per_call: int = 16, sample: int = 6,
             bootstrap: int = 1000, workers: int | None = None, metric_workers: int | None = None,
             threads: int | None = None, device: str | None = None, progress: bool = True,
             trust_pickle: bool = False, seed: int = 0):
    """The eval of the command line as a function; returns the EvalSummary of this rank. model:
    None (the bundled model, or with maps= the run's), 'default' or a model file. steps (16), rule
    ('left'), output ('probability'), methods (all) and target make the maps, so with maps= they
    come from the run and must stay None. Raises UserError naming the argument at fault."""
    from fastattr.evaluation.loop import check_metrics, evaluate
    from fastattr.evaluation.maps_run import RunMaps
    from fastattr.evaluation.sources import BundledSource, FolderSource
    from fastattr.evaluation.variants import variants
    from fastattr.evalset import MIN_PROB
    from fastattr.runner.distributed import check_device, cpu_count
    from fastattr.runner.preflight import load_checked
    from fastattr.runner.run import check_target

    with checking_arguments():
        _check_values(steps, size, shard_size, images_per_call, max_images, batch_size, threads, sample, bootstrap,
                      workers, metric_workers, rule, output, min_pred)
        rows = None if maps is not None else variants(methods)
    run_maps = RunMaps(maps) if maps is not None else None
    if run_maps is not None:  # the run's options, images and model
        given = [name for name, value in zip(MAP_OPTIONS, (methods, steps, rule, output, target)) if value is not None]
        if given:
            raise UserError(f"{given[0]}: with --maps the maps and the options that made them come from the run in "
                            f"{maps} ({run_maps.describe()}); leave out --{given[0]}")
        opts = run_maps.options
        if size not in (None, opts["size"]):
            raise UserError(f"size: the maps of {maps} are {opts['size']} px, not {size}; leave out --size")
        size, steps, rule, output = opts["size"], opts["steps"], opts["rule"], opts["output"]
        data = data if data is not None else run_maps.config["input"]
        model = run_maps.model_spec(model)
        rows = [run_maps.variant]
    steps = DEFAULT_STEPS if steps is None else steps
    rule, output = rule or "left", output or "probability"
    if data is None:
        if masks is not None:
            raise UserError("masks: --masks needs DATA (a folder of images with those masks)")
        if model not in (None, "default"):
            raise UserError("model: the bundled evaluation set is made for the bundled model; give DATA too")
        source = BundledSource(max_images)
        if size not in (None, source.size):
            raise UserError(f"size: the bundled evaluation set is {source.size} px, not {size}; leave out --size")
        tgt = "label" if target in (None, "label") else check_target(target, True)
        min_pred = MIN_PROB if min_pred is None else min_pred
        desc = (f"the bundled evaluation set ({len(source)} images: photos and composites of real objects "
                f"on real textures with exact masks), EfficientNet-Lite0, targets = the set's labels")
    else:
        if not Path(data).is_dir():
            raise UserError(f"DATA: {str(data)!r} is not a folder of images")
        source = FolderSource(data, size or 224, masks, max_images)
        tgt = check_target(target, source.labels is not None)
        min_pred = 0.8 if min_pred is None else min_pred
    if run_maps is not None:
        run_maps.check_images(source.images)
        if tgt != "predicted" or run_maps.options["target"] != "predicted":
            tgt = "run"  # the metrics explain the class the run's maps were made for
    with checking_arguments():
        metrics = check_metrics(metrics, source.size, bool(masks) or source.kind == "bundled")
    dev = check_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    top = max(source.labels) if tgt == "label" else tgt if isinstance(tgt, int) else None
    net, model_id = load_checked(model, trust_pickle=trust_pickle, device=dev, size=source.size, target=top,
                                 explain_options={"method": "vanilla", "output": output})
    if run_maps is not None:
        run_maps.check_model(model_id, net)
    if data is not None:
        desc = (f"{len(source)} images under {Path(data).name}/ at {source.size} px, model {model_id['model']}, "
                f"target {tgt}")
    if metric_workers is None:  # image side of PIC in processes: the cores of this rank
        per_rank = max(1, cpu_count() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        metric_workers = per_rank if per_rank > 1 else 0
    steps_txt = f"steps={steps} for path methods" + (f", rule={rule}" if rule != "left" else "")
    if run_maps is not None:
        steps_txt = f"maps from the run in {Path(maps).name}/ ({run_maps.describe()})"
    header = (f"# fastattr eval: {desc}; {steps_txt}\n\n"
              "Insertion/deletion: black base, probability curve, 21 points, mean AUC over images. "
              f"SIC/AIC pair: PAIR's compute_pic_metric with min_pred={min_pred}, median (SIC) / mean (AIC) "
              "curve over the images PAIR keeps. SIC/AIC ent, MS-SSIM: IDGI-paper variant, 25 bokeh "
              "thresholds, 100 bins over all images. Localization (images with a usable mask): ROC-AUC, best F1, "
              "best MAE of the signed channel sum, and ROC-AUC of |A|. Best per column in bold.")
    return evaluate(source, out, model=net, model_id=model_id, variants=rows, metrics=metrics,
                    steps=steps, rule=rule, output=output, batch_size=batch_size,
                    target=tgt if tgt != "run" else "predicted", min_pred=float(min_pred), shard_size=shard_size,
                    images_per_call=images_per_call, sample=sample, bootstrap=bootstrap, seed=seed,
                    workers=workers, metric_workers=metric_workers, threads=threads, device=device,
                    progress=progress, maps_run=run_maps, header=header)
