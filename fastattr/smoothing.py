"""SmoothGrad over any fastattr method (SPEC.md "SmoothGrad"): the mean (squared=True: the mean
square) of the method's maps of n = nsamples noisy copies of each image, x + N(0, sigma**2) with
sigma = spread * (max(x) - min(x)) per image.

The copies of many images are one batch for the method, so all of them go through one engine walk
(IG: copies x steps points packed into full chunks); images are grouped only to bound memory
(GROUP_ELEMENTS). Random draws (the order a copy-by-copy oracle must follow): images in order
0..N-1, and for image i

    noise = torch.randn((n, *x.shape[1:]), generator=generator, dtype=torch.float32)   # on the CPU
    copy_j = x_i + sigma_i * noise[j].to(x.dtype)       # in the points' dtype

so the maps do not depend on the grouping, batch_size or device (up to float rounding). A method
with its own random draws (neflag) gets the same generator, and draws after the noise of its walk.
"""
from __future__ import annotations

import inspect
import math
import numbers

import torch
from torch import nn

from fastattr import model_io
from fastattr import validation as v
from fastattr.api import Explanation, check_call_options, explain_with_engine, prepare_inputs
from fastattr.engine import Engine, select_output
from fastattr.methods import METHODS, MethodContext
from fastattr.paths import walk_path

# Noisy copies per walk, in elements (2**25 float32 = 128 MB; the method's accumulator and the
# copies' (x - b) take as much again each). 50 copies of 224x224x3 images: 4 images per walk.
GROUP_ELEMENTS = 1 << 25


def check_options(nsamples, spread, squared, generator) -> tuple[int, float, bool]:
    """SmoothGrad's own options; errors name the parameter."""
    if isinstance(nsamples, bool) or not isinstance(nsamples, numbers.Integral):
        raise TypeError(f"nsamples: expected an integer (noisy copies per image), got {type(nsamples).__name__}")
    if nsamples < 1:
        raise ValueError(f"nsamples: must be >= 1, got {nsamples}")
    if isinstance(spread, bool) or not isinstance(spread, numbers.Real):
        raise TypeError(f"spread: expected a number, got {type(spread).__name__}")
    if not (math.isfinite(spread) and spread >= 0):
        raise ValueError(f"spread: must be finite and >= 0 (noise sigma = spread * (max(x) - min(x))), got {spread}")
    if not isinstance(squared, bool):
        raise TypeError(f"squared: expected a bool, got {type(squared).__name__}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator: must be a CPU generator (noise is drawn on the CPU), got {generator.device}")
    return int(nsamples), float(spread), squared


def noisy_copies(x: torch.Tensor, n: int, spread: float,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy copies of each image, image-major, drawn in the documented order.
    x (G, ...) -> (copies (G * n, ...), sigma (G,))."""
    sigma = spread * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    copies = torch.empty((x.shape[0] * n, *x.shape[1:]), dtype=x.dtype, device=x.device)
    # Drawn straight into the copies and scaled in place: the same two roundings as
    # x_i + sigma_i * noise (bit for bit), without three temporaries of the copies' size. Other
    # dtypes/devices: drawn in float32 on the CPU, then converted into place.
    direct = copies.dtype == torch.float32 and copies.device.type == "cpu"
    for i in range(x.shape[0]):
        rows = copies[i * n:(i + 1) * n]
        if direct:
            torch.randn(rows.shape, generator=generator, dtype=torch.float32, out=rows)
        else:
            rows.copy_(torch.randn(rows.shape, generator=generator, dtype=torch.float32))
        rows.mul_(sigma[i]).add_(x[i])
    return copies, sigma


def _gradients(engine: Engine, points: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """g(p) at each point, one forward+backward each and nothing else. (R, ...) -> (R, ...) in the
    points' dtype. (The registered "vanilla" method also evaluates f_c at zeros for every image for
    its delta: one more forward per copy, about a third of a gradient evaluation.)"""
    grads = torch.empty_like(points)

    def rows(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Chunks are consecutive rows (walk_path): views in and out, no index_select/index_put copies."""
        return t.narrow(0, int(i[0]), i.shape[0])

    def keep(i, k, y, g):
        rows(grads, i).copy_(g)

    ctx = MethodContext(engine=engine, inputs=points, baseline=points, targets=targets,
                        scores=torch.zeros(points.shape[0], dtype=points.dtype, device=points.device), steps=1,
                        rule="left", idgi=False)
    walk_path(ctx, 1, lambda i, k: rows(points, i), keep, desc="SmoothGrad")
    return grads


