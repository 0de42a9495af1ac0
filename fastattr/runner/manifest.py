"""The run folder's two small JSON files: run.json (the options; a re-run with other options is
refused) and manifest.jsonl (one record per input image, merged from the shards in order)."""
from __future__ import annotations

import json
from pathlib import Path

from fastattr.errors import UserError
from fastattr.runner.shards import read_records, shard_name, write_atomic

CONFIG = "run.json"
MANIFEST = "manifest.jsonl"


# Recorded in run.json (as the run that created it named it) but not compared: a relative and an
# absolute path to the same model file are the same run; the model's identity is model_sha256.
NOT_COMPARED = ("model",)
# Options added to run.json after runs were made, with the value those runs used: their folders
# stay resumable.
ADDED_OPTIONS = {"precision": "fp32"}


class ConfigMismatch(UserError):
    """The output folder holds a run made with different options or inputs."""


def check_config(out: Path, config: dict, write: bool, started: bool = True) -> None:
    """Compare config with out/run.json. write=True (rank 0, holding the folder lock): create
    run.json if absent, and replace it if nothing was computed under it yet (started=False), so
    that a run which stopped before its first result never blocks the corrected command.
    Raises ConfigMismatch naming every differing option."""
    path = out / CONFIG
    data = (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
    if not path.exists():
        if not write:
            raise ConfigMismatch(f"--out: {path} is missing (rank 0 should have written it)")
        write_atomic(path, data)
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        if write and not started:
            write_atomic(path, data)
            return
        raise ConfigMismatch(f"--out: cannot read {path} ({exc}); use a new output folder") from None
    # a run.json written before an option existed ran with its default (runs that record the option)
    old = {**{k: v for k, v in ADDED_OPTIONS.items() if k in config}, **old}
    diff = [f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in sorted(set(old) | set(config))
            if k not in NOT_COMPARED and old.get(k) != config.get(k)]
    if diff and write and not started:
        write_atomic(path, data)
    elif diff:
        raise ConfigMismatch(f"--out: {out} holds a run with other options or inputs, refusing to mix "
                             f"({'; '.join(diff)}); re-run with the original options or use a new --out")


def merge_manifest(out: Path, n_shards: int) -> tuple[int, int]:
    """Write out/manifest.jsonl from the records of shards 0..n_shards-1 (in image order, hence
    the same for any number of ranks); returns (ok, failed) counts."""
    lines, ok, failed = [], 0, 0
    for k in range(n_shards):
        for rec in read_records(out / shard_name(k)):
            lines.append(json.dumps(rec, sort_keys=True, allow_nan=False))
            ok += rec["status"] == "ok"
            failed += rec["status"] != "ok"
    write_atomic(out / MANIFEST, ("\n".join(lines) + "\n").encode())
    return ok, failed


def read_manifest(out: str | Path) -> list[dict]:
    """The records of a finished run, one dict per input image, in input order."""
    with open(Path(out) / MANIFEST) as f:
        return [json.loads(line) for line in f if line.strip()]
