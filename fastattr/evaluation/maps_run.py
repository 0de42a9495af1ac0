"""Maps reused from a `fastattr run` output folder (eval --maps RUN_DIR): its options from run.json,
each image's map and target from its shard, one shard in memory at a time."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fastattr.evaluation.variants import Variant


class RunMaps:
    """The maps of a finished `fastattr run`: variant, options and per-image map lookup."""

    def __init__(self, folder):
        from fastattr.runner import read_manifest

        self.folder = Path(folder)
        cfg_path = self.folder / "run.json"
        if not cfg_path.is_file():
            raise ValueError(f"--maps: {str(folder)!r} has no run.json (not a `fastattr run` output folder)")
        self.config = json.loads(cfg_path.read_text())
        if not str(self.config.get("format", "")).startswith("fastattr-run/"):
            raise ValueError(f"--maps: {cfg_path} is not a fastattr run ({self.config.get('format')!r})")
        try:
            self.records = read_manifest(self.folder)
        except FileNotFoundError:
            raise ValueError(f"--maps: {self.folder} has no manifest.jsonl: the run is not finished "
                             "(re-run the same `fastattr run` command to complete it)") from None
        self._shard_name, self._shard = None, None

    @property
    def variant(self) -> Variant:
        c = self.config
        return Variant(c["method"], bool(c["idgi"]), c["backward"])

    @property
    def options(self) -> dict:
        """The run's options that made the maps (reported in eval's table header and config)."""
        keys = ("method", "idgi", "steps", "rule", "backward", "output", "size", "target", "model",
                "model_sha256", "method_options", "files_sha256", "images")
        return {k: self.config.get(k) for k in keys}

    def check_images(self, paths: list[str]) -> None:
        """The run must cover exactly these images (same relative paths in the same order)."""
        ran = [r["path"] for r in self.records]
        if ran[:len(paths)] != list(paths):
            raise ValueError(f"--maps: the run in {self.folder} was made on other images than DATA "
                             f"({len(ran)} images there, {len(paths)} here; first difference at "
                             f"{next((i for i, (a, b) in enumerate(zip(ran, paths)) if a != b), min(len(ran), len(paths)))})")

    def map_and_target(self, index: int) -> tuple[torch.Tensor | None, int | None, float | None]:
        """(map (C, H, W) float32, target, grad_evals) of image `index`; (None, None, None) if the
        run could not read it."""
        from fastattr.runner import load_shard

        rec = self.records[index]
        if rec["status"] != "ok":
            return None, None, None
        if rec["shard"] != self._shard_name:
            self._shard = load_shard(self.folder / rec["shard"])
            self._shard_name = rec["shard"]
        maps = self._shard[0]
        return maps[rec["row"]].float(), int(rec["target"]), rec.get("grad_evals")
