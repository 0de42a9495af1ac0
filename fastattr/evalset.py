"""The bundled evaluation set: the bundled real photos plus composites (an object cut from a real
photo pasted at a known place onto a real texture from `skimage.data`, so its mask is exact),
kept when the default model classifies them confidently as the object's class. Deterministic,
generated on first use and cached (FASTATTR_CACHE or ~/.cache/fastattr)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

VERSION = 1
MIN_PROB = 0.5  # the bundled photos' own bar (fastattr.images.BUNDLED)

# Objects: (source photo, ImageNet class, box (top, left, bottom, right) in the 224x224 direct
# resize of the photo), chosen by eye: the cat's face without the frame edges, the cup and rim.
OBJECTS = {
    "cat": ("chelsea", 285, (24, 24, 216, 208)),
    "cup": ("coffee", 967, (0, 24, 200, 208)),
}
TEXTURES = ("grass", "gravel", "brick")  # greyscale 512x512 photos of real surfaces
# (object side in px, top, left) on the 224x224 canvas: corners, centre and a bottom band
PLACEMENTS = ((128, 8, 8), (128, 88, 88), (112, 104, 16), (144, 40, 72))


@dataclass
class EvalSet:
    """Images (N, 3, H, W) in [0, 1] with names, labels (N,), object masks (N, H, W) bool and
    has_mask (N,) (False for whole photos), and seeded 1% random masks (N, H, W) for PIC 'pair'."""

    names: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    random_masks: torch.Tensor
    probs: torch.Tensor  # (N,) p of the label under the default model

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, n: int) -> "EvalSet":
        """The first n images (photos first, then composites)."""
        return EvalSet(self.names[:n], self.images[:n], self.labels[:n], self.masks[:n], self.has_mask[:n],
                       self.random_masks[:n], self.probs[:n])


def cache_dir() -> Path:
    """FASTATTR_CACHE if set, else ~/.cache/fastattr."""
    env = os.environ.get("FASTATTR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fastattr"


def _texture(name: str, size: int) -> torch.Tensor:
    import skimage.data as skd

    from fastattr.images import load_image

    return load_image(getattr(skd, name)(), size=size, crop=True)  # grey -> 3 equal channels


def composite(obj: torch.Tensor, texture: torch.Tensor, side: int, top: int, left: int):
    """Paste obj (3, h, w) resized to side x side onto texture (3, H, W) at (top, left) ->
    (image (3, H, W), mask (H, W) bool of exactly the pasted pixels)."""
    o = F.interpolate(obj[None], size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0]
    img = texture.clone()
    img[:, top:top + side, left:left + side] = o.clamp(0, 1)
    mask = torch.zeros(texture.shape[1:], dtype=torch.bool)
    mask[top:top + side, left:left + side] = True
    return img, mask


def candidates(size: int = 224) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every candidate before the model filter: (names, images (M, 3, S, S), labels (M,), masks, has_mask)."""
    from fastattr.images import bundled_images

    photos = bundled_images(size=224)
    scale = size / 224
    names, imgs, labels, masks, has = [], [], [], [], []
    photo_class = {src: c for src, c, _ in OBJECTS.values()}
    for name, img in photos.items():
        names.append(name)
        imgs.append(F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True)[0] if size != 224 else img)
        labels.append(photo_class.get(name, -1))
        masks.append(torch.zeros(size, size, dtype=torch.bool))
        has.append(False)
    for tex in TEXTURES:
        t = _texture(tex, size)
        for oname, (src, cls, (y0, x0, y1, x1)) in OBJECTS.items():
            obj = photos[src][:, y0:y1, x0:x1]
            for side, top, left in PLACEMENTS:
                s, tp, lf = (round(v * scale) for v in (side, top, left))
                img, m = composite(obj, t, s, tp, lf)
                names.append(f"{oname}_on_{tex}_{side}_{top}_{left}")
                imgs.append(img)
                labels.append(cls)
                masks.append(m)
                has.append(True)
    return names, torch.stack(imgs), torch.tensor(labels), torch.stack(masks), torch.tensor(has)


def build_evalset(model=None, size: int = 224, min_prob: float = MIN_PROB, seed: int = 0) -> EvalSet:
    """Generate the set: candidates kept when the model (default: EfficientNet-Lite0) gives the
    object's class probability >= min_prob."""
    from fastattr.engine import Engine
    from fastattr.metrics.pic import random_masks_like
    from fastattr.models import load_default_model

    names, imgs, labels, masks, has = candidates(size)
    eng = Engine(model if model is not None else load_default_model())
    probs = eng.logits(imgs).softmax(1).gather(1, labels.clamp_min(0)[:, None]).squeeze(1)
    keep = (probs >= min_prob) & (labels >= 0)
    idx = keep.nonzero().squeeze(1)
    rm = random_masks_like(len(idx), size, size, seed=seed)
    return EvalSet([names[i] for i in idx.tolist()], imgs[idx].contiguous(), labels[idx], masks[idx],
                   has[idx], rm, probs[idx])


def load_evalset(size: int = 224, refresh: bool = False) -> EvalSet:
    """The evaluation set for the default model, from the cache or generated (then cached) on first use."""
    path = cache_dir() / f"evalset_v{VERSION}_{size}.pt"
    if path.exists() and not refresh:
        d = torch.load(path, weights_only=True)
        return EvalSet(**d)
    es = build_evalset(size=size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(es.__dict__, tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return es
