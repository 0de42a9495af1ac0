"""Guided backward of element-wise activations and of max-pool (SPEC.md "IG with guided
non-linearity"): pure-torch references and, when Triton is present, the fused Triton kernels
(CUDA; tested on CPU under TRITON_INTERPRET=1) with their host launchers.

* Activations: grad_in = relu(grad_out * act'(x)) - for ReLU exactly relu(grad_out) * 1[x > 0],
  for the other activations relu of PyTorch's ordinary input gradient (the fastattr rule). The
  reference is PyTorch's own `*_backward` op followed by relu (two passes, one temporary); the
  Triton kernel reads grad_out and the saved tensor once and writes grad_in once (3 accesses per
  element instead of 5), in fp32 whatever the storage dtype.
* Max-pool: grad_in[j] = sum over windows i with argmax j of relu(grad_out[i]): the clip and the
  routing in one pass over grad_out (scatter by the forward's flat per-plane indices); negative
  gradients are skipped before the scatter, so they cost no atomic.

`act` codes (the int in the schema) and their float parameters a, b, c are listed in ACTS.
"""
from __future__ import annotations

import torch

# act code -> (name, meaning of a, b, c). "saved" is the activation's input, except ELU_RESULT
# (the output of an in-place ELU, whose input is gone). For ReLU/hardtanh/leaky ReLU (slope >= 0)
# the output gives the same mask as the input (y > 0 iff x > 0; lo < clamp(x) < hi iff lo < x < hi),
# so their in-place forms save the output under the same code.
RELU, HARDTANH, LEAKY_RELU, SILU, GELU, GELU_TANH, HARDSWISH, ELU, ELU_RESULT = range(9)
ACTS = {
    RELU: ("relu", ""),
    HARDTANH: ("hardtanh", "a=min_val, b=max_val"),
    LEAKY_RELU: ("leaky_relu", "a=negative_slope"),
    SILU: ("silu", ""),
    GELU: ("gelu", "approximate='none'"),
    GELU_TANH: ("gelu", "approximate='tanh'"),
    HARDSWISH: ("hardswish", ""),
    ELU: ("elu", "a=alpha, b=scale, c=input_scale"),
    ELU_RESULT: ("elu on its output", "a=alpha, b=scale, c=input_scale"),
}

_aten = torch.ops.aten


def ordinary_act_backward(grad_out: torch.Tensor, saved: torch.Tensor, act: int, a: float, b: float,
                          c: float) -> torch.Tensor:
    """PyTorch's own input gradient of activation `act` (ACTS). grad_out, saved (...) -> (...)."""
    if act == RELU:
        return _aten.threshold_backward(grad_out, saved, 0)
    if act == HARDTANH:
        return _aten.hardtanh_backward(grad_out, saved, a, b)
    if act == LEAKY_RELU:
        return _aten.leaky_relu_backward(grad_out, saved, a, False)
    if act == SILU:
        return _aten.silu_backward(grad_out, saved)
    if act in (GELU, GELU_TANH):
        return _aten.gelu_backward(grad_out, saved, approximate="none" if act == GELU else "tanh")
    if act == HARDSWISH:
        return _aten.hardswish_backward(grad_out, saved)
    if act in (ELU, ELU_RESULT):
        return _aten.elu_backward(grad_out, a, b, c, act == ELU_RESULT, saved)
    raise ValueError(f"guided_act_backward: act must be one of {sorted(ACTS)}, got {act}")


def guided_act_backward_ref(grad_out: torch.Tensor, saved: torch.Tensor, act: int, a: float, b: float,
                            c: float) -> torch.Tensor:
    """Reference of fastattr::guided_act_backward: relu(ordinary input gradient of `act`).
    grad_out, saved (...) same shape -> (...) grad_out.dtype."""
    if grad_out.shape != saved.shape:
        raise ValueError(f"guided_act_backward: grad_out {tuple(grad_out.shape)} and saved "
                         f"{tuple(saved.shape)} must have the same shape")
    return ordinary_act_backward(grad_out, saved, act, a, b, c).clamp_min_(0)


