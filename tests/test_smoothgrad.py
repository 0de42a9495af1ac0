"""fastattr.smoothgrad (SPEC.md "SmoothGrad") against a plain loop over the same seeded noisy copies,
its cost in model calls, and its option errors."""
import pytest
import torch

import fastattr
import fastattr.smoothing as smoothing
from conftest import make_small_cnn


def loop_oracle(model, x, target, nsamples, spread, squared, seed, **options):
    """SmoothGrad by hand: draw every image's copies in the documented order, then attribute each
    copy on its own with fastattr.attribute (a method that takes a generator gets the same one,
    after the noise), and average the maps (or their squares)."""
    g = torch.Generator().manual_seed(seed)
    copies = []
    for i in range(x.shape[0]):
        sigma = spread * (x[i].max() - x[i].min())
        noise = torch.randn((nsamples, *x.shape[1:]), generator=g, dtype=torch.float32)
        copies.append(x[i] + sigma * noise.to(x.dtype))
    if options.get("method") == "neflag":
        options = dict(options, generator=g)
    out = []
    for i in range(x.shape[0]):
        maps = torch.stack([fastattr.attribute(model, c[None], int(target[i]), **options)[0] for c in copies[i]])
        out.append((maps.square() if squared else maps).mean(0))
    return torch.stack(out)


def assert_close_to_max(ours, ref, rel):
    scale = ref.abs().max().item()
    assert scale > 0
    err = (ours - ref).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} > {rel} * {scale:.3g}"


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("method,options", [
    ("vanilla", {}),
    ("ig", dict(steps=5, rule="middle")),
    ("ig", dict(steps=4, idgi=True)),
    ("neflag", dict(n=2, m=3, eps=0.05)),  # its own draws come from the same generator, after the noise
])
def test_smoothgrad_equals_loop_over_seeded_copies(small_cnn, small_images, method, options, squared):
    x = small_images[:3]
    t = torch.tensor([1, 5, 8])
    ours = fastattr.smoothgrad(small_cnn, x, t, method=method, nsamples=4, squared=squared, batch_size=7,
                               generator=torch.Generator().manual_seed(3), **options)
    ref = loop_oracle(small_cnn, x, t, 4, 0.15, squared, 3, method=method, **options)
    assert ours.attributions.shape == x.shape and ours.attributions.dtype == torch.float32
    assert torch.equal(ours.target, t)
    assert_close_to_max(ours.attributions, ref, 1e-5)


def test_smoothgrad_independent_of_grouping(small_cnn, small_images, monkeypatch):
    """Images are grouped into walks only to bound memory; the draws (and maps) do not change."""
    kw = dict(method="ig", steps=3, nsamples=3, generator=None)
    a = fastattr.smoothgrad(small_cnn, small_images, 2, **dict(kw, generator=torch.Generator().manual_seed(1)))
    monkeypatch.setattr(smoothing, "GROUP_ELEMENTS", 3 * small_images[0].numel())  # one image per walk
    b = fastattr.smoothgrad(small_cnn, small_images, 2, **dict(kw, generator=torch.Generator().manual_seed(1)))
    assert_close_to_max(b.attributions, a.attributions, 1e-6)
    assert torch.equal(a.extras["sigma"], b.extras["sigma"])


def test_smoothgrad_seeding(small_cnn, small_images):
    run = lambda seed: fastattr.smoothgrad(small_cnn, small_images, nsamples=3,  # noqa: E731
                                           generator=torch.Generator().manual_seed(seed)).attributions
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_smoothgrad_target_defaults_to_clean_argmax_and_zero_spread_is_the_method(small_cnn, small_images):
    e = fastattr.smoothgrad(small_cnn, small_images, method="ig", steps=4, nsamples=2, spread=0.0)
    assert torch.equal(e.target, small_cnn(small_images).softmax(-1).argmax(1))
    plain = fastattr.attribute(small_cnn, small_images, e.target, steps=4)
    assert_close_to_max(e.attributions, plain, 1e-6)
    torch.testing.assert_close(e.extras["sigma"], torch.zeros(4))


