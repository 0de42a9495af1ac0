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

from fastattr.runner.files import ImageList, discover
from fastattr.runner.manifest import read_manifest
from fastattr.runner.run import RunSummary, run
from fastattr.runner.shards import WriteError, load_shard

__all__ = ["run", "RunSummary", "discover", "ImageList", "load_shard", "read_manifest", "WriteError"]
