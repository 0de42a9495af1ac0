"""Image loading and a few bundled real photos (from `skimage.data`) for examples and tests.

All resizing is torch antialiased bilinear (`F.interpolate(..., antialias=True)`) on float32
pixels in [0, 1]: deterministic and identical for files, arrays and the bundled photos.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["BUNDLED", "load_image", "bundled_images"]

# skimage.data colour photos that the default model (EfficientNet-Lite0) classifies with
# top-class probability >= 0.5 after a direct resize to 224x224 (crop=False):
#   chelsea -> 285 Egyptian cat (p ~ 0.80), coffee -> 967 espresso (p ~ 0.86).
# Checked and left out (top p < 0.5): astronaut (barbell 0.14), rocket (missile 0.23),
# hubble_deep_field (loudspeaker 0.18), immunohistochemistry (sock 0.32), retina (lampshade
# 0.15), stereo_motorcycle (moped 0.47; 0.54 with centre crop), colorwheel (synthetic).
# The bundled photos use a direct resize, not the centre crop: the crop cuts off the cat's
# ears and halves chelsea's confidence (0.80 -> 0.36).
BUNDLED = ("chelsea", "coffee")

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]


def _to_chw_float(arr: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W), (H, W, 3|4) uint8 or float array -> (3, H, W) float32 in [0, 1]."""
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.array(arr, dtype=np.float32)).div_(255.0)  # a copy: PIL arrays are read-only
    elif arr.dtype == np.bool_:
        t = torch.from_numpy(arr.astype(np.float32))
    elif np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"integer images must be uint8, got {arr.dtype}")
    else:  # float: assumed to be in [0, 1]
        t = torch.from_numpy(np.array(arr, dtype=np.float32))
    return t.permute(2, 0, 1).clamp_(0.0, 1.0).contiguous()


def _read_file(path: str | os.PathLike) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)  # grey/palette/RGBA -> RGB (alpha dropped)
    return _to_chw_float(arr)


def _resize(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if t.shape[-2:] == (h, w):
        return t
    out = F.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0)


def load_image(path_or_array: ImageLike, size: int = 224, crop: bool = True) -> torch.Tensor:
    """File path (PNG/JPEG/WebP/...) or HWC uint8/float array -> (3, size, size) float32 in [0, 1].

    crop=True: resize the shorter side to `size`, then centre crop (the usual ImageNet eval).
    crop=False: resize directly to size x size (aspect ratio not kept; used for the bundled photos).
    uint8 arrays are divided by 255; float arrays are assumed in [0, 1] (clamped).
    """
    if isinstance(path_or_array, (str, os.PathLike)):
        t = _read_file(path_or_array)
    else:
        t = _to_chw_float(path_or_array)
    size = int(size)
    if not crop:
        return _resize(t, size, size)
    h, w = t.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    t = _resize(t, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return t[:, top : top + size, left : left + size].contiguous()


def bundled_images(size: int = 224) -> dict[str, torch.Tensor]:
    """The `BUNDLED` skimage.data photos -> {name: (3, size, size) float32 in [0, 1]}, direct resize (crop=False)."""
    try:
        import skimage.data as skd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("bundled_images needs scikit-image: pip install scikit-image") from e
    return {name: load_image(getattr(skd, name)(), size=size, crop=False) for name in BUNDLED}
