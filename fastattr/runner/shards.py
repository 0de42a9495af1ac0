"""Shard files: safetensors holding the maps of a fixed block of images plus their manifest
records in the header metadata, written so that a shard file exists only when complete.

Why safetensors: a flat, documented, zero-copy format readable from Python, Rust and JS without
pickle (unlike torch.save), single-file (unlike zarr's directory of chunks, which cannot be
renamed into place atomically), and installed here (h5py and zarr are not). Its header carries
string metadata, so maps and records of a shard live in one file and one atomic rename publishes
both. Its serialisation is deterministic (same tensors and metadata -> same bytes), which is what
makes a resumed run byte-identical to an uninterrupted one.
"""
from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import torch

FORMAT = "fastattr-shard/1"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class WriteError(RuntimeError):
    """An output file could not be written (disk full, permissions, ...); no partial shard was left."""


def shard_name(k: int) -> str:
    """File name of shard k (covers images k*shard_size .. (k+1)*shard_size - 1)."""
    return f"shard-{k:06d}.safetensors"


def json_safe(value: float) -> float | None:
    """A float for JSON: non-finite values become null (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to path via a temporary file in the same folder, fsync, then os.replace: a
    reader (or a resumed run) sees either no file or the whole file, never a prefix."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name is
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        hint = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only"}
        reason = hint.get(exc.errno, exc.strerror or str(exc))
        raise WriteError(f"cannot write {path}: {reason} ({exc.__class__.__name__}: {exc}). "
                              "No partial file was left; fix the cause and re-run the same command "
                              "to resume.") from exc
    try:  # make the rename itself durable; not all file systems allow fsync on a directory
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def clean_temporaries(folder: Path) -> int:
    """Remove temporary files left by a killed run (never a published shard); returns how many."""
    n = 0
    for p in folder.glob("*.tmp-*"):
        try:
            p.unlink()
            n += 1
        except FileNotFoundError:
            pass
    return n


def encode_shard(maps: torch.Tensor, index: torch.Tensor, records: list[dict]) -> bytes:
    """Serialise one shard. maps (n_ok, C, H, W) in the storage dtype, index (n_ok,) int64 global
    image indices of the rows; records: one manifest record per image of the block (ok or not)."""
    from safetensors.torch import save

    # One metadata key only: safetensors keeps metadata in a hash map whose key order varies
    # between processes, and byte-identical shards are part of the resume contract.
    meta = {"fastattr": json.dumps({"format": FORMAT, "records": records}, sort_keys=True, allow_nan=False)}
    return save({"maps": maps.contiguous(), "index": index.contiguous()}, metadata=meta)


def write_shard(path: Path, maps: torch.Tensor, index: torch.Tensor, records: list[dict]) -> None:
    """encode_shard + write_atomic."""
    write_atomic(path, encode_shard(maps.cpu(), index.cpu(), records))


def read_records(path: str | os.PathLike) -> list[dict]:
    """Manifest records stored in a shard's header (reads the header only, not the maps)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("fastattr", "{}"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastattr shard (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta["records"]


def load_shard(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """A shard's maps (n_ok, C, H, W), their global image indices (n_ok,) and its records."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return tensors["maps"], tensors["index"], read_records(path)
