"""What fastattr.captum's attribution classes share: the forward_func, building the adapter and
engine for a call, and captum's convergence delta."""
from __future__ import annotations

import functools

import torch

from fastattr import validation as v
from fastattr.backward import BACKWARDS
from fastattr.backward.guided import guided_activations
from fastattr.captum._core import make_engine
from fastattr.captum._forward import CallableModel, InputLayout
from fastattr.captum._inputs import (CaptumTypeError, CaptumValueError, Target, expand_args, format_additional_args,
                                     format_baselines, format_inputs, format_target)


def captum_entry(fn):
    """An attribute method as captum's @log_usage leaves it: `attribute.__wrapped__` is the plain
    function, which captum's wrappers call as `method.attribute.__wrapped__(method, inputs, **kwargs)`
    (captum's NoiseTunnel around fastattr.captum's classes, GradientShap's inner NoiseTunnel)."""

    @functools.wraps(fn)
    def attribute(self, *args, **kwargs):
        return fn(self, *args, **kwargs)

    return attribute


class GradientAttribution:
    """captum's GradientAttribution interface: forward_func, multiplies_by_inputs,
    has_convergence_delta(), compute_convergence_delta()."""

    def __init__(self, forward_func):
        if not callable(forward_func):
            raise TypeError("forward_func: expected a callable (a model or a function), "
                            f"got {type(forward_func).__name__}")
        self.forward_func = forward_func
        # Learned on the first call: False once forward_func refused channels-last image tensors.
        self._channels_last: bool | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self):
        raise NotImplementedError(f"attribute_future is not implemented for {type(self).__name__}")

    def _prepare(self, xs, n_examples: int, target, additional_forward_args, batch_size, backward: str,
                 channels_last):
        """The adapter and engine for one call on rows xs of n_examples user examples."""
        if backward is not guided_activations:  # GuidedBackprop's own mode (not a backward= name)
            v.check_choice(backward, "backward", BACKWARDS)
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError(f"channels_last: expected None or a bool, got {type(channels_last).__name__}")
        model = CallableModel(self.forward_func, InputLayout(xs), format_target(target, n_examples),
                              format_additional_args(additional_forward_args, n_examples),
                              channels_last=self._channels_last if channels_last is None else channels_last)
        return model, make_engine(model, batch_size, backward)

    def _remember_format(self, model: CallableModel, channels_last) -> None:
        if channels_last is None and model.format_decided:
            self._channels_last = model.channels_last if not model.channels_last else None

    def compute_convergence_delta(self, attributions, start_point, end_point, target=None,
                                  additional_forward_args=None) -> torch.Tensor:
        """captum's completeness gap per example: sum(attributions) - (F(end_point) - F(start_point)),
        forward_func called on the whole batch as captum calls it. -> (N,)"""
        ends, _ = format_inputs(end_point)
        attrs = attributions if isinstance(attributions, tuple) else (attributions,)
        for a, e in zip(attrs, ends):
            if a.shape[0] != e.shape[0]:
                raise CaptumValueError(f"attributions: {a.shape[0]} rows for {e.shape[0]} examples in end_point")
        try:
            starts = format_baselines(start_point, ends)
        except (CaptumValueError, CaptumTypeError) as exc:  # the same checks, named as this method's parameter
            raise type(exc)("start_point:" + str(exc).partition(":")[2]) from None
        n = ends[0].shape[0]
        return convergence_delta(self.forward_func, attrs, ends, starts, format_target(target, n),
                                 format_additional_args(additional_forward_args, n), torch.arange(n))


class GlobalAttribution(GradientAttribution):
    """captum's (forward_func, multiply_by_inputs=True) attributions with a convergence delta
    (IntegratedGradients, GradientShap)."""

    def __init__(self, forward_func, multiply_by_inputs: bool = True):
        super().__init__(forward_func)
        self._multiply_by_inputs = multiply_by_inputs

    @property
    def multiplies_by_inputs(self) -> bool:
        return self._multiply_by_inputs

    def has_convergence_delta(self) -> bool:
        return True


def tensorize(baselines, inputs) -> tuple[torch.Tensor, ...]:
    """captum's _tensorize_baseline: numbers -> full tensors; a 1-row tensor repeated to the batch."""
    out = []
    for b, x in zip(baselines, inputs):
        if not isinstance(b, torch.Tensor):
            out.append(torch.full_like(x, b))
        elif x.shape[0] > b.shape[0] == 1:
            out.append(torch.cat([b] * x.shape[0]))
        else:
            out.append(b)
    return tuple(out)


def convergence_delta(forward_func, attrs, ends, starts, target: Target, extra_args: tuple,
                      rows: torch.Tensor) -> torch.Tensor:
    """sum(attrs) - (F(ends) - F(starts)) per row, with the arithmetic of captum's
    compute_convergence_delta; rows (R,) are the user examples of the rows (targets, extra args)."""
    starts = tensorize(starts, ends)
    args = expand_args(extra_args, rows)

    def scores(points):
        out = forward_func(*points, *args)
        picked = target.pick(out, rows)
        return picked.reshape(picked.shape[0], -1).sum(1)

    with torch.no_grad():
        start_sum = scores(starts)
        end_sum = scores(ends)
        row_sums = [a.reshape(a.shape[0], -1).sum(1) for a in attrs]
        attr_sum = torch.stack([sum(r) for r in zip(*row_sums)])
        return attr_sum - (end_sum - start_sum)
