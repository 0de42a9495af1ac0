"""The dataset loop: images split into fixed blocks (shards) by position in the sorted file list;
each rank computes the pending shards it owns, one explain call per group of decoded images,
and publishes each shard atomically; rank 0 merges the manifest when every shard exists.

Why fixed blocks: a shard's content depends only on its images and the options (the same groups
reach fastattr.explain in the same composition), not on which rank or which attempt computed
it, so a resumed or distributed run writes the same bytes as one uninterrupted process with the
same thread count."""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import fastattr
from fastattr import validation as v
from fastattr.engine import default_batch_size, uses_conv2d
from fastattr.errors import UserError, checking_arguments
from fastattr.methods import METHODS
from fastattr.runner.distributed import Dist, default_threads, setup, teardown
from fastattr.runner.files import ImageList, discover
from fastattr.runner.loader import Group, group_loader
from fastattr.runner.lock import folder_lock
from fastattr.runner.manifest import check_config, merge_manifest
from fastattr.runner.preflight import load_checked
from fastattr.runner.shards import (SHARD_GLOB, STORAGE_DTYPES, WriteError, check_out_folder, clean_temporaries,
                                    json_safe, read_records, remove_checked, shard_name,
                                    verify_checked, write_shard)

TARGETS = ("predicted", "label")
# run.json format; 2: shards carry size + sha256 records and image files' sizes and mtimes
FORMAT = "fastattr-run/2"


@dataclass
class RunSummary:
    """What one call of run() did (for this rank): totals come from the merged manifest (rank 0)."""

    out: Path
    images: int  # images in the input
    shards: int  # shards of the whole run
    computed: int  # shards this rank computed in this call (0 when everything was done already)
    computed_images: int  # images in those shards
    seconds: float  # wall time of this rank's shard loop
    ok: int | None = None  # rank 0 only: images with a map
    failed: int | None = None  # rank 0 only: images that could not be read
    repaired: list[str] = field(default_factory=list)  # rank 0: shards found bad and computed again


def check_target(target, has_labels: bool):
    """`target` of a dataset job (run, eval): None / 'predicted', 'label' (needs an ImageFolder
    tree: has_labels) or a class index >= 0; UserError naming target otherwise."""
    if target in (None, "predicted"):
        return "predicted"
    if target == "label":
        if not has_labels:
            raise UserError("target: 'label' needs an ImageFolder tree (every image inside a class folder)")
        return "label"
    try:
        t = int(target)
    except (TypeError, ValueError):
        raise UserError(f"target: expected 'predicted', 'label' or a class index, got {target!r}") from None
    if t < 0:
        raise UserError(f"target: class index must be >= 0, got {t}")
    return t


def _grad_evals_per_image(ex, n: int) -> list:
    """Per-image gradient evaluations: the method's own count when it reports one, else the
    call's total split evenly (exact for fixed-step methods, where every image costs the same)."""
    per = ex.extras.get("grad_evals_per_image") if isinstance(ex.extras, dict) else None
    if per is not None:
        return [json_safe(float(c)) for c in torch.as_tensor(per).reshape(-1).tolist()]
    each = ex.grad_evals / n
    return [int(each) if float(each).is_integer() else each] * n


