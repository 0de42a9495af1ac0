"""Host-side checks the engine reads once per call: finiteness of a tensor, equality of two
tensors row by row. For contiguous CPU tensors they run in fastattr._C as plain loops (no torch
op: right after a tiny model's chunk each dispatched op costs 10-50 us, bench/bench_overhead.py
--cold-ops, and the finite checks alone were 4 sums + 4 host reads per call); anything else
(CUDA, strided, no extension) takes the torch ops."""
from __future__ import annotations

import math

import torch

try:
    from fastattr import _C

    HOST = hasattr(_C, "rows_nonzero_finite")  # True: the loops are here (an older build lacks some)
except ImportError:  # the pure-torch fallback (fastattr.ops._library warns once)
    HOST = False


def _cpu(t: torch.Tensor) -> bool:
    return HOST and t.device.type == "cpu"


def on_host(t: torch.Tensor) -> bool:
    """True when t is checked by a plain loop here (on the CPU, contiguous or 1-D, extension built)."""
    return _cpu(t) and (t.dim() == 1 or t.is_contiguous())


def host_all_finite(t: torch.Tensor) -> bool:
    """all_finite(t) for a CPU tensor that is 1-D or contiguous, when HOST (the engine's per-chunk
    call: one Python frame)."""
    return _C.all_finite(t)


def all_finite(t: torch.Tensor) -> bool:
    """True when every element of t is finite (integer tensors always are). Elsewhere than on the
    host: one float64 sum and one host read (NaN and inf propagate into it; a sum of finite float32
    values cannot overflow float64), the element-wise check only when the sum is not finite."""
    if not t.is_floating_point():
        return True
    if on_host(t):
        return _C.all_finite(t)
    if math.isfinite(float(t.sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(t).all())


def zero_on_host(t: torch.Tensor) -> bool:
    """True when t is checked on the host and every element is zero (-0.0 included), e.g. the
    default baseline, whose path points b + a (x - b) are then a x (one op per chunk, no copy of
    b); False otherwise, also for a zero tensor elsewhere (a shortcut, never a device sync)."""
    return _cpu(t) and t.is_contiguous() and _C.all_zero(t)


def rows_nonzero_finite(t: torch.Tensor) -> bool | None:
    """For gradients t (B, ...) on the host: True when every row has a non-zero element and every
    element is finite (IDGI's chunk for the authors' formula), else False; None when t is not
    checked here (the caller takes its torch ops)."""
    if not (_cpu(t) and t.is_floating_point() and t.dim() >= 1):
        return None
    if not (t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))):
        return None
    return _C.rows_nonzero_finite(t)


def rows_equal(a: torch.Tensor, b: torch.Tensor) -> list[bool]:
    """Per row i of tensors (N, ...) of one shape and dtype: a[i] == b[i] element-wise (as
    torch.eq: -0.0 equals 0.0)."""
    if _cpu(a) and _cpu(b) and a.is_contiguous() and b.is_contiguous() and a.shape == b.shape and a.dtype == b.dtype:
        return _C.rows_equal(a, b)
    return (a == b).flatten(1).all(1).tolist()
