"""fastattr.captum.GradientShap: captum 0.9's GradientShap (expected gradients: random baselines from
a distribution, Gaussian noise, random path fractions), with captum's random draws and its return
values, computed by fastattr's engine a chunk of samples at a time.

captum runs a NoiseTunnel (smoothgrad, draw_baseline_from_distrib=True) over InputBaselineXGradient
with all N * n_samples samples in one batch: its memory grows with n_samples (EfficientNet-Lite0 at
224x224, 48 samples: about 4 GB). The draws, in captum's order, for samples r = 0..N*n-1 (example r // n):

    numpy : idx_j = np.random.choice(len(baselines_j), N * n) for each tensor baseline j, in input order
    torch : noise_j = torch.normal(0, stdev_j) of shape (N * n, ...), input after input (float32)
    numpy : a = np.random.uniform(0, 1, N * n), as a tensor in the dtype of input 0's noisy copies

    x_r = x_{r // n} + noise_r;  p_r = a_r * x_r + (1 - a_r) * baselines[idx_r]   (captum's arithmetic)
    A = (sum_r (x_r - b_r) * g(p_r)) * 1 / n       (multiply_by_inputs=False: g(p_r) alone)

Here the numpy draws are made up front (N * n numbers), the noise is drawn a chunk at a time with
the same numbers (fastattr/captum/_noise.py) and every point, its gradient and its product are made
per engine chunk, so memory is bounded by the chunk (and the (N, ...) maps), not by n_samples. The
convergence delta per sample, sum(A_r) - (F(x_r) - F(b_r)) (N * n values, captum's order), is
computed per chunk too, from forward passes of the chunk's x_r and b_r.
"""
from __future__ import annotations

import inspect
import numbers

import numpy as np
import torch

from fastattr import model_io
from fastattr.captum._attribution import GlobalAttribution, captum_entry, convergence_delta
from fastattr.captum._core import split_rows, walk_rows
from fastattr.captum._inputs import (CaptumTypeError, CaptumValueError, CaptumZeroDivisionError, format_additional_args,
                                     format_baselines, format_inputs, format_output, format_target)
from fastattr.captum._noise import captum_noise
from fastattr.captum.integrated_gradients import _internal_batch_size


