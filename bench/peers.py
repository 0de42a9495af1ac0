"""Adapters that run the peer libraries (captum, PAIR saliency) on a torch model the way their
users would, for side-by-side timings and reference checks."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Softmaxed(nn.Module):
    """model followed by softmax: captum explains the probability like fastattr's default."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(-1)


def pair_call_model_function(model: nn.Module, output: str = "probability"):
    """PAIR call_model_function: HWC numpy batch -> input gradients of f_c (c = args['target'])."""
    import saliency.core as saliency

    def call(images, call_model_args=None, expected_keys=None):
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32).permute(0, 3, 1, 2).requires_grad_(True)
        logits = model(x)
        y = logits.softmax(-1) if output == "probability" else logits
        y = y[:, call_model_args["target"]]
        (g,) = torch.autograd.grad(y.sum(), x)
        return {saliency.base.INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}

    return call


def pair_ig(model: nn.Module, image: torch.Tensor, target: int, steps: int, batch_size: int = 8,
            output: str = "probability") -> np.ndarray:
    """PAIR IntegratedGradients map (H, W, C) for one CHW image, zero baseline."""
    import saliency.core as saliency

    x = image.permute(1, 2, 0).numpy()
    return saliency.IntegratedGradients().GetMask(
        x, pair_call_model_function(model, output), {"target": target}, x_steps=steps,
        x_baseline=np.zeros_like(x), batch_size=batch_size)


def captum_ig(model: nn.Module, images: torch.Tensor, target, steps: int, method: str = "riemann_left",
              internal_batch_size: int | None = 8, output: str = "probability") -> torch.Tensor:
    """captum IntegratedGradients map (N, C, H, W), zero baseline."""
    from captum.attr import IntegratedGradients

    fn = Softmaxed(model) if output == "probability" else model
    return IntegratedGradients(fn).attribute(images, target=target, n_steps=steps, method=method,
                                             internal_batch_size=internal_batch_size)
