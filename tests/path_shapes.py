"""Adversarial path shapes for the adaptive schedule (tests/test_adaptive_zoo.py): tiny models
whose score along IG's straight path or Blur IG's blur path is a chosen function of the path
fraction s: steep steps (narrow bumps of the integrand) at several positions, bumps of the
score, plateaus, linear and smooth pieces; and a ReLU CNN. Each shape model is built for one
image x (N = 1): f(z) = sum_k phi_k(t_k(z)), t_k a path coordinate read from channel k (so the
map is not one direction: each channel carries its own feature), placed so that each feature
sits at the chosen path fractions (PathShapeModel)"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from fastattr.ops.gaussian_blur import gaussian_blur

Warp = Callable[[float], tuple[float, float]]  # path fraction p -> (t at p, dt/ds at p)
Shape = Callable[[Warp], Callable[[torch.Tensor], torch.Tensor]]  # warp -> phi(t), t (N,) -> (N,)


def step(p: float, width: float = 0.004, height: float = 10.0) -> Shape:
    """A steep linear rise centred at path fraction p, `width` wide in s, flat elsewhere: the
    gradient is exactly 0 away from it, as at the first-round points (the integrand: a narrow
    box)."""
    def make(warp):
        t0, dt = warp(p)
        return lambda t: height * ((t - t0) / (width * dt) + 0.5).clamp(0, 1)
    return make


def soft_step(p: float, width: float = 0.004, height: float = 10.0) -> Shape:
    """A sigmoid rise centred at p (the gradient tiny but not 0 away from it)."""
    def make(warp):
        t0, dt = warp(p)
        return lambda t: height * torch.sigmoid((t - t0) / (width * dt))
    return make


def bump(p: float, width: float = 0.01, height: float = 5.0) -> Shape:
    """A narrow bump of the score at p on a unit ramp (the integrand: up, then down)."""
    def make(warp):
        t0, dt = warp(p)
        return lambda t: t + height * torch.exp(-(((t - t0) / (width * dt)) ** 2))
    return make


def plateau(lo: float, hi: float, height: float = 4.0) -> Shape:
    """Flat up to lo and after hi, rising between (zero gradient on most of the path)."""
    def make(warp):
        a, b = warp(lo)[0], warp(hi)[0]
        return lambda t: height * (t.clamp(a, b) - a) / (b - a)
    return make


def linear(slope: float = 3.0) -> Shape:
    """Linear in t (on IG's path: linear along the path, the gradient constant)."""
    return lambda warp: (lambda t: slope * t)


def smooth(freq: float = 3.0) -> Shape:
    return lambda warp: (lambda t: torch.sin(freq * math.pi * t) + 2 * t)


class PathShapeModel(nn.Module):
    """(1, 3, H, W) -> (N, 1): sum over channels k of phi_k(t_k(z)) (see the module docstring).
    IG: t_k(z) = sum(z_k) / sum(x_k), = s on the path. Blur IG: t_k = the channel energy's drop
    (e(x) - e(z)) / (e(x) - e(blur(x, max_sigma))), e = mean(z_k**2): rising from 0 to 1 along
    the blur path (flat while 4 sigma < 1/2: scipy's truncation makes the blur the identity), and
    each shape is placed at path fraction p through the table of t along the path."""

    def __init__(self, x: torch.Tensor, shapes: dict[int, Shape], path: str, max_sigma: float = 4.0):
        super().__init__()
        self.path = path
        if path == "ig":
            self.register_buffer("scale", x[0].sum((1, 2)).double())  # (C,)
            self.phis = {k: make(lambda p: (p, 1.0)) for k, make in shapes.items()}
            return
        s = torch.linspace(0, 1, 4097, dtype=torch.float64)
        energy = gaussian_blur(x.double(), s * max_sigma).square().mean((2, 3))  # (S, C), falling in s
        if bool((energy.diff(dim=0) > 0).any()):
            raise ValueError("path_shapes: the channel energy rises somewhere along the blur path")
        self.register_buffer("e0", energy[0])
        self.register_buffer("drop", energy[0] - energy[-1])
        t = (energy[0] - energy) / self.drop  # (S, C)
        slope = torch.gradient(t, spacing=(s,), dim=0)[0]

        def warp(k):
            def at(p):
                j = int(round(p * (len(s) - 1)))
                return float(t[j, k]), float(slope[j, k])
            return at

        self.phis = {k: make(warp(k)) for k, make in shapes.items()}

    def coordinate(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """t_k(z) (N,) in float64."""
        if self.path == "ig":
            return z[:, k].double().sum((1, 2)) / self.scale[k]
        return (self.e0[k] - z[:, k].double().square().mean((1, 2))) / self.drop[k]

    def forward(self, z):
        out = sum(phi(self.coordinate(z, k)) for k, phi in self.phis.items())
        return out.to(z.dtype)[:, None]


# name -> {channel: shape}; positions avoid the first-round grids (k/3 Riemann, k/4 IDGI)
ZOO: dict[str, dict[int, Shape]] = {
    "step 0.45": {0: step(0.45)},  # the model: a rise between 40% and 50% of the path
    "step 0.12": {0: step(0.12)},
    "step 0.55 / 0.8": {0: step(0.55), 1: step(0.8, height=-6.0)},
    "step 0.97": {0: step(0.97), 2: linear(1.0)},
    "steps 0.2 / 0.5 / 0.73": {0: step(0.2), 1: soft_step(0.5, 0.002, 4.0), 2: step(0.73, 0.008, -7.0)},
    "soft step 0.45": {0: soft_step(0.45)},
    "bump 0.6": {0: bump(0.6), 1: linear(2.0)},
    "bump 0.3 / 0.85": {0: bump(0.3, 0.005), 1: bump(0.85, 0.02, -3.0)},
    "plateau 0.3-0.7": {0: plateau(0.3, 0.7), 1: plateau(0.05, 0.2, -2.0)},
    "plateau then step": {0: plateau(0.04, 0.1), 1: step(0.62)},
    "linear": {0: linear(3.0), 1: linear(-1.0), 2: linear(0.5)},
    "smooth": {0: smooth(3.0), 1: smooth(1.0)},
}


def relu_cnn(seed: int = 0) -> nn.Module:
    """A ReLU CNN (piecewise-constant gradient along any line: many kinks), (N, 3, H, W) -> (N, 5)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    return model.eval()
