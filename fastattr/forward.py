"""How the engine calls the model: the Forward seam. A Forward turns one chunk of points into the
model's raw output; the engine owns one (engine.forward) and calls it inside its session.

- InputForward: the points are the model's inputs (the engine's input-space call: channels-last,
  the model's dtype, autocast, torch.compile), plus the examples' further model inputs
  (`model_kwargs=`) when there are any.
- LayerForward: the points live in the output space of one submodule (`layer=`). The model runs on
  the examples' own inputs and further inputs, and a forward hook (registered once per engine
  session, not per chunk) replaces the layer's output with the chunk's points; gradients come back
  with respect to the points. embed() computes L(inputs), the path's ends.

Rows: the engine hands every chunk the row of the call's inputs each point belongs to (walk_path's
image index). Rows are examples unless a caller makes copies (SmoothGrad's noisy copies): then
`row_examples` (R,) maps each row to its example, whose model inputs the point gets.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from fastattr import model_io

_NO_KWARGS: dict = {}


def _call_model(model: nn.Module, x, **kwargs):
    return model(x, **kwargs)


# One compiled callable shared by all models: dynamo guards on the module it receives, so each
# model gets its own graph without this module holding a strong reference to any model.
_compiled_call = None


def _compiled() -> callable:
    global _compiled_call
    if _compiled_call is None:
        _compiled_call = torch.compile(_call_model, dynamic=False)
    return _compiled_call


def is_token_aligned(t, tokens: int) -> bool:
    """A tensor whose dimension 1 is the inputs' token axis (attention_mask, token_type_ids, ...)."""
    return isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[1] == tokens


class ModelKwargs:
    """`model_kwargs=` checked: tensors whose first dimension is N belong to the examples and are
    gathered per chunk (per_example); 0-d tensors, tensors whose first dimension is 1, and every
    non-tensor value are shared by all examples and passed as they are."""

    def __init__(self, per_example: dict[str, torch.Tensor], shared: dict, n: int):
        self.per_example, self.shared, self.n = per_example, shared, n

    @classmethod
    def check(cls, model_kwargs, n: int, device: torch.device) -> "ModelKwargs | None":
        """None or a dict of keyword arguments for the model, for a call on n examples; errors name
        `model_kwargs`."""
        if model_kwargs is None:
            return None
        if not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs: expected a dict of further model inputs (attention_mask=..., ...), "
                            f"got {type(model_kwargs).__name__}")
        per_example, shared = {}, {}
        for key, value in model_kwargs.items():
            if not isinstance(key, str):
                raise TypeError(f"model_kwargs: keys must be the model's keyword argument names, got {key!r}")
            if not isinstance(value, torch.Tensor):
                shared[key] = value
            elif value.dim() >= 1 and value.shape[0] == n:
                per_example[key] = value.detach().to(device)
            elif value.dim() == 0 or value.shape[0] == 1:
                shared[key] = value.detach().to(device)
            else:
                raise ValueError(f"model_kwargs: {key!r} has shape {tuple(value.shape)}, but inputs hold {n} "
                                 f"examples. A tensor whose first dimension is N={n} belongs to the examples "
                                 "(each chunk gets its examples' rows); a 0-d tensor or one whose first dimension "
                                 "is 1 is shared by all of them (reshape a shared tensor to (1, ...)); other "
                                 "shapes are refused")
        if not per_example and not shared:
            return None
        return cls(per_example, shared, n)

    def take(self, examples: torch.Tensor) -> dict:
        """The model's keyword arguments for a chunk of points of `examples` (B,)."""
        out = dict(self.shared)
        for key, t in self.per_example.items():
            out[key] = t.index_select(0, examples)
        return out

    def attention_mask(self) -> torch.Tensor | None:
        """The per-example (N, T) attention_mask, if there is one."""
        m = self.per_example.get("attention_mask")
        return m if m is not None and m.dim() == 2 else None

    def select(self, rows: torch.Tensor, cols: torch.Tensor | None, tokens: int) -> "ModelKwargs":
        """The kwargs of examples `rows` (R,), token-aligned tensors (dimension 1 of size `tokens`)
        cut to the columns cols (R, L) of each row (None: all columns)."""
        per_example, shared = {}, dict(self.shared)
        for key, t in self.per_example.items():
            per_example[key] = gather_tokens(t, rows, cols) if cols is not None and is_token_aligned(t, tokens) \
                else t.index_select(0, rows)
        if cols is not None:
            for key, t in self.shared.items():
                if is_token_aligned(t, tokens):  # e.g. position_ids (1, T): cut per row like the tokens
                    per_example[key] = gather_tokens(t, torch.zeros_like(rows), cols)
                    del shared[key]
        return ModelKwargs(per_example, shared, rows.shape[0])


