"""Gaussian blur of (image, sigma) pairs with scipy.ndimage semantics (truncate=4, zero padding)
and its exact sigma-derivative: the pure-torch reference `gaussian_blur_ref` of fastattr::gaussian_blur.

The reference is the banded-matrix form: out = B_h X B_w^T with B the (H, H) Toeplitz matrix of
the truncated, normalised kernel (entries beyond the radius or outside the image are zero, which
is exactly zero padding), computed in float64 so it can serve as the oracle of the C++/CUDA ops.
"""
from __future__ import annotations

import torch


def gaussian_radius(sigma: torch.Tensor) -> torch.Tensor:
    """scipy's radius int(4 sigma + 0.5) per sigma. sigma (P,) float64 -> (P,) int64."""
    return torch.floor(4.0 * sigma + 0.5).long()


def blur_matrices(sigma: torch.Tensor, n: int, derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Toeplitz blur matrices B (P, n, n) with B[p, i, j] = w_{|i-j|}(sigma_p) and, if asked,
    dB / dsigma (P, n, n); float64. sigma == 0 gives the identity (and a zero derivative)."""
    s = sigma.to(torch.float64)
    r = gaussian_radius(s)
    rmax = int(r.max()) if len(r) else 0
    k = torch.arange(-rmax, rmax + 1, dtype=torch.float64, device=s.device)
    safe = torch.where(s > 0, s, torch.ones_like(s))[:, None]
    inside = k.abs()[None, :] <= r[:, None]
    taps = torch.where(inside, torch.exp(-0.5 * k**2 / safe**2), torch.zeros((), dtype=torch.float64))
    z = taps.sum(1, keepdim=True)  # normaliser over the full truncated kernel, like scipy
    m2 = (taps * k**2).sum(1, keepdim=True) / z  # second moment of the normalised kernel
    idx = torch.arange(n, device=s.device)
    d = (idx[:, None] - idx[None, :]).abs().to(torch.float64)  # (n, n) offsets
    zero = s[:, None, None] == 0
    within = d[None] <= r[:, None, None]
    w = torch.exp(-0.5 * d[None] ** 2 / safe[:, :, None] ** 2) / z[:, :, None]
    w = torch.where(within, w, torch.zeros((), dtype=torch.float64))
    eye = torch.eye(n, dtype=torch.float64, device=s.device)[None]
    b = torch.where(zero, eye, w)
    if not derivative:
        return b, None
    db = w * (d[None] ** 2 - m2[:, :, None]) / safe[:, :, None] ** 3
    db = torch.where(zero, torch.zeros((), dtype=torch.float64), db)
    return b, db


def gaussian_blur_ref(x: torch.Tensor, sigma: torch.Tensor, index: torch.Tensor,
                      derivative: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """out[p] = blur(x[index[p]], sigma[p]) over H, W; dout = d out / d sigma (empty (0,) when
    derivative is False). x (N, C, H, W), sigma (P,) >= 0, index (P,) int64 -> (P, C, H, W) x.dtype."""
    if x.dim() != 4:
        raise ValueError(f"gaussian_blur: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    s = sigma.to(torch.float64)
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"gaussian_blur: sigma must be finite and >= 0, got {sigma.tolist()}")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= x.shape[0]):
        raise ValueError(f"gaussian_blur: index out of range [0, {x.shape[0]})")
    H, W = x.shape[-2:]
    xs = x.index_select(0, index).to(torch.float64)  # (P, C, H, W)
    bh, dbh = blur_matrices(s, H, derivative)
    bw, dbw = blur_matrices(s, W, derivative)
    bh, bw = bh[:, None], bw[:, None]
    rows = bh @ xs  # blur along H
    out = rows @ bw.transpose(-1, -2)
    if not derivative:
        return out.to(x.dtype), x.new_empty(0)
    dout = (dbh[:, None] @ xs) @ bw.transpose(-1, -2) + rows @ dbw[:, None].transpose(-1, -2)
    return out.to(x.dtype), dout.to(x.dtype)
