"""Image loading and a few bundled real photos (from `skimage.data`) for examples and tests.

The last resizing step is torch antialiased bilinear (`F.interpolate(..., antialias=True)`) on
float32 pixels in [0, 1]: deterministic and identical for files and uint8 arrays (same path:
crop, then for sources over 4x the output a uint8 box reduction; JPEG files over 4x are also
decoded at a reduced DCT scale). Memory follows the output size, not the source's.
"""

from __future__ import annotations

import numbers
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


def _to_chw_float(arr: np.ndarray) -> torch.Tensor:
    """(H, W), (H, W, 1|3|4) float or bool array -> (3, H, W) float32 in [0, 1] (uint8 arrays take
    the PIL path of load_image)."""
    from fastattr.errors import UserError

    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise UserError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[:, :, :3]
    if arr.dtype == np.bool_:
        t = torch.from_numpy(arr.astype(np.float32))
    elif np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"integer images must be uint8, got {arr.dtype}")
    else:  # float: assumed to be in [0, 1]
        t = torch.from_numpy(np.array(arr, dtype=np.float32))
    return t.permute(2, 0, 1).clamp_(0.0, 1.0).contiguous()


# Images whose long side is more than MAX_ASPECT times the short side are refused: a centre crop
# keeps 1/MAX_ASPECT of them or less, and a direct resize stretches a strip into a square.
# Photographs, including panoramas (up to about 12:1), stay well below; the audit's 1x5000 and
# 1x20000 PNGs (3.3 GB and 12 GB when the whole image was resized before cropping) are far above.
MAX_ASPECT = 50


def _check_size(w: int, h: int) -> None:
    from fastattr.errors import UserError

    if w < 1 or h < 1:
        raise UserError(f"the image is empty ({w}x{h} pixels)")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise UserError(f"{w}x{h} pixels: an aspect ratio beyond {MAX_ASPECT}:1 is refused "
                        "(not a photograph a classifier can use)")


def _crop_box(w: int, h: int, crop: bool) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the source region that becomes the output: the centred
    square of side min(w, h) for crop=True, the whole image otherwise."""
    if not crop:
        return 0, 0, w, h
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def _open_regular(path: str | os.PathLike):
    """An open binary file for path, refusing non-regular files (a FIFO named *.png would block
    a plain open() forever; O_NONBLOCK opens it at once, fstat then tells what it is)."""
    import stat

    from fastattr.errors import UserError

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        raise UserError(f"{kind}, not an image file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _from_pil(im, size: int, crop: bool) -> torch.Tensor:
    """PIL image -> (3, size, size) float32: crop first, then (JPEG) decode at a reduced scale
    and box-reduce in uint8 while the region is still over 4x the output, so memory follows
    the output size rather than the source's; the last step is the antialiased bilinear resize."""
    w, h = im.size
    _check_size(w, h)
    left, top, right, bottom = _crop_box(w, h, crop)
    # JPEG only (no-op for other formats): DCT-domain scaling by 1/2, 1/4 or 1/8 at decode time,
    # keeping at least 2x the output along each axis of the region.
    scale = min(1.0, 2 * size / (right - left), 2 * size / (bottom - top))
    if scale < 0.5 and getattr(im, "format", None) == "JPEG":
        im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
        fx, fy = im.size[0] / w, im.size[1] / h
        left, top, right, bottom = (round(left * fx), round(top * fy), round(right * fx), round(bottom * fy))
    if (left, top, right, bottom) != (0, 0) + im.size:
        im = im.crop((left, top, right, bottom))
    im = im.convert("RGB")  # grey/palette/RGBA -> RGB (alpha dropped)
    kx, ky = max(1, im.size[0] // (2 * size)), max(1, im.size[1] // (2 * size))
    if kx > 1 or ky > 1:
        im = im.reduce((kx, ky))
    t = torch.from_numpy(np.array(im, dtype=np.float32)).div_(255.0).permute(2, 0, 1)
    return _resize(t.contiguous(), size, size)


def _read_file(path: str | os.PathLike, size: int, crop: bool) -> torch.Tensor:
    """An image file -> (3, size, size); every decoder failure is a UserError saying what is wrong."""
    from PIL import Image, UnidentifiedImageError

    from fastattr.errors import UserError

    with _open_regular(path) as f:
        try:
            with Image.open(f) as im:  # reads the header only: the size is checked before decoding
                return _from_pil(im, size, crop)
        except UserError:
            raise
        except UnidentifiedImageError:  # its message names the descriptor, not the file
            raise UserError("cannot identify the image format (not an image, or its header is damaged)") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... on bad files
            raise UserError(f"cannot decode the image ({type(exc).__name__}: {exc})") from exc


def _resize(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if t.shape[-2:] == (h, w):
        return t
    out = F.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0)


def load_image(path_or_array: ImageLike, size: int = 224, crop: bool = True) -> torch.Tensor:
    """File path (PNG/JPEG/WebP/...) or HWC uint8/float array -> (3, size, size) float32 in [0, 1].

    crop=True: the centred square of side min(H, W), resized to size x size (the usual ImageNet
    eval: shorter side to `size`, centre crop; cropping first keeps memory bounded by the output).
    crop=False: resize directly to size x size (aspect ratio not kept; used for the bundled photos).
    uint8 arrays are divided by 255 and take the same path as files; float arrays are assumed in
    [0, 1] (clamped). Files that are not regular files, cannot be decoded, or have an aspect ratio
    beyond MAX_ASPECT:1 raise fastattr.errors.UserError.
    """
    from fastattr.errors import UserError

    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise UserError(f"size: expected an integer >= 1, got {size!r}")
    size = int(size)
    if isinstance(path_or_array, (str, os.PathLike)):
        return _read_file(path_or_array, size, crop)
    arr = path_or_array.detach().cpu().numpy() if isinstance(path_or_array, torch.Tensor) else np.asarray(path_or_array)
    if arr.dtype == np.uint8 and arr.ndim in (2, 3) and (arr.ndim == 2 or arr.shape[2] in (1, 3, 4)):
        from PIL import Image

        arr = arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
        return _from_pil(Image.fromarray(np.ascontiguousarray(arr)), size, crop)
    t = _to_chw_float(arr)
    h, w = t.shape[-2:]
    _check_size(w, h)
    left, top, right, bottom = _crop_box(w, h, crop)
    return _resize(t[:, top:bottom, left:right].contiguous(), size, size)


def bundled_images(size: int = 224) -> dict[str, torch.Tensor]:
    """The `BUNDLED` skimage.data photos -> {name: (3, size, size) float32 in [0, 1]}, direct resize (crop=False)."""
    try:
        import skimage.data as skd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("bundled_images needs scikit-image: pip install scikit-image") from e
    return {name: load_image(getattr(skd, name)(), size=size, crop=False) for name in BUNDLED}
