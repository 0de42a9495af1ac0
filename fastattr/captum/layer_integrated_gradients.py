"""fastattr.captum.LayerIntegratedGradients: captum 0.9's LayerIntegratedGradients (signature,
defaults, return forms, exception types) on fastattr's engine; IDGI and the guided backward as extra
keywords.

The path runs in the layers' space: forward_func runs on the user's inputs, the layers' outputs (or
inputs) at the inputs and at the baselines are the path's ends, and every chunk of path points
replaces them through the same LayerForward hooks fastattr's own layer= uses (fastattr.forward); the
path itself is fastattr.captum's IG walk (fastattr.captum._core.integrate), so the points, step
sizes and sums are captum's.
"""
from __future__ import annotations

import torch
from torch import nn

from fastattr import model_io
from fastattr.captum._attribution import GlobalAttribution, captum_entry, convergence_delta, tensorize
from fastattr.captum._core import fit, ig_maps, integrate, make_engine
from fastattr.captum._forward import CallableLayerForward, CallableModel, InputLayout
from fastattr.captum._inputs import (CaptumTypeError, approximation, check_steps_and_method, format_additional_args,
                                     format_baselines, format_inputs, format_target)
from fastattr.captum.integrated_gradients import _internal_batch_size
from fastattr.forward import LayerSite


class LayerIntegratedGradients(GlobalAttribution):
    """LayerIntegratedGradients(forward_func, layer, device_ids=None, multiply_by_inputs=True), as
    captum's: `layer` a module forward_func's model calls (or a list of them; fastattr also takes a
    dotted name when forward_func is an nn.Module); device_ids is kept for captum's DataParallel
    interface (fastattr runs on the device of the model's parameters)."""

    def __init__(self, forward_func, layer, device_ids=None, multiply_by_inputs: bool = True):
        super().__init__(forward_func, multiply_by_inputs)
        layers = layer if isinstance(layer, list) else [layer]
        if not layers:
            raise ValueError("layer: the list of layers is empty; pass a module or a list of modules")
        self._layers = [_check_layer(forward_func, m) for m in layers]
        self.layer = list(self._layers) if isinstance(layer, list) else self._layers[0]  # names resolved
        self.device_ids = device_ids

    @captum_entry
    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  return_convergence_delta: bool = False, attribute_to_layer_input: bool = False, *,
                  idgi: bool = False, backward: str = "standard"):
        """Layer IG of inputs (a tensor (N, ...) or a tuple; token ids welcome) -> per layer its
        output's (or, attribute_to_layer_input, its positional inputs') maps: a tensor, or a tuple
        when the layer holds several tensors; a list over layers when `layer` was a list; plus the
        (N,) convergence delta (input space, as captum) when return_convergence_delta. fastattr
        extras: idgi=True (IDGI on the same points; no (L(x) - L(b)) factor), backward="guided"."""
        xs, _ = format_inputs(inputs)
        bs = tensorize(format_baselines(baselines, xs), xs)
        check_steps_and_method(n_steps, method)
        for name, flag in (("idgi", idgi), ("attribute_to_layer_input", attribute_to_layer_input)):
            if not isinstance(flag, bool):
                raise CaptumTypeError(f"{name}: expected a bool, got {type(flag).__name__}")
        if idgi and not self._multiply_by_inputs:
            raise ValueError("idgi: IDGI maps have no (layer at inputs - layer at baselines) factor; "
                             "multiply_by_inputs=False does not apply to them")
        n = xs[0].shape[0]
        batch = _internal_batch_size(internal_batch_size, n)
        # NCHW throughout (channels_last=False): the layers' tensors are computed as captum computes them
        model = self._adapter(xs, n, target, additional_forward_args, backward, False)
        sites = [LayerSite(m, _layer_name(model, m), inputs=attribute_to_layer_input, whole=True)
                 for m in self._layers]
        engine = make_engine(model, batch, backward)
        forward = CallableLayerForward(model, sites, xs, torch.arange(n, device=xs[0].device))
        engine.forward = forward
        with engine.session():
            hx = forward.embed_all(engine, xs, n)
            hb = forward.embed_all(engine, bs, n)
        for site, a, b in zip([s for s, c in zip(sites, forward.counts) for _ in range(c)], hx, hb):
            if a.shape != b.shape:
                raise ValueError(f"baselines: the layer {site.name!r} holds a tensor of shape {tuple(b.shape)} at the "
                                 f"baselines and {tuple(a.shape)} at the inputs; give baselines the layer maps to "
                                 "the same shape (e.g. token ids of the inputs' length)")
        layout = InputLayout(hx)
        forward.layout = layout
        fit(engine, layout)
        step_sizes, alphas = approximation(method, n_steps)
        totals = integrate(engine, layout, hx, hb, alphas, step_sizes, idgi)
        attrs = ig_maps(totals, hx, hb, self._multiply_by_inputs and not idgi)
        result = _per_layer(attrs, forward.counts, isinstance(self.layer, list))
        if not return_convergence_delta:
            return result
        delta = convergence_delta(self.forward_func, attrs, xs, bs, format_target(target, n),
                                  format_additional_args(additional_forward_args, n),
                                  torch.arange(n, device=xs[0].device))
        return result, delta


def _per_layer(attrs: tuple, counts: list[int], as_list: bool):
    """captum's return form: per layer its `counts` tensors of attrs (a tensor when one, else a
    tuple); a list over layers when the layers came as a list, else the one layer's."""
    out, at = [], 0
    for c in counts:
        out.append(attrs[at] if c == 1 else tuple(attrs[at:at + c]))
        at += c
    return out if as_list else out[0]


def _check_layer(forward_func, layer) -> nn.Module:
    """One entry of `layer`: a module, or a dotted name of forward_func's submodule -> the module."""
    if isinstance(layer, str):
        if not isinstance(forward_func, nn.Module):
            raise TypeError(f"layer: a name ({layer!r}) needs forward_func to be an nn.Module to look it up in; "
                            "pass the module itself")
        return model_io.resolve_layer(forward_func, layer)[0]
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer: expected an nn.Module of the model (or a list of them), got {type(layer).__name__}")
    return layer


def _layer_name(model: CallableModel, layer: nn.Module) -> str:
    """The layer's dotted name in the modules forward_func reaches (its class name if none holds it)."""
    for root in model.found:
        for name, m in root.named_modules():
            if m is layer:
                return name or type(layer).__name__
    return type(layer).__name__
