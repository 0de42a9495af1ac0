"""Where eval's images come from: a folder / ImageFolder tree (decoded by the runner's loader, with
optional masks of the same relative names), or the bundled evaluation set. Both hand out the
same Batch for a group of global image indices."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastattr.errors import UserError
from fastattr.evaluation.masks import Mask, read_mask
from fastattr.runner.files import EXTENSIONS, ImageList, discover


@dataclass
class Batch:
    """One decoded group. indices: every global index of the group, in order; ok: those that
    decoded, with images (len(ok), 3, S, S), masks (len(ok), S, S) bool and has_mask (len(ok),)
    bool (a usable mask: neither missing, refused, empty nor full); failed: index -> reason;
    mask_notes: index -> why an image of ok has no usable mask ('missing', 'empty: ...',
    'full: ...', 'refused: ...'), absent for usable masks."""

    indices: list[int]
    ok: list[int]
    images: torch.Tensor | None
    masks: torch.Tensor | None
    has_mask: torch.Tensor | None
    failed: dict[int, str]
    mask_notes: dict[int, str] = field(default_factory=dict)


def random_mask(key: str, h: int, w: int, fraction: float = 0.01) -> torch.Tensor:
    """PAIR's 1% random pixel mask (H, W) bool for one image, seeded by the image's name, so it
    does not depend on the other files, the grouping, the rank or a resume."""
    from fastattr.metrics.pic import random_masks_like

    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little") >> 1
    return random_masks_like(1, h, w, fraction=fraction, seed=seed)[0]


class FolderSource:
    """Images under a folder (runner.discover order), size x size, optional masks folder."""

    kind = "folder"

    def __init__(self, root, size: int, masks=None, max_images: int | None = None):
        images = discover(root)
        if max_images is not None and max_images < len(images):
            images = ImageList(images.root, images.paths[:max_images],
                               images.labels[:max_images] if images.labels is not None else None, images.classes)
        self.images = images
        self.size = size
        self.masks_root = Path(masks) if masks is not None else None
        if self.masks_root is not None and not self.masks_root.is_dir():
            raise UserError(f"--masks: {str(masks)!r} is not a folder")

    @property
    def names(self) -> list[str]:
        return list(self.images.paths)

    @property
    def labels(self) -> list[int] | None:
        return list(self.images.labels) if self.images.labels is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def mask_path(self, i: int) -> Path | None:
        """The mask of image i: the same relative path, or the same name with another image extension."""
        if self.masks_root is None:
            return None
        rel = Path(self.images.paths[i])
        for cand in [rel] + [rel.with_suffix(e) for e in EXTENSIONS] + [rel.with_suffix(e.upper()) for e in EXTENSIONS]:
            p = self.masks_root / cand
            if p.is_file():
                return p
        return None

    def _load_mask(self, i: int) -> Mask:
        p = self.mask_path(i)
        if p is None:
            return Mask("missing") if self.masks_root is None else Mask("missing", reason="no mask file")
        return read_mask(p, self.images.root / self.images.paths[i], self.size)

    def random_mask(self, i: int) -> torch.Tensor:
        return random_mask(self.images.paths[i], self.size, self.size)

    def batches(self, groups: list[list[int]], workers: int, pin_memory: bool = False):
        """One Batch per group, decoded by the runner's loader (`workers` processes)."""
        from fastattr.runner.loader import group_loader

        empty = torch.zeros(self.size, self.size, dtype=torch.bool)
        for g in group_loader(self.images, groups, self.size, workers, pin_memory=pin_memory):
            read = {i: self._load_mask(i) for i in g.ok}
            notes = {i: m.status + (f": {m.reason}" if m.reason else "") for i, m in read.items()
                     if m.status != "ok" and self.masks_root is not None}
            ok = g.ok
            yield Batch(g.indices, ok, g.images if ok else None,
                        torch.stack([read[i].mask if read[i].status == "ok" else empty for i in ok]) if ok else None,
                        torch.tensor([read[i].status == "ok" for i in ok], dtype=torch.bool) if ok else None,
                        dict(g.failed), notes)


class BundledSource:
    """The bundled evaluation set (fastattr.evalset): photos and composites with exact masks."""

    kind = "bundled"

    def __init__(self, max_images: int | None = None):
        from fastattr.evalset import load_evalset

        es = load_evalset()
        if max_images is not None:
            es = es.subset(max_images)
        self.es = es
        self.size = es.images.shape[-1]

    @property
    def names(self) -> list[str]:
        return list(self.es.names)

    @property
    def labels(self) -> list[int]:
        return self.es.labels.tolist()

    def __len__(self) -> int:
        return len(self.es)

    def random_mask(self, i: int) -> torch.Tensor:
        return self.es.random_masks[i]

    def batches(self, groups: list[list[int]], workers: int = 0, pin_memory: bool = False):
        for g in groups:
            yield Batch(list(g), list(g), self.es.images[g], self.es.masks[g], self.es.has_mask[g], {},
                        {i: "missing" for i in g if not bool(self.es.has_mask[i])})