class GradientShap(GlobalAttribution):
    """GradientShap(forward_func, multiply_by_inputs=True), as captum's."""

    @captum_entry
    def attribute(self, inputs, baselines, n_samples: int = 5, stdevs=0.0, target=None,
                  additional_forward_args=None, return_convergence_delta: bool = False, *,
                  internal_batch_size: int | None = None, backward: str = "standard",
                  channels_last: bool | None = None):
        """GradientShap of inputs (a tensor (N, ...) or a tuple) against baselines (a distribution:
        a tensor (M, ...) or a tuple of them, or a callable returning them, called with inputs if it
        takes an argument) -> maps like inputs, and with return_convergence_delta the (N * n_samples,)
        deltas. fastattr extras: internal_batch_size (samples per forward+backward; None: fastattr's
        chunk size), backward="guided", channels_last."""
        bs = _callable_baselines(baselines, inputs)
        is_tuple = isinstance(inputs, tuple)
        xs, _ = format_inputs(inputs)
        n_samples = _check_samples(n_samples)
        bs = format_baselines(bs, xs, from_distribution=True)
        n = xs[0].shape[0]
        source = torch.arange(n, device=xs[0].device).repeat_interleave(n_samples)
        # numpy's draws, in captum's order: the baselines' rows, then (after the noise) the fractions
        idx = [np.random.choice(b.shape[0], n * n_samples).tolist() if isinstance(b, torch.Tensor) else None
               for b in bs]
        sds = _check_stdevs(stdevs, len(xs))
        streams = captum_noise(n * n_samples, [x.shape[1:] for x in xs], sds, xs[0].device)
        fractions = np.random.uniform(0.0, 1.0, n * n_samples)
        attrs, delta = self._walk(xs, bs, idx, streams, fractions, source, n_samples, n, target,
                                  additional_forward_args, return_convergence_delta, internal_batch_size,
                                  backward, channels_last)
        out = format_output(is_tuple, attrs)
        return (out, delta) if return_convergence_delta else out

    def _walk(self, xs, bs, idx, streams, fractions, source, n_samples, n, target, additional_forward_args,
              want_delta, internal_batch_size, backward, channels_last):
        """Every sample through the engine's chunks -> (maps tuple (N, ...), deltas (N * n,) or None)."""
        device = xs[0].device
        # x + noise: the noise is in the default float dtype (captum's std is torch.tensor(stdev))
        noisy_dt = [torch.promote_types(x.dtype, torch.get_default_dtype()) for x in xs]
        coef = torch.tensor(fractions, device=device, dtype=noisy_dt[0])  # captum: dtype of input 0's copies
        point_dt = [_product_dtype(coef.dtype, d, b) for d, b in zip(noisy_dt, bs)]
        templates = tuple(torch.empty((1, *x.shape[1:]), dtype=d, device=device) for x, d in zip(xs, point_dt))
        batch = _internal_batch_size(internal_batch_size, n)
        model, engine = self._prepare(templates, n, target, additional_forward_args, batch, backward, channels_last)
        layout = model.layout
        picked = [torch.tensor(i, dtype=torch.long, device=device) if i is not None else None for i in idx]
        acc = None
        deltas = [] if want_delta else None
        chunk = {}
        target_t = format_target(target, n) if want_delta else None
        extra = format_additional_args(additional_forward_args, n) if want_delta else None

        def point(i):
            e = source.index_select(0, i)
            noisy = tuple(x.index_select(0, e) + s.take(i.shape[0]) for x, s in zip(xs, streams))
            base = tuple(b.index_select(0, p.index_select(0, i)) if p is not None else b for b, p in zip(bs, picked))
            a = coef.index_select(0, i)
            parts = []
            for xn, b in zip(noisy, base):
                ak = a.view(-1, *([1] * (xn.dim() - 1)))
                parts.append(ak * xn + (1.0 - ak) * b)  # captum's _scale_input
            chunk.update(noisy=noisy, base=base)
            return layout.join(parts)

        def consume(i, g):
            nonlocal acc
            grads = tuple(gj.to(d) for gj, d in zip(split_rows(g, layout), point_dt))
            if self._multiply_by_inputs:
                rows = tuple((xn - b) * gj for xn, b, gj in zip(chunk["noisy"], chunk["base"], grads))
            else:
                rows = grads
            if acc is None:
                acc = [torch.zeros((n, *r.shape[1:]), dtype=r.dtype, device=device) for r in rows]
            e = source.index_select(0, i)
            for a, r in zip(acc, rows):
                a.index_add_(0, e, r)
            if deltas is not None:
                deltas.append(convergence_delta(self.forward_func, rows, chunk["noisy"], chunk["base"], target_t,
                                                extra, e))

        walk_rows(model, engine, source, point, consume, "GradientShap")
        self._remember_format(model, channels_last)
        attrs = tuple(a * 1 / n_samples for a in acc)  # captum: sum * 1 / n_samples
        for a in attrs:
            model_io.check_map_finite(a)  # finite scores, NaN/inf gradient: named, not a NaN map
        return attrs, (torch.cat(deltas) if deltas is not None else None)


def _product_dtype(coef: torch.dtype, noisy: torch.dtype, b) -> torch.dtype:
    """dtype of captum's a * x_noisy + (1.0 - a) * b."""
    d = torch.promote_types(coef, noisy)
    if isinstance(b, torch.Tensor):
        d = torch.promote_types(d, torch.promote_types(coef, b.dtype))
    return d


def _callable_baselines(baselines, inputs):
    """captum's _format_callable_baseline and GradientShap's check that the first baseline is a tensor."""
    if callable(baselines):
        baselines = baselines() if len(inspect.signature(baselines).parameters) == 0 else baselines(inputs)
    first = baselines[0] if isinstance(baselines, tuple) and baselines else baselines
    if not isinstance(first, torch.Tensor):
        raise CaptumTypeError("baselines: GradientShap draws baselines from a distribution: give a tensor (M, ...) "
                              f"(or a tuple of them, or a callable returning them), got {type(first).__name__}")
    return baselines


def _check_samples(n_samples) -> int:
    """n_samples: an integer >= 1 (captum: ZeroDivisionError for 0, ValueError below, TypeError for a float)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
        raise CaptumTypeError(f"n_samples: expected an integer, got {type(n_samples).__name__}")
    if n_samples == 0:
        raise CaptumZeroDivisionError("n_samples: must be >= 1, got 0")
    if n_samples < 1:
        raise CaptumValueError(f"n_samples: must be >= 1, got {n_samples}")
    return int(n_samples)


def _check_stdevs(stdevs, count: int) -> tuple:
    """captum's checks: a float, or a tuple of one value per input."""
    from fastattr.captum.noise_tunnel import _check_stdevs as check

    return check(stdevs, count)
