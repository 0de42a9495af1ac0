"""fastattr.captum.IntegratedGradients: captum 0.9's IntegratedGradients (signature, defaults,
return values, exception types) computed by fastattr's engine; IDGI and the guided backward as
extra keywords."""
from __future__ import annotations

import numbers
import warnings

import torch

from fastattr import model_io
from fastattr.captum._attribution import GlobalAttribution, captum_entry, convergence_delta
from fastattr.captum._core import integrate
from fastattr.captum._inputs import (CaptumTypeError, approximation, bools_as_floats, check_steps_and_method,
                                     format_additional_args, format_baselines, format_inputs, format_output,
                                     format_target)


class IntegratedGradients(GlobalAttribution):
    """IntegratedGradients(forward_func, multiply_by_inputs=True), as captum's: forward_func is any
    callable (a model, a bound method, a lambda), explained as it returns (no softmax is added)."""

    @captum_entry
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  return_convergence_delta: bool = False, *, idgi: bool = False, backward: str = "standard",
                  channels_last: bool | None = None):
        """IG of inputs (a tensor (N, ...) or a tuple of them) -> the same structure of maps, and the
        (N,) convergence delta when return_convergence_delta. fastattr extras: idgi=True (IDGI on
        the same path points; no (x - b) factor), backward="guided" (guided non-linearity),
        channels_last (None: automatic for callables that hold a Conv2d)."""
        is_tuple = isinstance(inputs, tuple)
        xs, _ = format_inputs(inputs)
        bs = format_baselines(baselines, xs)
        check_steps_and_method(n_steps, method)
        n = xs[0].shape[0]
        attrs, delta = self._attribute_rows(
            xs, torch.arange(n, device=xs[0].device), n, baselines=bs, target=target,
            additional_forward_args=additional_forward_args, n_steps=n_steps, method=method,
            internal_batch_size=internal_batch_size, return_convergence_delta=return_convergence_delta,
            idgi=idgi, backward=backward, channels_last=channels_last)
        out = format_output(is_tuple, attrs)
        return (out, delta) if return_convergence_delta else out

    def _attribute_rows(self, xs, source: torch.Tensor, n_examples: int, baselines=None, target=None,
                        additional_forward_args=None, n_steps: int = 50, method: str = "gausslegendre",
                        internal_batch_size=None, return_convergence_delta: bool = False, *, idgi: bool = False,
                        backward: str = "standard", channels_last=None):
        """attribute() on rows xs (R, ...) that belong to user examples source (R,) of n_examples
        (NoiseTunnel's noisy copies; baselines are the rows'). -> (maps tuple, delta (R,) or None)."""
        xs, bs = bools_as_floats(xs, format_baselines(baselines, xs))
        if not isinstance(idgi, bool):
            raise TypeError(f"idgi: expected a bool, got {type(idgi).__name__}")
        if idgi and not self._multiply_by_inputs:
            raise ValueError("idgi: IDGI maps have no (inputs - baselines) factor; multiply_by_inputs=False "
                             "does not apply to them")
        batch = _internal_batch_size(internal_batch_size, n_examples)
        check_steps_and_method(n_steps, method)
        model, engine = self._prepare(xs, n_examples, target, additional_forward_args, batch, backward, channels_last)
        step_sizes, alphas = approximation(method, n_steps)
        totals = integrate(model, engine, xs, bs, source, alphas, step_sizes, idgi)
        self._remember_format(model, channels_last)
        if idgi or not self._multiply_by_inputs:
            attrs = totals
        else:
            attrs = tuple(t * (x - b) for t, x, b in zip(totals, xs, bs))
        for a in attrs:
            model_io.check_map_finite(a)  # finite scores, NaN/inf gradient: named, not a NaN map
        delta = None
        if return_convergence_delta:
            delta = convergence_delta(self.forward_func, attrs, xs, bs, format_target(target, n_examples),
                                      format_additional_args(additional_forward_args, n_examples), source)
        return attrs, delta


def _internal_batch_size(value, n_examples: int) -> int | None:
    """Points per forward+backward: captum's internal_batch_size (None: the engine's default for the
    point size). fastattr packs any number of points per chunk, so a value below the number of
    examples is used as given; captum's fallback for values < 1 (warn, use N) is kept."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CaptumTypeError(f"internal_batch_size: expected an integer or None, got {type(value).__name__}")
    if value < 1:
        warnings.warn("Internal batch size cannot be less than the number of input examples. "
                      f"Defaulting to internal batch size of {n_examples} equal to the number of examples.",
                      stacklevel=3)
        return n_examples
    return int(value)
