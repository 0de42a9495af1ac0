"""Channels-last inputs (the engine's default for conv models): only rounding changes. The
tolerance is derived from the data: the channels-last map's error against a float64 run must stay
within a small multiple of the NCHW float32 map's own error (no fixed epsilon)."""
import copy
import warnings

import pytest
import torch
from torch import nn

import fastattr
from fastattr.engine import Engine, uses_conv2d


class Float64(nn.Module):
    """A float64 copy of `model` that takes float32 inputs and returns float32 scores."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(model).double()
        self.eval()

    def forward(self, x):
        return self.model(x.double()).float()


def errors(model, x, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image max error of the NCHW and the channels-last float32 maps against float64."""
    ref = fastattr.attribute(Float64(model), x, channels_last=False, **kw).double()
    out = []
    for cl in (False, True):
        a = fastattr.attribute(model, x, channels_last=cl, **kw).double()
        out.append((a - ref).abs().amax(dim=(1, 2, 3)) / ref.abs().amax(dim=(1, 2, 3)))
    return out[0], out[1]


@pytest.mark.parametrize("kw", [dict(method="vanilla"), dict(method="ig", steps=16),
                                dict(method="ig", steps=16, idgi=True), dict(method="blur_ig", steps=8)],
                         ids=["vanilla", "ig", "idgi", "blur_ig"])
def test_small_cnn_channels_last_error_is_rounding(small_cnn, small_images, kw):
    nchw, cl = errors(small_cnn, small_images, **kw)
    # The reference is float64 end to end (the engine runs a float64 model's softmax in float64
    # too), so this is the float32 maps' own error: up to 2.3e-4 of the max (measured; softmax
    # gradients cancel at p_c near 1), not the 1e-6 of the float32-softmax reference used before.
    assert torch.all(nchw < 1e-3) and torch.all(cl < 1e-3), (nchw, cl)
    assert torch.all(cl <= 4 * nchw + 1e-6), (nchw, cl)


def test_effnet_channels_last_error_is_rounding(effnet, photos):
    """EfficientNet-Lite0's ReLU6 kinks make single pixels sensitive to rounding; the channels-
    last map must be no further from float64 than a few times the NCHW map is."""
    nchw, cl = errors(effnet, photos, method="ig", steps=8, batch_size=8)
    assert torch.all(cl <= 4 * nchw + 1e-4), (nchw, cl)


def test_default_follows_the_model(small_cnn):
    assert uses_conv2d(small_cnn) and Engine(small_cnn).channels_last
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    assert not uses_conv2d(mlp) and not Engine(mlp).channels_last
    with warnings.catch_warnings():  # torch.jit is deprecated, but users still hand us such models
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(small_cnn)  # keeps the class name in original_name only
    assert uses_conv2d(scripted) and Engine(scripted).channels_last
    assert not Engine(small_cnn, channels_last=False).channels_last


def test_maps_come_back_nchw(small_cnn, small_images):
    a = fastattr.attribute(small_cnn, small_images, steps=4, channels_last=True)
    assert a.is_contiguous() and a.shape == small_images.shape
