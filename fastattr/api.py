"""Public entry points: fastattr.attribute and fastattr.explain."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fastattr import validation as v
from fastattr.backward import BACKWARDS
from fastattr.engine import OUTPUTS, Engine, model_device, select_output
from fastattr.methods import METHODS, MethodContext
from fastattr.methods.integrated_gradients import RULES


@dataclass
class Explanation:
    """Result of fastattr.explain for N images."""

    attributions: torch.Tensor  # (N, C, H, W) float32
    target: torch.Tensor  # (N,) int64
    scores: torch.Tensor  # (N,) f_c at the inputs
    baseline_scores: torch.Tensor  # (N,) f_c at the path start
    delta: torch.Tensor  # (N,) sum(map) - (scores - baseline_scores)
    grad_evals: int  # forward+backward passes on real points (padding excluded)
    method: str = ""
    extras: dict = field(default_factory=dict)  # method-specific reports


def check_call_options(method: str, rule: str, output: str, backward: str, steps, batch_size,
                       idgi: bool) -> tuple[int | None, int | None]:
    """Checks the options explain and Explainer share; returns the checked (steps, batch_size)."""
    v.check_choice(method, "method", METHODS)
    v.check_choice(rule, "rule", RULES)
    v.check_choice(output, "output", OUTPUTS)
    v.check_choice(backward, "backward", BACKWARDS)
    steps = v.check_positive_int(steps, "steps")
    batch_size = v.check_positive_int(batch_size, "batch_size")
    spec = METHODS[method]
    if idgi and not spec.path:
        raise ValueError(f"idgi: method {method!r} is not a path method; IDGI applies to path methods")
    if rule != "left" and not spec.rules:
        raise ValueError(f"rule: method {method!r} has no integration rule (rule= is for 'ig')")
    return steps, batch_size


def explain(model: nn.Module, inputs: torch.Tensor, target=None, *, method: str = "ig", baseline=None,
            steps: int | None = None, rule: str = "left", idgi: bool = False, backward: str = "standard",
            output: str = "probability", batch_size: int | None = None, compile: bool = False,
            progress: bool = False, channels_last: bool | None = None, **method_options) -> Explanation:
    """Attribution maps (N, C, H, W) with their targets, scores and completeness delta per image."""
    v.check_model(model)
    x = v.check_inputs(inputs)
    steps, batch_size = check_call_options(method, rule, output, backward, steps, batch_size, idgi)

    device = model_device(model)
    x = x.detach().to(device=device, dtype=torch.float32).contiguous()
    b = v.check_baseline(baseline, x)
    engine = Engine(model, output=output, batch_size=batch_size, compile=compile, backward=backward,
                    channels_last=channels_last)
    return explain_with_engine(engine, x, b, target, method, steps, rule, idgi, progress, method_options)


def explain_with_engine(engine: Engine, x: torch.Tensor, b: torch.Tensor, target, method: str,
                        steps: int | None, rule: str, idgi: bool, progress: bool,
                        method_options: dict) -> Explanation:
    """explain's core on checked arguments and a given (possibly reused) engine; x, b (N, C, H, W)
    float32 on the engine's device."""
    spec = METHODS[method]
    v.check_method_options(spec.fn, method, method_options)
    evals_before = engine.grad_evals
    engine.fit_batch(x[0].numel())
    with engine.session():
        logits = engine.logits(x)  # one forward: the target when none is given, and f_c(x)
        t = v.check_target(target, x.shape[0], logits.shape[1], x.device)
        if t is None:
            t = logits.argmax(dim=1)
        scores = select_output(logits, t, engine.output)
        ctx = MethodContext(engine, x, b, t, scores, steps if steps is not None else spec.default_steps,
                            rule, bool(idgi), progress)
        result = spec.fn(ctx, **method_options)
    attributions = result.attributions.float()
    delta = attributions.flatten(1).sum(1) - (scores - result.baseline_scores)
    return Explanation(attributions, t, scores, result.baseline_scores, delta,
                       engine.grad_evals - evals_before, method, result.extras)


def attribute(model: nn.Module, inputs: torch.Tensor, target=None, *, method: str = "ig", baseline=None,
              steps: int | None = None, rule: str = "left", idgi: bool = False, backward: str = "standard",
              output: str = "probability", batch_size: int | None = None, compile: bool = False,
              channels_last: bool | None = None, **method_options) -> torch.Tensor:
    """Attribution maps of `inputs` (N, C, H, W) for `target` (None: argmax), float32 (N, C, H, W)."""
    return explain(model, inputs, target, method=method, baseline=baseline, steps=steps, rule=rule,
                   idgi=idgi, backward=backward, output=output, batch_size=batch_size, compile=compile,
                   channels_last=channels_last, **method_options).attributions
