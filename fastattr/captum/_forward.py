"""The user's forward_func on fastattr's engine: points in, one explained score per point out, with
the user's tuple of inputs, additional_forward_args and captum target rules.

CallableModel is the engine's model: it holds the nn.Modules forward_func reaches (so that the
engine freezes their parameters, finds their device, puts them in eval mode and guides their
activations) and calls forward_func. The engine's Forward seam (fastattr.forward) hands every chunk
its rows; `row_examples` maps rows to the user's examples (NoiseTunnel's and GradientShap's copies
are rows of one example), whose targets and additional_forward_args the chunk gets:

- CallableForward: the points are the user's inputs. The engine sees one tensor per point: a
  single input of rank >= 2 as itself, anything else (several inputs, or a 1-D input) flattened
  per example and concatenated, (B, D1 + D2 + ...); InputLayout splits a chunk back.
- CallableLayerForward (fastattr.forward.LayerForward): the points live at layers of the model
  (LayerIntegratedGradients); forward_func runs on the examples' own inputs with the layers'
  outputs (or inputs) replaced by the chunk's points.
"""
from __future__ import annotations

import functools
import inspect
import math
import types

import torch
from torch import nn

from fastattr.captum._inputs import Target, expand_args
from fastattr.engine import uses_conv2d
from fastattr.forward import InputForward, LayerForward, LayerSite

# Values that never hold a model: skipped without looking inside (modules like `torch` and classes
# would drag the search through whole libraries).
_SKIP = (str, bytes, int, float, complex, type(None), torch.Tensor, torch.dtype, torch.device,
         types.ModuleType, type)
_MAX_DEPTH = 4


