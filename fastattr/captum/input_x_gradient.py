"""fastattr.captum.InputXGradient: captum 0.9's InputXGradient (inputs times their gradients) computed
by fastattr's engine in chunks; the guided backward as an extra keyword."""
from __future__ import annotations

import torch

from fastattr import model_io
from fastattr.captum._attribution import GradientAttribution, captum_entry
from fastattr.captum._core import gradients
from fastattr.captum._inputs import format_inputs, format_output


class InputXGradient(GradientAttribution):
    """InputXGradient(forward_func), as captum's: inputs * d score / d inputs."""

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    @captum_entry
    def attribute(self, inputs, target=None, additional_forward_args=None, *, backward: str = "standard",
                  channels_last: bool | None = None):
        """inputs * gradients of inputs (a tensor (N, ...) or a tuple of them) -> the same structure.
        fastattr extras: backward="guided", channels_last."""
        is_tuple = isinstance(inputs, tuple)
        xs, _ = format_inputs(inputs)
        n = xs[0].shape[0]
        attrs, _ = self._attribute_rows(xs, torch.arange(n, device=xs[0].device), n, target, additional_forward_args,
                                        backward, channels_last)
        return format_output(is_tuple, attrs)

    def _attribute_rows(self, xs, source: torch.Tensor, n_examples: int, target=None, additional_forward_args=None,
                        backward: str = "standard", channels_last=None):
        """attribute() on rows xs (R, ...) of user examples source (R,) -> (maps tuple, None).
        Integer and bool inputs are differentiated at their float values (captum raises)."""
        model, engine = self._prepare(xs, n_examples, target, additional_forward_args, None, backward, channels_last)
        grads = gradients(model, engine, xs, source)
        self._remember_format(model, channels_last)
        for g in grads:
            model_io.check_map_finite(g)  # finite scores, NaN/inf gradient: named, not a NaN map
        return tuple(x * g for x, g in zip(xs, grads)), None
