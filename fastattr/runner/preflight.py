"""The model preflight every command (explain, run, eval) goes through before it writes anything:
the model loaded and identified, then it and every option tried on tiny inputs, so that a typo,
a wrong --size for an exported program, a target the model does not have or a backward mode that
cannot reach inside the model fails at once with the option's name instead of after start-up
(and, for run and eval, before run.json records options that cannot run)."""
from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

import fastattr
from fastattr.backward import check_reachable
from fastattr.errors import UserError, checking_arguments


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
    with torch.random.fork_rng(devices=[]), checking_arguments():
        check_reachable(options.get("backward", "standard"), model)  # guided on TorchScript: refused
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


def module_sha256(model: nn.Module) -> str:
    """Fingerprint of a model object's state (names, dtypes, shapes, values)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
    return h.hexdigest()


def load_model_id(model, trust_pickle: bool) -> tuple[nn.Module, dict]:
    """(module, {"model": what it is, "model_sha256": its identity}) for run.json / eval's config:
    'default' and the bundled weights' sha256, a model file by its absolute path as this process
    sees it (a later eval --maps from another folder finds the same file) and its sha256, or an
    nn.Module by its class name and module_sha256."""
    from fastattr.models import default_weights_path, load_model
    from fastattr.runner.shards import file_sha256

    if isinstance(model, nn.Module):
        return model, {"model": type(model).__name__, "model_sha256": module_sha256(model)}
    if model in (None, "default"):
        return load_model("default"), {"model": "default", "model_sha256": file_sha256(default_weights_path())}
    net = load_model(str(model), trust_pickle=trust_pickle)
    return net, {"model": os.path.abspath(str(model)), "model_sha256": file_sha256(model)}


def load_checked(model, *, trust_pickle: bool, device: torch.device, size: int, target,
                 explain_options: dict) -> tuple[nn.Module, dict]:
    """The preflight of every command: the model loaded (load_model_id), moved to `device` and
    checked with `preflight`; -> (module, model id). UserError for anything the user can fix."""
    net, model_id = load_model_id(model, trust_pickle)
    net = net.to(device)
    preflight(net, device, size, target, explain_options)
    return net, model_id