def smoothgrad(model: nn.Module, inputs: torch.Tensor, target=None, *, method: str = "vanilla", nsamples: int = 50,
               spread: float = 0.15, squared: bool = False, generator: torch.Generator | None = None,
               baseline=None, steps: int | None = None, rule: str = "left", idgi: bool = False,
               backward: str = "standard", output="probability", batch_size: int | None = None,
               compile: bool = False, channels_last: bool | None = None, model_dtype: torch.dtype | None = None,
               precision: str | None = None, layer=None, model_kwargs: dict | None = None, trim_padding: bool = True,
               **method_options) -> Explanation:
    """SmoothGrad of `method` for inputs (N, ...): the mean over nsamples noisy copies per image of
    the method's maps (squared: of their squares; PAIR's nsamples, stdev_spread, magnitude) ->
    Explanation with maps like fastattr.explain's. target None: the argmax at the clean image (every
    copy explains that class). generator seeds the noise (and the method's own draws). Other
    keywords are fastattr.explain's, applied to every copy. scores are f_c at the clean images,
    baseline_scores the copies' mean. With layer=, the copies are noisy copies of the layer's
    output L(x) (sigma from its range), drawn per length bucket in bucket order."""
    v.check_model(model)
    x = v.check_inputs(inputs, layer)
    steps, batch_size = check_call_options(method, rule, output, backward, steps, batch_size, idgi, baseline, layer)
    n, spread, squared = check_options(nsamples, spread, squared, generator)
    spec = METHODS[method]
    v.check_method_options(spec.fn, method, method_options)
    if "generator" in inspect.signature(spec.fn).parameters:
        method_options = dict(method_options, generator=generator)  # one seed for the whole map
    engine = Engine(model, output=output, batch_size=batch_size, compile=compile, backward=backward,
                    channels_last=channels_last, model_dtype=model_dtype, precision=precision)
    x = prepare_inputs(engine, x)
    b = v.check_baseline_like(baseline, x)

    def run(xs, bs, t):
        return _smoothgrad(engine, xs, bs, t, method, n, spread, squared, generator, steps, rule, idgi,
                           method_options)

    if layer is None and model_kwargs is None:
        return run(x, b, target)
    from fastattr.layer import explain_in_space

    return explain_in_space(engine, x, b, target, layer, model_kwargs, trim_padding, run, method)


def _smoothgrad(engine: Engine, x: torch.Tensor, b: torch.Tensor, target, method: str, n: int, spread: float,
                squared: bool, generator, steps, rule: str, idgi: bool, method_options: dict) -> Explanation:
    """smoothgrad's core on points x, b (N, ...) of the engine's space (its forward set)."""
    scalars = x.dim() == 1  # N examples of one scalar: walked as (N, 1), the model gets (B,)
    if scalars:
        x, b = x[:, None], b[:, None]
        engine.model_point_shape = ()
    engine.fit_batch(x[0].numel())
    per_example = engine.forward.per_example
    evals_before = engine.grad_evals
    num = x.shape[0]
    # One session: parameters frozen once, and NaN/inf scores anywhere are a ValueError at the end.
    with engine.session():
        if method == "vanilla" and per_example:
            # as below, but the baseline's points differ per example (a layer's output at zeros,
            # further model inputs): one baseline point per example
            rows = torch.arange(num, device=x.device)
            both = engine.logits(torch.cat([x, b]), torch.cat([rows, rows]))
            logits = both[:num]
        elif method == "vanilla":
            # f_c at the clean images (the target when none is given, and scores) and at the
            # baseline (the delta) in one forward pass. vanilla takes no baseline=: b is zeros for
            # every image, so one zero image serves all of them.
            both = engine.logits(torch.cat([x, b[:1]]))
            logits = both[:num]
        else:
            logits = engine.logits(x)  # the target when none is given, and f_c at the clean images
        t = v.check_target(target, num, logits.shape[1], x.device)
        if t is None:
            t = logits.argmax(dim=1)
        scores = select_output(logits, t, engine.output)
        model_io.check_scores_finite(scores)
        maps = torch.empty_like(x)
        if method == "vanilla":
            baseline_scores = select_output(both[num:].expand(num, -1), t, engine.output)
            model_io.check_scores_finite(baseline_scores, "at the baseline")
        else:
            baseline_scores = torch.empty(num, dtype=x.dtype, device=x.device)
        sigmas = torch.empty(num, dtype=x.dtype, device=x.device)
        method_extras = []
        per_walk = max(1, GROUP_ELEMENTS // (n * x[0].numel()))
        for start in range(0, num, per_walk):
            stop = min(start + per_walk, num)
            copies, sigmas[start:stop] = noisy_copies(x[start:stop], n, spread, generator)
            tc = t[start:stop].repeat_interleave(n)
            if per_example:  # each copy gets its example's model inputs
                engine.forward.row_examples = torch.arange(start, stop, device=x.device).repeat_interleave(n)
            try:
                if method == "vanilla":  # gradients only: see _gradients
                    copy_maps = _gradients(engine, copies, tc)
                else:
                    bc = b[start:stop].repeat_interleave(n, dim=0)
                    e = explain_with_engine(engine, copies, bc, tc, method, steps, rule, idgi, False, method_options)
                    copy_maps = e.attributions
                    baseline_scores[start:stop] = e.baseline_scores.view(stop - start, n).mean(1)
                    method_extras.append(e.extras)
            finally:
                engine.forward.row_examples = None
            copy_maps = copy_maps.view(stop - start, n, *x.shape[1:])
            maps[start:stop] = (copy_maps.square() if squared else copy_maps).mean(1)
    if scalars:
        maps = maps[:, 0]
    model_io.check_map_finite(maps)
    delta = maps.reshape(num, -1).sum(1) - (scores - baseline_scores)
    extras = {"nsamples": n, "spread": spread, "squared": squared, "sigma": sigmas, "method_extras": method_extras}
    return Explanation(maps, t, scores, baseline_scores, delta, engine.grad_evals - evals_before, method, extras)
