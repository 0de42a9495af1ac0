"""Input discovery: the sorted list of image files under INPUT (a plain folder, searched
recursively, or an ImageFolder tree whose top-level folders are the classes), each with its size
and modification time.

Why sizes and mtimes, not content hashes, to notice an image changed under the same name: one
stat per file costs microseconds, hashing reads the whole dataset before the first image is
computed (minutes for ImageNet's 140 GB on a local disk, hours on a network one), and every ordinary way of changing a file's
content (an editor, cp, PIL's save, a re-download) moves its mtime. What it misses: a rewrite
that restores the old mtime and keeps the size (cp -p / rsync -t of another file of the same
size)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fastattr.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class ImageList:
    """The images of one run: paths relative to root (sorted, '/'-separated), with ImageFolder
    labels (index of the top-level folder) when the tree has that layout."""

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...] | None  # None: not an ImageFolder tree
    classes: tuple[str, ...] | None  # ImageFolder class names (sorted top-level folder names)
    sizes: tuple[int | None, ...] | None = None  # bytes per file at discovery (None: stat failed)
    mtimes_ns: tuple[int | None, ...] | None = None  # modification times (ns) at discovery

    def __len__(self) -> int:
        return len(self.paths)

    def file_stat(self, i: int) -> dict:
        """{"file_bytes", "file_mtime_ns"} of image i at discovery (stored in its manifest record)."""
        return {"file_bytes": self.sizes[i] if self.sizes else None,
                "file_mtime_ns": self.mtimes_ns[i] if self.mtimes_ns else None}

    def fingerprint(self) -> str:
        """sha256 of the file names: a resumed run must see the same images in the same order
        (changed contents are caught per shard, from sizes and mtimes: see file_stat)."""
        h = hashlib.sha256()
        for p in self.paths:
            h.update(p.encode("utf-8") + b"\0")
        return h.hexdigest()


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(EXTENSIONS)


def _stat(path: Path) -> tuple[int | None, int | None]:
    try:
        st = os.stat(path)  # follows a symlink to its file; a FIFO is stat'ed without opening it
    except OSError:  # a dangling symlink: recorded as failed when it is read
        return None, None
    return st.st_size, st.st_mtime_ns


def discover(root: str | os.PathLike) -> ImageList:
    """All PNG/JPEG/WebP names under root (recursive; hidden files and folders skipped; symlinked
    folders not followed), sorted by relative path so every rank and every re-run sees one order.
    Entries that are not regular files (a FIFO named x.png) are listed too: reading them fails
    without blocking (fastattr.images), so they are recorded in the manifest as failed."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"INPUT: {str(root)!r} is not a folder of images")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        paths.extend((rel / f).as_posix() for f in filenames if _is_image(f))
    if not paths:
        raise UserError(f"INPUT: no PNG/JPEG/WebP images under {str(root)!r}")
    paths.sort()
    stats = [_stat(root / p) for p in paths]
    sizes, mtimes = tuple(s for s, _ in stats), tuple(m for _, m in stats)
    # ImageFolder (torchvision's convention): no images at the top level, every image inside a
    # top-level class folder; class index = position of the folder name in sorted order.
    if all("/" in p for p in paths):
        classes = tuple(sorted({p.split("/", 1)[0] for p in paths}))
        index = {c: i for i, c in enumerate(classes)}
        labels = tuple(index[p.split("/", 1)[0]] for p in paths)
        return ImageList(root, tuple(paths), labels, classes, sizes, mtimes)
    return ImageList(root, tuple(paths), None, None, sizes, mtimes)
