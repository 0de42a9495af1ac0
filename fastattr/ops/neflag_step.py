"""fastattr::neflag_step_ : one fused NeFLAG sign iteration for a chunk of samples.

CPU: C++ kernel (csrc/neflag_step.cpp). CUDA: csrc/cuda/neflag_step.cu when built with CUDA.
Fallback (no extension): `neflag_step_ref` below, the readable definition the tests compare with.
"""
from __future__ import annotations

import torch

from fastattr.ops._library import define_op

SCHEMA = ("neflag_step_(Tensor(a!) acc, Tensor(b!) points, Tensor x, Tensor grads, Tensor values, "
          "Tensor scores, Tensor index, Tensor last, float eps, bool l2) -> Tensor")


def neflag_step_ref(acc: torch.Tensor, points: torch.Tensor, x: torch.Tensor, grads: torch.Tensor,
                    values: torch.Tensor, scores: torch.Tensor, index: torch.Tensor, last: torch.Tensor,
                    eps: float, l2: bool) -> torch.Tensor:
    """Reference of fastattr::neflag_step_ (contract in csrc/neflag_step.cpp). acc (N, D) and
    points (S, D) mutated; x (N, D), grads (S, D), values (S,), scores (N,), index (S,) int64,
    last (S,) bool -> done (S,) bool."""
    if not eps > 0:
        raise ValueError(f"neflag_step: eps must be > 0, got {eps}")
    xi = x.index_select(0, index)
    neg = values.double() < scores.double().index_select(0, index)
    if l2:  # |F|_2 per sample in double, as the C++ op; an all-zero F gives direction 0
        sumsq = grads.double().pow(2).sum(dim=1)
        inv = torch.where(sumsq > 0, sumsq.clamp_min(1e-300).rsqrt(), torch.zeros_like(sumsq))
        direction = grads * inv.to(grads.dtype)[:, None]
    else:
        direction = torch.sign(grads)
    moved = xi - eps * direction
    new_points = torch.where(neg[:, None], points, moved)
    finish = neg | last
    # Negative flux: F * (x - p) at the evaluated point; exhausted: F * (x - p_new) at the moved one.
    flux = grads * (xi - new_points)
    points.copy_(new_points)
    acc.index_add_(0, index[finish], flux[finish].to(acc.dtype))
    return finish


define_op("neflag_step_", SCHEMA, neflag_step_ref)


@torch.library.register_fake("fastattr::neflag_step_")
def _(acc, points, x, grads, values, scores, index, last, eps, l2):
    return torch.empty_like(last, dtype=torch.bool)


def neflag_step_(acc: torch.Tensor, points: torch.Tensor, x: torch.Tensor, grads: torch.Tensor,
                 values: torch.Tensor, scores: torch.Tensor, index: torch.Tensor, last: torch.Tensor,
                 eps: float, l2: bool) -> torch.Tensor:
    """One NeFLAG iteration: samples with values < scores[index] add grads*(x - points) to
    acc[index]; the others move to x - eps*sign(grads) (l2: x - eps*grads/|grads|) and, if last,
    add grads*(x - moved). acc (N, D), points (S, D) mutated -> done (S,) bool."""
    return torch.ops.fastattr.neflag_step_(acc, points, x, grads, values, scores, index, last, float(eps), bool(l2))