def test_smoothgrad_costs_only_the_gradients(small_cnn, small_images):
    """Vanilla SmoothGrad: one forward pass of the clean images (target, scores) and one zero image
    (vanilla's baseline for every image: the delta), and one forward+backward per copy, nothing
    more; IG: copies x steps gradients."""
    points = []
    hook = small_cnn.register_forward_pre_hook(lambda mod, args: points.append(args[0].shape[0]))
    try:
        e = fastattr.smoothgrad(small_cnn, small_images, nsamples=5, batch_size=8)
        assert e.grad_evals == 4 * 5
        assert points[0] == 4 + 1  # the clean images and the zero image, one forward
        assert sum(points) == 4 + 1 + 4 * 5
        assert max(points) == 8  # copies of different images share chunks
        plain = fastattr.explain(small_cnn, small_images, e.target, method="vanilla")
        torch.testing.assert_close(e.scores, plain.scores)
        torch.testing.assert_close(e.baseline_scores, plain.baseline_scores)  # f_c at zeros
        points.clear()
        e = fastattr.smoothgrad(small_cnn, small_images, method="ig", steps=6, nsamples=5)
        assert e.grad_evals == 4 * 5 * 6
    finally:
        hook.remove()


def test_smoothgrad_option_errors(small_cnn, small_images):
    with pytest.raises(ValueError, match="^nsamples:"):
        fastattr.smoothgrad(small_cnn, small_images, nsamples=0)
    with pytest.raises(TypeError, match="^nsamples:"):
        fastattr.smoothgrad(small_cnn, small_images, nsamples=2.5)
    with pytest.raises(ValueError, match="^spread:"):
        fastattr.smoothgrad(small_cnn, small_images, spread=-0.1)
    with pytest.raises(ValueError, match="^spread:"):
        fastattr.smoothgrad(small_cnn, small_images, spread=float("nan"))
    with pytest.raises(TypeError, match="^squared:"):
        fastattr.smoothgrad(small_cnn, small_images, squared="yes")
    with pytest.raises(TypeError, match="^generator:"):
        fastattr.smoothgrad(small_cnn, small_images, generator=0)
    with pytest.raises(ValueError, match="^method:"):
        fastattr.smoothgrad(small_cnn, small_images, method="smoothgrad")
    with pytest.raises(TypeError, match="^max_sigma:"):
        fastattr.smoothgrad(small_cnn, small_images, method="ig", max_sigma=3)
    with pytest.raises(ValueError, match="^target:"):
        fastattr.smoothgrad(small_cnn, small_images, target=10)
    with pytest.raises(ValueError, match="^baseline:"):  # vanilla has no baseline
        fastattr.smoothgrad(small_cnn, small_images, baseline=0.5)


def test_smoothgrad_dtypes_ranks_and_public_export():
    """Maps in the engine's point dtype (float64 only for a float64 model); any input rank."""
    model = make_small_cnn(seed=2)
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    e = fastattr.smoothgrad(model, x, nsamples=2, generator=torch.Generator().manual_seed(0))
    assert e.attributions.dtype == torch.float32 and torch.isfinite(e.attributions).all()
    e64 = fastattr.smoothgrad(model.double(), x, method="ig", steps=3, nsamples=2,
                              generator=torch.Generator().manual_seed(0))
    assert e64.attributions.dtype == torch.float64
    ref = loop_oracle(model, x, e64.target, 2, 0.15, False, 0, method="ig", steps=3)
    assert_close_to_max(e64.attributions, ref, 1e-9)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    tab = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    e = fastattr.smoothgrad(mlp, tab, method="ig", steps=4, nsamples=3, generator=torch.Generator().manual_seed(2))
    assert e.attributions.shape == (5, 6)
    assert_close_to_max(e.attributions, loop_oracle(mlp, tab, e.target, 3, 0.15, False, 2, method="ig", steps=4), 1e-5)
    assert "smoothgrad" in fastattr.__all__ and fastattr.smoothgrad is smoothing.smoothgrad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noisy_copies_are_the_documented_draws_bit_for_bit(dtype):
    """The copies are drawn in place (no temporaries), with the roundings of the documented
    x_i + sigma_i * noise.to(dtype), noise drawn per image in float32 on the CPU."""
    x = torch.rand(3, 3, 10, 7, generator=torch.Generator().manual_seed(5), dtype=dtype)
    copies, sigma = smoothing.noisy_copies(x, 4, 0.2, torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    for i in range(3):
        s = 0.2 * (x[i].max() - x[i].min())
        noise = torch.randn((4, *x.shape[1:]), generator=g, dtype=torch.float32)
        assert torch.equal(sigma[i], s)
        assert torch.equal(copies[4 * i:4 * i + 4], x[i] + s * noise.to(dtype))
