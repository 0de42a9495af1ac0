"""Decoding in DataLoader workers: groups of images (one explain call each) arrive decoded and
stacked; a file that cannot be decoded arrives as a failure with its reason instead of a tensor."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from fastattr.errors import UserError
from fastattr.images import load_image
from fastattr.runner.files import ImageList
from fastattr.workers import dataloader_worker_init


@dataclass
class Group:
    """One decoded group. indices: global image indices of the group (all of them, in order);
    ok: those that decoded, with images (len(ok), 3, size, size); failed: index -> reason."""

    indices: list[int]
    ok: list[int]
    images: torch.Tensor | None
    failed: dict[int, str]


class ImageFiles(Dataset):
    """Item i -> (i, (3, size, size) float32 in [0, 1] or None, error message or None)."""

    def __init__(self, images: ImageList, size: int):
        self.images = images
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        path = self.images.root / self.images.paths[i]
        try:
            return i, load_image(path, size=self.size), None
        except UserError as exc:  # not a regular file, undecodable, absurd aspect ratio
            return i, None, str(exc)
        except OSError as exc:  # vanished, unreadable (permissions, I/O error)
            return i, None, f"{type(exc).__name__}: {exc}"


def collate(items) -> Group:
    """List of dataset items -> Group (failures kept apart, successes stacked)."""
    ok = [(i, t) for i, t, err in items if err is None]
    return Group(indices=[i for i, _, _ in items], ok=[i for i, _ in ok],
                 images=torch.stack([t for _, t in ok]) if ok else None,
                 failed={i: err for i, _, err in items if err is not None})


def group_loader(images: ImageList, groups: list[list[int]], size: int, workers: int,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader yielding one Group per entry of `groups`, in order, decoded by `workers`
    processes (0: in the calling process), which end with this process (kill -9 included)."""
    return DataLoader(ImageFiles(images, size), batch_sampler=groups, num_workers=workers,
                      collate_fn=collate, pin_memory=pin_memory,
                      worker_init_fn=dataloader_worker_init() if workers > 0 else None,
                      prefetch_factor=2 if workers > 0 else None)
