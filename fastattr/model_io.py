"""Everything about the model a user brings, in one place: the dtype it computes in (and the
autocast precision it may run in), its raw output turned into (N, K) scores, the output forms
(`output=`) that select f_c, the non-finite score check, and the training-mode switch. The
engine calls these; methods never see a raw model."""
from __future__ import annotations

import contextlib
import copy
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Iterator

import torch
from torch import nn

from fastattr import host_checks
from fastattr.host_checks import all_finite, host_all_finite

# output= strings: f_c = softmax(scores)[c], scores[c], sigmoid(scores)[c]. A callable
# raw_output -> (N, K) scores is the fourth form (f_c = scores[:, c], nothing applied after it).
OUTPUTS = ("probability", "logit", "sigmoid")
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# -- dtype -----------------------------------------------------------------------------------------

def check_model_dtype(dtype) -> torch.dtype | None:
    """None or a floating torch.dtype (the dtype a parameter-free model or a wrapped callable
    computes in); errors name `model_dtype`."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"model_dtype: expected None or a torch.dtype, got {type(dtype).__name__}")
    if dtype not in FLOATING:
        raise ValueError(f"model_dtype: expected one of {[str(d) for d in FLOATING]}, got {dtype}")
    return dtype


def first_tensor(model: nn.Module, floating: bool = False) -> torch.Tensor | None:
    """The model's first parameter (floating: first floating one), else its first such buffer, in
    model.parameters() / model.buffers() order; None for a module without any. Walks
    model.modules() directly (model.parameters() builds a de-duplicating generator per call: ~50 us
    per call on the tiny model right after a chunk)."""
    for m in model.modules():
        for t in m._parameters.values():
            if t is not None and (not floating or t.is_floating_point()):
                return t
    for m in model.modules():
        for t in m._buffers.values():
            if t is not None and (not floating or t.is_floating_point()):
                return t
    return None


def model_dtype(model: nn.Module, override: torch.dtype | None = None) -> torch.dtype | None:
    """The floating dtype the model computes in: `override`, else the dtype of its first floating
    parameter or buffer, else None (a parameter-free module: it runs in the points' dtype)."""
    if override is not None:
        return override
    t = first_tensor(model, floating=True)
    return None if t is None else t.dtype


def point_dtype(dtype: torch.dtype | None, input_dtype: torch.dtype) -> torch.dtype:
    """dtype of path points, gradients, accumulators and maps: float64 for a float64 model (or a
    model of unknown dtype given float64 inputs), else float32 (also for fp16/bf16 models: their
    points are cast at the model call, so sums over steps run in float32)."""
    if dtype == torch.float64 or (dtype is None and input_dtype == torch.float64):
        return torch.float64
    return torch.float32


# precision=: the dtype a float32 model's forward (and so the backward of its ops) runs in under
# torch.autocast; None and "fp32": no autocast (the model's own dtype).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision, model_dtype: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """`precision=`: None / "fp32" (no autocast), "bf16" or "fp16" -> the autocast dtype or None.
    Autocast applies to float32 models only (model_dtype float32, or None: a parameter-free model
    running in the points' dtype), and only where torch.autocast supports the dtype on the device
    (it would otherwise warn and silently run in float32). Errors name `precision`."""
    if precision is None:
        return None
    if not isinstance(precision, str):
        raise TypeError(f"precision: expected None or one of {list(PRECISIONS)}, got {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown value {precision!r}; choose from {list(PRECISIONS)} or None")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if model_dtype not in (None, torch.float32):
        raise ValueError(f"precision: {precision!r} autocasts a float32 model, but this model computes in "
                         f"{model_dtype}; autocast would not lower its precision (a float16/bfloat16 model "
                         "already runs in low precision; a float64 one is explained in float64 on purpose). "
                         "Use precision=None, or convert the model with model.float()")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            enabled = getattr(torch.autocast(device_type=device.type, dtype=dtype), "_enabled", True)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"precision: torch.autocast cannot run {dtype} on {device.type} here ({exc}); "
                         "use precision=None") from None
    if caught or not enabled:
        why = str(caught[0].message).splitlines()[0] if caught else "autocast disabled"
        raise ValueError(f"precision: torch.autocast does not support {dtype} on {device.type} in this torch "
                         f"({why}); use precision=None or another precision")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast(device.type, dtype) for a dtype from check_precision; a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# -- raw output -> (N, K) scores -------------------------------------------------------------------

def check_output(output):
    """`output=`: one of OUTPUTS or a callable raw_output -> (N, K) scores; errors name `output`."""
    if callable(output) and not isinstance(output, str):
        return output
    if not isinstance(output, str):
        raise TypeError(f"output: expected one of {list(OUTPUTS)} or a callable raw_output -> (N, K) "
                        f"scores, got {type(output).__name__}")
    if output not in OUTPUTS:
        raise ValueError(f"output: unknown value {output!r}; choose from {sorted(OUTPUTS)} or pass a "
                         "callable raw_output -> (N, K) scores")
    return output


def _describe(obj) -> str:
    """What the model (or an output callable) returned, for error messages."""
    if isinstance(obj, torch.Tensor):
        return f"a {obj.dtype} tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        return f"a {type(obj).__name__} with keys {list(obj.keys())[:8]}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} ({', '.join(type(o).__name__ for o in obj[:4])})"
    return f"a {type(obj).__name__}"


def unwrap(raw) -> torch.Tensor:
    """The score tensor inside a raw model output: the tensor itself, the first element of a
    tuple/list, out["logits"] of a mapping, or out.logits (Hugging Face-style objects)."""
    if isinstance(raw, torch.Tensor):
        return raw
    if isinstance(raw, (tuple, list)) and raw and isinstance(raw[0], torch.Tensor):
        return raw[0]
    if isinstance(raw, Mapping):
        if isinstance(raw.get("logits"), torch.Tensor):
            return raw["logits"]
    elif isinstance(getattr(raw, "logits", None), torch.Tensor):
        return raw.logits
    raise ValueError(f"output: the model returned {_describe(raw)}; expected a (N, K) or (N,) tensor, a "
                     "tuple/list whose first element is one, a mapping with 'logits' or an object with "
                     ".logits. Pass output=<callable raw_output -> (N, K) scores> to pick the scores")


def as_scores(t, n: int, source: str) -> torch.Tensor:
    """A (n, K) or (n,) floating tensor as (n, K) scores; errors name `output` and say what came."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"output: {source} returned {_describe(t)}; expected a (N, K) or (N,) tensor")
    if not t.is_floating_point():
        raise ValueError(f"output: {source} returned {_describe(t)}; scores must be floating point "
                         "(differentiable)")
    if t.dim() not in (1, 2) or t.shape[0] != n:
        raise ValueError(f"output: {source} returned {_describe(t)} for {n} points; expected ({n}, K) or "
                         f"({n},) scores. Pass output=<callable raw_output -> (N, K) scores> to reduce it")
    if t.dim() == 2 and t.shape[1] == 0:  # argmax / gather over no classes would be a raw IndexError
        raise ValueError(f"output: {source} returned {_describe(t)}: no scores (K = 0); expected ({n}, K) "
                         "scores with K >= 1")
    return t[:, None] if t.dim() == 1 else t


def model_scores(raw, n: int, output) -> torch.Tensor:
    """(n, K) scores as the output form sees them (before softmax/sigmoid) from the raw output
    of a model call on n points."""
    if type(raw) is torch.Tensor and isinstance(output, str) and raw.dim() == 2 and raw.shape[0] == n \
            and raw.shape[1] > 0 and raw.is_floating_point():
        return raw  # the usual (n, K) logits: what as_scores(unwrap(raw)) returns, two calls fewer per chunk
    if callable(output) and not isinstance(output, str):
        return as_scores(output(raw), n, "the output callable")
    return as_scores(unwrap(raw), n, "the model")


def select_output(scores: torch.Tensor, targets: torch.Tensor | int, output) -> torch.Tensor:
    """f_c per row: softmax probability, logit, sigmoid, or the callable's score of class
    targets[i] (targets (B,)), or of class `targets` for every row (an int). scores (B, K) -> (B,)."""
    if output == "probability":
        if scores.shape[1] == 1:
            raise ValueError("output: 'probability' is the softmax over the K scores, and the model gives "
                             "one score (K = 1): softmax of one column is always 1, every map would be zero. "
                             "Use output='logit' or output='sigmoid'")
        scores = scores.softmax(dim=-1)
    elif output == "sigmoid":
        scores = scores.sigmoid()
    if isinstance(targets, int):  # one op, and one in backward (a gather's are 3 and 3, same values)
        return scores[:, targets]
    return scores.gather(1, targets[:, None]).squeeze(1)


# -- non-finite scores -----------------------------------------------------------------------------

class FiniteCheck:
    """Collects, per image, whether any f_c the model produced was NaN or inf, without a host sync
    per chunk: an index_add of the scores scaled by 0 into an (N + 1,) buffer adds 0 for a finite
    score and NaN for NaN/inf (0 * inf = NaN), and cannot overflow (a sum of the scores themselves
    could, at 1e38 logits). One op per chunk, in place: on the tiny model of bench/bench_overhead.py
    every small op after a chunk's forward+backward costs microseconds, and keeping the chunks'
    scores for one check at the end was slower still (the small live tensors fragment glibc's
    heap between the chunks' large blocks). `raise_if_bad` syncs once per call. On the host (CPU),
    where reading a flag drains no queue, a chunk's scores are checked by fastattr.host_checks (a
    plain loop, no torch op), and only a chunk with a NaN/inf goes into the buffer."""

    def __init__(self, n: int | None, device):
        self.n, self.device = n, device
        self.bad: torch.Tensor | None = None  # (N + 1,) in the scores' dtype; slot N: not attributed
        self.host = host_checks.HOST and torch.device(device).type == "cpu"  # scores (B,) checked on the host

    def observe(self, y: torch.Tensor, images: torch.Tensor | None) -> None:
        """Record f_c values y (B,) of points of images `images` (B,) (None: not attributed)."""
        if self.host and host_all_finite(y):  # y (B,): a column of the chunk's scores
            return
        if self.bad is None:
            with torch.inference_mode(False):  # updated under inference_mode(False) in the engine
                self.bad = torch.zeros((self.n or 0) + 1, dtype=y.dtype, device=self.device)
        if y.dtype != self.bad.dtype:
            y = y.to(self.bad.dtype)
        if images is None or self.n is None:
            self.bad[-1:] += (y * 0).sum()
        else:
            self.bad.index_add_(0, images, y, alpha=0)

    def raise_if_bad(self) -> None:
        """ValueError naming the first image whose f_c was NaN or inf (one host sync)."""
        if self.bad is None or all_finite(self.bad):
            return
        ok = torch.isfinite(self.bad)
        i = int((~ok).nonzero()[0, 0])
        if i < self.bad.shape[0] - 1:
            raise_nonfinite(i, "at a path point")
        raise_nonfinite(None, "at a point it was evaluated at")


class NonFiniteError(ValueError):
    """A NaN/inf score or gradient of the model, naming the image (an index into the call's inputs;
    None: not attributed). renamed(i) is the same error naming image i instead (a call split into
    length buckets names the caller's index, not the bucket's)."""

    def __init__(self, template: str, image: int | None):
        self.template, self.image = template, image
        at = f" for image {image} (index into inputs)" if image is not None else ""
        super().__init__(template.format(at=at))

    def renamed(self, image: int | None) -> "NonFiniteError":
        return NonFiniteError(self.template, image)


def raise_nonfinite(image: int | None, where: str) -> None:
    raise NonFiniteError(f"model: produced non-finite scores (NaN or inf) {where}{{at}}; attribution maps "
                         "would be NaN or silently zero. Check the model and its inputs", image)


def check_scores_finite(scores: torch.Tensor, where: str = "at the inputs") -> None:
    """ValueError naming the first image whose f_c in scores (N,) is NaN or inf (one host sync)."""
    if all_finite(scores):
        return
    ok = torch.isfinite(scores)
    raise_nonfinite(int((~ok).nonzero()[0, 0]), where)


def check_map_finite(maps: torch.Tensor) -> None:
    """ValueError naming the first image whose map (N, ...) has a NaN or inf (the model's gradient
    was non-finite although its scores were finite)."""
    if all_finite(maps):
        return
    ok = torch.isfinite(maps.reshape(maps.shape[0], -1)).all(1)  # (N,) maps of rank-1 inputs too
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0, 0])
        raise NonFiniteError("model: its gradient of f_c is NaN or inf{at} although its scores are finite; "
                             "the attribution map would be NaN", i)


