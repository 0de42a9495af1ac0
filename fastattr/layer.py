"""A call with layer= or model_kwargs=: the space the path runs in, set on the engine per length bucket.

For each bucket (fastattr.padding: one bucket of all rows unless an attention_mask with padding is
trimmed) the engine gets a Forward (fastattr.forward) holding the bucket's model inputs; with a
layer the path's ends are L(inputs) and L(baseline) (computed in an engine session: eval mode,
the replacement hook, the call's precision), so the method sees ordinary points and never knows
the space. Bucket results go back to the caller's rows and columns; padding gets exactly zero.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch

from fastattr import model_io
from fastattr import validation as v
from fastattr.forward import InputForward, LayerForward, ModelKwargs
from fastattr.padding import Bucket, plan

# run(points at the inputs (R, ...), points at the baseline (R, ...), targets (R,) or None) -> Explanation
RunFn = Callable


def check_trim_padding(trim_padding) -> bool:
    if not isinstance(trim_padding, bool):
        raise TypeError(f"trim_padding: expected a bool, got {type(trim_padding).__name__}")
    return trim_padding


def explain_in_space(engine, x: torch.Tensor, b: torch.Tensor, target, layer, model_kwargs,
                     trim_padding: bool, run: RunFn, method: str):
    """The Explanation of inputs x (N, ...) (on the engine's device: token ids, or floating inputs in
    the points' dtype) against baseline b (like x, checked), with the model called through a layer
    and/or with model_kwargs; run(...) computes one bucket's Explanation of `method` on its points."""
    from fastattr.api import UNTIED_METHODS, Explanation

    n = x.shape[0]
    kwargs = ModelKwargs.check(model_kwargs, n, engine.device)
    if kwargs is not None and kwargs.per_example and method in UNTIED_METHODS:
        raise ValueError(f"model_kwargs: method {method!r} evaluates references that belong to no example, so "
                         f"per-example model inputs ({sorted(kwargs.per_example)}) have no row for them; pass "
                         "values shared by all examples (first dimension 1), or use another method")
    module, name = model_io.resolve_layer(engine.model, layer) if layer is not None else (None, None)
    trim_padding = check_trim_padding(trim_padding)
    # targets are checked against N here and against the model's classes in each bucket
    t_all = v.check_target(target, n, sys.maxsize, x.device) if target is not None else None
    tokens = x.shape[1] if x.dim() >= 2 else 1
    mask = kwargs.attention_mask() if kwargs is not None and trim_padding else None
    if mask is not None and (x.dim() < 2 or mask.shape[1] != tokens):
        mask = None  # the mask does not run along the inputs' dimension 1: nothing to cut
    buckets = plan(mask, n, tokens)
    trimming = mask is not None and not bool((mask != 0).all())
    point_dtype = engine.point_dtype(x.dtype if x.is_floating_point() else torch.float32)
    merged = None
    try:
        for bucket in buckets:
            xb, bb = bucket.take(x), bucket.take(b)
            kb = kwargs.select(bucket.rows, bucket.cols, tokens) if kwargs is not None else None
            if module is not None:
                forward = LayerForward(module, name, xb, kb, engine.model_dtype)
                engine.forward = forward
                with engine.session():
                    hx = forward.embed(engine, xb, point_dtype)
                    hb = forward.embed(engine, bb, point_dtype)
            else:
                engine.forward = InputForward(kb)
                hx, hb = xb, bb
            if trimming and (hx.dim() < 2 or hx.shape[1] != bucket.length):
                raise ValueError(f"trim_padding: the {'layer' if module is not None else 'input'} space has shape "
                                 f"{tuple(hx.shape)} for {bucket.length} tokens: no token axis at dimension 1 to cut "
                                 "the padding from; pass trim_padding=False")
            tb = t_all.index_select(0, bucket.rows) if t_all is not None else None
            try:
                e = run(hx, hb, tb)
            except model_io.NonFiniteError as exc:
                if exc.image is None:
                    raise
                raise exc.renamed(int(bucket.rows[exc.image])) from None
            if trimming:
                _zero_padding(e, (mask.index_select(0, bucket.rows) if bucket.cols is None
                                  else bucket.take(mask)) != 0)
            if len(buckets) == 1 and bucket.cols is None:
                return e
            merged = _merge(merged, e, bucket, n, tokens, Explanation)
    finally:
        engine.forward = InputForward()
    return merged


def _zero_padding(e, keep: torch.Tensor) -> None:
    """Padded positions (keep (R, L) False) of e's maps set to exactly 0, delta recomputed."""
    a = e.attributions
    e.attributions = a.masked_fill(~keep.view(*keep.shape, *([1] * (a.dim() - 2))), 0)
    e.delta = e.attributions.flatten(1).sum(1) - (e.scores - e.baseline_scores)


def _merge(merged, e, bucket: Bucket, n: int, tokens: int, explanation_cls):
    """Add bucket e's results into merged (created on the first bucket): maps and per-row values at
    the bucket's rows (and columns), grad_evals summed, extras merged by _merge_extras."""
    a = e.attributions
    if merged is None:
        merged = explanation_cls(
            attributions=a.new_zeros((n, tokens, *a.shape[2:])), target=e.target.new_zeros(n), scores=e.scores.new_zeros(n),
            baseline_scores=e.baseline_scores.new_zeros(n), delta=e.delta.new_zeros(n), grad_evals=0,
            method=e.method, extras={})
        merged.extras = {"buckets": []}
    bucket.put(merged.attributions, a)
    for name in ("target", "scores", "baseline_scores", "delta"):
        getattr(merged, name)[bucket.rows] = getattr(e, name)
    merged.grad_evals += e.grad_evals
    _merge_extras(merged.extras, e.extras, bucket.rows, n)
    merged.extras["buckets"].append({"rows": bucket.rows.cpu(), "length": bucket.length, "extras": e.extras})
    return merged


def _merge_extras(into: dict, extras: dict, rows: torch.Tensor, n: int) -> None:
    """Per-row tensors (first dimension = the bucket's rows) go to the caller's rows of an (N, ...)
    tensor; other values stay when every bucket agrees on them (each bucket's own extras are in
    extras["buckets"])."""
    first = len(into["buckets"]) == 0
    for key, value in extras.items():
        if key == "buckets" or (not first and key not in into):
            continue
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == rows.shape[0]:
            if first:
                into[key] = value.new_zeros((n, *value.shape[1:]))
            if isinstance(into[key], torch.Tensor) and into[key].shape[0] == n:
                into[key][rows.to(value.device)] = value
                continue
        if first:
            into[key] = value
        elif not _same(into[key], value):
            del into[key]  # differs between buckets: see extras["buckets"]
    if not first:
        for key in [k for k in into if k != "buckets" and k not in extras]:
            del into[key]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(
            torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values without a truth value of ==
        return False
