"""The eval dataset loop, on the runner's pieces: images split into fixed blocks (shards) by
position; each rank computes the pending shards it owns (maps of every variant, then the
per-image metric values), publishes each shard atomically in the runner's shard format (records
in the header, the sample maps as tensors); rank 0 then writes the tables and figures from the
shards alone. A shard depends only on its images and the options (the same groups reach explain
and the metrics in the same composition; sampling methods are seeded per group and variant), so
a resumed or distributed eval writes the same bytes as one uninterrupted process with the same
thread count."""
from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fastattr.evaluation import report
import numpy as np

from fastattr.evaluation.scoring import METRICS, as_array, flatten, score_maps
from fastattr.evaluation.summary import cells, resamples
from fastattr.evaluation.variants import Variant
from fastattr.runner.distributed import default_threads, setup, teardown
from fastattr.runner.run import claim_shards
from fastattr.runner.shards import load_shard, read_records, shard_name, write_shard

TARGETS = ("predicted", "label")


@dataclass
class EvalSummary:
    """What one call did on this rank; `table` is set on rank 0 (the table.md path)."""

    out: Path
    images: int
    shards: int
    computed: int  # shards computed by this rank in this call
    computed_images: int
    seconds: float
    failed: int | None = None  # rank 0: images that could not be read
    table: Path | None = None
    masks_skipped: str = ""  # rank 0: which images localization skipped and why ('' if none)


def _fingerprint(names: list[str]) -> str:
    h = hashlib.sha256()
    for p in names:
        h.update(p.encode("utf-8") + b"\0")
    return h.hexdigest()


def check_metrics(metrics: list[str] | None, size: int, has_masks: bool) -> list[str]:
    """The metrics to compute: the given ones (checked), or every one that applies to the data
    (localization needs masks, MS-SSIM's 5 scales need images larger than 160 px)."""
    if not metrics:
        return [m for m in METRICS if (m != "localization" or has_masks) and (m != "pic_msssim" or size > 160)]
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"metrics: unknown {bad}; choose from {list(METRICS)}")
    if "localization" in metrics and not has_masks:
        raise ValueError("metrics: localization needs object masks (--masks DIR)")
    if "pic_msssim" in metrics and size <= 160:
        raise ValueError(f"metrics: pic_msssim needs images larger than 160 px (MS-SSIM's 5 scales), got --size {size}")
    return [m for m in METRICS if m in metrics]


def _group_targets(target, batch: list[int], labels):
    if target == "predicted":
        return None
    if target == "label":
        return torch.tensor([labels[i] for i in batch])
    return int(target)