def guided_max_pool2d_backward_ref(grad_out: torch.Tensor, indices: torch.Tensor, height: int,
                                   width: int) -> torch.Tensor:
    """Reference of fastattr::guided_max_pool2d_backward: route relu(grad_out) to the argmax of
    each window. grad_out, indices (..., Ho, Wo) (flat indices into each H*W plane)
    -> (..., height, width) grad_out.dtype; accumulation in fp32 (fp64 for fp64)."""
    if grad_out.shape != indices.shape or grad_out.dim() < 2:
        raise ValueError(f"guided_max_pool2d_backward: grad_out {tuple(grad_out.shape)} and indices "
                         f"{tuple(indices.shape)} must have the same (..., Ho, Wo) shape")
    lead = grad_out.shape[:-2]
    acc_dtype = torch.float64 if grad_out.dtype == torch.float64 else torch.float32
    g = grad_out.reshape(-1, grad_out.shape[-2] * grad_out.shape[-1]).to(acc_dtype).clamp_min(0)
    idx = indices.reshape(g.shape).long()
    out = g.new_zeros(g.shape[0], height * width).scatter_add_(1, idx, g)
    return out.view(*lead, height, width).to(grad_out.dtype)


try:
    import triton
    import triton.language as tl
except ImportError:  # the references above are all this module offers without Triton
    triton = None

BLOCK = 1024  # 8 elements per thread at 4 warps: 128-bit fp16 / two 128-bit fp32 loads per thread

