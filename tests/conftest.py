"""Shared fixtures: small deterministic CNNs (fast, exact comparisons) and the bundled pretrained
EfficientNet-Lite0 with the bundled photos (real-model checks, few steps)."""
import os

import pytest
import torch
from torch import nn

# 2 threads as on CI; FASTATTR_TEST_THREADS=1 when several suites share the 2 cores (spinning
# OpenMP threads of concurrent processes slow every one of them down many times over).
torch.set_num_threads(int(os.environ.get("FASTATTR_TEST_THREADS", "2")))


def make_small_cnn(seed: int = 0, num_classes: int = 10, pool: str = "max") -> nn.Module:
    """Conv-ReLU-MaxPool-Conv-ReLU-GAP-Linear on (N, 3, H, W), random weights, eval mode."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.eval()


class Softmax(nn.Module):
    """model followed by softmax: references (captum) explain the probability like fastattr."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(dim=-1)


@pytest.fixture
def small_cnn() -> nn.Module:
    return make_small_cnn()


@pytest.fixture
def small_images() -> torch.Tensor:
    """(4, 3, 16, 16) images in [0, 1]."""
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def effnet() -> nn.Module:
    from fastattr.models import load_default_model

    return load_default_model()


@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    """The bundled photos as one (N, 3, 224, 224) batch in [0, 1]."""
    from fastattr.images import bundled_images

    return torch.stack(list(bundled_images().values()))
