"""fastattr.captum.GuidedBackprop: captum 0.9's GuidedBackprop (the gradient with negative gradients
clipped at every ReLU on the way back) computed by fastattr's engine in chunks.

captum hooks the model's nn.ReLU modules: their input gradient becomes relu(grad). fastattr routes
the activation calls themselves through its guided backward (fastattr/backward/guided.py) while the
engine runs, with max-pool's backward left as it is (as captum), so on models whose ReLUs are nn.ReLU
modules the maps are captum's. Beyond captum: functional calls (F.relu, torch.relu, x.relu(), in
place or not) take the rule too (captum leaves them ordinary: its docs ask for ReLU modules), and so
do the other activations (ReLU6/hardtanh, LeakyReLU, SiLU, GELU, Hardswish, ELU/SELU/CELU:
relu(ordinary grad_in), SPEC.md "IG with guided non-linearity"), which captum leaves ordinary. Nothing
is attached to the model (no hooks to leak if the forward raises).
"""
from __future__ import annotations

import torch
from torch import nn

from fastattr import model_io
from fastattr.backward.guided import guided_activations
from fastattr.captum._attribution import GradientAttribution, captum_entry
from fastattr.captum._core import gradients
from fastattr.captum._inputs import CaptumTypeError, format_inputs, format_output


class GuidedBackprop(GradientAttribution):
    """GuidedBackprop(model), as captum's: model must be an nn.Module."""

    def __init__(self, model):
        if not isinstance(model, nn.Module):
            raise CaptumTypeError("model: GuidedBackprop needs a torch.nn.Module (captum hooks its ReLU modules), "
                                  f"got {type(model).__name__}")
        super().__init__(model)
        self.model = model

    @captum_entry
    def attribute(self, inputs, target=None, additional_forward_args=None, *, channels_last: bool | None = None):
        """Guided gradients of inputs (a tensor (N, ...) or a tuple of them) -> the same structure.
        fastattr extra: channels_last."""
        is_tuple = isinstance(inputs, tuple)
        xs, _ = format_inputs(inputs)
        n = xs[0].shape[0]
        attrs, _ = self._attribute_rows(xs, torch.arange(n, device=xs[0].device), n, target, additional_forward_args,
                                        channels_last)
        return format_output(is_tuple, attrs)

    def _attribute_rows(self, xs, source: torch.Tensor, n_examples: int, target=None, additional_forward_args=None,
                        channels_last=None):
        """attribute() on rows xs (R, ...) of user examples source (R,) -> (maps tuple, None)."""
        model, engine = self._prepare(xs, n_examples, target, additional_forward_args, None, guided_activations,
                                      channels_last)
        grads = gradients(model, engine, xs, source)
        self._remember_format(model, channels_last)
        for g in grads:
            model_io.check_map_finite(g)
        return grads, None