if triton is not None:
    # Triton reads module globals inside kernels only when they are constexpr. Only builtins of
    # tl are used (no @jit helpers such as tl.sigmoid): a module re-imported under
    # TRITON_INTERPRET=1 in a process that imported Triton without it cannot call jit helpers.
    _RELU = tl.constexpr(RELU)
    _HARDTANH = tl.constexpr(HARDTANH)
    _LEAKY_RELU = tl.constexpr(LEAKY_RELU)
    _SILU = tl.constexpr(SILU)
    _GELU = tl.constexpr(GELU)
    _GELU_TANH = tl.constexpr(GELU_TANH)
    _HARDSWISH = tl.constexpr(HARDSWISH)
    _ELU = tl.constexpr(ELU)
    _ELU_RESULT = tl.constexpr(ELU_RESULT)

    @triton.jit
    def _guided_act_kernel(grad_ptr, saved_ptr, out_ptr, n, a, b, c, ACT: tl.constexpr,
                           BLOCK_N: tl.constexpr):
        """out = relu(grad * act'(saved)) element-wise, fp32 math; one block per program."""
        offs = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = offs < n
        g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(saved_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # Each branch is PyTorch's own backward formula (ATen's *_backward kernels), so the only
        # difference from the reference is fp32 rounding; `where` (not a 0/1 factor) keeps an
        # infinite gradient at a dead unit at 0, as threshold_backward does.
        if ACT == _RELU:
            d = tl.where(x > 0.0, g, 0.0)
        elif ACT == _HARDTANH:
            d = tl.where((x > a) & (x < b), g, 0.0)
        elif ACT == _LEAKY_RELU:
            d = tl.where(x > 0.0, g, g * a)
        elif ACT == _SILU:
            s = 1.0 / (1.0 + tl.exp(-x))
            d = g * s * (1.0 + x * (1.0 - s))
        elif ACT == _GELU:
            cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
            pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327  # 1/sqrt(2 pi)
            d = g * (cdf + x * pdf)
        elif ACT == _GELU_TANH:
            k_beta = 0.7978845608028654  # sqrt(2/pi)
            k_kappa = 0.044715
            inner = k_beta * (x + k_kappa * x * x * x)
            t = 2.0 / (1.0 + tl.exp(-2.0 * inner)) - 1.0  # tanh from exp: no libdevice
            d = g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k_beta * (1.0 + 3.0 * k_kappa * x * x))
        elif ACT == _HARDSWISH:
            d = tl.where(x <= -3.0, 0.0, tl.where(x < 3.0, g * (x / 3.0 + 0.5), g))  # open (-3, 3) as ATen
        elif ACT == _ELU:  # a = alpha, b = scale, c = input_scale
            d = tl.where(x <= 0.0, g * c * (a * b) * tl.exp(x * c), g * b)
        else:  # _ELU_RESULT: x is the output
            d = tl.where(x <= 0.0, g * c * (x + a * b), g * b)
        out = tl.maximum(d, 0.0)
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _guided_max_pool_kernel(grad_ptr, index_ptr, out_ptr, n, plane_out, plane_in,
                                BLOCK_N: tl.constexpr):
        """out[plane, index] += relu(grad) for every pooled element; out is fp32, zeroed."""
        offs = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = offs < n
        g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        j = tl.load(index_ptr + offs, mask=mask, other=0)
        dst = out_ptr + (offs // plane_out) * plane_in + j
        # Overlapping windows can share an argmax, hence atomics; clipped (<= 0) gradients add
        # nothing and are skipped. Only the sum matters: relaxed, no fence.
        tl.atomic_add(dst, g, mask=mask & (g > 0.0), sem="relaxed")

    def _dense(t: torch.Tensor) -> bool:
        return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))

    def _check_float(t: torch.Tensor, name: str, op: str) -> None:
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(f"{op}: {name} must be a floating tensor (fp16/bf16/fp32/fp64), got {t.dtype}")

    def guided_act_backward_triton(grad_out: torch.Tensor, saved: torch.Tensor, act: int, a: float,
                                   b: float, c: float) -> torch.Tensor:
        """Triton fastattr::guided_act_backward (same contract as guided_act_backward_ref)."""
        op = "guided_act_backward"
        if grad_out.shape != saved.shape:
            raise ValueError(f"{op}: grad_out {tuple(grad_out.shape)} and saved {tuple(saved.shape)} "
                             "must have the same shape")
        if act not in ACTS:
            raise ValueError(f"{op}: act must be one of {sorted(ACTS)}, got {act}")
        _check_float(grad_out, "grad_out", op)
        _check_float(saved, "saved", op)
        if grad_out.dtype == torch.float64:  # fp32 kernel; fp64 is a CPU/testing dtype
            return guided_act_backward_ref(grad_out, saved, act, a, b, c)
        # Element-wise over the storage: grad_out, saved and out must share one dense layout
        # (channels_last activations stay channels_last; the fake kernel promises empty_like(grad_out)).
        g = grad_out if _dense(grad_out) else grad_out.contiguous()
        s = saved if saved.stride() == g.stride() else torch.empty_like(g).copy_(saved)
        out = torch.empty_like(g)
        n = g.numel()
        if n:
            _guided_act_kernel[(triton.cdiv(n, BLOCK),)](g, s, out, n, float(a), float(b), float(c),
                                                         ACT=act, BLOCK_N=BLOCK)
        return out

    def guided_max_pool2d_backward_triton(grad_out: torch.Tensor, indices: torch.Tensor, height: int,
                                          width: int) -> torch.Tensor:
        """Triton fastattr::guided_max_pool2d_backward (same contract as the reference)."""
        op = "guided_max_pool2d_backward"
        if grad_out.shape != indices.shape or grad_out.dim() < 2:
            raise ValueError(f"{op}: grad_out {tuple(grad_out.shape)} and indices {tuple(indices.shape)} "
                             "must have the same (..., Ho, Wo) shape")
        _check_float(grad_out, "grad_out", op)
        if grad_out.dtype == torch.float64:
            return guided_max_pool2d_backward_ref(grad_out, indices, height, width)
        lead = grad_out.shape[:-2]
        g = grad_out.contiguous()
        idx = indices.contiguous().long()
        plane_out = grad_out.shape[-2] * grad_out.shape[-1]
        acc = torch.zeros(*lead, height, width, dtype=torch.float32, device=g.device)
        n = g.numel()
        if n:
            _guided_max_pool_kernel[(triton.cdiv(n, BLOCK),)](g, idx, acc, n, plane_out, height * width,
                                                               BLOCK_N=BLOCK)
        return acc if grad_out.dtype == torch.float32 else acc.to(grad_out.dtype)

    # Ahead-of-time compile specs for the GPU build test (the convention of
    # kernels/path_accumulate.py): one entry per (kernel, dtype, constexpr) variant that runs.
    _ACT_SIG = {"grad_ptr": "*fp32", "saved_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32",
                "a": "fp32", "b": "fp32", "c": "fp32", "ACT": "constexpr", "BLOCK_N": "constexpr"}
    GPU_COMPILE_SPECS = [
        {"fn": _guided_act_kernel,
         "signature": {**_ACT_SIG, "grad_ptr": f"*{dt}", "saved_ptr": f"*{dt}", "out_ptr": f"*{dt}"},
         "constexprs": {"ACT": act, "BLOCK_N": BLOCK},
         "divisible_by_16": ["grad_ptr", "saved_ptr", "out_ptr", "n"]}
        for act in sorted(ACTS) for dt in ("fp32", "fp16", "bf16")
    ] + [
        {"fn": _guided_max_pool_kernel,
         "signature": {"grad_ptr": f"*{dt}", "index_ptr": "*i64", "out_ptr": "*fp32", "n": "i32",
                       "plane_out": "i32", "plane_in": "i32", "BLOCK_N": "constexpr"},
         "constexprs": {"BLOCK_N": BLOCK},
         "divisible_by_16": ["grad_ptr", "index_ptr", "out_ptr", "n", "plane_out", "plane_in"]}
        for dt in ("fp32", "fp16", "bf16")
    ]
else:
    GPU_COMPILE_SPECS = []
