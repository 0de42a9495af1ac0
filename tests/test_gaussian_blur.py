"""fastattr::gaussian_blur against scipy.ndimage.gaussian_filter (mode='constant', truncate=4),
its exact sigma-derivative against central differences, opcheck, and the CUDA source compiling."""
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from scipy import ndimage

from fastattr.kernels.gaussian_blur import gaussian_blur_ref
from fastattr.ops._library import has_kernel
from fastattr.ops.gaussian_blur import gaussian_blur

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGMAS = [0.0, 0.3, 1.0, 5.5, 50.0, 80.0]


def scipy_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Oracle: scipy per (image, channel) plane, float64. x (N, C, H, W) -> (N, C, H, W)."""
    a = x.double().numpy()
    out = np.stack([np.stack([ndimage.gaussian_filter(p, [sigma, sigma], mode="constant", truncate=4.0)
                              for p in img]) for img in a])
    return torch.from_numpy(out)


def images(n, c, h, w, seed=0, dtype=torch.float32):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_cpu_kernel_is_the_cpp_one():
    # The C++ extension provides the CPU kernel; the reference is only the no-extension fallback.
    from fastattr.ops._library import HAS_C

    if not HAS_C:
        pytest.skip("fastattr._C not built")
    assert has_kernel("gaussian_blur", "CPU")
    x = images(1, 1, 5, 5)
    assert torch.ops.fastattr.gaussian_blur.default._schema.name == "fastattr::gaussian_blur"
    out, d = torch.ops.fastattr.gaussian_blur(x, torch.tensor([1.0], dtype=torch.float64),
                                              torch.zeros(1, dtype=torch.long), False)
    assert out.shape == (1, 1, 5, 5) and d.numel() == 0


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_equals_scipy(sigma, channels):
    x = images(2, channels, 31, 47, seed=channels)
    want = scipy_blur(x, sigma)
    got = gaussian_blur(x, [sigma])
    assert got.shape == x.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    ref, _ = gaussian_blur_ref(x, torch.full((2,), sigma, dtype=torch.float64), torch.arange(2), False)
    torch.testing.assert_close(ref.double(), want, atol=1e-6, rtol=0)


def test_float64_matches_scipy_tightly():
    x = images(1, 2, 19, 23, dtype=torch.float64)
    for s in SIGMAS:
        torch.testing.assert_close(gaussian_blur(x, [s]), scipy_blur(x, s), atol=1e-12, rtol=0)


def test_pairs_and_all_sigmas_layout():
    # index=None: every image at every sigma, image-major; explicit pairs pick (image, sigma).
    x = images(3, 3, 12, 9, seed=4)
    sig = [0.0, 0.7, 3.0, 40.0]
    full = gaussian_blur(x, sig)
    assert full.shape == (12, 3, 12, 9)
    for n in range(3):
        for j, s in enumerate(sig):
            torch.testing.assert_close(full[n * 4 + j].double(), scipy_blur(x[n:n + 1], s)[0], atol=1e-5, rtol=0)
    idx = torch.tensor([2, 0, 2, 1])
    ps = torch.tensor([3.0, 0.0, 0.7, 40.0], dtype=torch.float64)
    pairs = gaussian_blur(x, ps, idx)
    for p in range(4):
        torch.testing.assert_close(pairs[p].double(), scipy_blur(x[idx[p]:idx[p] + 1], float(ps[p]))[0],
                                   atol=1e-5, rtol=0)


# Sigmas away from the radius jumps (4 sigma + 0.5 integer): there the blur is smooth in sigma.
@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.2, 5.5, 50.0, 80.0])
def test_exact_derivative_equals_central_difference(sigma):
    x = images(2, 3, 31, 47, seed=7, dtype=torch.float64)
    h = 1e-5
    cd = (gaussian_blur(x, [sigma + h]) - gaussian_blur(x, [sigma - h])) / (2 * h)
    out, d = gaussian_blur(x, [sigma], derivative=True)
    torch.testing.assert_close(out, gaussian_blur(x, [sigma]))
    assert (d - cd).abs().max() <= 1e-3 * cd.abs().max()
    # float32 kernel: same derivative to float32 accuracy
    _, d32 = gaussian_blur(x.float(), [sigma], derivative=True)
    assert (d32.double() - cd).abs().max() <= 1e-3 * cd.abs().max()
    # and the float64 reference agrees with the kernel
    _, dref = gaussian_blur_ref(x, torch.full((2,), sigma, dtype=torch.float64), torch.arange(2), True)
    torch.testing.assert_close(d, dref, atol=1e-12, rtol=1e-9)


def test_derivative_zero_at_sigma_zero_and_tiny_radius():
    # sigma < 0.125 has radius 0: the blur is the identity, so its derivative is exactly zero.
    x = images(1, 3, 8, 8)
    out, d = gaussian_blur(x, [0.0, 0.1], derivative=True)
    torch.testing.assert_close(out, torch.cat([x, x]))
    assert d.abs().max() == 0


def test_blur_preserves_mass_of_interior_impulse():
    # An axiom of a normalised kernel: an impulse far from the border keeps its total mass.
    x = torch.zeros(1, 1, 41, 41)
    x[0, 0, 20, 20] = 1.0
    out, d = gaussian_blur(x, [2.0], derivative=True)
    assert abs(out.sum().item() - 1.0) < 1e-6 and abs(d.sum().item()) < 1e-5
    assert torch.allclose(out[0, 0], out[0, 0].T) and torch.allclose(out[0, 0], out[0, 0].flip(0))


@pytest.mark.parametrize("derivative", [False, True])
def test_opcheck(derivative):
    x = images(2, 3, 9, 11)
    sigma = torch.tensor([0.0, 1.5, 30.0], dtype=torch.float64)
    index = torch.tensor([1, 0, 1])
    torch.library.opcheck(torch.ops.fastattr.gaussian_blur.default, (x, sigma, index, derivative))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_sigma_is_rejected(bad):
    x = images(1, 1, 6, 6)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, [1.0, bad])
    with pytest.raises(RuntimeError, match="sigma"):  # the op itself checks too
        torch.ops.fastattr.gaussian_blur(x, torch.tensor([bad], dtype=torch.float64),
                                         torch.zeros(1, dtype=torch.long), False)


def test_bad_index_is_rejected():
    x = images(2, 1, 6, 6)
    with pytest.raises(RuntimeError, match="index"):
        torch.ops.fastattr.gaussian_blur(x, torch.ones(1, dtype=torch.float64), torch.tensor([2]), False)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_source_compiles(tmp_path):
    src = os.path.join(ROOT, "csrc", "cuda", "gaussian_blur.cu")
    res = subprocess.run(["nvcc", "-c", "-arch=sm_90", f"-I{os.path.join(ROOT, 'csrc', 'include')}", src,
                          "-o", str(tmp_path / "gaussian_blur.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cuda_equals_cpu():
    x = images(2, 3, 31, 47)
    sig = torch.tensor(SIGMAS, dtype=torch.float64)
    idx = torch.tensor([0, 1, 0, 1, 0, 1])
    o, d = torch.ops.fastattr.gaussian_blur(x, sig, idx, True)
    oc, dc = torch.ops.fastattr.gaussian_blur(x.cuda(), sig.cuda(), idx.cuda(), True)
    torch.testing.assert_close(oc.cpu(), o, atol=1e-5, rtol=0)
    torch.testing.assert_close(dc.cpu(), d, atol=1e-4 * float(d.abs().max()), rtol=0)
