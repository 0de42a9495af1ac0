"""fastattr.captum.NoiseTunnel: captum 0.9's NoiseTunnel (smoothgrad, smoothgrad_sq, vargrad) over
fastattr.captum's IntegratedGradients, Saliency, InputXGradient and GuidedBackprop, with captum's noise draws, so the same
torch (and, for draw_baseline_from_distrib, numpy) seed gives the same result.

captum calls the wrapped method once per batch of nt_samples_batch_size noisy copies. Here the
noise is drawn in captum's order (per batch, per input: torch.normal on the input's device), and
the noisy copies of all examples go through one engine walk per group of batches (all of them
unless they exceed GROUP_ELEMENTS), so chunks stay full whatever nt_samples_batch_size is.
The one difference: all noise of a group is drawn before its model calls, so a forward_func that
itself draws random numbers (a torch.randn inside it) sees a different random stream than in captum.
"""
from __future__ import annotations

import numpy as np
import torch

from fastattr.captum._attribution import GradientAttribution, captum_entry
from fastattr.captum._inputs import (CaptumTypeError, CaptumValueError, format_baselines, format_inputs,
                                     format_output)

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
# Noisy copies per engine walk, in elements summed over inputs (2**25 float32 = 128 MB, times about
# 3 for the copies, their (x - b) and the accumulator); captum keeps a whole batch's path in memory.
GROUP_ELEMENTS = 1 << 25


class NoiseTunnel:
    """NoiseTunnel(attribution_method): smoothing over noisy copies of the inputs. A method that is
    not fastattr.captum's IntegratedGradients, Saliency, InputXGradient or GuidedBackprop (captum's
    own methods, fastattr.captum's GradientShap) is handed to captum's own NoiseTunnel, which calls
    its attribute once per batch of copies (when captum is installed)."""

    def __init__(self, attribution_method):
        self.attribution_method = attribution_method
        self._captum = None
        if not (isinstance(attribution_method, GradientAttribution) and hasattr(attribution_method, "_attribute_rows")):
            try:
                from captum.attr import NoiseTunnel as CaptumNoiseTunnel
            except ImportError:
                raise TypeError("attribution_method: fastattr.captum.NoiseTunnel wraps fastattr.captum's "
                                "IntegratedGradients, Saliency, InputXGradient or GuidedBackprop, got "
                                f"{type(attribution_method).__name__} (install captum to wrap other methods)") from None
            self._captum = CaptumNoiseTunnel(attribution_method)
        self.is_delta_supported = attribution_method.has_convergence_delta()
        self._multiply_by_inputs = attribution_method.multiplies_by_inputs
        self.is_gradient_method = True
        self.forward_func = attribution_method.forward_func

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return self.is_delta_supported

    def attribute_future(self):
        raise NotImplementedError("attribute_future is not implemented for NoiseTunnel")

    @captum_entry
    def attribute(self, inputs, nt_type: str = "smoothgrad", nt_samples: int = 5,
                  nt_samples_batch_size: int | None = None, stdevs=1.0, draw_baseline_from_distrib: bool = False,
                  **kwargs):
        """Smoothed maps of inputs (a tensor (N, ...) or a tuple) over nt_samples noisy copies each
        (N(0, stdevs**2) noise); kwargs go to the wrapped method's attribute. With
        return_convergence_delta, also the (N * nt_samples,) deltas of the copies, batch by batch."""
        if self._captum is not None:
            return self._captum.attribute(inputs, nt_type=nt_type, nt_samples=nt_samples,
                                          nt_samples_batch_size=nt_samples_batch_size, stdevs=stdevs,
                                          draw_baseline_from_distrib=draw_baseline_from_distrib, **kwargs)
        want_delta = bool(kwargs.get("return_convergence_delta", False))
        with torch.no_grad():
            batch = nt_samples if nt_samples_batch_size is None else min(nt_samples, nt_samples_batch_size)
            full = nt_samples // batch  # ZeroDivisionError for a batch size of 0, as captum
            is_tuple = isinstance(inputs, tuple)
            xs, _ = format_inputs(inputs)
            if nt_type not in NT_TYPES:
                raise CaptumValueError(f"nt_type: unknown noise tunnel type {nt_type!r}; choose from {list(NT_TYPES)}")
            n = xs[0].shape[0]
            inner = dict(kwargs)
            has_baselines = "baselines" in inner
            baselines = inner.pop("baselines", None)
            expand = _BaselineExpansion(baselines, xs, draw_baseline_from_distrib) if has_baselines else None
            batch_baselines = expand(batch) if expand else None  # captum expands once for all full batches
            sds = _check_stdevs(stdevs, len(xs))
            sizes = [batch] * full + ([nt_samples - full * batch] if nt_samples > full * batch else [])

            sums = sq_sums = None
            deltas = []
            for group in _groups(sizes, n, sum(x[0].numel() for x in xs)):
                noisy, source, bs = [], [], []
                for s in group:
                    noisy.append(tuple(_add_noise(x, sd, s) for x, sd in zip(xs, sds)))
                    source.append(torch.arange(n, device=xs[0].device).repeat_interleave(s))
                    if expand:
                        # the last batch of fewer copies gets its own expansion (a new draw), as in captum
                        bs.append(batch_baselines if s == batch else expand(s))
                rows = tuple(torch.cat(parts) for parts in zip(*noisy))
                call = dict(inner)
                if expand:
                    call["baselines"] = _join_baselines(bs, group, n, xs)
                attrs, delta = self.attribution_method._attribute_rows(rows, torch.cat(source), n, **call)
                if want_delta and self.is_delta_supported:
                    deltas.append(delta)
                start = 0
                for s in group:  # captum's per-batch sums, added batch after batch
                    part = [a[start:start + n * s].reshape(n, s, *a.shape[1:]) for a in attrs]
                    start += n * s
                    ps, pq = [p.sum(dim=1) for p in part], [torch.sum(torch.pow(p, 2), dim=1) for p in part]
                    sums = ps if sums is None else [a + b for a, b in zip(sums, ps)]
                    sq_sums = pq if sq_sums is None else [a + b for a, b in zip(sq_sums, pq)]
            mean = tuple(s * 1 / nt_samples for s in sums)
            mean_sq = tuple(s * 1 / nt_samples for s in sq_sums)
            if nt_type == "smoothgrad":
                out = mean
            elif nt_type == "smoothgrad_sq":
                out = mean_sq
            else:
                out = tuple(q - m * m for m, q in zip(mean, mean_sq))
            attributions = format_output(is_tuple, out)
            if self.is_delta_supported and want_delta:
                return attributions, torch.cat(deltas, dim=0)
            return attributions


