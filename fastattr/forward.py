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
        # Autocast around the (compiled) call: dynamo traces under the active autocast state and
        # guards on it; the output callable and the output form run in x's dtype afterwards.
        with model_io.autocast(engine.device, engine.autocast_dtype):
            return _compiled()(engine.model, xm, **kw) if engine.compile else engine.model(xm, **kw)


class _Captured(Exception):
    """Raised by the hook once L(inputs) is captured: the rest of the forward is not needed."""


class LayerForward(InputForward):
    """Points in the output space of `layer`: the model runs on its examples' inputs (N, ...) (token
    ids, pixels) and model_kwargs, with the layer's output replaced by the chunk's points."""

    def __init__(self, layer: nn.Module, name: str, inputs: torch.Tensor, kwargs: ModelKwargs | None,
                 model_dtype: torch.dtype | None):
        super().__init__(kwargs)
        self.per_example = True
        self.layer, self.name = layer, name
        if inputs.is_floating_point() and model_dtype is not None:
            inputs = inputs.to(model_dtype)  # pixels for a ViT: no gradient flows to them
        self.inputs = inputs
        self._point: torch.Tensor | None = None  # the chunk's points while the model runs; None: embed
        self._calls = 0
        self._captured: torch.Tensor | None = None

    @contextlib.contextmanager
    def context(self, engine):
        """The replacement hook, registered for one engine session (removed also on error)."""
        handle = self.layer.register_forward_hook(self._hook)
        try:
            yield
        finally:
            handle.remove()

    def _hook(self, module, args, out):
        t = model_io.layer_tensor(out, self.name)
        p = self._point
        if p is None:  # embed(): L(inputs) is all that is needed
            self._captured = t
            raise _Captured
        self._calls += 1
        if self._calls > 1:
            raise ValueError(f"layer: {self.name!r} is called {self._calls} times in one forward of the model (a "
                             "module used in several places); its output is not one space to run a path in. "
                             "Pick a layer the model calls once per forward")
        if p.shape != t.shape:
            raise ValueError(f"layer: {self.name!r} returned shape {tuple(t.shape)} where its output at the inputs "
                             f"had shape {tuple(p.shape)}; the layer's output must depend on its example only")
        # A copy in the layer's real dtype (autocast, a half model): differentiable, and an in-place
        # op of the model on the layer's output never writes into the engine's leaf.
        rep = p.to(t.dtype) if p.dtype != t.dtype else p.clone()
        return model_io.with_layer_tensor(out, rep)

    def call(self, engine, points: torch.Tensor, rows: torch.Tensor | None):
        """The model's raw output with the layer's output replaced by points (B, ...) of rows (B,)."""
        ex = self.examples(rows)
        kw = _NO_KWARGS if self.kwargs is None else self.kwargs.take(ex)
        self._point, self._calls = points, 0
        try:
            inputs = self.inputs.index_select(0, ex)
            with model_io.autocast(engine.device, engine.autocast_dtype):
                raw = _compiled()(engine.model, inputs, **kw) if engine.compile else engine.model(inputs, **kw)
        finally:
            self._point = None
        if self._calls == 0:
            self._never_called()
        return raw

    def _never_called(self):
        raise ValueError(f"layer: {self.name!r} ({type(self.layer).__name__}) is never called in the model's "
                         "forward, so there is no output to attribute to; pick a module the forward runs")

    @torch.no_grad()
    def embed(self, engine, inputs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """L(inputs) for inputs (N, ...) like the examples' (inputs or baseline ids), chunked, in
        `dtype`; the forward stops at the layer. Needs the engine's session (the hook)."""
        outs = []
        if inputs.is_floating_point() and engine.model_dtype is not None:
            inputs = inputs.to(engine.model_dtype)
        for start, stop in engine.chunks(inputs.shape[0]):
            ex = torch.arange(start, stop, device=inputs.device)
            kw = _NO_KWARGS if self.kwargs is None else self.kwargs.take(ex)
            self._captured = None
            try:
                with model_io.autocast(engine.device, engine.autocast_dtype):
                    engine.model(inputs[start:stop], **kw)
            except _Captured:
                pass
            if self._captured is None:
                self._never_called()
            outs.append(self._captured.to(dtype))
        self._captured = None
        return torch.cat(outs)

