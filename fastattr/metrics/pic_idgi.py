"""The image side of the IDGI paper's SIC/AIC variant (sections 4.4/4.5): a PIL-blurred base,
bokeh images revealing the top-t% pixels, their information level (WebP-size entropy or
MS-SSIM to the input), and the binned aggregation over images."""
from __future__ import annotations

import numpy as np
import torch

INFOS = ("entropy", "msssim")
N_THRESHOLDS = 25  # evenly spaced percentiles 0..100
N_BINS = 100


def pil_blur(image: np.ndarray, radius: float = 20.0) -> np.ndarray:
    """PIL `GaussianBlur(radius)` of an (H, W, 3) uint8 image -> (H, W, 3) uint8: the bokeh base."""
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def entropy_levels(sizes: np.ndarray, base_size: int, image_size: int) -> np.ndarray:
    """Normalised entropy of bokeh images from WebP sizes (T,) (as PAIR's): 0 at the base, 1 at
    the input, clipped to [0, 1] -> (T,) float64; NaN when the base is not smaller than the input."""
    lo, hi = float(base_size), float(image_size)
    sizes = np.asarray(sizes, dtype=np.float64)
    if hi <= lo:  # the blur holds as much information as the input: no scale to measure on
        return np.full(len(sizes), np.nan)
    return np.clip((sizes - lo) / (hi - lo), 0.0, 1.0)


def msssim_levels(bokeh: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """MS-SSIM (pytorch-msssim, 5 scales, 11-px Gaussian window) of bokeh images (T, 3, H, W)
    in [0, 1] against the input (3, H, W) -> (T,) float64. Needs H, W > 160."""
    from pytorch_msssim import ms_ssim

    if min(image.shape[-2:]) <= 160:
        raise ValueError(f"info='msssim': MS-SSIM with 5 scales needs images larger than 160 px, "
                         f"got {tuple(image.shape[-2:])}")
    ref = image[None].expand_as(bokeh).float()
    return ms_ssim(bokeh.float(), ref, data_range=1.0, size_average=False).double().clamp(0.0, 1.0)


def binned_curves(levels: torch.Tensor, ratios: torch.Tensor, correct: torch.Tensor, bins: int = N_BINS):
    """Aggregate (N, T) points over images into `bins` bins of information level 0..1: SIC bin =
    median ratio p_c(bokeh)/p_c(input), AIC bin = mean of 1[argmax = c]. Empty bins take the
    linear interpolation of their non-empty neighbours (fastattr choice; the paper does not say).
    Returns (centres (bins,), sic (bins,), aic (bins,), sic_auc, aic_auc, filled (bins,) bool)."""
    lv = levels.reshape(-1).double()
    keep = torch.isfinite(lv)
    lv, r, a = lv[keep], ratios.reshape(-1).double()[keep], correct.reshape(-1).double()[keep]
    idx = (lv * bins).floor().long().clamp(0, bins - 1)
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    sic = torch.full((bins,), float("nan"), dtype=torch.float64)
    aic = sic.clone()
    for b in torch.unique(idx).tolist():  # at most `bins` small reductions, no model call
        sel = idx == b
        sic[b] = r[sel].quantile(0.5)  # np.median semantics: even count -> mean of the middle two
        aic[b] = a[sel].mean()
    filled = torch.isfinite(sic)
    if not bool(filled.any()):
        nan = float("nan")
        return centres, sic, aic, nan, nan, filled
    xs = centres[filled].numpy()
    sic_f = torch.from_numpy(np.interp(centres.numpy(), xs, sic[filled].numpy()))
    aic_f = torch.from_numpy(np.interp(centres.numpy(), xs, aic[filled].numpy()))
    # area over 0..1: each bin is 1/bins wide
    return centres, sic_f, aic_f, float(sic_f.mean()), float(aic_f.mean()), filled