def _check_stdevs(stdevs, count: int) -> tuple:
    """captum's checks: a float, or a tuple of one value per input."""
    if isinstance(stdevs, tuple):
        if len(stdevs) != count:
            raise CaptumValueError(f"stdevs: {len(stdevs)} values for {count} inputs")
        return stdevs
    if not isinstance(stdevs, float):
        raise CaptumTypeError(f"stdevs: must be a float (or a tuple of floats, one per input), "
                              f"got {type(stdevs).__name__}")
    return (stdevs,) * count


def _add_noise(x: torch.Tensor, sd: float, copies: int) -> torch.Tensor:
    """captum's _add_noise_to_input: copies noisy rows per example, example-major. The noise is drawn
    exactly as captum draws it (torch.normal with a float32 std tensor on x's device)."""
    shape = (x.shape[0] * copies,) + tuple(x.shape[1:])
    std = torch.tensor(sd, device=x.device)
    # torch.normal(0, std.repeat(shape)) is normal_(0, 1) scaled by std, plus 0 (aten's
    # normal_out_impl): the same draws and the same product as randn * std, without building the
    # full std tensor. (+ 0 only turns a -0.0 draw into +0.0; x + noise does not see the sign.)
    noise = torch.randn(shape, dtype=std.dtype, device=x.device).mul_(std)
    return x.repeat_interleave(copies, dim=0) + noise


class _BaselineExpansion:
    """captum's _expand_and_update_baselines for batches of `copies` noisy copies per example."""

    def __init__(self, baselines, xs, from_distribution: bool):
        self.xs, self.from_distribution = xs, from_distribution
        self.baselines = format_baselines(baselines, xs, from_distribution=from_distribution)

    def __call__(self, copies: int) -> tuple:
        n = self.xs[0].shape[0]
        out = []
        for x, b in zip(self.xs, self.baselines):
            if not isinstance(b, torch.Tensor):
                out.append(b)
            elif self.from_distribution:  # numpy's global RNG, as captum draws
                out.append(b[np.random.choice(b.shape[0], copies * n).tolist()])
            elif b.shape[0] == x.shape[0] and b.shape[0] > 1:
                out.append(b.repeat_interleave(copies, dim=0))
            else:
                out.append(b)
        return tuple(out)


def _join_baselines(per_batch: list[tuple], sizes: list[int], n: int, xs) -> tuple:
    """The baselines of a group's rows: shared when every batch has the same number or one-row
    tensor, else each batch's expanded to its rows (n * copies) and concatenated."""
    out = []
    for j, x in enumerate(xs):
        bs = [b[j] for b in per_batch]
        if all(b is bs[0] for b in bs) and (not isinstance(bs[0], torch.Tensor) or bs[0].shape[0] == 1):
            out.append(bs[0])
            continue
        rows = []
        for b, s in zip(bs, sizes):
            shape = (n * s,) + tuple(x.shape[1:])
            if not isinstance(b, torch.Tensor):
                rows.append(torch.full(shape, b, dtype=x.dtype, device=x.device))
            else:
                rows.append(b.expand(shape) if b.shape[0] == 1 else b)
        out.append(torch.cat(rows))
    return tuple(out)


def _groups(sizes: list[int], n: int, elements_per_example: int) -> list[list[int]]:
    """Consecutive batches (copies per example each) grouped into engine walks of at most
    GROUP_ELEMENTS noisy-copy elements (at least one batch per walk)."""
    groups, current, used = [], [], 0
    for s in sizes:
        cost = n * s * elements_per_example
        if current and used + cost > GROUP_ELEMENTS:
            groups.append(current)
            current, used = [], 0
        current.append(s)
        used += cost
    if current:
        groups.append(current)
    return groups
