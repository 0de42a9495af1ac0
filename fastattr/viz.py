"""Visualisation of attribution maps: percentile clipping (IDGI paper appendix) and PNG figures.

Figures are drawn with `matplotlib.figure.Figure` on an Agg canvas, never through pyplot, so
they need no display and do not change the caller's matplotlib backend or global state.
"""

from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = ["pixel_saliency", "clip_percentile", "overlay", "save_heatmap", "save_grid"]


# Beyond these sizes a PNG is re-saved with a 256-colour palette: heatmaps (one photo, written per
# image) stay small; a map grid shares one palette among dozens of photos and colour maps, which
# posterises the photos, so only very large grids get it.
HEATMAP_MAX_BYTES = 150_000
GRID_MAX_BYTES = 4_000_000


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def pixel_saliency(attribution, signed: bool = False) -> np.ndarray:
    """(C, H, W) or (H, W) attribution -> (H, W) float32: sum over channels of |A| (of A if signed)."""
    a = _np(attribution)
    if a.ndim == 2:
        return a.copy() if signed else np.abs(a)
    if a.ndim != 3:
        raise ValueError(f"expected a (C, H, W) or (H, W) attribution, got shape {a.shape}")
    return (a if signed else np.abs(a)).sum(axis=0)


def clip_percentile(saliency, lo: float = 80, hi: float = 99, signed: bool = False) -> np.ndarray:
    """(C, H, W) or (H, W) map -> (H, W) float32 in [0, 1]: <= lo-th percentile -> 0, >= hi-th -> 1, linear between.

    The visualisation of the IDGI paper appendix. The pixel saliency is the channel sum of |A|
    (of A when `signed`). A constant map (e.g. all zeros) gives all zeros.
    """
    if not 0 <= lo <= hi <= 100:
        raise ValueError(f"need 0 <= lo <= hi <= 100, got lo={lo}, hi={hi}")
    s = pixel_saliency(saliency, signed=signed).astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("saliency contains NaN or inf")
    vlo, vhi = np.percentile(s, [lo, hi])
    if vhi <= vlo:
        return (s > vlo).astype(np.float32)
    return np.clip((s - vlo) / (vhi - vlo), 0.0, 1.0).astype(np.float32)


def _image_hwc(image) -> np.ndarray:
    """(3, H, W) or (H, W, 3) image in [0, 1] (or uint8) -> (H, W, 3) float32 in [0, 1]."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        im = image.astype(np.float32) / 255.0
    else:
        im = _np(image)
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    elif im.ndim == 3 and im.shape[0] in (1, 3) and im.shape[2] not in (1, 3):
        im = np.transpose(im, (1, 2, 0))
    if im.ndim != 3 or im.shape[2] not in (1, 3):
        raise ValueError(f"expected a (3, H, W) image, got shape {np.shape(image)}")
    if im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    return np.clip(im, 0.0, 1.0)


def overlay(image, attribution, cmap: str = "inferno", alpha: float = 0.85, lo: float = 80, hi: float = 99) -> np.ndarray:
    """(3, H, W) image, (C, H, W) map -> (H, W, 3) float32: clipped map in `cmap` over the greyscale image.

    The colour opacity of a pixel is `alpha * sqrt(clipped saliency)`, so pixels below the
    lo-th percentile show the plain greyscale image and weak attributions stay visible.
    """
    import matplotlib

    im = _image_hwc(image)
    m = clip_percentile(attribution, lo=lo, hi=hi)
    if m.shape != im.shape[:2]:
        raise ValueError(f"image is {im.shape[:2]} but the map is {m.shape}")
    grey = (im @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    grey = 0.25 + 0.5 * grey  # dimmed so the colours stand out
    colour = matplotlib.colormaps[cmap](m)[:, :, :3].astype(np.float32)
    a = (alpha * np.sqrt(m))[:, :, None]
    return (1.0 - a) * grey + a * colour


def _save(fig, path, max_bytes: int) -> None:
    """Save a Figure as PNG; re-save with a 256-colour palette if larger than max_bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    data = buf.getvalue()
    if len(data) > max_bytes:
        from PIL import Image

        im = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        out = io.BytesIO()
        im.save(out, format="PNG", optimize=True)
        data = out.getvalue()
    dirname = os.path.dirname(os.fspath(path))
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def save_heatmap(path, image, attribution, title: str = "", cmap: str = "inferno", dpi: int = 100) -> None:
    """Write a PNG: (3, H, W) image in [0, 1] | (C, H, W) map (80-99 percentile clip) over the greyscale image."""
    from matplotlib.figure import Figure

    im = _image_hwc(image)
    ov = overlay(image, attribution, cmap=cmap)
    fig = Figure(figsize=(6.0, 3.45 if title else 3.2), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, panel, label in zip(axes, (im, ov), ("input", "attribution (80-99th pct clip)")):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    _save(fig, path, HEATMAP_MAX_BYTES)


def save_grid(
    path,
    images: Sequence,
    maps: Mapping[str, Sequence],
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    overlay_on_image: bool = True,
    cmap: str = "inferno",
    cell: float = 1.7,
    dpi: int = 100,
) -> None:
    """Write a PNG grid: rows = images ((3, H, W) each), column 0 the image, then one column per method in `maps`.

    `maps[method][i]` is the (C, H, W) map of image i. `col_titles` has one title per column
    (len(maps) + 1), or one per method (the image column is then titled "input"); default the
    method names. `overlay_on_image=False` shows the clipped maps alone in greyscale.
    """
    from matplotlib.figure import Figure

    methods = list(maps)
    n_rows, n_cols = len(images), len(methods) + 1
    if n_rows == 0:
        raise ValueError("save_grid needs at least one image")
    for name in methods:
        if len(maps[name]) != n_rows:
            raise ValueError(f"maps[{name!r}] has {len(maps[name])} maps for {n_rows} images")
    if col_titles is None:
        col_titles = ["input", *methods]
    elif len(col_titles) == len(methods):
        col_titles = ["input", *col_titles]
    if len(col_titles) != n_cols:
        raise ValueError(f"col_titles needs {n_cols} (or {n_cols - 1}) entries, got {len(col_titles)}")
    if row_titles is not None and len(row_titles) != n_rows:
        raise ValueError(f"row_titles needs {n_rows} entries, got {len(row_titles)}")

    fig = Figure(figsize=(cell * n_cols + (0.3 if row_titles else 0.0), cell * n_rows + 0.3), dpi=dpi)
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    for r in range(n_rows):
        img = images[r]
        axes[r, 0].imshow(_image_hwc(img), interpolation="nearest")
        for c, name in enumerate(methods, start=1):
            if overlay_on_image:
                axes[r, c].imshow(overlay(img, maps[name][r], cmap=cmap), interpolation="nearest")
            else:
                axes[r, c].imshow(clip_percentile(maps[name][r]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_titles[c], fontsize=9)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=9)
    fig.tight_layout(pad=0.3)
    _save(fig, path, GRID_MAX_BYTES)
