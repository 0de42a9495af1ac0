"""fastattr::guided_act_backward and fastattr::guided_max_pool2d_backward: the guided backward
rules of SPEC.md (relu of the activation's input gradient; relu-clip then max-pool routing).

CPU: the pure-torch references (PyTorch's own *_backward op + an in-place relu: one extra pass
over each activation gradient; bench/bench_guided.py measures the guided forward+backward against
the standard one on EfficientNet-Lite0). CUDA: the fused Triton kernels (kernels/guided_backward.py).
"""
from __future__ import annotations

import torch

from fastattr.kernels.guided_backward import guided_act_backward_ref, guided_max_pool2d_backward_ref
from fastattr.ops._library import HAS_TRITON, define_op

_act_cuda = _pool_cuda = None
if HAS_TRITON:
    try:
        from fastattr.kernels.guided_backward import guided_act_backward_triton as _act_cuda
        from fastattr.kernels.guided_backward import guided_max_pool2d_backward_triton as _pool_cuda
    except ImportError:  # an older Triton without what the kernels need: references on CUDA
        _act_cuda = _pool_cuda = None



def _strided_like_grad_out(kernel):
    """The op returns grad_out's layout (what the fake kernel promises to compiled graphs): the
    eager kernels may follow `saved`'s layout instead (e.g. channels-last activations)."""

    def run(grad_out, saved, act, a, b, c):
        out = kernel(grad_out, saved, act, a, b, c)
        return out if out.stride() == grad_out.stride() else torch.empty_like(grad_out).copy_(out)

    return run


define_op(
    "guided_act_backward",
    "guided_act_backward(Tensor grad_out, Tensor saved, int act, float a, float b, float c) -> Tensor",
    _strided_like_grad_out(guided_act_backward_ref),
    cuda=_strided_like_grad_out(_act_cuda) if _act_cuda is not None else None,
)
define_op(
    "guided_max_pool2d_backward",
    "guided_max_pool2d_backward(Tensor grad_out, Tensor indices, int height, int width) -> Tensor",
    guided_max_pool2d_backward_ref,
    cuda=_pool_cuda,
)


@torch.library.register_fake("fastattr::guided_act_backward")
def _(grad_out, saved, act, a, b, c):
    torch._check(grad_out.shape == saved.shape, lambda: "guided_act_backward: grad_out and saved shapes differ")
    return torch.empty_like(grad_out)


@torch.library.register_fake("fastattr::guided_max_pool2d_backward")
def _(grad_out, indices, height, width):
    torch._check(grad_out.shape == indices.shape, lambda: "guided_max_pool2d_backward: shapes differ")
    return grad_out.new_empty(*grad_out.shape[:-2], height, width)


def guided_act_backward(grad_out: torch.Tensor, saved: torch.Tensor, act: int, a: float = 0.0,
                        b: float = 0.0, c: float = 0.0) -> torch.Tensor:
    """relu(grad_out * act'(x)) for activation code `act` (kernels.guided_backward.ACTS) with
    parameters a, b, c; saved is x (or the output for ELU_RESULT). (...) -> (...)."""
    return torch.ops.fastattr.guided_act_backward(grad_out, saved, int(act), float(a), float(b), float(c))


def guided_max_pool2d_backward(grad_out: torch.Tensor, indices: torch.Tensor, height: int,
                               width: int) -> torch.Tensor:
    """relu(grad_out) routed to each window's argmax. grad_out, indices (..., Ho, Wo) -> (..., height, width)."""
    return torch.ops.fastattr.guided_max_pool2d_backward(grad_out, indices, int(height), int(width))