def _explain(model, x, t, v: Variant, opts: dict, seed: int):
    """Maps of one variant for one group; methods that sample (NeFLAG) draw from a generator
    seeded by (group, variant), so a shard's maps do not depend on what ran before it."""
    from fastattr.api import explain
    from fastattr.methods import METHODS

    kw = {"steps": opts["steps"]} if METHODS[v.method].path else {}
    if METHODS[v.method].rules:
        kw["rule"] = opts["rule"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return explain(model, x, t, method=v.method, idgi=v.idgi, backward=v.backward, output=opts["output"],
                       batch_size=opts["batch_size"], **kw)


def usable_variants(model, variants: list[Variant], size: int, opts: dict, device) -> tuple[list[Variant], dict]:
    """The variants the model accepts, tried on one random image (at most 2 steps) before anything
    is written, and {label: error} for the others (e.g. the guided backward on a model it cannot
    intercept): one method that does not apply must not stop the evaluation of the rest."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    ok, skipped = [], {}
    for v in variants:
        try:
            _explain(model, x, None, v, {**opts, "steps": min(opts["steps"], 2)}, seed=0)
        except (ValueError, TypeError) as exc:  # an argument the method refuses for this model
            skipped[v.label] = f"{type(exc).__name__}: {exc}"
        else:
            ok.append(v)
    if not ok:
        raise ValueError(f"methods: no method variant applies to this model ({'; '.join(f'{k}: {e}' for k, e in skipped.items())})")
    return ok, skipped


def _score_group(model, source, batch, variants, opts, maps_run, target, d) -> tuple[list[dict], dict]:
    """Records of one group (one per image, in order) and {index * len(variants) + variant
    position: map} of its sample images."""
    results = {i: {} for i in batch.ok}
    samples = {}
    if batch.ok:
        from fastattr.engine import Engine
        from fastattr.metrics.pic import pair_reference

        x = batch.images.to(d.device)
        rm = torch.stack([source.random_mask(i) for i in batch.ok])
        engine = Engine(model, output="probability", batch_size=opts["batch_size"])
        # PIC pair's original and fully blurred images: the same for every variant
        pair_ref = pair_reference(engine, x, rm, workers=opts["workers_metrics"]) \
            if "pic_pair" in opts["metrics"] else None
        for vi, v in enumerate(variants):
            if maps_run is not None:
                got = [maps_run.map_and_target(i) for i in batch.ok]
                maps = torch.stack([g[0] for g in got]).to(d.device)
                tgt = torch.tensor([g[1] for g in got], device=d.device)
                evals = [g[2] for g in got]
            else:
                ex = _explain(model, x, _group_targets(target, batch.ok, source.labels), v, opts,
                              seed=opts["seed"] * 1_000_003 + batch.ok[0] * 101 + vi)
                maps, tgt = ex.attributions, ex.target
                evals = [ex.grad_evals / len(batch.ok)] * len(batch.ok)
            rows = score_maps(engine, x, maps, tgt, opts["metrics"], batch.masks, batch.has_mask, rm,
                              opts["min_pred"], opts["workers_metrics"], pair_ref)
            for j, i in enumerate(batch.ok):
                rows[j]["target"] = int(tgt[j])
                rows[j]["grad_evals"] = None if evals[j] is None else float(evals[j])
                results[i][v.key] = rows[j]
                if i < opts["sample"]:
                    samples[i * len(variants) + vi] = maps[j].detach().float().cpu()
    labels = source.labels
    records = []
    for i in batch.indices:
        ok = i in results
        records.append({"index": i, "image": source.names[i], "status": "ok" if ok else "failed",
                        "error": None if ok else batch.failed.get(i), "label": labels[i] if labels else None,
                        "mask": batch.mask_notes.get(i) if ok else None, "results": results.get(i, {})})
    return records, samples


def evaluate(source, out, *, model, model_id: dict, variants: list[Variant], metrics: list[str], steps: int,
             rule: str = "left", output: str = "probability", batch_size: int | None = None,
             target="predicted", min_pred: float = 0.8, shard_size: int = 64, images_per_call: int = 16,
             sample: int = 6, bootstrap: int = 1000, seed: int = 0, workers: int | None = None,
             metric_workers: int = 0, threads: int | None = None, device: str | None = None,
             progress: bool = True, maps_run=None, header: str = "") -> EvalSummary:
    """Evaluate `variants` on every image of `source` into `out` (shards, then table.md,
    table.csv, per_image.csv, curves.png, maps.png); resumable, torchrun-aware."""
    from tqdm.auto import tqdm

    out = Path(out)
    n = len(source)
    d = setup(device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads(d))
    try:
        model = model.to(d.device)
        n_shards = math.ceil(n / shard_size)
        opts = {"steps": steps, "rule": rule, "output": output, "batch_size": batch_size, "metrics": metrics,
                "min_pred": min_pred, "sample": sample, "seed": seed, "workers_metrics": metric_workers}
        skipped = {}
        if maps_run is None:
            variants, skipped = usable_variants(model, variants, source.size, opts, d.device)
            if skipped:
                header += "\n\nNot evaluated (the method refused this model): " + "; ".join(
                    f"{k}: {e}" for k, e in skipped.items())
                if d.rank == 0:
                    for reason in dict.fromkeys(skipped.values()):  # one line per reason, its rows named
                        rows = ", ".join(k for k, e in skipped.items() if e == reason)
                        print(f"fastattr eval: not evaluated: {rows}: {reason}", file=sys.stderr)
        # every option that changes a stored value; threads, ranks, workers and the bootstrap
        # (recomputed from the stored values each time) are left out on purpose
        # format 2: masks read by evaluation/masks.py (0/1 masks used to read as empty)
        config = {"format": "fastattr-eval/2", "source": source.kind,
                  "input": str(Path(source.images.root).resolve()) if source.kind == "folder" else "bundled",
                  "masks": str(source.masks_root.resolve()) if getattr(source, "masks_root", None) else None,
                  "images": n, "files_sha256": _fingerprint(source.names), "size": source.size, **model_id,
                  "variants": [v.key for v in variants], "metrics": metrics, "steps": steps, "rule": rule,
                  "output": output, "batch_size": batch_size, "target": target, "min_pred": min_pred,
                  "shard_size": shard_size, "images_per_call": images_per_call, "sample": sample, "seed": seed,
                  "maps_run": maps_run.options | {"folder": str(maps_run.folder.resolve())} if maps_run else None}
        with contextlib.ExitStack() as held:
            mine, groups, owner, _ = claim_shards(held, out, config, n, shard_size, images_per_call, d, None, "eval")
            t0 = time.perf_counter()
            if groups:
                if workers is None:
                    workers = min(2, len(groups))
                bar = tqdm(total=sum(len(g) for g in groups), unit="img", dynamic_ncols=True, file=sys.stderr,
                           desc="fastattr eval" + (f" rank 0/{d.world}" if d.world > 1 else ""),
                           disable=not progress or d.rank != 0)
                records, samples, failed = [], {}, 0
                try:
                    for gi, batch in enumerate(source.batches(groups, workers, pin_memory=d.device.type == "cuda")):
                        recs, smp = _score_group(model, source, batch, variants, opts, maps_run, target, d)
                        records += recs
                        samples.update(smp)
                        failed += len(batch.failed)
                        bar.update(len(batch.indices))
                        if failed:
                            bar.set_postfix(failed=failed, refresh=False)
                        k = owner[gi]
                        if gi + 1 == len(groups) or owner[gi + 1] != k:
                            keys = sorted(samples)  # image * len(variants) + variant position
                            block = torch.stack([samples[s] for s in keys]) if keys else \
                                torch.zeros(0, 3, source.size, source.size)
                            write_shard(out / shard_name(k), block, torch.tensor(keys, dtype=torch.int64), records)
                            records, samples = [], {}
                finally:
                    bar.close()
            summary = EvalSummary(out, n, n_shards, len(mine), sum(len(g) for g in groups),
                                  time.perf_counter() - t0)
            d.barrier()  # all shards exist
            if d.rank == 0:
                summary.table, summary.failed, summary.masks_skipped = write_outputs(
                    out, source, n_shards, variants, metrics, min_pred, bootstrap, seed, sample, header)
        return summary
    finally:
        torch.set_num_threads(old_threads)
        teardown(d)


SCALARS = ("insertion", "deletion", "sic_pair", "aic_pair", "loc_auc", "loc_f1", "loc_mae", "loc_auc_abs",
           "grad_evals")


def _collect(ok: list[dict], variants: list[Variant], values: dict) -> None:
    """Append one shard's per-image values to values[variant key][name] (lists of arrays): the
    summary keeps compact float arrays, not the records."""
    for v in variants:
        flat = [flatten(r["results"][v.key]) for r in ok]
        names = set(SCALARS) | {k for k, x in flat[0].items() if isinstance(x, list)}
        for name in names:
            values[v.key].setdefault(name, []).append(as_array([f.get(name) for f in flat]))


def masks_skipped(notes: dict[str, str]) -> str:
    """One sentence on the images localization skipped, from {image: mask note} (the notes of
    sources.Batch): how many per reason, the first few named; '' when none was skipped."""
    kinds = {"empty": "an empty mask (no object pixel)", "full": "a full mask (no background pixel)",
             "refused": "a refused mask", "missing": "no mask"}
    parts = []
    for kind, what in kinds.items():
        hit = [(name, note) for name, note in notes.items() if note.split(":", 1)[0] == kind]
        if hit:
            sep = "; " if kind == "refused" else ", "  # refusals carry their reason
            named = sep.join(f"{name}: {note.split(': ', 1)[1]}" if kind == "refused" else name
                             for name, note in hit[:3]) + (f"{sep}..." if len(hit) > 3 else "")
            parts.append(f"{len(hit)} with {what} ({named})")
    return ("Localization skipped " + ", ".join(parts) + " (per_image.csv, column mask).") if parts else ""


def write_outputs(out: Path, source, n_shards: int, variants: list[Variant], metrics: list[str], min_pred: float,
                  bootstrap: int, seed: int, sample: int, header: str) -> tuple[Path, int, str]:
    """Tables, per_image.csv and figures from the shards of a finished eval, read one shard at a
    time; (table.md path, images that could not be read, masks_skipped sentence)."""
    per_image = [report.per_image_header()]
    values = {v.key: {} for v in variants}
    sample_maps, names, notes = {}, {}, {}
    n_ok = n_failed = 0
    for k in range(n_shards):
        path = out / shard_name(k)
        recs = read_records(path)
        per_image.append(report.per_image_rows(recs, variants))
        ok = [r for r in recs if r["status"] == "ok"]
        notes.update((r["image"], r["mask"]) for r in ok if r.get("mask"))
        n_ok, n_failed = n_ok + len(ok), n_failed + len(recs) - len(ok)
        if ok:
            _collect(ok, variants, values)
        names.update((r["index"], r["image"]) for r in recs if r["index"] < sample)
        if any(r["index"] < sample for r in ok):
            maps, index, _ = load_shard(path)
            for m, j in zip(maps, index.tolist()):
                sample_maps[(j // len(variants), variants[j % len(variants)].key)] = m
    draws = resamples(n_ok, bootstrap, seed)
    rows, curves = [], {"insertion": {}, "deletion": {}}
    for v in variants:
        vals = {name: np.concatenate(parts) for name, parts in values[v.key].items()}
        evals = vals.get("grad_evals", np.zeros(0))
        evals = evals[np.isfinite(evals)]
        info = {"images": n_ok, "grad_evals": float(evals.mean()) if evals.size else float("nan")}
        rows.append((v, cells(vals, n_ok, metrics, min_pred, draws) if n_ok else {}, info))
        for kind in curves:
            if kind in metrics and n_ok:
                curves[kind][v.key] = vals[f"{kind}_curve"]
    head = header + (f"\n\n{n_ok} images evaluated, {n_failed} could not be read (see per_image.csv)."
                     if n_failed else "")
    skipped = masks_skipped(notes) if "localization" in metrics else ""
    head += f"\n\n{skipped}" if skipped else ""
    head += ("\n\nEach cell: the statistic over all images, then its 95% bootstrap interval "
             f"[2.5th, 97.5th percentile of {bootstrap} resamples of the images]." if bootstrap else "")
    md = out / "table.md"
    report.write_text(md, report.table_markdown(rows, metrics, head))
    report.write_text(out / "table.csv", report.table_csv(rows, metrics))
    report.write_text(out / "per_image.csv", "".join(per_image))
    report.plot_curves(out / "curves.png", curves, variants)
    shown = sorted({i for i, _ in sample_maps})
    if shown:
        batch = next(iter(source.batches([shown], 0)))  # the sample images, decoded again
        report.plot_maps(out / "maps.png", list(batch.images),
                         {v.label: [sample_maps[(i, v.key)] for i in shown] for v in variants},
                         [names[i] for i in shown])
    return md, n_failed, skipped