def find_modules(fn) -> list[nn.Module]:
    """The nn.Modules a callable can reach: itself, a bound method's object, a partial's function and
    arguments, a function's closure cells, defaults and the globals its code names (also in nested
    lambdas/functions), and the attributes of plain objects among those, up to 4 levels deep."""
    found: dict[int, nn.Module] = {}
    seen: set[int] = set()

    def visit(obj, depth: int) -> None:
        if depth > _MAX_DEPTH or isinstance(obj, _SKIP) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            found.setdefault(id(obj), obj)
            return
        if inspect.ismethod(obj):
            visit(obj.__self__, depth + 1)
            visit(obj.__func__, depth + 1)
        elif isinstance(obj, functools.partial):
            for o in (obj.func, *obj.args, *obj.keywords.values()):
                visit(o, depth + 1)
        elif inspect.isfunction(obj):
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents, depth + 1)
                except ValueError:  # an empty cell (a variable not yet assigned)
                    pass
            for o in (*(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()):
                visit(o, depth + 1)
            g = obj.__globals__
            for name in _code_names(obj.__code__):
                if name in g:
                    visit(g[name], depth + 1)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            for o in obj:
                visit(o, depth + 1)
        elif isinstance(obj, dict):
            for o in obj.values():
                visit(o, depth + 1)
        elif hasattr(obj, "__dict__"):  # a callable object or a holder of the model (self.model)
            for o in vars(obj).values():
                visit(o, depth + 1)

    visit(fn, 0)
    return list(found.values())


def _code_names(code: types.CodeType) -> set[str]:
    """Global names a code object and the code objects nested in it (lambdas, inner functions) load."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _code_names(c)
    return names


class InputLayout:
    """How the user's inputs (tuple of (N, ...) tensors) map to one point tensor per example."""

    def __init__(self, inputs: tuple[torch.Tensor, ...]):
        self.shapes = [tuple(x.shape[1:]) for x in inputs]
        self.dtypes = [point_dtype(x.dtype) for x in inputs]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.flat = len(inputs) > 1 or inputs[0].dim() < 2  # else the point is the input itself
        self.dtype = functools.reduce(torch.promote_types, self.dtypes)
        self.device = inputs[0].device
        self.point_shape = (sum(self.sizes),) if self.flat else self.shapes[0]

    def join(self, tensors) -> torch.Tensor:
        """Per-input tensors (R, ...) (or (1, ...)) -> points (R, *point_shape) in the point dtype."""
        if not self.flat:
            return tensors[0].to(self.dtype)
        rows = max(t.shape[0] for t in tensors)
        return torch.cat([t.to(self.dtype).reshape(t.shape[0], -1).expand(rows, -1) for t in tensors], dim=1)

    def split(self, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Points (B, *point_shape) -> the user's tensors (B, ...) in their own dtypes (differentiable)."""
        b = points.shape[0]
        if not self.flat:
            return (points.to(self.dtypes[0]),)
        parts = points.split(self.sizes, dim=1)
        return tuple(p.reshape(b, *s).to(d) for p, s, d in zip(parts, self.shapes, self.dtypes))


def point_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype path points of an input get: its own if floating, else the default float (as captum's
    baseline + alpha * (input - baseline) for integer inputs)."""
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


class CallableModel(nn.Module):
    """forward_func as an engine model: run(inputs, examples) -> explained scores (B, 1).

    The modules found in forward_func are registered (not called) so that the engine freezes
    their parameters for the call and finds their device. 4-D inputs go to forward_func in
    channels-last memory when it holds a Conv2d (oneDNN convolutions are faster so: see
    fastattr/engine.py), unless channels_last=False; if the first such call raises a RuntimeError
    (for example `.view` on a conv activation) it is retried in NCHW and NCHW is kept. `inputs`:
    the user's inputs (or tensors shaped like them), for the device and the memory format."""

    def __init__(self, forward_func, inputs: tuple[torch.Tensor, ...], target: Target, extra_args: tuple,
                 channels_last: bool | None = None):
        super().__init__()
        modules = find_modules(forward_func)
        # The adapter and its list have no train/eval behaviour: marked eval so that only the
        # user's modules' own flags count (set directly: .eval() would recurse into them).
        self.training = False
        self.found = nn.ModuleList()
        self.found.training = False
        self.found.extend(modules)
        if not any(True for _ in self.found.parameters()) and not any(True for _ in self.found.buffers()):
            # A parameter-free callable: the engine reads its device (chunk size) from the model,
            # so an empty buffer says where the points live.
            self.register_buffer("device_marker", torch.empty(0, device=inputs[0].device), persistent=False)
        self.forward_func = _Hidden(forward_func)
        self.target, self.extra_args = target, extra_args
        if channels_last is None:
            channels_last = any(uses_conv2d(m) for m in modules)
        self.channels_last = bool(channels_last) and any(x.dim() == 4 for x in inputs)
        self.format_decided = not self.channels_last
        self._checked_shape = None  # output shape (after dim 0) the target was range-checked for

    def call(self, inputs: tuple[torch.Tensor, ...], rows: torch.Tensor) -> torch.Tensor:
        """forward_func on the user's tensors for examples rows, target selected -> (B, 1)."""
        out = self.forward_func.fn(*inputs, *expand_args(self.extra_args, rows))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"forward_func: must return a tensor (captum explains its output as returned), "
                            f"got {type(out).__name__}")
        if out.dim() == 0 or out.shape[0] != inputs[0].shape[0]:
            raise ValueError(f"forward_func: output of shape {tuple(out.shape)} for {inputs[0].shape[0]} examples; "
                             "dimension 0 must index the examples")
        check = tuple(out.shape[1:]) != self._checked_shape
        selected = self.target.select(out, rows, check)
        self._checked_shape = tuple(out.shape[1:])
        return selected

    def run(self, inputs: tuple[torch.Tensor, ...], rows: torch.Tensor) -> torch.Tensor:
        """call() with 4-D inputs in the memory format decided above (tried once, kept)."""
        if not self.channels_last:
            return self.call(inputs, rows)
        cl = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
        if self.format_decided:
            return self.call(cl, rows)
        try:
            out = self.call(cl, rows)
        except RuntimeError:
            self.channels_last = False  # the model needs contiguous NCHW tensors (e.g. .view after a conv)
            out = self.call(inputs, rows)
        self.format_decided = True
        return out


class CallableForward(InputForward):
    """The engine's Forward when the points are the user's inputs: a chunk of points (B, ...) of
    rows (B,) -> forward_func on them, split into the user's tensors, with the rows' examples'
    targets and additional_forward_args. row_examples (R,): the user example of each row."""

    def __init__(self, model: CallableModel, layout: InputLayout, row_examples: torch.Tensor):
        super().__init__()
        self.model, self.layout = model, layout
        self.per_example = True
        self.row_examples = row_examples

    def call(self, engine, points: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        return self.model.run(self.layout.split(points), self.examples(rows))


class CallableLayerForward(LayerForward):
    """The engine's Forward when the points live at layers (LayerIntegratedGradients): every tensor
    of each layer's output (or positional inputs) is replaced by its part of the chunk's points, and
    forward_func runs on the rows' examples' inputs (a tuple of (N, ...) tensors: the user's inputs,
    or their baselines for embed_all). `layout` (set once the layers' tensors are known) splits the
    points into the layers' tensors."""

    def __init__(self, model: CallableModel, sites: list[LayerSite], inputs: tuple[torch.Tensor, ...],
                 row_examples: torch.Tensor):
        super().__init__(sites[0].module, sites[0].name, inputs, None, None, sites=sites)
        self.model = model
        self.row_examples = row_examples
        self.layout: InputLayout | None = None
        self.counts: list[int] = []  # tensors per site, in order (set by embed_all)

    def split(self, points: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        parts = self.layout.split(points)
        out, at = [], 0
        for c in self.counts:
            out.append(parts[at:at + c])
            at += c
        return out

    def rows(self, inputs, examples: torch.Tensor):
        return tuple(x.index_select(0, examples.to(x.device)) for x in inputs)

    def run(self, engine, inputs, examples: torch.Tensor, compiled: bool):
        return self.model.run(inputs, examples)  # examples: the user's (LayerForward maps rows to them)

    def _never_called(self, j: int = 0):
        site = self.sites[j]
        raise ValueError(f"layer: {site.name!r} ({type(site.module).__name__}) is never called when forward_func "
                         "runs on the inputs, so there is nothing to attribute to; pass a module that "
                         "forward_func's model calls (a submodule of it, not a copy)")


class _Hidden:
    """Holds forward_func without registering it as a submodule (it is not part of the adapter's
    state; the modules it reaches are registered once, in `found`)."""

    def __init__(self, fn):
        self.fn = fn
