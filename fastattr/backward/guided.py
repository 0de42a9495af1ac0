"""backward="guided": guided non-linearity backward (SPEC.md "IG with guided non-linearity").

A `TorchFunctionMode` active during the engine's session intercepts the activation and max-pool
functions a model calls - module forms (nn.ReLU, nn.ReLU6, nn.MaxPool2d, ...) call the functional
ones, so both are covered - and routes them through autograd Functions whose forward is the
ordinary op and whose backward is the guided rule (fastattr::guided_act_backward /
fastattr::guided_max_pool2d_backward; Triton on CUDA). Nothing is attached to the model: leaving
the context pops the mode, also when the forward raises. Dynamo traces through the mode, so
compile=True compiles the guided graph.

Not covered (no function call to intercept): custom autograd Functions inside a model (e.g.
efficientnet_pytorch's MemoryEfficientSwish); TorchScript models are refused (`unreachable`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from fastattr.backward import register_backward
from fastattr.kernels.guided_backward import (ELU, ELU_RESULT, GELU, GELU_TANH, HARDSWISH, HARDTANH,
                                              LEAKY_RELU, RELU, SILU)
from fastattr.ops.guided_backward import guided_act_backward, guided_max_pool2d_backward

_nn = torch._C._nn
SELU_ALPHA = 1.6732632423543772848170429916717  # ATen's selu is elu(x, SELU_ALPHA, SELU_SCALE, 1)
SELU_SCALE = 1.0507009873554804934193349852946


def _act_forward(x: torch.Tensor, act: int, a: float, b: float, c: float, inplace: bool) -> torch.Tensor:
    """The ordinary activation `act` (codes of kernels.guided_backward) of x, in place or not."""
    if act == RELU:
        return torch.relu_(x) if inplace else torch.relu(x)
    if act == HARDTANH:
        return _nn.hardtanh_(x, a, b) if inplace else _nn.hardtanh(x, a, b)
    if act == LEAKY_RELU:
        return _nn.leaky_relu_(x, a) if inplace else _nn.leaky_relu(x, a)
    if act == SILU:
        return _nn.silu_(x) if inplace else _nn.silu(x)
    if act == GELU or act == GELU_TANH:
        return _nn.gelu(x, approximate="none" if act == GELU else "tanh")
    if act == HARDSWISH:
        return _nn.hardswish_(x) if inplace else _nn.hardswish(x)
    return _nn.elu_(x, a, b, c) if inplace else _nn.elu(x, a, b, c)


def _from_output(act: int, a: float) -> int | None:
    """The code computing act' from the activation's output, or None when the output does not
    determine it (then an in-place call keeps a copy of its input). ReLU, hardtanh and leaky ReLU
    with slope >= 0 give the same mask from output and input; ELU has its own output form."""
    if act in (RELU, HARDTANH) or (act == LEAKY_RELU and a >= 0):
        return act
    return ELU_RESULT if act == ELU else None


class GuidedActivation(torch.autograd.Function):
    """y = act(x) (in place when asked); backward: relu(grad_y * act'(x))."""

    @staticmethod
    def forward(ctx, x, act, a, b, c, inplace):
        ctx.params = (a, b, c)
        code = _from_output(act, a) if inplace else None
        ctx.code = act if code is None else code
        if not inplace:
            ctx.save_for_backward(x)
            return _act_forward(x, act, a, b, c, False)
        # In place: return x itself (dynamo requires the dirty input to be the returned object).
        if code is not None:  # as ATen's in-place ops: save the output
            _act_forward(x, act, a, b, c, True)
            ctx.save_for_backward(x)
        else:  # act' needs the input, which the op overwrites
            saved = x.clone()
            _act_forward(x, act, a, b, c, True)
            ctx.save_for_backward(saved)
        ctx.mark_dirty(x)
        return x

    @staticmethod
    def backward(ctx, grad_y):
        (saved,) = ctx.saved_tensors
        a, b, c = ctx.params
        return guided_act_backward(grad_y, saved, ctx.code, a, b, c), None, None, None, None, None


class GuidedMaxPool2d(torch.autograd.Function):
    """(y, indices) = max_pool2d_with_indices(x, ...); backward: relu(grad_y) routed to the argmax."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, idx = _nn.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(idx)
        ctx.hw = (x.shape[-2], x.shape[-1])
        ctx.mark_non_differentiable(idx)
        return y, idx

    @staticmethod
    def backward(ctx, grad_y, grad_idx):
        (idx,) = ctx.saved_tensors
        return guided_max_pool2d_backward(grad_y, idx, *ctx.hw), None, None, None, None, None


def _get(args, kwargs, i: int, name: str, default):
    """Argument `name`, given at position i or by keyword, else default."""
    return args[i] if len(args) > i else kwargs.get(name, default)


def _act(act: int, *, a=None, b=None, c=None, inplace=None):
    """A parser (args, kwargs) -> (act, a, b, c, inplace) for one intercepted function. Each of a,
    b, c, inplace is a constant, (position, keyword, default), or a function of the parsed values."""

    def pick(spec, args, kwargs, default):
        if spec is None:
            return default
        if isinstance(spec, tuple):
            return _get(args, kwargs, *spec)
        return spec

    def parse(args, kwargs):
        pa = pick(a, args, kwargs, 0.0)
        pb = pick(b, args, kwargs, 0.0)
        pc = pick(c, args, kwargs, 0.0)
        if callable(pc):  # celu's input_scale is 1/alpha
            pc = pc(pa)
        return act, pa, pb, pc, bool(pick(inplace, args, kwargs, False))

    return parse


def _parse_gelu(args, kwargs):
    tanh = _get(args, kwargs, 1, "approximate", "none") == "tanh"
    return (GELU_TANH if tanh else GELU), 0.0, 0.0, 0.0, False


_ACT_PARSERS = {
    F.relu: _act(RELU, inplace=(1, "inplace", False)),
    torch.relu: _act(RELU), torch.Tensor.relu: _act(RELU),
    torch.relu_: _act(RELU, inplace=True), torch.Tensor.relu_: _act(RELU, inplace=True),
    F.relu6: _act(HARDTANH, a=0.0, b=6.0, inplace=(1, "inplace", False)),
    _nn.relu6: _act(HARDTANH, a=0.0, b=6.0), _nn.relu6_: _act(HARDTANH, a=0.0, b=6.0, inplace=True),
    F.hardtanh: _act(HARDTANH, a=(1, "min_val", -1.0), b=(2, "max_val", 1.0), inplace=(3, "inplace", False)),
    _nn.hardtanh: _act(HARDTANH, a=(1, "min_val", -1.0), b=(2, "max_val", 1.0)),
    _nn.hardtanh_: _act(HARDTANH, a=(1, "min_val", -1.0), b=(2, "max_val", 1.0), inplace=True),
    F.leaky_relu: _act(LEAKY_RELU, a=(1, "negative_slope", 0.01), inplace=(2, "inplace", False)),
    _nn.leaky_relu: _act(LEAKY_RELU, a=(1, "negative_slope", 0.01)),
    _nn.leaky_relu_: _act(LEAKY_RELU, a=(1, "negative_slope", 0.01), inplace=True),
    F.silu: _act(SILU, inplace=(1, "inplace", False)),
    _nn.silu: _act(SILU), _nn.silu_: _act(SILU, inplace=True),
    _nn.gelu: _parse_gelu,  # = F.gelu
    F.hardswish: _act(HARDSWISH, inplace=(1, "inplace", False)),
    _nn.hardswish: _act(HARDSWISH), _nn.hardswish_: _act(HARDSWISH, inplace=True),
    F.elu: _act(ELU, a=(1, "alpha", 1.0), b=1.0, c=1.0, inplace=(2, "inplace", False)),
    _nn.elu: _act(ELU, a=(1, "alpha", 1.0), b=(2, "scale", 1.0), c=(3, "input_scale", 1.0)),
    _nn.elu_: _act(ELU, a=(1, "alpha", 1.0), b=(2, "scale", 1.0), c=(3, "input_scale", 1.0), inplace=True),
    F.selu: _act(ELU, a=SELU_ALPHA, b=SELU_SCALE, c=1.0, inplace=(1, "inplace", False)),
    torch.selu: _act(ELU, a=SELU_ALPHA, b=SELU_SCALE, c=1.0),
    torch.selu_: _act(ELU, a=SELU_ALPHA, b=SELU_SCALE, c=1.0, inplace=True),
    F.celu: _act(ELU, a=(1, "alpha", 1.0), b=1.0, c=lambda alpha: 1.0 / alpha, inplace=(2, "inplace", False)),
    torch.celu: _act(ELU, a=(1, "alpha", 1.0), b=1.0, c=lambda alpha: 1.0 / alpha),
    torch.celu_: _act(ELU, a=(1, "alpha", 1.0), b=1.0, c=lambda alpha: 1.0 / alpha, inplace=True),
}

# max-pool functions -> whether they return (values, indices). F.max_pool2d reaches the mode as
# itself (return_indices=False) or as F.max_pool2d_with_indices (return_indices=True).
_POOL_RETURNS_INDICES = {
    F.max_pool2d: None,  # decided by its return_indices argument
    F.max_pool2d_with_indices: True,
    torch.max_pool2d: False,
    _nn.max_pool2d_with_indices: True,
}


def _guided_pool(func, args, kwargs):
    x = _get(args, kwargs, 0, "input", None)
    kernel_size = _get(args, kwargs, 1, "kernel_size", None)
    stride = _get(args, kwargs, 2, "stride", None)
    padding = _get(args, kwargs, 3, "padding", 0)
    dilation = _get(args, kwargs, 4, "dilation", 1)
    ceil_mode = bool(_get(args, kwargs, 5, "ceil_mode", False))
    with_indices = _POOL_RETURNS_INDICES[func]
    if with_indices is None:
        with_indices = bool(_get(args, kwargs, 6, "return_indices", False))
    if stride is None:  # ATen: an empty stride means stride = kernel_size
        stride = []
    y, idx = GuidedMaxPool2d.apply(x, kernel_size, stride, padding, dilation, ceil_mode)
    return (y, idx) if with_indices else y


class GuidedMode(TorchFunctionMode):
    """While active, the listed activations and max-pool take the guided backward (when their
    input requires grad under grad mode); every other call runs unchanged. pool=False leaves
    max-pool's ordinary backward (guided backpropagation as captum's GuidedBackprop defines it)."""

    def __init__(self, pool: bool = True):
        super().__init__()
        self.pool = pool

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if "out" not in kwargs and torch.is_grad_enabled():
            x = _get(args, kwargs, 0, "input", None)
            if isinstance(x, torch.Tensor) and x.requires_grad:
                parse = _ACT_PARSERS.get(func)
                if parse is not None:
                    act, a, b, c, inplace = parse(args, kwargs)
                    return GuidedActivation.apply(x, act, float(a), float(b), float(c), inplace)
                if self.pool and func in _POOL_RETURNS_INDICES:
                    return _guided_pool(func, args, kwargs)
        return func(*args, **kwargs)


def guided(model: torch.nn.Module) -> GuidedMode:
    """The guided backward mode for `model` (the model itself is not touched)."""
    return GuidedMode()


def unreachable(model: torch.nn.Module) -> str | None:
    """Why the guided mode cannot act on `model`, or None: a TorchScript module (scripted or
    traced, also inside a Python model) runs its activations as graph ops, not Python calls the
    mode could intercept; measured: its guided maps equal its standard maps exactly."""
    from fastattr.models import EXPORT_RECIPE

    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        return ("cannot reach inside a TorchScript model (its activations are no Python calls to intercept) "
                "and would silently give the standard gradient; save the model with torch.export instead: "
                f"{EXPORT_RECIPE}")
    return None


def guided_activations(model: torch.nn.Module) -> GuidedMode:
    """The guided rule at activations only, max-pool's backward unchanged: captum's GuidedBackprop
    on ReLU models (fastattr.captum.GuidedBackprop; not offered as a backward= name). A model it
    cannot reach (TorchScript) is a ValueError naming `model`."""
    why = unreachable(model)
    if why is not None:
        raise ValueError(f"model: GuidedBackprop {why}")
    return GuidedMode(pool=False)


register_backward("guided", guided, unreachable)
