"""Riemann / IDGI path accumulate: pure-torch reference and, when Triton is present, the fused
Triton kernels (CUDA; tested on CPU under TRITON_INTERPRET=1) with their host launcher.

Race-freedom and memory traffic (no GPU here, so this is the argument instead of a measurement;
S steps of D elements, b bytes per gradient, P programs, D = 150_528 for a 224x224 RGB image):

* Riemann (`_riemann_kernel`, grid = D / BLOCK_D): each program owns one column block of every
  acc row and loops over all S steps, so repeated rows (several steps of one image in a chunk)
  are read-modify-written by one program only: no atomics, deterministic, gradients read from
  DRAM exactly once (S*D*b) and acc rows stay in L1/L2 across the loop.
* IDGI (`_idgi_kernel`, grid = (SPLIT, S)): a step's scale dy / sum(g**2) needs a reduction over
  the whole row before any element can be written, and one launch has no grid-wide barrier
  (a spin-wait barrier deadlocks when the grid exceeds resident programs, and under the
  interpreter, which runs programs one after another). Program (j, s) therefore reduces row s
  itself, then writes its 1/SPLIT share of the row with atomic adds (two programs may hold steps
  of the same image). DRAM traffic is still one read of the gradients: the SPLIT programs of a
  step are adjacent in launch order, so the 600 KB fp32 row is served from L2 (50 MB on H100)
  after the first read; the redundant L2 reads are SPLIT*S*D*b, bounded by capping SPLIT at
  ceil(2*SMs/S) <= 8 (at S >= 2*SMs every program reads its row twice, reduction + update, as
  a two-kernel version would). The column-ownership layout of Riemann would instead re-reduce
  every row in each of the D/BLOCK_D programs (~150x the reads), and a separate torch
  reduction costs one more launch (~4 us) for the same DRAM traffic. Either way this kernel is
  ~1e-3 of the chunk's forward+backward, so simplicity and exactness decide.

Numerics: fp32 inside (fp16/bf16 loads are cast at once: the interpreter mishandles bf16). The
IDGI reduction is rescaled by the row's max |g| (online, like a streaming softmax), so tiny
probability gradients (|g| < 1e-19, whose squares underflow fp32) still give finite, exact maps.
"""
from __future__ import annotations

import math

import torch


def grad_rows(grads: torch.Tensor) -> torch.Tensor:
    """grads (S, ...) as (S, D) rows in the order path_accumulate_ reads them: a channels-last 4-D
    tensor's rows in its memory order (H, W, C; the engine's gradients for conv models), any other
    tensor's in its logical order. A view where the layout allows."""
    if grads.dim() == 2:
        return grads
    if grads.dim() == 4 and not grads.is_contiguous() and grads.is_contiguous(memory_format=torch.channels_last):
        grads = grads.permute(0, 2, 3, 1)
    return grads.reshape(grads.shape[0], -1)


def path_accumulate_ref(acc: torch.Tensor, grads: torch.Tensor, coef: torch.Tensor,
                        index: torch.Tensor, idgi: bool) -> None:
    """Reference of fastattr::path_accumulate_: acc (N, D) += per step s into row index[s]:
    coef[s]*g_s (Riemann) or g_s**2 * coef[s] / sum(g_s**2) (IDGI, all-zero g_s adds 0).
    grads (S, D) or (S, ...) read as grad_rows(grads), coef (S,), index (S,) int64."""
    if grads.shape[0] == 0:
        return
    grads = grad_rows(grads)
    c = coef.to(torch.float64)
    if idgi:
        # float64 throughout: in float32, |g| < 1e-19 makes g*g underflow to 0 while the scale
        # overflows to inf, and 0 * inf is NaN.
        g64 = grads.to(torch.float64)
        sumsq = g64.pow(2).sum(dim=1)
        scale = torch.where(sumsq > 0, c / torch.where(sumsq > 0, sumsq, 1.0), torch.zeros_like(c))
        terms = (g64 * g64 * scale[:, None]).to(acc.dtype)
    else:
        terms = grads.to(acc.dtype) * c.to(acc.dtype)[:, None]
    acc.index_add_(0, index, terms)


