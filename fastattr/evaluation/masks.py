"""Object masks for localization (eval --masks DIR): one file per image, read by a stated rule.

The rule (README, "fastattr eval"): a mask is read as one channel (grey or palette index; colour:
the largest channel; alpha ignored) and must be binary in one of two conventions: 0/1 (label
masks: object = 1) or 0/full scale (0/255 for 8 bits, 0/65535 for 16 bits: object = full scale).
A mask that is nearly binary (at least 99% of its pixels within 1/8 of the scale from 0 or from
full scale, and more than 8 distinct values, as a 0/255 mask saved as JPEG or with antialiased
edges has) is thresholded at half the scale. Anything else is refused with its reason: a label
map (a few values such as 0, 15, 255: class 15 would silently become background), a mask mixing
1 and 255, grey levels. A mask must have its image's aspect ratio (a mask of half the resolution is fine); it
then goes through the image's own centre crop and resize. A mask that is empty (no object
pixel) or full (no background pixel) after that has no localization score: averaging F1 = 0 or
MAE = 0 of such a mask into the table would move it (F1 0.207 instead of 0.311 on the issue's
example), so eval skips it and reports how many it skipped."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NEAR = 1 / 8  # "nearly binary": within this fraction of the scale from 0 or from full scale
NEARLY_ALL = 0.99
NOISE_VALUES = 8  # more distinct values than this: compression noise or antialiasing, not labels
ASPECT_TOLERANCE = 1.0  # pixels: rounding of a mask saved at another resolution


@dataclass(frozen=True)
class Mask:
    """One image's mask: status 'ok' (mask (S, S) bool), 'missing', 'empty', 'full' or 'refused'
    (reason says why)."""

    status: str
    mask: torch.Tensor | None = None
    reason: str = ""


def _one_channel(im) -> np.ndarray:
    """The mask's values as (H, W): grey, palette indices, 16/32-bit or float as stored; the
    largest channel of a colour image."""
    if im.mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(im)
    if im.mode in ("LA", "PA"):
        return np.asarray(im)[:, :, 0]
    return np.asarray(im.convert("RGB")).max(axis=2)


def _full_scale(a: np.ndarray) -> float:
    if a.dtype == np.bool_:
        return 1.0
    if a.dtype == np.uint8:
        return 255.0
    if np.issubdtype(a.dtype, np.integer):
        return 255.0 if a.max() <= 255 else 65535.0
    return 1.0 if a.max() <= 1.0 else 255.0


def binary_mask(a: np.ndarray) -> np.ndarray:
    """(H, W) stored values -> (H, W) bool by the module's rule; ValueError saying why a mask is
    refused."""
    if a.dtype == np.bool_:
        return a
    values = np.unique(a)
    if np.isin(values, (0, 1)).all():
        return a == 1
    full = _full_scale(a)
    if np.isin(values, (0, full)).all():
        return a == full
    if np.isin(values, (0, 1, full)).all():
        raise ValueError(f"it mixes the 0/1 and the 0/{full:.0f} conventions (values 0, 1 and {full:.0f}); "
                         "is 1 an object or a second label?")
    near = (np.abs(a) <= NEAR * full) | (np.abs(a - full) <= NEAR * full)
    if near.mean() >= NEARLY_ALL and len(values) > NOISE_VALUES:
        return a > full / 2
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise ValueError(f"it is not a binary mask ({len(values)} values: {shown}); masks must be 0/1 or "
                     f"0/{full:.0f} (object = 1 or {full:.0f}), or nearly so (99% of pixels within 1/8 of "
                     "the scale from 0 or from full scale)")


def read_mask(path, image_path, size: int) -> Mask:
    """The mask file `path` of the image file `image_path`, through the image's centre crop and
    resize to (size, size); a refused mask is Mask('refused', reason=...)."""
    from PIL import Image

    from fastattr.images import _open_regular, load_image

    try:
        with _open_regular(image_path) as f, Image.open(f) as im:
            iw, ih = im.size
        with _open_regular(path) as f, Image.open(f) as im:
            mw, mh = im.size
            a = _one_channel(im)
    except Exception as exc:  # noqa: BLE001 - an unreadable mask (or image) refuses this mask only
        return Mask("refused", reason=f"cannot read it ({type(exc).__name__}: {exc})")
    if abs(mh - mw * ih / iw) > ASPECT_TOLERANCE * max(1.0, mw / iw):
        return Mask("refused", reason=f"it is {mw}x{mh} pixels, its image {iw}x{ih}: another aspect ratio, "
                                      "so it cannot be the image's mask after the same crop")
    try:
        m = binary_mask(a)
    except ValueError as exc:
        return Mask("refused", reason=str(exc))
    had_object = bool(m.any())
    # the image's own centre crop and antialiased resize, then > 0.5: object pixels stay in place
    m = load_image(m.astype(np.float32), size=size)[0] > 0.5
    if not bool(m.any()):
        return Mask("empty", reason="no object pixel" + (" left after the centre crop" if had_object else ""))
    if bool(m.all()):
        return Mask("full", reason="no background pixel")
    return Mask("ok", m)
