"""fastattr.Explainer: one model and one set of options, reused across calls for low latency.

What is kept between calls: the checked options, one Engine (so torch.compile's graph for the
model and chunk shape, compiled on the first call, is reused), the broadcast baseline per input
shape, and on a CUDA device the captured CUDA graphs of the forward+backward of one chunk with
their static input/output buffers (`CudaGraphEngine`). The CUDA-graph path cannot run on the
CPU-only development machines; it is written to the documented torch.cuda.graph recipe
(side-stream warm-up, capture, copy into static inputs, replay) and is only selected when the
model is on a CUDA device.
"""
from __future__ import annotations

import torch
from torch import nn

from fastattr import validation as v
from fastattr.api import Explanation, check_call_options, explain_with_engine, prepare_inputs
from fastattr.engine import Engine, uses_conv2d
from fastattr.methods import METHODS


class CudaGraphEngine(Engine):
    """Engine whose per-chunk forward+backward is a CUDA graph captured once per chunk shape and
    replayed; chunks are padded to batch_size so one graph serves every chunk."""

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        if self.device.type != "cuda":
            raise ValueError(f"cuda_graphs: the model is on {self.device}, CUDA graphs need a CUDA device")
        self.pad = True  # a graph replays fixed shapes only
        self._graphs: dict = {}  # (shape, dtype) -> (graph, x_static, t_static, y_static, g_static)

    def _step(self, xs: torch.Tensor, ts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._value_and_grad(xs, ts)

    def _capture(self, xp: torch.Tensor, tp: torch.Tensor):
        xs = xp.detach().clone().requires_grad_(True)  # static input: replays read from this memory
        ts = tp.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        # Warm-up outside capture (on a side stream, as torch.cuda.graph requires): lazy CUDA and
        # cuDNN initialisation, autotuning and any torch.compile compilation must not be captured.
        with torch.cuda.stream(side), torch.enable_grad():
            for _ in range(3):
                self._step(xs, ts)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.enable_grad(), torch.cuda.graph(graph):
            ys, gs = self._step(xs, ts)
        return graph, xs, ts, ys, gs

    def value_and_grad(self, x: torch.Tensor, targets: torch.Tensor,
                       images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As Engine.value_and_grad (x (B, ...), targets (B,), images (B,) -> (y (B,), g (B, ...))),
        by replaying the captured graph for this chunk shape."""
        n = x.shape[0]
        if n > self.batch_size:
            raise ValueError(f"engine: chunk of {n} points exceeds batch_size={self.batch_size}")
        with self.session(), torch.inference_mode(False):  # as Engine: gradients even in inference mode
            xp, tp = self._padded(x.detach(), targets)
            key = (tuple(xp.shape), xp.dtype)
            if key not in self._graphs:
                self._graphs[key] = self._capture(xp, tp)
            graph, xs, ts, ys, gs = self._graphs[key]
            with torch.no_grad():
                xs.copy_(xp)
                ts.copy_(tp)
            graph.replay()
            # The next replay overwrites the static outputs; callers may keep what they get.
            y, g = ys[:n].detach().clone(), gs[:n].clone()
            self._observe(y, images)
        self.grad_evals += n
        if self.progress is not None:
            self.progress.update(n)
        return y, g


class Explainer:
    """Reusable attribution: Explainer(model, method="ig", idgi=True, steps=32, compile=True), then
    explainer(x (N, ...), target=None) -> Explanation (maps like x). For a 2-d conv model a 3-D x
    is one image (C, H, W); for other models a 3-D x is a batch (N, T, D) or (N, C, L)."""

    def __init__(self, model: nn.Module, method: str = "ig", *, baseline=None, steps: int | None = None,
                 rule: str = "left", idgi: bool = False, backward: str = "standard",
                 output="probability", batch_size: int | None = None, compile: bool = False,
                 cuda_graphs: bool | None = None, progress: bool = False, channels_last: bool | None = None,
                 model_dtype: torch.dtype | None = None, precision: str | None = None, layer=None,
                 model_kwargs: dict | None = None, trim_padding: bool = True, **method_options):
        v.check_model(model)
        self.steps, batch_size = check_call_options(method, rule, output, backward, steps, batch_size, idgi,
                                                    baseline, layer)
        v.check_method_options(METHODS[method].fn, method, method_options)  # fail at construction, not first call
        v.check_baseline_value(baseline)
        self.model, self.method, self.rule, self.idgi = model, method, rule, bool(idgi)
        self.progress, self.method_options = progress, method_options
        from fastattr.engine import model_device

        from fastattr import model_io
        from fastattr.layer import check_trim_padding

        self.device = model_device(model)
        self.image_model = uses_conv2d(model)  # a 3-D input is then one (C, H, W) image
        if layer is not None:
            model_io.resolve_layer(model, layer)  # fail at construction, not on the first call
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs: expected a dict of further model inputs, got {type(model_kwargs).__name__}")
        self.layer, self.model_kwargs = layer, model_kwargs
        self.trim_padding = check_trim_padding(trim_padding)
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda" and layer is None and model_kwargs is None
        elif cuda_graphs and (layer is not None or model_kwargs is not None):
            raise ValueError("cuda_graphs: a captured graph replays static input buffers of the points only; with "
                             "layer= or model_kwargs= pass cuda_graphs=False")
        options = dict(output=output, batch_size=batch_size, compile=compile, backward=backward,
                       channels_last=channels_last, model_dtype=model_dtype, precision=precision)
        self.engine = CudaGraphEngine(model, **options) if cuda_graphs else Engine(model, **options)
        self._baseline = baseline.detach() if isinstance(baseline, torch.Tensor) else baseline
        self._baselines: dict[tuple, torch.Tensor] = {}  # (input shape, dtype) -> broadcast baseline

    def _baseline_for(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        b = self._baselines.get(key)
        if b is None:
            # Read-only by the MethodContext contract, so one tensor per shape serves every call.
            b = self._baselines[key] = v.check_baseline_like(self._baseline, x)
        return b

    def __call__(self, x: torch.Tensor, target=None, *, model_kwargs: dict | None = None) -> Explanation:
        """Maps for x (N, ...) (or one (C, H, W) image of a 2-d conv model) -> Explanation with maps
        like x (N, ...) (with layer=: like the layer's output); target None (argmax), an int or (N,)
        class indices. model_kwargs: this call's further model inputs (added to the constructor's)."""
        if isinstance(x, torch.Tensor) and x.dim() == 3 and self.image_model:
            x = x[None]
        x = prepare_inputs(self.engine, v.check_inputs(x, self.layer))
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs: expected a dict of further model inputs, got {type(model_kwargs).__name__}")
        kwargs = {**(self.model_kwargs or {}), **(model_kwargs or {})} or None
        if kwargs is not None and isinstance(self.engine, CudaGraphEngine):
            raise ValueError("model_kwargs: this Explainer replays CUDA graphs, whose static buffers hold the points "
                             "only; construct it with cuda_graphs=False to pass model inputs")
        b = self._baseline_for(x)
        if self.layer is None and kwargs is None:
            return explain_with_engine(self.engine, x, b, target, self.method, self.steps, self.rule, self.idgi,
                                       self.progress, self.method_options)
        from fastattr.layer import explain_in_space

        return explain_in_space(self.engine, x, b, target, self.layer, kwargs, self.trim_padding,
                                lambda xs, bs, t: explain_with_engine(self.engine, xs, bs, t, self.method, self.steps,
                                                                      self.rule, self.idgi, self.progress,
                                                                      self.method_options), self.method)

    def __repr__(self) -> str:
        kind = type(self.engine).__name__
        return (f"Explainer(method={self.method!r}, idgi={self.idgi}, steps={self.steps}, "
                f"batch_size={self.engine.batch_size}, compile={self.engine.compile}, engine={kind})")