try:
    import triton
    import triton.language as tl
except ImportError:  # the reference above is all this module offers without Triton
    triton = None

BLOCK_D = 1024  # 8 fp32 per thread at 4 warps: two 128-bit loads per thread per row block
MAX_SPLIT = 8   # caps the redundant L2 reads of the IDGI reduction (see the module docstring)

if triton is not None:

    @triton.jit
    def _riemann_kernel(acc_ptr, grads_ptr, coef_ptr, index_ptr, S, D, BLOCK: tl.constexpr):
        """acc[index[s], blk] += coef[s] * grads[s, blk] for all s; one column block per program."""
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < D
        g_row = grads_ptr  # advanced by D per step: pointer arithmetic is 64-bit, s*D may not fit i32
        for s in range(0, S):
            c = tl.load(coef_ptr + s).to(tl.float32)
            if c != 0.0:  # zero weight adds nothing (as the C++ op)
                row = tl.load(index_ptr + s)
                g = tl.load(g_row + offs, mask=mask, other=0.0).to(tl.float32)
                a_ptrs = acc_ptr + row * D + offs
                a = tl.load(a_ptrs, mask=mask)
                tl.store(a_ptrs, a + (g * c).to(a.dtype), mask=mask)
            g_row += D

    @triton.jit
    def _idgi_kernel(acc_ptr, grads_ptr, coef_ptr, index_ptr, D, SPAN, BLOCK: tl.constexpr):
        """acc[index[s], share j] += g**2 * coef[s] / sum(g**2) for program (j, s); the program
        reduces its whole row first (all-zero rows add nothing)."""
        j = tl.program_id(0)
        s = tl.program_id(1)
        g_row = grads_ptr + s.to(tl.int64) * D
        lanes = tl.arange(0, BLOCK)
        # Online max-rescaled sum of squares per lane: m = max |g| seen, q = sum (g/m)**2.
        m = tl.zeros([BLOCK], dtype=tl.float32)
        q = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, D, BLOCK):
            offs = start + lanes
            g = tl.abs(tl.load(g_row + offs, mask=offs < D, other=0.0).to(tl.float32))
            m_new = tl.maximum(m, g)
            safe = tl.where(m_new > 0, m_new, 1.0)
            r_old = m / safe
            r_g = g / safe
            q = q * r_old * r_old + r_g * r_g
            m = m_new
        big = tl.max(m, axis=0)
        big_safe = tl.where(big > 0, big, 1.0)
        r = m / big_safe
        sumsq = tl.sum(q * r * r, axis=0)  # sum (g/big)**2 >= 1 when the row is not all zero
        c = tl.load(coef_ptr + s).to(tl.float32)
        if big > 0:
            if c != 0.0:
                scale = c / sumsq
                inv = 1.0 / big
                a_row = acc_ptr + tl.load(index_ptr + s) * D
                lo = j * SPAN
                hi = tl.minimum(lo + SPAN, D)
                for start in range(lo, hi, BLOCK):
                    offs = start + lanes
                    mask = offs < hi
                    g = tl.load(g_row + offs, mask=mask, other=0.0).to(tl.float32) * inv
                    term = g * g * scale
                    # relaxed: only the sum matters, no ordering with other memory (red.global, no fence)
                    tl.atomic_add(a_row + offs, term.to(acc_ptr.dtype.element_ty), mask=mask, sem="relaxed")

    _SM_COUNT: dict[int, int] = {}

    def _programs_target(device: torch.device) -> int:
        """About two programs per SM on CUDA (enough to hide latency); 4 elsewhere (interpreter)."""
        if device.type != "cuda":
            return 4
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx not in _SM_COUNT:
            _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
        return 2 * _SM_COUNT[idx]

    def path_accumulate_triton(acc: torch.Tensor, grads: torch.Tensor, coef: torch.Tensor,
                               index: torch.Tensor, idgi: bool) -> None:
        """Triton fastattr::path_accumulate_ (same contract as path_accumulate_ref): acc (N, D)
        float32/float64 contiguous, grads (S, D) float16/bfloat16/float32/float64, coef (S,), index (S,);
        float64 acc or grads are summed by the float64 reference. grads (S, ...) are read as
        grad_rows(grads)."""
        grads = grad_rows(grads)
        if acc.dim() != 2 or grads.dim() != 2 or acc.shape[1] != grads.shape[1]:
            raise ValueError(f"path_accumulate: acc (N, D) and grads (S, D) must agree in D, got "
                             f"acc {tuple(acc.shape)} and grads {tuple(grads.shape)}")
        if acc.dtype not in (torch.float32, torch.float64) or not acc.is_contiguous():
            raise ValueError(f"path_accumulate: acc must be a contiguous float32/float64 tensor, got {acc.dtype}")
        S, D = grads.shape
        if coef.shape != (S,) or index.shape != (S,):
            raise ValueError(f"path_accumulate: coef and index must be ({S},), got "
                             f"{tuple(coef.shape)} and {tuple(index.shape)}")
        if index.dtype != torch.int64:
            raise ValueError(f"path_accumulate: index must be int64, got {index.dtype}")
        if S == 0 or D == 0:
            return
        if grads.dtype == torch.float64 or acc.dtype == torch.float64:
            # A float64 model (research code, PAIR's float64 pipeline) expects float64 sums; the
            # kernel is fp32 inside, so float64 goes to the exact reference (a few torch ops).
            path_accumulate_ref(acc, grads, coef, index, idgi)
            return
        grads = grads.contiguous()
        coef = coef.to(device=acc.device, dtype=torch.float32).contiguous()
        index = index.contiguous()
        # Asynchronous on CUDA (no host sync per chunk); an out-of-range row would write anywhere.
        torch._assert_async(((index >= 0) & (index < acc.shape[0])).all(),
                            "path_accumulate: index out of range of acc's rows")
        if idgi:
            blocks = triton.cdiv(D, BLOCK_D)
            split = max(1, min(MAX_SPLIT, blocks, math.ceil(_programs_target(acc.device) / S)))
            span = triton.cdiv(blocks, split) * BLOCK_D
            split = triton.cdiv(D, span)
            _idgi_kernel[(split, S)](acc, grads, coef, index, D, span, BLOCK=BLOCK_D)
        else:
            _riemann_kernel[(triton.cdiv(D, BLOCK_D),)](acc, grads, coef, index, S, D, BLOCK=BLOCK_D)

    # Ahead-of-time compile specs for tests/test_gpu_build.py (see kernels/__init__.py). The
    # divisibility hints are what Triton's JIT sees at run time for torch allocations and D = 3*224*224.
    _ALIGNED = ["acc_ptr", "grads_ptr", "coef_ptr", "index_ptr", "D"]
    GPU_COMPILE_SPECS = [
        {"fn": _riemann_kernel,
         "signature": {"acc_ptr": "*fp32", "grads_ptr": "*fp16", "coef_ptr": "*fp32",
                       "index_ptr": "*i64", "S": "i32", "D": "i32", "BLOCK": "constexpr"},
         "constexprs": {"BLOCK": BLOCK_D}, "divisible_by_16": _ALIGNED},
        {"fn": _idgi_kernel,
         "signature": {"acc_ptr": "*fp32", "grads_ptr": "*fp32", "coef_ptr": "*fp32",
                       "index_ptr": "*i64", "D": "i32", "SPAN": "i32", "BLOCK": "constexpr"},
         "constexprs": {"BLOCK": BLOCK_D}, "divisible_by_16": _ALIGNED + ["SPAN"]},
        {"fn": _idgi_kernel,
         "signature": {"acc_ptr": "*fp32", "grads_ptr": "*bf16", "coef_ptr": "*fp32",
                       "index_ptr": "*i64", "D": "i32", "SPAN": "i32", "BLOCK": "constexpr"},
         "constexprs": {"BLOCK": BLOCK_D}},
    ]
else:
    GPU_COMPILE_SPECS = []