def _check_options(method, idgi, steps, rule, backward, output, batch_size, size, dtype, shard_size,
                   images_per_call, threads, workers, method_options) -> dict:
    """The run's options checked without touching a file or the model; returns the normalised ones."""
    from fastattr.api import check_call_options

    with checking_arguments():
        v.check_choice(dtype, "dtype", STORAGE_DTYPES)
        steps, batch_size = check_call_options(method, rule, output, backward, steps, batch_size, idgi)
        size = v.check_positive_int(size, "size", allow_none=False)
        shard_size = v.check_positive_int(shard_size, "shard_size", allow_none=False)
        images_per_call = v.check_positive_int(images_per_call, "images_per_call", allow_none=False)
        threads = v.check_positive_int(threads, "threads")
        v.check_nonnegative_int(workers, "workers")
        method_options = dict(method_options or {})
        v.check_method_options(METHODS[method].fn, method, method_options)
        try:  # recorded in run.json, which a resumed run compares
            json.dumps(method_options, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(f"method_options: must be JSON values (numbers, strings, lists), "
                             f"got {method_options!r}") from None
    return dict(steps=steps, batch_size=batch_size, size=size, shard_size=shard_size,
                images_per_call=images_per_call, threads=threads, method_options=method_options)


def verify_shards(out: Path, n_shards: int, images: ImageList | None) -> list[str]:
    """Remove every shard of out that would be wrong to keep - not matching its size + sha256
    record, unreadable, or (images given) made from an image file that changed since (size or
    mtime) - so that it is computed again; returns one message per shard removed."""
    problems = []
    for k in range(n_shards):
        path = out / shard_name(k)
        if not path.exists():
            remove_checked(path)  # a record whose shard was never published
            continue
        problem = verify_checked(path)
        if problem is None:
            try:
                records = read_records(path)
            except Exception as exc:  # noqa: BLE001 - matches its checksum but is no shard we can read
                problem = f"it cannot be read ({type(exc).__name__}: {exc})"
            else:
                changed = [] if images is None else [r["path"] for r in records
                           if r.get("path") != images.paths[r["index"]]
                           or {key: r.get(key) for key in ("file_bytes", "file_mtime_ns")} != images.file_stat(r["index"])]
                if changed:
                    problem = (f"{len(changed)} of its images changed since it was written "
                               f"(size or modification time: {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})")
        if problem is not None:
            remove_checked(path)
            problems.append(f"{path.name}: {problem}; computing it again")
    return problems


def claim_shards(held: contextlib.ExitStack, out: Path, config: dict, n: int, shard_size: int, per_call: int,
                 d, images: ImageList | None, command: str) -> tuple[list[int], list[list[int]], list[int], list[str]]:
    """The start of a sharded job in `out` (fastattr run and eval): rank 0 creates the folder,
    takes its lock (held until `held` closes), checks run.json against config, cleans temporaries
    and verifies finished shards (bad ones removed, named on stderr); every rank then claims its
    share of the missing shards. -> (my shards, groups of image indices of at most per_call,
    the shard of each group, rank 0's messages about shards computed again)."""
    n_shards = math.ceil(n / shard_size)
    repaired = []
    if d.rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteError(f"--out: cannot create {out}: {exc}") from exc
        held.enter_context(folder_lock(out))  # before anything in the folder is touched
        check_config(out, config, write=True, started=any(out.glob(SHARD_GLOB)))
        clean_temporaries(out)
        repaired = verify_shards(out, n_shards, images)
        for msg in repaired:
            print(f"fastattr {command}: {msg}", file=sys.stderr)
    d.barrier()
    if d.rank != 0:
        check_config(out, config, write=False)
    pending = [k for k in range(n_shards) if not (out / shard_name(k)).exists()]
    d.barrier()  # every rank has listed the same pending shards before any new one appears
    mine = pending[d.rank::d.world]
    groups, owner = [], []
    for k in mine:
        block = list(range(k * shard_size, min((k + 1) * shard_size, n)))
        for j in range(0, len(block), per_call):
            groups.append(block[j:j + per_call])
            owner.append(k)
    return mine, groups, owner, repaired


def run(input, out, *, model="default", trust_pickle: bool = False, method: str = "ig", idgi: bool = False,
        steps: int | None = None, rule: str = "left", backward: str = "standard", output: str = "probability",
        batch_size: int | None = None, compile: bool = False, channels_last: bool | None = None,
        precision: str | None = None, size: int = 224, target="predicted",
        dtype: str = "float32", shard_size: int = 64, images_per_call: int = 16, workers: int | None = None,
        threads: int | None = None, device: str | None = None, progress: bool = True,
        method_options: dict | None = None, model_kwargs: dict | None = None) -> RunSummary:
    """Attribution maps for every image under `input`, written to `out` as shards + manifest.jsonl.
    Resumable (re-run the same call), and distributed when started by torchrun. model: 'default',
    a file (torch.export .pt2, TorchScript, or with trust_pickle=True a torch.save'd module) or an
    nn.Module. model_kwargs: further model inputs every image shares (recorded in run.json by their
    sha256). Every option, the model and the input are checked before anything is written
    (UserError); the folder is locked against a second concurrent run (FolderBusy)."""
    from fastattr.forward import shared_fingerprint
    from fastattr.models import class_name

    o = _check_options(method, idgi, steps, rule, backward, output, batch_size, size, dtype, shard_size,
                       images_per_call, threads, workers, method_options)
    with checking_arguments():
        kwargs_id = {"model_kwargs_sha256": shared_fingerprint(model_kwargs)} if model_kwargs else {}
    steps, batch_size, size, shard_size = o["steps"], o["batch_size"], o["size"], o["shard_size"]
    images = discover(input)
    target = check_target(target, images.labels is not None)
    out = Path(out)
    check_out_folder(out)

    d = setup(device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(o["threads"] or default_threads(d))
    try:
        explain_options = dict(method=method, idgi=idgi, steps=steps, rule=rule, backward=backward,
                               output=output, batch_size=batch_size, compile=compile,
                               channels_last=channels_last, precision=precision, **o["method_options"])
        if model_kwargs:
            explain_options["model_kwargs"] = model_kwargs
        net, model_id = load_checked(model, trust_pickle=trust_pickle, device=d.device, size=size,
                                     target=max(images.labels) if target == "label" else
                                     None if target == "predicted" else target, explain_options=explain_options)
        if channels_last is None:
            channels_last = explain_options["channels_last"] = uses_conv2d(net)
        n, n_shards = len(images), math.ceil(len(images) / shard_size)
        # Every option that changes a map's bits; threads and world size are left out on purpose
        # (resuming on another number of ranks is legitimate; see the README on bit-identity).
        config = {"format": FORMAT, "input": str(Path(input).resolve()), "images": n,
                  "files_sha256": images.fingerprint(), **model_id, "method": method, "idgi": bool(idgi),
                  "steps": steps if steps is not None else METHODS[method].default_steps, "rule": rule,
                  "backward": backward, "output": output,
                  "batch_size": batch_size or default_batch_size(d.device, 3 * size * size),
                  "compile": bool(compile),
                  "channels_last": bool(channels_last),
                  "precision": precision or "fp32",  # None and "fp32" are the same run
                  "size": size, "target": target, "dtype": dtype, "shard_size": shard_size,
                  "images_per_call": o["images_per_call"], "method_options": o["method_options"], **kwargs_id}
        with contextlib.ExitStack() as held:
            mine, groups, owner, repaired = claim_shards(held, out, config, n, shard_size, o["images_per_call"], d,
                                                         images, "run")
            names = class_name if model_id["model"] == "default" else None  # ImageNet names
            t0 = time.perf_counter()
            _loop(net, images, groups, owner, out, d, target, dtype, size, names,
                  explain_options, workers, progress)
            summary = RunSummary(out, n, n_shards, len(mine), sum(len(g) for g in groups),
                                 time.perf_counter() - t0, repaired=repaired)
            d.barrier()  # all shards exist
            if d.rank == 0:
                summary.ok, summary.failed = merge_manifest(out, n_shards)
            return summary
    finally:
        torch.set_num_threads(old_threads)
        teardown(d)


def _loop(net, images: ImageList, groups, owner, out: Path, d: Dist, target, dtype: str, size: int,
          class_name, explain_options: dict, workers, progress: bool) -> None:
    """Compute this rank's groups in order and write each shard when its last group is done.
    Holds at most one shard of maps in memory."""
    from tqdm.auto import tqdm

    if not groups:
        return
    if workers is None:
        workers = min(2, len(groups))
    loader = group_loader(images, groups, size, workers, pin_memory=d.device.type == "cuda")
    bar = tqdm(total=sum(len(g) for g in groups), unit="img", dynamic_ncols=True, file=sys.stderr,
               desc="fastattr run" + (f" rank 0/{d.world}" if d.world > 1 else ""),
               disable=not progress or d.rank != 0)
    storage = STORAGE_DTYPES[dtype]
    maps, rows, records, failed = [], [], [], 0
    try:
        for gi, group in enumerate(loader):
            k = owner[gi]
            records.extend(_explain_group(net, images, group, target, class_name, explain_options, d,
                                          maps, rows, storage, shard_name(k)))
            failed += len(group.failed)
            bar.update(len(group.indices))
            if failed:
                bar.set_postfix(failed=failed, refresh=False)
            if gi + 1 == len(groups) or owner[gi + 1] != k:
                block = torch.stack(maps) if maps else torch.zeros(0, 3, size, size, dtype=storage)
                write_shard(out / shard_name(k), block, torch.tensor(rows, dtype=torch.int64), records)
                maps, rows, records = [], [], []
    finally:
        bar.close()


def _explain_group(net, images: ImageList, group: Group, target, class_name, explain_options: dict,
                   d: Dist, maps: list, rows: list, storage: torch.dtype, shard: str) -> list[dict]:
    """Maps of one group appended to maps/rows; returns the group's records in input order."""
    got = {}
    if group.ok:
        x = group.images.to(d.device, non_blocking=True)
        if target == "label":
            t = [images.labels[i] for i in group.ok]
        else:
            t = None if target == "predicted" else target
        ex = fastattr.explain(net, x, t, **explain_options)
        evals = _grad_evals_per_image(ex, len(group.ok))
        attributions = ex.attributions.to(storage).cpu()
        for j, i in enumerate(group.ok):
            c = int(ex.target[j])
            got[i] = {"target": c, "score": json_safe(ex.scores[j]),
                      "baseline_score": json_safe(ex.baseline_scores[j]), "delta": json_safe(ex.delta[j]),
                      "grad_evals": evals[j], "status": "ok", "error": None, "row": len(rows)}
            if class_name is not None:
                got[i]["class_name"] = class_name(c)
            elif target == "label":
                got[i]["class_name"] = images.classes[c]
            maps.append(attributions[j])
            rows.append(i)
    records = []
    for i in group.indices:
        rec = {"index": i, "path": images.paths[i], "shard": shard, "class_name": None,
               "label": images.labels[i] if images.labels is not None else None,
               "target": None, "score": None, "baseline_score": None, "delta": None, "grad_evals": 0,
               "status": "failed", "error": group.failed.get(i), "row": None, **images.file_stat(i)}
        rec.update(got.get(i, {}))
        records.append(rec)
    return records