def shared_fingerprint(model_kwargs) -> str:
    """sha256 of model_kwargs whose every value is shared by all examples (what a dataset run can
    take: its groups vary in size); errors name `model_kwargs`."""
    import hashlib

    if not isinstance(model_kwargs, dict):
        raise TypeError(f"model_kwargs: expected a dict of further model inputs, got {type(model_kwargs).__name__}")
    h = hashlib.sha256()
    for key in sorted(model_kwargs, key=str):
        value = model_kwargs[key]
        if isinstance(value, torch.Tensor):
            if value.dim() > 0 and value.shape[0] != 1:
                raise ValueError(f"model_kwargs: {key!r} has shape {tuple(value.shape)}; a dataset run explains images "
                                 "in groups of varying size, so it takes only values every image shares (non-tensors, "
                                 "0-d tensors, tensors whose first dimension is 1)")
            t = value.detach().cpu().contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode() + t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(f"{key}|{value!r}".encode())
    return h.hexdigest()


def gather_tokens(t: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """t[rows[r], cols[r, j]] -> (R, L, ...) for t (N, T, ...), rows (R,), cols (R, L)."""
    return t[rows[:, None], cols]


class InputForward:
    """Points are the model's inputs; model_kwargs (if any) go with their examples."""

    layer = None

    def __init__(self, kwargs: ModelKwargs | None = None):
        self.kwargs = kwargs
        # True when points of different examples call the model with different inputs (the
        # engine then hands each chunk its rows; an attribute: read per chunk)
        self.per_example = kwargs is not None
        self.row_examples: torch.Tensor | None = None


    def context(self, engine):
        return contextlib.nullcontext()

    def examples(self, rows: torch.Tensor | None) -> torch.Tensor:
        if rows is None:
            raise RuntimeError("fastattr: per-example model inputs need the chunk's rows (internal error)")
        return rows if self.row_examples is None else self.row_examples.index_select(0, rows)

    def call(self, engine, x: torch.Tensor, rows: torch.Tensor | None):
        """The model's raw output for points x (B, ...) of rows `rows` (B,)."""
        xm = engine.in_model_format(x)  # channels-last for conv models (no copy if it already is)
        if engine.model_dtype is not None and xm.dtype != engine.model_dtype:
            xm = xm.to(engine.model_dtype)  # differentiable: the gradient comes back in x's dtype
        if engine.model_point_shape is not None:  # differentiable: gradients come back as the points' shape
            xm = xm.reshape(xm.shape[0], *engine.model_point_shape)
        kw = _NO_KWARGS if self.kwargs is None else self.kwargs.take(self.examples(rows))
        if engine.autocast_dtype is None and not engine.compile:  # the plain call: no context per chunk
            return engine.model(xm, **kw)
        # Autocast around the (compiled) call: dynamo traces under the active autocast state and
        # guards on it; the output callable and the output form run in x's dtype afterwards.
        with model_io.autocast(engine.device, engine.autocast_dtype):
            return _compiled()(engine.model, xm, **kw) if engine.compile else engine.model(xm, **kw)


class _Captured(Exception):
    """Raised by the hook once L(inputs) is captured: the rest of the forward is not needed."""


class LayerSite:
    """One place a LayerForward replaces: a layer's output (or, with `inputs`, its positional inputs:
    a forward pre-hook), its first tensor (fastattr's layer=: a tuple or ModelOutput keeps its other
    fields) or, with `whole`, every tensor it holds (captum's layers: each one a path of its own)."""

    def __init__(self, module: nn.Module, name: str, inputs: bool = False, whole: bool = False):
        self.module, self.name, self.inputs, self.whole = module, name, inputs, whole

    def register(self, hook) -> "torch.utils.hooks.RemovableHandle":
        """hook(module, args, out=None) as the layer's forward hook (pre-hook for its inputs)."""
        return (self.module.register_forward_pre_hook(hook) if self.inputs
                else self.module.register_forward_hook(hook))

    def tensors(self, value) -> tuple[torch.Tensor, ...]:
        """The floating tensors at this site of one forward (value: the output, or the args tuple)."""
        if not self.whole:
            return (model_io.layer_tensor(value, self.name),)
        ts = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        where = "inputs" if self.inputs else "output"
        for t in ts:
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"layer: {self.name!r} has a {what} among its {where}; attributing to the "
                                 f"layer {where} needs every one to be a floating-point tensor (pick another "
                                 "layer, or attribute to its output / input instead)")
        return ts

    def rebuilt(self, value, reps: tuple[torch.Tensor, ...]):
        """value with its tensors (see tensors()) replaced by reps, same container type."""
        if not self.whole:
            return model_io.with_layer_tensor(value, reps[0])
        if isinstance(value, torch.Tensor):
            return reps[0]
        if isinstance(value, list):
            return list(reps)
        return type(value)(*reps) if hasattr(value, "_fields") else tuple(reps)


