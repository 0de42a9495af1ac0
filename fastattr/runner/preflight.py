"""Checks before a command writes anything: the model and every option, tried on tiny inputs, so
that a typo fails at once with the option's name instead of after start-up (and, for the runner,
before run.json records options that cannot run)."""
from __future__ import annotations

import torch
from torch import nn

import fastattr
from fastattr.errors import UserError, checking_arguments
from fastattr.models import EXPORT_RECIPE


def _stand_in() -> nn.Module:
    """A 3-channel conv-ReLU-maxpool classifier on 8x8 inputs: every method, rule and backward
    mode runs on it in milliseconds."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net.eval()


def preflight(model: nn.Module, device: torch.device, size: int, target, explain_options: dict) -> None:
    """Raise UserError now for what would fail later: explain_options (method, steps, rule, idgi,
    backward, output, batch_size, method options) on a stand-in model, then the model itself on
    one black (1, 3, size, size) image with `target` (None, an int, or the largest target the run
    will ask for): its output form, number of classes and input shape; and the guided backward on
    a TorchScript model, which would silently be the standard one. Global RNG state is kept."""
    options = {k: v for k, v in explain_options.items() if k not in ("compile", "channels_last", "model_kwargs")}
    if options.get("backward") == "guided" and any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        # measured: guided maps of a scripted or traced CNN equal its standard maps exactly
        raise UserError("backward: 'guided' cannot reach inside a TorchScript model (its activations are no "
                        "Python calls to intercept) and would silently give the standard gradient; save the "
                        f"model with torch.export instead: {EXPORT_RECIPE}")
    with torch.random.fork_rng(devices=[]), checking_arguments():
        fastattr.explain(_stand_in(), torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
                         **options)
        try:
            fastattr.explain(model, torch.zeros(1, 3, size, size, device=device), target, method="vanilla",
                             output=options.get("output", "probability"),
                             backward=options.get("backward", "standard"),
                             channels_last=explain_options.get("channels_last"),
                             precision=explain_options.get("precision"),
                             model_kwargs=explain_options.get("model_kwargs"))
        except AssertionError as exc:
            if not str(exc).startswith("Guard failed"):
                raise
            # torch.export's input check: the program was exported for other image sizes
            raise UserError(f"model: does not take (N, 3, {size}, {size}) inputs ({exc}); an exported program "
                            "takes the shapes it was exported with: use that --size, or export with dynamic "
                            "height and width") from None
