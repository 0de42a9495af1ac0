"""Riemann / IDGI path accumulate: pure-torch reference (and, when Triton is present, the fused
Triton kernel for CUDA)."""
from __future__ import annotations

import torch


def path_accumulate_ref(acc: torch.Tensor, grads: torch.Tensor, coef: torch.Tensor,
                        index: torch.Tensor, idgi: bool) -> None:
    """Reference of fastattr::path_accumulate_: acc (N, D) += per step s into row index[s]:
    coef[s]*g_s (Riemann) or g_s**2 * coef[s] / sum(g_s**2) (IDGI, all-zero g_s adds 0).
    grads (S, D), coef (S,), index (S,) int64."""
    if grads.shape[0] == 0:
        return
    g = grads.to(acc.dtype)
    c = coef.to(torch.float64)
    if idgi:
        sumsq = grads.to(torch.float64).pow(2).sum(dim=1)
        scale = torch.where(sumsq > 0, c / torch.where(sumsq > 0, sumsq, 1.0), torch.zeros_like(c))
        terms = g * g * scale.to(acc.dtype)[:, None]
    else:
        terms = g * c.to(acc.dtype)[:, None]
    acc.index_add_(0, index, terms)