class LayerForward(InputForward):
    """Points in the output space of `layer`: the model runs on its examples' inputs (N, ...) (token
    ids, pixels) and model_kwargs, with the layer's output replaced by the chunk's points.

    The general form (sites=): several layers, their inputs or outputs, every tensor they hold; the
    points of a chunk are then split into one tensor per site tensor by split(). A subclass calling
    something else than the model (fastattr.captum: the user's forward_func with its arguments)
    overrides run() and rows()."""

    def __init__(self, layer: nn.Module, name: str, inputs, kwargs: ModelKwargs | None,
                 model_dtype: torch.dtype | None, sites: list[LayerSite] | None = None):
        super().__init__(kwargs)
        self.per_example = True
        self.layer, self.name = layer, name
        self.sites = sites if sites is not None else [LayerSite(layer, name)]
        if isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and model_dtype is not None:
            inputs = inputs.to(model_dtype)  # pixels for a ViT: no gradient flows to them
        self.inputs = inputs
        # per site, the chunk's replacement tensors while the model runs; None: embed
        self._points: list[tuple[torch.Tensor, ...]] | None = None
        self._calls = [0] * len(self.sites)
        self._captured: list | None = None

    @contextlib.contextmanager
    def context(self, engine):
        """The replacement hooks, registered for one engine session (removed also on error)."""
        handles = []
        try:
            for j, site in enumerate(self.sites):
                handles.append(site.register(functools.partial(self._hook, j)))
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, j: int, module, args, out=None):
        site = self.sites[j]
        value = args if site.inputs else out
        ts = site.tensors(value)
        if self._points is None:  # embed(): L(inputs) is all that is needed
            self._captured[j] = ts
            if all(c is not None for c in self._captured):
                raise _Captured
            return None
        self._calls[j] += 1
        if self._calls[j] > 1:
            raise ValueError(f"layer: {site.name!r} is called {self._calls[j]} times in one forward of the model "
                             "(a module used in several places); its output is not one space to run a path in. "
                             "Pick a layer the model calls once per forward")
        points = self._points[j]
        reps = []
        for p, t in zip(points, ts):
            if p.shape != t.shape:
                raise ValueError(f"layer: {site.name!r} returned shape {tuple(t.shape)} where its output at the "
                                 f"inputs had shape {tuple(p.shape)}; the layer's output must depend on its "
                                 "example only")
            # A copy in the layer's real dtype (autocast, a half model): differentiable, and an in-place
            # op of the model on the layer's output never writes into the engine's leaf.
            reps.append(p.to(t.dtype) if p.dtype != t.dtype else p.clone())
        return site.rebuilt(value, tuple(reps))

    def split(self, points: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """A chunk's points (B, ...) -> per site, the tensors that replace its tensors."""
        return [(points,)]

    def rows(self, inputs, examples: torch.Tensor):
        """The rows `examples` (B,) of inputs (the examples' inputs, or a baseline like them)."""
        return inputs.index_select(0, examples)

    def run(self, engine, inputs, examples: torch.Tensor, compiled: bool):
        """The model's raw output on `inputs` (rows of examples (B,)) with their model_kwargs."""
        kw = _NO_KWARGS if self.kwargs is None else self.kwargs.take(examples)
        with model_io.autocast(engine.device, engine.autocast_dtype):
            if compiled and engine.compile:
                return _compiled()(engine.model, inputs, **kw)
            return engine.model(inputs, **kw)

    def call(self, engine, points: torch.Tensor, rows: torch.Tensor | None):
        """The model's raw output with the layer's output replaced by points (B, ...) of rows (B,)."""
        ex = self.examples(rows)
        self._points, self._calls = self.split(points), [0] * len(self.sites)
        try:
            raw = self.run(engine, self.rows(self.inputs, ex), ex, compiled=True)
        finally:
            self._points = None
        for j, calls in enumerate(self._calls):
            if calls == 0:
                self._never_called(j)
        return raw

    def _never_called(self, j: int = 0):
        site = self.sites[j]
        raise ValueError(f"layer: {site.name!r} ({type(site.module).__name__}) is never called in the model's "
                         "forward, so there is no output to attribute to; pick a module the forward runs")

    def embed(self, engine, inputs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """L(inputs) for inputs (N, ...) like the examples' (inputs or baseline ids), chunked, in
        `dtype`; the forward stops at the layer. Needs the engine's session (the hook)."""
        if inputs.is_floating_point() and engine.model_dtype is not None:
            inputs = inputs.to(engine.model_dtype)
        return self.embed_all(engine, inputs, inputs.shape[0], dtype)[0]

    @torch.no_grad()
    def embed_all(self, engine, inputs, n: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        """Every site's tensors at inputs (n examples, read by rows()), chunked, in `dtype` (None:
        their own), sites in order -> tuple of (n, ...). Needs the engine's session (the hooks)."""
        outs = []
        for start, stop in engine.chunks(n):
            ex = torch.arange(start, stop, device=engine.device)
            self._captured = [None] * len(self.sites)
            try:
                self.run(engine, self.rows(inputs, ex), ex, compiled=False)
            except _Captured:
                pass
            for j, c in enumerate(self._captured):
                if c is None:
                    self._never_called(j)
            self.counts = [len(c) for c in self._captured]  # tensors per site, in order
            outs.append([t if dtype is None else t.to(dtype) for c in self._captured for t in c])
        self._captured = None
        return tuple(torch.cat(parts) for parts in zip(*outs))
