"""method="expected_gradients" (SPEC.md "Expected gradients / GradientShap") against a sample-by-sample
oracle that follows the documented draws, its exact per-sample completeness on a linear model, the
guided backward, rank-1 inputs, batching independence, and bad options."""
import numpy as np
import pytest
import torch
from torch import nn

import fastattr
from conftest import Softmax, make_small_cnn


def oracle(model, x, targets, n, refs, stdev, seed, output="probability", backward=None):
    """The map sample by sample, drawing exactly as the method's docstring says (float64 sums)."""
    g = torch.Generator().manual_seed(seed)
    num, shape = x.shape[0], tuple(x.shape[1:])
    idx = torch.randint(0, refs.shape[0], (num, n), generator=g)
    a = torch.rand((num, n), generator=g, dtype=torch.float64).to(x.dtype)
    maps = []
    for i in range(num):
        eps = torch.randn((n, *shape), generator=g, dtype=torch.float32) if stdev > 0 else torch.zeros((n, *shape))
        total = torch.zeros(shape, dtype=torch.float64)
        for s in range(n):
            xs = x[i] + stdev * eps[s] if stdev > 0 else x[i]
            r = refs[idx[i, s]]
            p = (a[i, s] * xs + (1 - a[i, s]) * r)[None].clone().requires_grad_(True)
            out = model(p)
            out = out.softmax(-1) if output == "probability" else out
            (grad,) = torch.autograd.grad(out[0, targets[i]], p)
            total += ((xs - r) * grad[0]).double()
        maps.append(total / n)
    return torch.stack(maps), idx


@pytest.mark.parametrize("stdev", [0.0, 0.2])
@pytest.mark.parametrize("batch_size", [3, 16])
def test_expected_gradients_equal_the_documented_draws(small_cnn, small_images, stdev, batch_size):
    refs = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    targets = torch.tensor([1, 4, 6, 9])
    e = fastattr.explain(small_cnn, small_images, targets, method="expected_gradients", n=6, references=refs,
                         stdev=stdev, generator=torch.Generator().manual_seed(3), batch_size=batch_size)
    want, _ = oracle(small_cnn, small_images, targets, 6, refs, stdev, seed=3)
    scale = want.abs().max().item()
    assert scale > 0
    assert (e.attributions.double() - want).abs().max().item() <= 1e-5 * scale
    assert e.grad_evals == 4 * 6
    with torch.no_grad():
        fr = small_cnn(refs).softmax(-1)[:, targets].mean(0)
    torch.testing.assert_close(e.baseline_scores, fr, rtol=0, atol=1e-6)
    assert e.extras == {"samples": 6, "references": 5, "stdev": stdev}


def test_expected_gradients_complete_per_sample_on_a_linear_model():
    """For a linear logit each sample's (x - r) * g sums to f(x) - f(r): the map sums to f(x) minus the
    mean of f over the drawn references, exactly."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3).eval()
    x = torch.randn(4, 6)
    refs = torch.randn(5, 6)
    e = fastattr.explain(model, x, 2, method="expected_gradients", n=9, references=refs, output="logit",
                         generator=torch.Generator().manual_seed(1), batch_size=5)
    _, idx = oracle(model, x, [2] * 4, 9, refs, 0.0, seed=1, output="logit")
    with torch.no_grad():
        want = model(x)[:, 2] - model(refs)[:, 2][idx].mean(1)
    torch.testing.assert_close(e.attributions.sum(1), want, rtol=0, atol=1e-5)


def test_expected_gradients_guided_backward_and_rank1():
    refs = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    model = make_small_cnn(seed=4)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    kw = dict(method="expected_gradients", n=4, references=refs, output="logit")
    guided = fastattr.attribute(model, x, [2, 6], backward="guided", generator=torch.Generator().manual_seed(0), **kw)
    plain = fastattr.attribute(model, x, [2, 6], generator=torch.Generator().manual_seed(0), **kw)
    assert (guided - plain).abs().max() > 1e-3 * plain.abs().max()

    class Scalar(nn.Module):
        def forward(self, z):
            assert z.dim() == 1
            return torch.stack([torch.tanh(3 * z), z ** 2], 1)

    z = torch.linspace(-1, 1, 5)
    e = fastattr.explain(Scalar().eval(), z, 0, method="expected_gradients", n=8, references=torch.tensor([0.0, 0.5]),
                         output="logit", generator=torch.Generator().manual_seed(0))
    assert e.attributions.shape == (5,)
    want, _ = oracle(lambda p: Scalar()(p[:, 0]), z[:, None], [0] * 5, 8, torch.tensor([[0.0], [0.5]]), 0.0, seed=0,
                     output="logit")
    torch.testing.assert_close(e.attributions.double(), want[:, 0], rtol=0, atol=1e-6)


def test_same_generator_same_map_and_batch_size_does_not_matter(small_cnn, small_images):
    refs = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    run = lambda bs: fastattr.attribute(small_cnn, small_images, None, method="expected_gradients", n=5,  # noqa: E731
                                        references=refs, stdev=0.1, batch_size=bs,
                                        generator=torch.Generator().manual_seed(7))
    a, b = run(3), run(20)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * a.abs().max().item())


@pytest.mark.parametrize("kw,exc,match", [
    (dict(n=0), ValueError, r"^n: must be >= 1"),
    (dict(n=2.5), TypeError, r"^n: "),
    (dict(stdev=-1.0), ValueError, r"^stdev: "),
    (dict(references=torch.zeros(3, 3, 8, 8)), ValueError, r"^references: .*\(M, 3, 16, 16\)"),
    (dict(references=np.zeros((3, 3, 16, 16))), TypeError, r"^references: "),
    (dict(references=torch.full((2, 3, 16, 16), float("nan"))), ValueError, r"^references: .*NaN"),
    (dict(generator=3), TypeError, r"^generator: "),
    (dict(steps=4), ValueError, r"^steps: .*n="),
    (dict(idgi=True), ValueError, r"^idgi: "),
    (dict(baseline=0.5), ValueError, r"^baseline: "),
    (dict(m=3), TypeError, r"^m: unknown option"),
])
def test_bad_options_name_the_parameter(small_cnn, small_images, kw, exc, match):
    with pytest.raises(exc, match=match):
        fastattr.attribute(small_cnn, small_images, method="expected_gradients", **kw)


def test_explainer_and_smoothgrad_take_expected_gradients(small_cnn, small_images):
    """The Explainer (engine kept across calls) gives attribute()'s map for the same seed; SmoothGrad runs
    over it."""
    refs = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    kw = dict(method="expected_gradients", n=3, references=refs, output="logit")
    ex = fastattr.Explainer(Softmax(small_cnn).eval(), generator=torch.Generator().manual_seed(4), **kw)
    ref = fastattr.attribute(Softmax(small_cnn).eval(), small_images, 1, generator=torch.Generator().manual_seed(4), **kw)
    torch.testing.assert_close(ex(small_images, 1).attributions, ref)
    sg = fastattr.smoothgrad(small_cnn, small_images, 1, nsamples=2, generator=torch.Generator().manual_seed(0), **kw)
    assert sg.attributions.shape == small_images.shape and torch.isfinite(sg.attributions).all()
