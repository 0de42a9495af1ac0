"""The engine: the only code that calls the model. Evaluates f_c and its input gradient for packed
chunks of points (images x path points), one forward+backward per chunk. What the model is (its
dtype, its output form, training mode, non-finite scores) is handled by fastattr.model_io."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
from torch import nn

from fastattr import model_io
from fastattr.allocator import tune_for_chunks
from fastattr.forward import InputForward
from fastattr.model_io import OUTPUTS, select_output  # noqa: F401  (re-exported: fastattr.engine.OUTPUTS)

# Chunk sizes measured per device (bench/bench_batch_size.py): on the 2-core CPU, EfficientNet-Lite0
# at 224x224 costs 79/65/54/70/86 ms per point at chunks of 1/4/8/16/32 (cache-resident
# activations at 8), and with fastattr/allocator.py's malloc policy 37/35/30/29/34 ms at chunks of
# 2/4/6/8/16 (2026-12-07); on a GPU larger chunks fill the device (not measured here: no GPU).
DEFAULT_BATCH = {"cpu": 8, "cuda": 64}


# Inputs smaller than 224x224x3 get proportionally larger chunks (same elements per chunk, so
# roughly the same activation memory), up to MAX_BATCH: for cheap models the per-call cost of
# Python and autograd dominates. bench/bench_batch_size.py --tiny (one conv, 32x32, 2 threads):
# 152/104/85/89/99/109 us per point at chunks of 8/16/32/64/128/256.
REFERENCE_POINT_NUMEL = 3 * 224 * 224
MAX_BATCH = 64

_ONES: dict = {}  # (shape, dtype, device) -> ones: the scores' gradient in backward (Engine._ones)


def default_batch_size(device: torch.device, point_numel: int | None = None) -> int:
    """Chunk size (points per forward+backward) for `device` and points of `point_numel` elements
    (None: 224x224x3) when the caller gives none."""
    base = DEFAULT_BATCH.get(device.type, 16)
    if not point_numel or point_numel >= REFERENCE_POINT_NUMEL:
        return base
    return max(base, min(MAX_BATCH, base * REFERENCE_POINT_NUMEL // point_numel))


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    t = model_io.first_tensor(model)
    return torch.device("cpu") if t is None else t.device


def uses_conv2d(model: nn.Module) -> bool:
    """True when the model has a 2-d convolution: the default for channels-last inputs. A
    TorchScript module keeps its Python class name in original_name; a torch.export program's
    module (a torch.fx GraphModule) has aten conv2d / 2-d convolution nodes instead of modules."""
    import torch.fx

    def conv2d_node(n: torch.fx.Node) -> bool:
        name = getattr(getattr(n.target, "overloadpacket", None), "__name__", None)
        # aten.convolution(input, weight, bias, stride, ...): one stride per spatial dimension
        return n.op == "call_function" and (
            name == "conv2d" or (name in ("convolution", "_convolution") and len(n.args[3]) == 2))

    return any(isinstance(m, nn.Conv2d) or getattr(m, "original_name", None) == "Conv2d"
               or (isinstance(m, torch.fx.GraphModule) and any(map(conv2d_node, m.graph.nodes)))
               for m in model.modules())


class Engine:
    """Evaluates f_c(x) and d f_c / dx for chunks of at most `batch_size` points of one model.

    Points come in float32 (float64 for a float64 model; `point_dtype`) and are cast to the
    model's dtype at the model call (differentiable: gradients come back in the points' dtype);
    scores are cast back to the points' dtype before the output form, so softmax, IDGI's output
    differences and every sum run in at least float32. model_dtype overrides the dtype read from
    the parameters (for parameter-free wrappers of callables; None and no floating parameters:
    the model runs in the points' dtype). precision "bf16" / "fp16" runs a float32 model's call
    under torch.autocast (its ops' backward then runs in that dtype too); scores still come back
    in the points' dtype and gradients in the points' dtype (model_io.check_precision)."""

    def __init__(self, model: nn.Module, *, output="probability", batch_size: int | None = None,
                 compile: bool = False, backward: str = "standard", progress=None,
                 channels_last: bool | None = None, model_dtype: torch.dtype | None = None,
                 precision: str | None = None):
        self.model = model
        self.output = model_io.check_output(output)
        self.device = model_device(model)
        self.model_dtype = model_io.model_dtype(model, model_io.check_model_dtype(model_dtype))
        # the autocast dtype of the model call (None: the model's own dtype)
        self.autocast_dtype = model_io.check_precision(precision, self.model_dtype, self.device)
        self.auto_batch = not batch_size  # chosen per input size by fit_batch()
        self.batch_size = int(batch_size) if batch_size else default_batch_size(self.device)
        self.compile = compile
        # A compiled model sees one shape only if the last chunk is padded; eager gains nothing
        # from padding (no shape specialisation), so it would be pure waste there.
        self.pad = compile
        self.channels_last = uses_conv2d(model) if channels_last is None else bool(channels_last)
        self.backward = backward
        self.progress = progress  # a tqdm-like object with .update(n), or None
        self.grad_evals = 0  # real (unpadded) points that got a forward+backward
        self.forward_evals = 0  # real points that got a forward only
        self._depth = 0
        self._saved_flags: list[tuple[nn.Parameter, bool]] = []
        self._backward_ctx = None
        self._eval_ctx = None
        self._check: model_io.FiniteCheck | None = None
        # How the model is called (fastattr.forward): its input space, or a layer's output space
        # with per-example model inputs. Set per call by fastattr.layer; entered with the session.
        self.forward = InputForward()
        self._forward_ctx = None
        # The shape one point has for the model when it differs from the methods' points: () for
        # rank-1 inputs (N scalars), which the methods walk as (N, 1) (scalar_inputs()).
        self.model_point_shape: tuple[int, ...] | None = None

    def point_dtype(self, input_dtype: torch.dtype = torch.float32) -> torch.dtype:
        """dtype of points, gradients and maps for inputs of `input_dtype` (model_io.point_dtype)."""
        return model_io.point_dtype(self.model_dtype, input_dtype)

    def fit_batch(self, point_numel: int) -> None:
        """Size the chunks for points of `point_numel` elements, unless the caller fixed them."""
        if self.auto_batch:
            self.batch_size = default_batch_size(self.device, point_numel)

    # -- model call -------------------------------------------------------------------------
    def in_model_format(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, ...) in the memory format the model is fed (same values): channels-last for 4-D
        points of a channels_last engine. Points a method builds from such tensors by element-wise
        ops are already in it, so the model call copies nothing (bench/bench_overhead.py)."""
        if self.channels_last and x.dim() == 4 and not x.is_contiguous(memory_format=torch.channels_last):
            # Convolutions run faster on channels-last activations (oneDNN on CPU: EfficientNet-
            # Lite0 forward+backward at batch 8 took 2.08 s vs 2.52 s per 32 points, measured
            # interleaved here); the copy is differentiable, and gradients come back channels-last.
            # It changes convolution rounding (a few float32 ulps), which can move gradients at
            # ReLU6 kinks; channels_last=False reproduces NCHW results bit for bit.
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _logits(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) scores as the output form sees them, in x's dtype, for points x (B, ...) of the
        call's rows `rows` (B,) (their examples' model inputs; fastattr.forward)."""
        raw = self.forward.call(self, x, rows)
        scores = model_io.model_scores(raw, x.shape[0], self.output)
        return scores if scores.dtype == x.dtype else scores.to(x.dtype)

    @contextlib.contextmanager
    def scalar_inputs(self) -> Iterator["Engine"]:
        """Rank-1 inputs (N,), N examples of one scalar: while active, the methods' (B, 1) points reach
        the model as (B,) (its own input form) and gradients come back (B, 1)."""
        old, self.model_point_shape = self.model_point_shape, ()
        try:
            yield self
        finally:
            self.model_point_shape = old

    def _value_and_grad(self, xs: torch.Tensor, ts: torch.Tensor | int,
                        rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """f_c and its gradient at the leaf xs; an output that does not depend on xs has gradient
        exactly zero (autograd would raise "does not require grad" / "unused input")."""
        try:
            y = select_output(self._logits(xs, rows), ts, self.output)
        except RuntimeError as exc:
            if "leaf Variable that requires grad" not in str(exc):
                raise
            # The model writes into its input in place, which autograd refuses on the leaf: hand
            # it a copy (same numbers; the check runs before the write, so xs is unchanged).
            y = select_output(self._logits(xs.clone(), rows), ts, self.output)
        if not y.requires_grad:
            return y, torch.zeros_like(xs)
        # d sum(y) / d xs with a cached ones vector as y's gradient: the same numbers as
        # backward of y.sum(), one op and one graph node fewer per chunk
        (g,) = torch.autograd.grad(y, xs, grad_outputs=self._ones(y), allow_unused=True, materialize_grads=True)
        return y, g

    @staticmethod
    def _ones(y: torch.Tensor) -> torch.Tensor:
        """ones like y (B,), shared by all engines (autograd only reads grad_outputs): an engine is
        made per call, and a new ones per call was one more op."""
        key = (y.shape, y.dtype, y.device)
        ones = _ONES.get(key)
        if ones is None:
            if len(_ONES) >= 64:  # chunk sizes vary little; a bound all the same
                _ONES.clear()
            with torch.inference_mode(False):
                ones = _ONES[key] = torch.ones(y.shape, dtype=y.dtype, device=y.device)
        return ones

    def _padded(self, x: torch.Tensor, targets: torch.Tensor | int | None,
                pad_to: int = 0) -> tuple[torch.Tensor, torch.Tensor | int | None]:
        """x (B, ...) and targets (B,) (or None, or one class for all: an int) with their last row
        repeated up to the chunk size the engine pads to (the batch size when compiled, else
        pad_to); unchanged when B reaches it."""
        n = x.shape[0]
        size = self.batch_size if self.pad else pad_to
        if n >= size:
            return x, targets
        extra = size - n
        if n == 1:  # copies of one row: one expand (a cat of views was 3 ops), made contiguous below
            x = x.expand(size, *x.shape[1:])
            if not (self.channels_last and x.dim() == 4):  # in_model_format copies it anyway
                x = x.contiguous()
        else:
            x = torch.cat([x, x[-1:].expand(extra, *x.shape[1:])])
        if isinstance(targets, torch.Tensor):
            targets = torch.cat([targets, targets[-1:].expand(extra)])
        return x, targets

    def _padded_rows(self, rows: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """rows (B,) padded to n like _padded pads the points (the last row repeated)."""
        if rows is None or rows.shape[0] == n:
            return rows
        return torch.cat([rows, rows[-1:].expand(n - rows.shape[0])])

    # -- session: parameters frozen, eval mode, backward mode installed ----------------------
    def session(self, images: int | None = None) -> contextlib.AbstractContextManager["Engine"]:
        """Parameters' requires_grad off (no parameter gradients), the model in eval mode and the
        backward mode active; all restored on exit, also on error. Re-entrant: inside a session
        another is a no-op (a null context: the generator machinery of a nested one was five
        Python calls, and a walk nests two). The outermost session checks once, on normal exit,
        that every f_c the model produced was finite (ValueError naming the image; `images`: how
        many images the points' `images=` index)."""
        if self._depth > 0:
            return contextlib.nullcontext(self)
        return self._session(images)

    @contextlib.contextmanager
    def _session(self, images: int | None) -> Iterator["Engine"]:
        if self._depth == 0:
            from fastattr.backward import backward_context

            if self.device.type == "cpu":  # freed chunk memory kept for the next chunk (fastattr.allocator)
                tune_for_chunks()

            self._check = model_io.FiniteCheck(images, self.device)
            # one walk of the modules for both the parameter flags and the training flags (each
            # model.parameters() walk cost ~50 us per call on the tiny model, caches cold); a shared
            # parameter appears twice, both entries with its own flag
            modules = list(self.model.modules())
            self._saved_flags = [(p, p.requires_grad) for m in modules for p in m._parameters.values()
                                 if p is not None]
            for p, _ in self._saved_flags:
                p.requires_grad_(False)
            try:  # each context is kept only once entered, so _close exits exactly those
                ctx = model_io.eval_mode(self.model, modules)
                ctx.__enter__()
                self._eval_ctx = ctx
                ctx = backward_context(self.backward, self.model)
                ctx.__enter__()
                self._backward_ctx = ctx
                ctx = self.forward.context(self)
                ctx.__enter__()
                self._forward_ctx = ctx
            except BaseException:
                self._close(*sys.exc_info())
                raise
        self._depth += 1
        ok = False
        try:
            yield self
            ok = True
        finally:
            self._depth -= 1
            if self._depth == 0:
                check, self._check = self._check, None
                self._close(None, None, None)
                if ok:
                    check.raise_if_bad()

    def _close(self, *exc) -> None:
        try:
            if self._forward_ctx is not None:
                self._forward_ctx.__exit__(*exc)
        finally:
            self._forward_ctx = None
            self._close_backward(*exc)

    def _close_backward(self, *exc) -> None:
        try:
            if self._backward_ctx is not None:
                self._backward_ctx.__exit__(*exc)
        finally:
            self._backward_ctx = None
            try:
                if self._eval_ctx is not None:
                    self._eval_ctx.__exit__(*exc)
            finally:
                self._eval_ctx = None
                self._restore_flags()

    def _restore_flags(self) -> None:
        for p, flag in self._saved_flags:
            p.requires_grad_(flag)
        self._saved_flags = []

    def _observe(self, y: torch.Tensor, images: torch.Tensor | None) -> None:
        if self._check is not None:
            self._check.observe(y, images)

    # -- evaluation --------------------------------------------------------------------------
    def chunks(self, total: int) -> Iterator[tuple[int, int]]:
        """(start, stop) of consecutive chunks of at most batch_size points covering range(total)."""
        for start in range(0, total, self.batch_size):
            yield start, min(start + self.batch_size, total)

    def value_and_grad(self, x: torch.Tensor, targets: torch.Tensor | int,
                       images: torch.Tensor | None = None, pad_to: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """f_c and its gradient for one chunk. x (B, ...) with B <= batch_size, targets (B,) (or
        an int: one class for every point),
        images (B,) the image each point belongs to (names it if its score is NaN/inf) ->
        (y (B,), g (B, ...)) in x's dtype. One forward+backward; no parameter gradients. pad_to:
        a smaller chunk is padded to that many points (its last point repeated, not counted):
        CPU kernels take another path for a batch of 1 (last bits differ from batches of 2-8)."""
        n = x.shape[0]
        if n > self.batch_size:
            raise ValueError(f"engine: chunk of {n} points exceeds batch_size={self.batch_size}")
        if self._depth == 0:  # a chunk on its own; walks hold one session for all their chunks
            with self.session():
                return self.value_and_grad(x, targets, images, pad_to)
        # inference_mode(False): a caller inside torch.inference_mode() (or no_grad) still gets
        # gradients. Entered only when needed: two Python context managers per chunk otherwise.
        if torch.is_inference_mode_enabled() or not torch.is_grad_enabled():
            with torch.inference_mode(False), torch.enable_grad():
                y, g, padded = self._chunk(x, targets, images, pad_to)
        else:
            y, g, padded = self._chunk(x, targets, images, pad_to)
        self.grad_evals += n
        if self.progress is not None:
            self.progress.update(n)
        return y, (g[:n] if padded else g)

    def _chunk(self, x, targets, images, pad_to) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """value_and_grad's chunk with grad mode on and inference mode off: (y, g, padded), y and g
        still with any padding rows. (Every dispatched op here costs microseconds on a tiny model,
        after a chunk's forward and backward have evicted the caches: no op a plain chunk does not
        need.)"""
        n = x.shape[0]
        xp, tp = self._padded(x, targets, pad_to) if self.pad or pad_to > n else (x, targets)
        if xp.is_inference():  # clone(): an inference tensor becomes one autograd can record
            xp = xp.clone()
        if isinstance(tp, torch.Tensor) and tp.is_inference():
            tp = tp.clone()
        xp = xp.detach().requires_grad_(True)  # a fresh leaf; the caller's tensor is untouched
        rows = self._padded_rows(images, xp.shape[0]) if self.forward.per_example else None
        y, g = self._value_and_grad(xp, tp, rows)
        padded = xp.shape[0] != n
        y = y[:n].detach() if padded else y.detach()
        if self._check is not None:
            self._check.observe(y, images)
        return y, g, padded

    def logits(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Model scores as the output form sees them (before softmax/sigmoid), for any number of
        points, chunked, no graph. x (P, ...) -> (P, K) in x's dtype (float32 or float64). rows
        (P,): the row of the call's inputs each point belongs to (None: point p is row p)."""
        outs = []
        total = x.shape[0]
        with torch.no_grad(), self.session():
            for s, e in self.chunks(total):
                # a lone point goes with a copy: a batch of 1 rounds differently (value_and_grad)
                xc, _ = self._padded(x if e - s == total else x[s:e], None, 2 if self.batch_size > 1 else 0)
                rc = None
                if self.forward.per_example:  # the rows pick the points' model inputs
                    rc = torch.arange(s, e, device=x.device) if rows is None else rows[s:e]
                    rc = self._padded_rows(rc, xc.shape[0])
                out = self._logits(xc, rc)
                outs.append(out if xc.shape[0] == e - s else out[: e - s])
        self.forward_evals += x.shape[0]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def value(self, x: torch.Tensor, targets: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """f_c at any number of points, forward only; NaN/inf is a ValueError (naming images[p],
        or the row of x when called outside a session). x (P, ...), targets (P,), images (P,) -> (P,)."""
        n = None
        if self._depth == 0 and images is None:  # standalone: name the row of x
            images, n = torch.arange(x.shape[0], device=x.device), x.shape[0]
        with self.session(images=n):
            y = select_output(self.logits(x, images), targets, self.output)
            self._observe(y, images)
        return y
