"""Input discovery: the sorted list of image files under INPUT (a plain folder, searched
recursively, or an ImageFolder tree whose top-level folders are the classes)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class ImageList:
    """The images of one run: paths relative to root (sorted, '/'-separated), with ImageFolder
    labels (index of the top-level folder) when the tree has that layout."""

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...] | None  # None: not an ImageFolder tree
    classes: tuple[str, ...] | None  # ImageFolder class names (sorted top-level folder names)

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        """sha256 of the file list: a resumed run must see exactly the same images in the same order."""
        h = hashlib.sha256()
        for p in self.paths:
            h.update(p.encode("utf-8") + b"\0")
        return h.hexdigest()


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(EXTENSIONS)


def discover(root: str | os.PathLike) -> ImageList:
    """All PNG/JPEG/WebP files under root (recursive; hidden files and folders skipped; symlinked
    folders not followed), sorted by relative path so every rank and every re-run sees one order."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"INPUT: {str(root)!r} is not a folder of images")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        paths.extend((rel / f).as_posix() for f in filenames if _is_image(f))
    if not paths:
        raise ValueError(f"INPUT: no PNG/JPEG/WebP images under {str(root)!r}")
    paths.sort()
    # ImageFolder (torchvision's convention): no images at the top level, every image inside a
    # top-level class folder; class index = position of the folder name in sorted order.
    if all("/" in p for p in paths):
        classes = tuple(sorted({p.split("/", 1)[0] for p in paths}))
        index = {c: i for i, c in enumerate(classes)}
        labels = tuple(index[p.split("/", 1)[0]] for p in paths)
        return ImageList(root, tuple(paths), labels, classes)
    return ImageList(root, tuple(paths), None, None)
