"""Public entry points: fastattr.attribute and fastattr.explain."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from fastattr import model_io
from fastattr import validation as v
from fastattr.backward import BACKWARDS
from fastattr.engine import Engine, select_output
from fastattr.host_checks import rows_equal
from fastattr.methods import METHODS, MethodContext
from fastattr.methods.integrated_gradients import RULES


@dataclass
class Explanation:
    """Result of fastattr.explain for N inputs."""

    attributions: torch.Tensor  # the inputs' shape (N, ...); float32 (float64 for a float64 model)
    target: torch.Tensor  # (N,) int64
    scores: torch.Tensor  # (N,) f_c at the inputs
    baseline_scores: torch.Tensor  # (N,) f_c at the path start
    delta: torch.Tensor  # (N,) sum(map) - (scores - baseline_scores)
    grad_evals: int  # forward+backward passes on real points (padding excluded)
    method: str = ""
    extras: dict = field(default_factory=dict)  # method-specific reports

    @property
    def token_scores(self) -> torch.Tensor:
        """Per-token scores (N, T): the map (N, T, ...) summed over its axes after the token axis
        (the hidden axis of a layer=... map of a token model); padding trimmed away is exactly 0."""
        a = self.attributions
        if a.dim() < 3:
            raise ValueError(f"token_scores: the map has shape {tuple(a.shape)}; per-token scores sum a map "
                             "(N, T, D) over D (attribute a token model at its embeddings with layer=)")
        return a.flatten(2).sum(2)


# Methods that evaluate points belonging to no example of the call (expected_gradients' references):
# they cannot run with per-example model inputs (layer=, model_kwargs= tensors with one row per example).
UNTIED_METHODS = ("expected_gradients",)


def check_call_options(method: str, rule: str, output, backward: str, steps, batch_size,
                       idgi: bool, baseline=None, layer=None) -> tuple[int | None, int | None]:
    """Checks the options explain and Explainer share; returns the checked (steps, batch_size)."""
    v.check_choice(method, "method", METHODS)
    if layer is not None and METHODS[method].images:
        raise ValueError(f"layer: method {method!r} blurs the model's input image over its two spatial axes, "
                         "which has no meaning in a layer's output space; with layer= use 'ig', 'vanilla', "
                         "'guided_ig' or 'neflag'")
    if layer is not None and method in UNTIED_METHODS:
        raise ValueError(f"layer: method {method!r} evaluates references that belong to no example, so they have "
                         "no model inputs to run the layer on; with layer= use 'ig', 'vanilla', 'guided_ig' or "
                         "'neflag'")
    v.check_choice(rule, "rule", RULES)
    model_io.check_output(output)
    v.check_choice(backward, "backward", BACKWARDS)
    steps = v.check_positive_int(steps, "steps", maximum=v.MAX_STEPS)
    batch_size = v.check_positive_int(batch_size, "batch_size")
    spec = METHODS[method]
    if idgi and not spec.path:
        raise ValueError(f"idgi: method {method!r} is not a path method; IDGI applies to path methods")
    if rule != "left" and not spec.rules:
        raise ValueError(f"rule: method {method!r} has no integration rule (rule= is for 'ig')")
    if baseline is not None and not spec.baseline:
        takes = sorted(name for name, sp in METHODS.items() if sp.baseline)
        raise ValueError(f"baseline: method {method!r} has no baseline (its path does not start at one), so "
                         f"baseline= would be ignored; methods with a baseline: {takes}")
    return steps, batch_size


def explain(model: nn.Module, inputs: torch.Tensor, target=None, *, method: str = "ig", baseline=None,
            steps: int | None = None, rule: str = "left", idgi: bool = False, backward: str = "standard",
            output="probability", batch_size: int | None = None, compile: bool = False,
            progress: bool = False, channels_last: bool | None = None, model_dtype: torch.dtype | None = None,
            precision: str | None = None, layer=None, model_kwargs: dict | None = None, trim_padding: bool = True,
            **method_options) -> Explanation:
    """Attribution maps (N, ...) of inputs (N, ...) with their targets, scores and completeness
    delta per input. model_dtype: the dtype a parameter-free model computes in (default: its
    first floating parameter's). precision: None / "fp32" (as the model is), "bf16" or "fp16"
    (autocast a float32 model's forward and backward; maps stay float32, less accurate).
    layer: a submodule (or its dotted name) whose output space the path runs in; inputs may then be
    token ids, the baseline is in input space, maps have the layer output's shape (N, T, D).
    model_kwargs: further model inputs (attention_mask=...); tensors with first dimension N go
    with their example. trim_padding: compute each row at the length its attention_mask gives."""
    v.check_model(model)
    x = v.check_inputs(inputs, layer)
    steps, batch_size = check_call_options(method, rule, output, backward, steps, batch_size, idgi, baseline, layer)
    engine = Engine(model, output=output, batch_size=batch_size, compile=compile, backward=backward,
                    channels_last=channels_last, model_dtype=model_dtype, precision=precision)
    x = prepare_inputs(engine, x)
    b = v.check_baseline_like(baseline, x)
    if layer is None and model_kwargs is None:
        return explain_with_engine(engine, x, b, target, method, steps, rule, idgi, progress, method_options)
    from fastattr.layer import explain_in_space

    return explain_in_space(engine, x, b, target, layer, model_kwargs, trim_padding,
                            lambda xs, bs, t: explain_with_engine(engine, xs, bs, t, method, steps, rule, idgi,
                                                                  progress, method_options), method)


def prepare_inputs(engine: Engine, x: torch.Tensor) -> torch.Tensor:
    """Checked inputs on the engine's device: floating ones in the points' dtype, ids as they are."""
    if x.requires_grad:  # (otherwise detach is a no-op that costs a dispatched op)
        x = x.detach()
    if not x.is_floating_point():
        return x.to(engine.device).contiguous()
    return x.to(device=engine.device, dtype=engine.point_dtype(x.dtype)).contiguous()


def target_column(target, t: torch.Tensor) -> int | None:
    """The one class all examples are explained for, as a Python int, when the caller gave an int
    or there is one example (MethodContext.target_column); None otherwise. t (N,) the checked targets."""
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        return int(target)
    if t.shape[0] == 1:
        return int(t)
    return None


def explain_with_engine(engine: Engine, x: torch.Tensor, b: torch.Tensor, target, method: str,
                        steps: int | None, rule: str, idgi: bool, progress: bool,
                        method_options: dict) -> Explanation:
    """explain's core on checked arguments and a given (possibly reused) engine; x, b (N, ...) in
    the engine's point dtype on its device."""
    spec = METHODS[method]
    v.check_method_options(spec.fn, method, method_options)
    if spec.images and x.dim() != 4:
        raise ValueError(f"inputs: method {method!r} works on images (N, C, H, W) (it blurs over two "
                         f"spatial axes), got shape {tuple(x.shape)}; vanilla, ig, guided_ig and neflag "
                         "take inputs of any rank")
    if x.dim() == 1:  # N examples of one scalar: the methods walk (N, 1) points, the model gets (B,)
        with engine.scalar_inputs():
            e = explain_with_engine(engine, x[:, None], b[:, None], target, method, steps, rule, idgi, progress,
                                    method_options)
        e.attributions = e.attributions[:, 0]
        return e
    evals_before = engine.grad_evals
    engine.fit_batch(math.prod(x.shape[1:]))  # shape math: x[0] is a dispatched op
    n = x.shape[0]
    with engine.session(images=n):  # on exit: a ValueError if any f_c on the path was NaN or inf
        logits = engine.logits(x)  # one forward: the target when none is given, and f_c(x)
        t = v.check_target(target, n, logits.shape[1], x.device)
        if t is None:
            t = logits.argmax(dim=1)
        column = target_column(target, t)
        scores = select_output(logits, t if column is None else column, engine.output)
        model_io.check_scores_finite(scores)
        ctx = MethodContext(engine, x, b, t, scores, steps if steps is not None else spec.default_steps,
                            rule, bool(idgi), progress, target_column=column)
        result = spec.fn(ctx, **method_options)
    attributions = result.attributions.to(x.dtype)
    baseline_scores = result.baseline_scores.to(scores.dtype)
    # A path of zero length (baseline == input, or the method says so) has an exactly zero map and
    # f_c(start) = f_c(x): forward passes of the same point in other chunk compositions can differ
    # by rounding, and a percentile-normalised heatmap would show that noise at full contrast.
    still = None
    if spec.baseline:  # one host loop over x and b (fastattr.host_checks), no torch op when none is still
        equal = rows_equal(x, b)
        if any(equal):
            still = torch.tensor(equal, dtype=torch.bool, device=x.device)
    if result.still is not None:
        still = result.still if still is None else still | result.still
    if still is not None and bool(still.any()):
        attributions = attributions.masked_fill(still.view(-1, *([1] * (x.dim() - 1))), 0)
        baseline_scores = torch.where(still, scores, baseline_scores)
    model_io.check_map_finite(attributions)
    delta = attributions.sum(tuple(range(1, attributions.dim()))) - (scores - baseline_scores)
    return Explanation(attributions, t, scores, baseline_scores, delta,
                       engine.grad_evals - evals_before, method, result.extras)


def attribute(model: nn.Module, inputs: torch.Tensor, target=None, *, method: str = "ig", baseline=None,
              steps: int | None = None, rule: str = "left", idgi: bool = False, backward: str = "standard",
              output="probability", batch_size: int | None = None, compile: bool = False,
              channels_last: bool | None = None, model_dtype: torch.dtype | None = None,
              precision: str | None = None, layer=None, model_kwargs: dict | None = None, trim_padding: bool = True,
              **method_options) -> torch.Tensor:
    """Attribution maps of `inputs` (N, ...) for `target` (None: argmax), the inputs' shape (with
    layer=: the layer output's shape), float32 (float64 for a float64 model)."""
    return explain(model, inputs, target, method=method, baseline=baseline, steps=steps, rule=rule,
                   idgi=idgi, backward=backward, output=output, batch_size=batch_size, compile=compile,
                   channels_last=channels_last, model_dtype=model_dtype, precision=precision, layer=layer,
                   model_kwargs=model_kwargs, trim_padding=trim_padding, **method_options).attributions
