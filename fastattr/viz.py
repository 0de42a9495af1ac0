"""Visualisation of attribution maps: percentile clipping (IDGI paper appendix) and PNG figures.

Figures are drawn with `matplotlib.figure.Figure` on an Agg canvas, never through pyplot, so
they need no display and do not change the caller's matplotlib backend or global state.
"""

from __future__ import annotations

import io
import os
import textwrap
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = ["pixel_saliency", "clip_percentile", "signed_limits", "overlay", "heatmap_figure", "save_heatmap", "save_grid"]


# PNGs keep full colour: a 256-colour palette posterised the photos (the 150 KB heatmap cap and the
# 4 MB grid cap both triggered on real photos). A three-panel heatmap of a 224x224 image is about
# 0.5 MB, a 9x15 map grid a few MB: sizes for files a user asked to look at, not for a web page.
# Callers that need small files can still pass max_bytes to _save.

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


def smoothing_sigma(height: int) -> float:
    """Default Gaussian sigma (pixels) for overlays: 2 px at 224x224, proportional to the height."""
    return height / 112.0


def overlay(image, attribution, cmap: str = "inferno", alpha: float = 0.9, lo: float = 80, hi: float = 99,
            sigma: float | None = None) -> np.ndarray:
    """(3, H, W) image, (C, H, W) map -> (H, W, 3) float32: the map's colour over the dimmed photo.

    The pixel saliency (channel sum of |A|) is smoothed by a Gaussian of `sigma` pixels (None:
    smoothing_sigma(H), 2 px at 224; 0: none), so that per-pixel speckle reads as regions, then
    clipped between its lo-th and hi-th percentiles (the IDGI paper appendix) into [0, 1]; a
    pixel's colour opacity is `alpha` times that. Below the lo-th percentile the photo shows,
    dimmed to 55% so that the colours stand out.
    """
    import matplotlib

    im = _image_hwc(image)
    sal = pixel_saliency(attribution)
    if sal.shape != im.shape[:2]:
        raise ValueError(f"image is {im.shape[:2]} but the map is {sal.shape}")
    sigma = smoothing_sigma(sal.shape[0]) if sigma is None else float(sigma)
    if sigma > 0:
        from scipy.ndimage import gaussian_filter

        sal = gaussian_filter(sal.astype(np.float64), sigma, mode="nearest")
    m = clip_percentile(sal, lo=lo, hi=hi)
    colour = matplotlib.colormaps[cmap](m)[:, :, :3].astype(np.float32)
    a = (alpha * m)[:, :, None]
    return (1.0 - a) * (0.55 * im) + a * colour


def signed_limits(attribution, q: float = 99) -> tuple[np.ndarray, float, bool]:
    """(C, H, W) or (H, W) map -> (channel sum (H, W), clip value v > 0, signed): v is the q-th
    percentile of |sum| (the max when that is 0; 1 for an all-zero map); signed is False when the
    map has no negative value (then it is shown on 0..v)."""
    s = pixel_saliency(attribution, signed=True)
    if not np.isfinite(s).all():
        raise ValueError("attribution contains NaN or inf")
    mag = np.abs(s)
    v = float(np.percentile(mag, q)) or float(mag.max()) or 1.0
    return s, v, bool((s < 0).any())


def _save(fig, path, max_bytes: int | None = None) -> None:
    """Save a Figure as PNG (full colour); re-save with a 256-colour palette if larger than
    max_bytes (None: never)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    from PIL import Image

    im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")  # Agg writes RGBA; nothing is transparent
    out = io.BytesIO()
    im.save(out, format="PNG")
    data = out.getvalue()
    if max_bytes is not None and len(data) > max_bytes:
        out = io.BytesIO()
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
        data = out.getvalue()
    dirname = os.path.dirname(os.fspath(path))
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def heatmap_figure(image, attribution, title: str = "", cmap: str = "inferno", dpi: int = 110):
    """The Figure save_heatmap writes: (3, H, W) image | (C, H, W) map summed over channels
    (diverging colour map centred at 0 when signed, clipped at the 99th percentile of |A|, with a
    colour bar) | overlay (see `overlay`)."""
    from matplotlib.figure import Figure

    im = _image_hwc(image)
    s, v, signed = signed_limits(attribution)
    fig = Figure(figsize=(10.6, 3.9 if title else 3.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(im)
    axes[0].set_title("input", fontsize=9)
    if signed:
        h = axes[1].imshow(s, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        label = "map: sum over channels, red +, blue -\n(colour clipped at the 99th pct of |A|)"
    else:
        h = axes[1].imshow(s, cmap="magma", vmin=0.0, vmax=v, interpolation="nearest")
        label = "map: sum over channels\n(colour clipped at its 99th percentile)"
    axes[1].set_title(label, fontsize=9)
    bar = fig.colorbar(h, ax=axes[1], fraction=0.046, pad=0.02, extend="both" if signed else "max")
    bar.ax.tick_params(labelsize=7)
    bar.formatter.set_powerlimits((-2, 3))
    bar.ax.yaxis.get_offset_text().set_fontsize(7)
    axes[2].imshow(overlay(image, attribution, cmap=cmap))
    sigma = smoothing_sigma(s.shape[0])
    axes[2].set_title(f"overlay: |A| summed, smoothed ({sigma:.1f} px),\nclipped at its 80-99th pct", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def save_heatmap(path, image, attribution, title: str = "", cmap: str = "inferno", dpi: int = 110) -> None:
    """Write heatmap_figure(...) as a full-colour PNG (about 1170x430 pixels at dpi 110)."""
    _save(heatmap_figure(image, attribution, title=title, cmap=cmap, dpi=dpi), path)


def _short_lines(title: str, width: int = 18) -> str:
    """A column title that fits its cell: long labels break before their parenthesis
    ("ig + IDGI\n(guided bwd)"), else at spaces; neighbouring titles overlapped at one line."""
    if len(title) <= width:
        return title
    if " (" in title:
        return title.replace(" (", "\n(", 1)
    return textwrap.fill(title, width)


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
        axes[r, 0].imshow(_image_hwc(img))  # matplotlib's antialiasing: cells are smaller than the images
        for c, name in enumerate(methods, start=1):
            if overlay_on_image:
                axes[r, c].imshow(overlay(img, maps[name][r], cmap=cmap))
            else:
                axes[r, c].imshow(clip_percentile(maps[name][r]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_short_lines(col_titles[c]), fontsize=9)
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=9)
    fig.tight_layout(pad=0.3)
    _save(fig, path)
