"""Where eval's images come from: a folder / ImageFolder tree (decoded by the runner's loader, with
optional masks of the same relative names), or the bundled evaluation set. Both hand out the
same Batch for a group of global image indices."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from fastattr.runner.files import EXTENSIONS, ImageList, discover


@dataclass
class Batch:
    """One decoded group. indices: every global index of the group, in order; ok: those that
    decoded, with images (len(ok), 3, S, S), masks (len(ok), S, S) bool and has_mask (len(ok),)
    bool; failed: index -> reason."""

    indices: list[int]
    ok: list[int]
    images: torch.Tensor | None
    masks: torch.Tensor | None
    has_mask: torch.Tensor | None
    failed: dict[int, str]


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
            raise ValueError(f"--masks: {str(masks)!r} is not a folder")

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

    def _load_mask(self, i: int) -> torch.Tensor | None:
        from fastattr.images import load_image

        p = self.mask_path(i)
        if p is None:
            return None
        # the image's own resize and centre crop, then > 0.5: object pixels stay where they are
        return load_image(p, size=self.size).mean(0) > 0.5

    def random_mask(self, i: int) -> torch.Tensor:
        return random_mask(self.images.paths[i], self.size, self.size)

    def batches(self, groups: list[list[int]], workers: int, pin_memory: bool = False):
        """One Batch per group, decoded by the runner's loader (`workers` processes)."""
        from fastattr.runner.loader import group_loader

        for g in group_loader(self.images, groups, self.size, workers, pin_memory=pin_memory):
            masks, has, failed = [], [], dict(g.failed)
            for i in g.ok:
                try:
                    m = self._load_mask(i)
                except Exception as exc:  # noqa: BLE001 - a bad mask file is this image's mask failure
                    failed[i] = f"mask: {type(exc).__name__}: {exc}"
                    m = None
                has.append(m is not None)
                masks.append(m if m is not None else torch.zeros(self.size, self.size, dtype=torch.bool))
            keep = [j for j, i in enumerate(g.ok) if i not in failed]
            ok = [g.ok[j] for j in keep]
            yield Batch(g.indices, ok, g.images[keep] if ok else None,
                        torch.stack([masks[j] for j in keep]) if ok else None,
                        torch.tensor([has[j] for j in keep], dtype=torch.bool) if ok else None, failed)


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
            yield Batch(list(g), list(g), self.es.images[g], self.es.masks[g], self.es.has_mask[g], {})
