"""Activation modules the guided backward's function mode cannot see: Hugging Face transformers'
activations written as compositions of torch ops (GPT-2's NewGELUActivation is 0.5 x (1 + tanh(...)),
QuickGELUActivation x * sigmoid(1.702 x), ...), whose tanh / sigmoid / pow calls are no activation
function to intercept.

They are matched by class name and defining module (transformers is never imported here), and
while the guided mode is active each matched submodule of the model has a forward hook (removed on
exit, also on error) that gives its output the guided rule for element-wise activations (SPEC.md):
grad_in = relu(ordinary grad_in). The module's own forward runs unchanged, so scores are the
model's to the last bit; the ordinary grad_in is its own autograd graph, differentiated in the
backward (re-entrant autograd.grad over one element-wise op: no second forward).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

# The smooth ReLU-like activations of transformers.activations (transformers 5.x). Left out on
# purpose: LaplaceActivation and SqrtSoftplusActivation (a CDF and a router score, not ReLU-like),
# LinearActivation (the identity). Python forms only matter (GELUActivation and GELUTanh call
# F.gelu, SiLUActivation F.silu, which the function mode already guides; guiding twice is the same
# rule, relu being idempotent).
TRANSFORMERS_ACTIVATIONS = frozenset({
    "GELUActivation", "NewGELUActivation", "FastGELUActivation", "QuickGELUActivation",
    "AccurateGELUActivation", "ClippedGELUActivation", "GELUTanh", "PytorchGELUTanh", "SiLUActivation",
    "MishActivation", "ReLUSquaredActivation", "XIELUActivation",
})


def is_transformers_activation(module: nn.Module) -> bool:
    """True for an instance of (a subclass of) one of TRANSFORMERS_ACTIVATIONS defined in transformers."""
    return any(c.__name__ in TRANSFORMERS_ACTIVATIONS and c.__module__.split(".")[0] == "transformers"
               for c in type(module).__mro__)


class GuidedComposite(torch.autograd.Function):
    """The activation's output y passed through (y_graph: y computed by the module's own ops from
    a detached leaf x_leaf of x, a graph of its own); backward: relu(ordinary grad_in), the ordinary
    one taken through that graph. Only x is an input, so the outer backward never walks y's graph."""

    @staticmethod
    def forward(ctx, x, y, graph):
        ctx.graph = graph  # (x_leaf, y_graph): attributes, not saved tensors (autograd.grad needs the graph)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x_leaf, y_graph = ctx.graph
        ctx.graph = None
        with torch.enable_grad():
            (g,) = torch.autograd.grad(y_graph, x_leaf, grad_y)
        return torch.relu(g), None, None


class _Hooks:
    """The pre-hook hands the module a detached leaf of its input (kept per module, a stack for
    re-entrant calls); the hook wraps the output computed from it."""

    def __init__(self):
        self.inputs: dict[int, list] = {}

    def pre(self, module, args):
        x = args[0] if args else None
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad):
            self.inputs.setdefault(id(module), []).append(None)
            return None
        leaf = x.detach().requires_grad_(True)
        self.inputs.setdefault(id(module), []).append((x, leaf))
        return (leaf, *args[1:])

    def post(self, module, args, out):
        entry = self.inputs[id(module)].pop()
        if entry is None:
            return None
        x, leaf = entry
        if isinstance(out, torch.Tensor) and not out.requires_grad and out.shape == x.shape:
            return out  # a constant output: its gradient is zero either way
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(f"backward: 'guided' expected {type(module).__name__} to be an element-wise "
                             f"activation (output like its input {tuple(x.shape)}); use backward='standard'")
        return GuidedComposite.apply(x, out.detach(), (leaf, out))


@contextlib.contextmanager
def guided_module_activations(model: nn.Module):
    """The guided rule on `model`'s transformers activation modules while active (hooks removed on exit)."""
    hooks = _Hooks()
    handles = []
    try:
        for m in model.modules():
            if is_transformers_activation(m):
                handles.append(m.register_forward_pre_hook(hooks.pre))
                handles.append(m.register_forward_hook(hooks.post))
        yield
    finally:
        for h in handles:
            h.remove()
