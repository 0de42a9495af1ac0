"""fastattr::gaussian_blur : (image, sigma) pairs blurred over H, W like scipy.ndimage
(truncate=4, zero padding), optionally with the exact derivative d blur / d sigma.

CPU: C++ kernel (csrc/gaussian_blur.cpp). CUDA: csrc/cuda/gaussian_blur.cu when built with CUDA.
Fallback: the pure-torch float64 reference (fastattr.kernels.gaussian_blur.gaussian_blur_ref).
"""
from __future__ import annotations

import torch

from fastattr.kernels.gaussian_blur import gaussian_blur_ref
from fastattr.ops._library import define_op

define_op(
    "gaussian_blur",
    "gaussian_blur(Tensor x, Tensor sigma, Tensor index, bool derivative) -> (Tensor, Tensor)",
    gaussian_blur_ref,
)


@torch.library.register_fake("fastattr::gaussian_blur")
def _(x, sigma, index, derivative):
    torch._check(x.dim() == 4, lambda: "gaussian_blur: x must be (N, C, H, W)")
    torch._check(sigma.dim() == 1 and index.dim() == 1 and sigma.shape[0] == index.shape[0],
                 lambda: "gaussian_blur: sigma and index must be 1-D of the same length")
    shape = (index.shape[0], *x.shape[1:])
    return x.new_empty(shape), (x.new_empty(shape) if derivative else x.new_empty(0))


def gaussian_blur(x: torch.Tensor, sigma, index: torch.Tensor | None = None, derivative: bool = False):
    """Blur of x (N, C, H, W) over H, W at sigma >= 0 (scipy gaussian_filter, mode='constant',
    truncate=4). index None: every image at every sigma (S,), image-major -> (N*S, C, H, W);
    else pairs out[p] = blur(x[index[p]], sigma[p]) -> (P, C, H, W). derivative=True also
    returns d out / d sigma (same shape)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
        raise ValueError(f"sigma: must be finite and >= 0, got {sigma.tolist()}")
    if index is None:
        n, s = x.shape[0], sigma.shape[0]
        index = torch.arange(n, device=x.device).repeat_interleave(s)
        sigma = sigma.repeat(n)
    out, dout = torch.ops.fastattr.gaussian_blur(x, sigma.to(x.device), index.to(x.device, torch.long), derivative)
    return (out, dout) if derivative else out
