"""fastattr::path_accumulate_ : Riemann / IDGI accumulation of a chunk of path steps.

CPU: C++ kernel (csrc/path_accumulate.cpp). CUDA: fused Triton kernel
(kernels/path_accumulate.py). Fallback: the pure-torch reference beside the Triton kernel.
"""
from __future__ import annotations

import torch

from fastattr.kernels.path_accumulate import path_accumulate_ref
from fastattr.ops._library import HAS_TRITON, define_op

_cuda_kernel = None
if HAS_TRITON:
    try:
        from fastattr.kernels.path_accumulate import path_accumulate_triton as _cuda_kernel
    except ImportError:  # an older Triton without what the kernel needs: reference on CUDA
        _cuda_kernel = None

define_op(
    "path_accumulate_",
    "path_accumulate_(Tensor(a!) acc, Tensor grads, Tensor coef, Tensor index, bool idgi) -> ()",
    path_accumulate_ref,
    cuda=_cuda_kernel,
)


@torch.library.register_fake("fastattr::path_accumulate_")
def _(acc, grads, coef, index, idgi):
    return None


def path_accumulate_(acc: torch.Tensor, grads: torch.Tensor, coef: torch.Tensor,
                     index: torch.Tensor, idgi: bool) -> None:
    """acc (N, D) += per step s: coef[s]*grads[s] (Riemann) or grads[s]**2*coef[s]/sum(grads[s]**2)
    (IDGI; all-zero steps add nothing) into row index[s]. grads (S, D), or (S, ...) with D elements
    per step (a channels-last 4-D tensor's rows in memory order: kernels.path_accumulate.grad_rows),
    coef (S,), index (S,) long."""
    torch.ops.fastattr.path_accumulate_(acc, grads, coef, index, idgi)