# -- training mode ---------------------------------------------------------------------------------

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stacklevel() -> int:
    """stacklevel that points a warning at the first frame outside fastattr (and contextlib)."""
    level, frame = 1, sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not (path.startswith(_PACKAGE_DIR) or path == contextlib.__file__):
            return level
        level, frame = level + 1, frame.f_back
    return level


@contextlib.contextmanager
def eval_mode(model: nn.Module, modules: list[nn.Module] | None = None) -> Iterator[None]:
    """The model in eval mode while the block runs (dropout off, batch-norm running statistics
    used and never updated); every submodule's own `training` flag restored afterwards, also on
    error. Warns once per call when the model was in training mode. modules: list(model.modules())
    when the caller has it."""
    flags = [(m, m.training) for m in (model.modules() if modules is None else modules)]
    if [m for m, flag in flags if flag]:  # (a list: any() over a generator resumed it per module)
        warnings.warn("model: is in training mode; fastattr explains it in eval mode (dropout off, "
                      "batch-norm statistics used, never updated) and restores every submodule's training "
                      "flag afterwards. Call model.eval() to silence this", UserWarning, stacklevel=_caller_stacklevel())
        model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            if m.training != flag:
                m.training = flag


# -- layers (layer= attribution) -------------------------------------------------------------------

