"""Maps reused from a `fastattr run` output folder (eval --maps RUN_DIR): its options from run.json,
each image's map and target from its shard, one shard in memory at a time. Before any of them is
scored the run is checked against what eval will use: the same images, unchanged since the run
(names, sizes and modification times, as `fastattr run` itself compares them on resume), and the
same model (by sha256: the path alone named another file when eval ran in another folder)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from fastattr.errors import UserError
from fastattr.evaluation.variants import Variant


class RunMaps:
    """The maps of a finished `fastattr run`: variant, options and per-image map lookup."""

    def __init__(self, folder):
        from fastattr.runner import read_manifest

        self.folder = Path(folder)
        cfg_path = self.folder / "run.json"
        if not cfg_path.is_file():
            raise UserError(f"--maps: {str(folder)!r} has no run.json (not a `fastattr run` output folder)")
        try:
            self.config = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"--maps: cannot read {cfg_path} ({exc})") from None
        fmt = str(self.config.get("format", "")) if isinstance(self.config, dict) else ""
        if not fmt.startswith("fastattr-run/"):
            raise UserError(f"--maps: {cfg_path} is not a fastattr run ({fmt or 'no format'!r})")
        if fmt == "fastattr-run/1":
            raise UserError(f"--maps: the run in {self.folder} was made by an older fastattr that did not record "
                            "its images' sizes and modification times, so eval cannot tell whether its maps are "
                            "still those of the images; run `fastattr run` again into a new folder")
        try:
            self.records = read_manifest(self.folder)
        except FileNotFoundError:
            raise UserError(f"--maps: {self.folder} has no manifest.jsonl: the run is not finished "
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

    def describe(self) -> str:
        """The run's method and options in one phrase: 'ig + IDGI, steps=16, rule=left, ...'."""
        o = self.options
        return (f"{self.variant.label}, steps={o['steps']}, rule={o['rule']}, backward={o['backward']}, "
                f"output={o['output']}, target={o['target']}, options {o['method_options']}")

    def model_spec(self, model):
        """The model to score the maps with: `model` when given, else the run's: 'default', or
        the file at the absolute path `fastattr run` recorded (runs before that recorded the path
        as typed, which is resolved here; check_model then verifies either by sha256)."""
        if model is not None:
            return model
        recorded = self.config.get("model")
        if recorded in (None, "default"):
            return "default"
        if not os.path.isfile(str(recorded)):
            raise UserError(f"model: the run in {self.folder} was made with the model {recorded!r}, which is not a "
                            "file here; pass --model with that model's file (its sha256 is checked against the run's)")
        return recorded

    def check_model(self, model_id: dict, net) -> None:
        """UserError naming both models unless the model eval loaded is the run's: the same file
        sha256 (or, for a run of a Python nn.Module, the same weights)."""
        from fastattr.runner.preflight import module_sha256

        want = self.config.get("model_sha256")
        if want in (None, model_id["model_sha256"]) or want == module_sha256(net):
            return
        raise UserError(f"model: the maps in {self.folder} were made with {self.config.get('model')} (sha256 "
                        f"{str(want)[:12]}...), but {model_id['model']} is another model (sha256 "
                        f"{model_id['model_sha256'][:12]}...); pass --model with the run's model file")

    def check_images(self, images) -> None:
        """The run must cover exactly these images (runner.ImageList: same relative paths in the
        same order) and none may have changed since (size or modification time)."""
        ran, paths = [r["path"] for r in self.records], list(images.paths)
        if ran != paths:
            first = next((i for i, (a, b) in enumerate(zip(ran, paths)) if a != b), min(len(ran), len(paths)))
            raise UserError(f"--maps: the run in {self.folder} was made on other images than DATA ({len(ran)} "
                            f"images there, {len(paths)} here; first difference at image {first})")
        changed = [r["path"] for r in self.records
                   if {k: r.get(k) for k in ("file_bytes", "file_mtime_ns")} != images.file_stat(r["index"])]
        if not changed:
            return
        names = f"{', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}"
        if str(Path(images.root).resolve()) != self.config.get("input"):
            raise UserError(f"--maps: the run in {self.folder} was made on other images than DATA (it read "
                            f"{self.config.get('input')}; {len(changed)} of the {len(ran)} images under {images.root} "
                            f"differ in size or modification time: {names})")
        raise UserError(f"--maps: {len(changed)} of the run's images changed since it made their maps (size or "
                        f"modification time: {names}); run the same `fastattr run` command again (it recomputes "
                        "them), then eval")

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
