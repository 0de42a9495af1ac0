"""A zoo of small models people actually bring, torch.nn only (nothing downloaded), random seeded
weights, eval mode: ResNet-style, MobileNetV2-style, ViT-style (images); an MLP on tabular rows;
1-D convs on (N, C, L) signals; a token mixer on (N, T, D) sequences; 3-D convs on volumes; and
wrappers returning a dict, a tuple or an object with `.logits`."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus the identity, then ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class ResNetStyle(nn.Module):
    """(N, 3, H, W) -> (N, K): stem conv-BN-ReLU-maxpool, one residual block, GAP, linear."""

    def __init__(self, k: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        self.block = BasicBlock(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k))

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand-BN-ReLU6, 3x3 depthwise-BN-ReLU6, 1x1 project-BN, + input."""

    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


class MobileNetV2Style(nn.Module):
    """(N, 3, H, W) -> (N, K): conv-BN-ReLU6 stem (stride 2), one inverted residual, GAP, linear."""

    def __init__(self, k: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                      nn.ReLU6(inplace=True), InvertedResidual(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8, k))

    def forward(self, x):
        return self.head(self.features(x))


class ViTStyle(nn.Module):
    """(N, 3, H, W) -> (N, K): 4x4 patch conv, class token + positions, nn.TransformerEncoder
    (GELU, LayerNorm, pre-norm), LayerNorm, linear head on the class token."""

    def __init__(self, k: int = 10, size: int = 16, dim: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        tokens = (size // 4) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, k)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.encoder(t))[:, 0])


class TabularMLP(nn.Module):
    """(N, D) -> (N, K): Linear-ReLU-Linear-SiLU-Linear with a LayerNorm."""

    def __init__(self, d: int = 12, k: int = 5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 32), nn.SiLU(),
                                 nn.Linear(32, k))

    def forward(self, x):
        return self.net(x)


class Conv1dNet(nn.Module):
    """(N, C, L) -> (N, K): two 1-D convs (ReLU, LeakyReLU) with BatchNorm, GAP, linear."""

    def __init__(self, c: int = 4, k: int = 6):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(c, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
                                 nn.Conv1d(8, 8, 3, padding=1), nn.LeakyReLU(0.1),
                                 nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, k))

    def forward(self, x):
        return self.net(x)


class TokenMixer(nn.Module):
    """(N, T, D) -> (N, K): per-token Linear-GELU, mean over tokens, linear."""

    def __init__(self, d: int = 6, k: int = 4):
        super().__init__()
        self.token = nn.Sequential(nn.Linear(d, 16), nn.GELU())
        self.head = nn.Linear(16, k)

    def forward(self, x):
        return self.head(self.token(x).mean(1))


class Conv3dNet(nn.Module):
    """(N, C, D, H, W) -> (N, K): one 3-D conv, ReLU, GAP, linear."""

    def __init__(self, c: int = 2, k: int = 3):
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(c, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                                 nn.Linear(4, k))

    def forward(self, x):
        return self.net(x)


# -- output wrappers --------------------------------------------------------------------------------

class DictOut(nn.Module):
    """Returns {"logits": model(x), "features": x}: a Hugging Face-style mapping."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return OrderedDict(logits=self.model(x), features=x.flatten(1))


class TupleOut(nn.Module):
    """Returns (model(x), x): logits first, as many detection/auxiliary heads do."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x), x


class Output:
    """An object with a .logits attribute (like transformers' ModelOutput without the mapping)."""

    def __init__(self, logits, hidden):
        self.logits, self.hidden = logits, hidden


class LogitsAttrOut(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return Output(self.model(x), x)


WRAPPERS = {"dict": DictOut, "tuple": TupleOut, "logits-attr": LogitsAttrOut}


# -- the zoo ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]  # one input, without the batch axis
    images: bool  # (C, H, W) inputs: Blur IG applies


ZOO = {
    "resnet": Entry(ResNetStyle, (3, 16, 16), True),
    "mobilenetv2": Entry(MobileNetV2Style, (3, 16, 16), True),
    "vit": Entry(ViTStyle, (3, 16, 16), True),
    "mlp": Entry(TabularMLP, (12,), False),
    "conv1d": Entry(Conv1dNet, (4, 32), False),
    "tokens": Entry(TokenMixer, (5, 6), False),
    "conv3d": Entry(Conv3dNet, (2, 4, 6, 6), False),
}


def make(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Zoo model `name` with weights drawn from `seed` (batch-norm statistics too, so that eval
    and training mode differ), in `dtype`, eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ZOO[name].build()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
            if name == "vit":
                model.cls.normal_(0, 0.5)
                model.pos.normal_(0, 0.5)
    return model.to(dtype).eval()


def inputs(name: str, n: int = 2, seed: int = 1) -> torch.Tensor:
    """(n, *shape) float32 inputs in [0, 1] for zoo model `name`."""
    return torch.rand(n, *ZOO[name].shape, generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict:
    """Everything a call must leave as it was: parameters and buffers (bitwise), requires_grad
    and training flags, hooks, the torch-function mode stack, parameter gradients."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()],
        "grads": [p.grad is None for p in model.parameters()],
        "modes": torch._C._len_torch_function_stack(),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for key in ("requires_grad", "training", "hooks", "grads", "modes"):
        assert after[key] == before[key], key
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        w = after["state"][k]
        assert v.dtype == w.dtype and torch.equal(v, w), f"{k} changed"
