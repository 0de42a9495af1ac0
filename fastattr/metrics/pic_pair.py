"""The image side of PAIR's PIC metric (`saliency.metrics.pic`, XRAI paper), reproduced bit for
bit: griddata-blurred images of kept pixels and their lossless-WebP byte lengths. Pure numpy /
scipy / PIL so it can run in worker processes; the model side lives in pic.py."""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os

import numpy as np

from fastattr.workers import process_pool

PAIR_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)


def webp_length(image: np.ndarray) -> int:
    """Byte length of the lossless WebP (quality 100) of an (H, W, 3) uint8 image: PAIR's
    `estimate_image_entropy`."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="webp", lossless=True, quality=100)
    return buf.tell()


def blurred_image(image: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """PAIR's `create_blurred_image(image, mask, 'linear')` for (H, W, 3) uint8 -> (H, W, 3) uint8.

    PAIR calls griddata once per channel, i.e. three Delaunay triangulations of the same points;
    here one triangulation interpolates all channels at once. The barycentric weights and the
    per-channel sums are the same floating-point operations, so the result is identical (tested).
    """
    from scipy.interpolate import LinearNDInterpolator

    mask = pixel_mask.copy()
    h, w = mask.shape
    mask[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]] = True  # PAIR always keeps the corners
    if mask.all():
        return image
    mean_color = image.mean(axis=(0, 1))
    out = image * mask[:, :, None].astype(np.float32)  # float32, as PAIR's
    known = np.argwhere(mask > 0)
    unknown = np.argwhere(mask == 0)
    # With the four corners kept every pixel lies in the convex hull; NaN marks any point qhull
    # still reports outside, which PAIR fills with the channel mean.
    interp = LinearNDInterpolator(known, image[tuple(known.T)], fill_value=np.nan)
    vals = interp(unknown)
    vals = np.where(np.isnan(vals), mean_color[None, :], vals)
    out[tuple(unknown.T)] = vals  # float64 -> float32 store, as PAIR's per-channel assignment
    return np.round(out).astype(np.uint8)


def threshold_masks(saliency: np.ndarray, random_mask: np.ndarray, thresholds) -> list[np.ndarray]:
    """PAIR's kept-pixel masks: saliency >= its (1 - t) quantile, or the random mask; (H, W) each."""
    return [np.logical_or(saliency >= np.quantile(saliency, 1 - t), random_mask) for t in thresholds]


def blur_and_measure(args) -> tuple[np.ndarray | None, int]:
    """One unit of work: (image, mask or None) -> (blurred image or None, its WebP length)."""
    image, mask = args
    if mask is None:  # the original image: its entropy only
        return None, webp_length(image)
    b = blurred_image(image, mask)
    return b, webp_length(b)


def default_workers() -> int:
    """Worker processes for the image side: the CPU count (at most 8) where fork exists, else 0."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    return min(8, os.cpu_count() or 1)


def parallel_map(fn, items: list, workers: int) -> list:
    """[fn(i) for i in items] in `workers` processes (0 or 1: in this process); fn at module level."""
    if workers <= 1 or len(items) < 2:
        return [fn(i) for i in items]
    with process_pool(min(workers, len(items))) as ex:  # forked; they end with this process
        return list(ex.map(fn, items, chunksize=1))


def skip_reason(blur_entropy: float, orig_entropy: float, blur_pred: float, orig_pred: float,
                min_pred: float) -> str | None:
    """Why PAIR's compute_pic_metric would raise ComputePicMetricError for an image (in PAIR's
    order of checks), or None when it computes the curve."""
    if orig_pred < min_pred:
        return "low prediction"
    if blur_entropy >= orig_entropy:
        return "blurred entropy >= original"
    if blur_pred >= orig_pred:
        return "blurred prediction >= original"
    return None


@contextlib.contextmanager
def background_map(fn, items: list, workers: int):
    """Yields an iterator of fn(i) for i in items, in order. With workers > 1 every item is
    submitted to worker processes on entry, so they compute while the caller works inside the
    block; otherwise fn runs lazily in this process as the iterator is read."""
    if workers <= 1 or len(items) < 2:
        yield map(fn, items)
        return
    with process_pool(min(workers, len(items))) as ex:
        yield ex.map(fn, items, chunksize=1)  # Executor.map submits everything now


def parallel_imap(fn, items: list, workers: int):
    """fn(i) for i in items, yielded in order as they are done, computed by `workers` processes
    (0 or 1: lazily in this process); the caller can work while the processes compute ahead."""
    if workers <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    with process_pool(min(workers, len(items))) as ex:
        yield from ex.map(fn, items, chunksize=1)


def pair_curve(entropies: np.ndarray, preds: np.ndarray, orig_entropy: float, orig_pred: float,
               min_pred: float = 0.8, keep_monotonous: bool = True, num_points: int = 1000):
    """PAIR's curve of one image: entropies/preds (T + 1,) of the fully blurred image then each
    threshold image -> (curve_y (num_points + 1,), auc) or (None, reason) when PAIR would raise
    ComputePicMetricError (the image is skipped)."""
    from scipy import interpolate

    blur_entropy, blur_pred = float(entropies[0]), float(preds[0])
    reason = skip_reason(blur_entropy, orig_entropy, blur_pred, orig_pred, min_pred)
    if reason is not None:
        return None, reason
    pts = []
    best = 0.0
    for ent, pred in zip(entropies[1:], preds[1:]):
        ne = np.clip((ent - blur_entropy) / (orig_entropy - blur_entropy), 0.0, 1.0)
        npred = np.clip((pred - blur_pred) / (orig_pred - blur_pred), 0.0, 1.0)
        best = max(best, npred)
        pts.append((ne, best if keep_monotonous else npred))
    pts += [(0.0, 0.0), (1.0, 1.0)]
    x, y = zip(*pts)
    f = interpolate.interp1d(x=x, y=y)
    cx = np.linspace(0.0, 1.0, num=num_points, endpoint=False)
    cy = np.append(np.asarray(f(cx), dtype=np.float64), 1.0)
    return cy, float(np.trapezoid(cy, np.append(cx, 1.0)))