def resolve_layer(model: nn.Module, layer) -> tuple[nn.Module, str]:
    """`layer=`: a submodule of the model or its dotted name ("bert.embeddings") -> (module, name);
    errors name `layer`."""
    if isinstance(layer, str):
        try:
            module = model.get_submodule(layer) if layer else model
        except AttributeError:
            import difflib

            names = [n for n, _ in model.named_modules() if n]
            near = difflib.get_close_matches(layer, names, n=3) or names[:6]
            raise ValueError(f"layer: the model has no submodule {layer!r}; did you mean one of {near}? "
                             "(names as in model.named_modules())") from None
        name = layer
    elif isinstance(layer, nn.Module):
        name = next((n for n, m in model.named_modules() if m is layer), None)
        if name is None:
            raise ValueError(f"layer: the {type(layer).__name__} given is not a submodule of the model (a copy, "
                             "or a module of another model?); pass model.<path> or its dotted name")
        module = layer
    else:
        raise TypeError(f"layer: expected a submodule of the model or its dotted name, got {type(layer).__name__}")
    if module is model:
        raise ValueError("layer: is the model itself; pass one of its submodules (e.g. the embeddings), whose "
                         "output the path runs in")
    return module, name


def layer_tensor(out, name: str) -> torch.Tensor:
    """The tensor a layer's output holds: the output itself, the first element of a tuple/list, or
    the first value of a mapping (a Hugging Face ModelOutput); errors name `layer`."""
    if isinstance(out, torch.Tensor):
        t = out
    elif isinstance(out, (tuple, list)) and out:
        t = out[0]
    elif isinstance(out, Mapping) and out:
        t = next(iter(out.values()))
    else:
        t = None
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"layer: {name!r} returned {_describe(out)}; expected a tensor, a tuple whose first "
                         "element is one, or a ModelOutput whose first field is one")
    if not t.is_floating_point():
        raise ValueError(f"layer: {name!r} outputs a {t.dtype} tensor; the path runs in the layer's output "
                         "space, which must be floating point (pick the layer after the embedding lookup)")
    return t


def with_layer_tensor(out, t: torch.Tensor):
    """The layer output `out` with its tensor (see layer_tensor) replaced by t, same container type."""
    if isinstance(out, torch.Tensor):
        return t
    if isinstance(out, tuple):
        rest = tuple(out[1:])
        return type(out)(t, *rest) if hasattr(out, "_fields") else type(out)((t, *rest))
    if isinstance(out, list):
        return [t, *out[1:]]
    first = next(iter(out))
    if type(out) is dict:
        return {**out, first: t}
    rebuilt = copy.copy(out)  # a ModelOutput: a dataclass over an OrderedDict; copy and set the field
    rebuilt[first] = t
    return rebuilt
