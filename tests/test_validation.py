"""Bad arguments to explain/attribute raise ValueError/TypeError whose message names the parameter."""
import numpy as np
import pytest
import torch
from torch import nn

import fastattr


class VectorOut(nn.Module):
    """Returns (N,): one score (K = 1)."""

    def forward(self, x):
        return x.flatten(1).sum(1)


class Returns(nn.Module):
    """Returns make(x): outputs no output form can read."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, x):
        return self.make(x)


def call(model, x, **kw):
    return fastattr.explain(model, x, steps=2, batch_size=4, **kw)


@pytest.mark.parametrize("inputs,exc,match", [
    (torch.tensor(0.5), ValueError, r"^inputs: .*batch axis.*0-dimensional"),  # (N,) is N scalars: allowed
    (torch.rand(4, 0), ValueError, r"^inputs: .*no features"),
    (torch.rand(2, 3, 4, 4, dtype=torch.complex64), TypeError, r"^inputs: .*floating"),
    (torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8), TypeError, r"^inputs: .*floating"),
    ([[1.0]], TypeError, r"^inputs: "),
    (torch.rand(0, 3, 16, 16), ValueError, r"^inputs: .*empty"),
])
def test_bad_inputs(small_cnn, inputs, exc, match):
    with pytest.raises(exc, match=match):
        call(small_cnn, inputs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs(small_cnn, small_images, bad):
    x = small_images.clone()
    x[1, 2, 3, 4] = bad
    with pytest.raises(ValueError, match=r"^inputs: .*NaN or inf"):
        call(small_cnn, x)


@pytest.mark.parametrize("target,exc,match", [
    (10, ValueError, r"^target: .*\[0, 10\)"),
    (-1, ValueError, r"^target: "),
    (torch.tensor([0, 1, 2, 10]), ValueError, r"^target: .*\[0, 10\)"),
    (torch.tensor([0, 1, 2]), ValueError, r"^target: expected 4 class indices"),
    ([0, 1, 2, 3, 4], ValueError, r"^target: expected 4"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, r"^target: .*integer"),
    (True, TypeError, r"^target: "),
])
def test_bad_target(small_cnn, small_images, target, exc, match):
    with pytest.raises(exc, match=match):
        call(small_cnn, small_images, target=target)


@pytest.mark.parametrize("baseline,exc,match", [
    (torch.rand(2, 3, 16, 16), ValueError, r"^baseline: .*does not broadcast"),
    (torch.rand(3, 8, 8), ValueError, r"^baseline: .*does not broadcast"),
    (torch.full((3, 1, 1), float("nan")), ValueError, r"^baseline: .*NaN"),
    ("black", TypeError, r"^baseline: "),
])
def test_bad_baseline(small_cnn, small_images, baseline, exc, match):
    with pytest.raises(exc, match=match):
        call(small_cnn, small_images, baseline=baseline)


@pytest.mark.parametrize("kw,exc,match", [
    ({"steps": 0}, ValueError, r"^steps: must be >= 1"),
    ({"steps": -3}, ValueError, r"^steps: "),
    ({"steps": 2.5}, TypeError, r"^steps: .*integer"),
    ({"batch_size": 0}, ValueError, r"^batch_size: "),
    ({"method": "gradcam"}, ValueError, r"^method: unknown value 'gradcam'"),
    ({"rule": "simpson"}, ValueError, r"^rule: unknown value 'simpson'"),
    ({"output": "softmax"}, ValueError, r"^output: unknown value 'softmax'"),
    ({"backward": "guided-everything"}, ValueError, r"^backward: unknown value"),
    ({"rule": "trapezoid", "steps": 1}, ValueError, r"^steps: .*trapezoid"),
    ({"method": "vanilla", "idgi": True}, ValueError, r"^idgi: "),
    ({"method": "vanilla", "rule": "middle"}, ValueError, r"^rule: "),
])
def test_bad_options(small_cnn, small_images, kw, exc, match):
    kw = {"steps": 2, "batch_size": 4, **kw}
    with pytest.raises(exc, match=match):
        fastattr.explain(small_cnn, small_images, **kw)


def test_unknown_method_option_names_option_and_method(small_cnn, small_images):
    with pytest.raises(TypeError, match=r"^n_samples: unknown option of method 'ig'"):
        call(small_cnn, small_images, n_samples=3)
    with pytest.raises(TypeError, match=r"^foo: unknown option of method 'vanilla'"):
        fastattr.attribute(small_cnn, small_images, method="vanilla", foo=1)


def test_single_score_with_probability_names_output(small_images):
    """(N,) scores are K = 1: softmax of one column is constant, so 'probability' is refused."""
    with pytest.raises(ValueError, match=r"^output: 'probability'.*K = 1.*'logit'.*'sigmoid'"):
        call(VectorOut().eval(), small_images)


@pytest.mark.parametrize("make,match", [
    (lambda x: {"features": x}, r"^output: the model returned a dict with keys \['features'\]"),
    (lambda x: x, r"^output: the model returned a torch.float32 tensor of shape \(4, 3, 16, 16\) for 4 points"),
    (lambda x: x.flatten(1)[:1], r"^output: .*shape \(1, 768\) for 4 points"),
    (lambda x: x.flatten(1).argmax(1, keepdim=True), r"^output: .*torch.int64.*floating"),
    (lambda x: "cat", r"^output: the model returned a str"),
    (lambda x: (), r"^output: the model returned a tuple of 0"),
], ids=["dict", "4-D", "batch", "int", "str", "empty-tuple"])
def test_unreadable_model_output_names_output(small_images, make, match):
    with pytest.raises(ValueError, match=match):
        call(Returns(make).eval(), small_images, output="logit")


@pytest.mark.parametrize("output,exc,match", [
    (lambda raw: raw.flatten(1).sum(1).tolist(), ValueError, r"^output: the output callable returned a list"),
    (lambda raw: raw[:, :, :, 0], ValueError, r"^output: the output callable returned .*\(4, 3, 2\) for 4 points"),
    (3, TypeError, r"^output: expected one of"),
])
def test_bad_output_callable_or_type(small_images, output, exc, match):
    model = Returns(lambda x: x[:, :, :2, :2] * 2).eval()  # a 4-D raw output: a callable must reduce it
    with pytest.raises(exc, match=match):
        call(model, small_images, output=output)
    ok = fastattr.explain(model, small_images, 1, steps=2, output=lambda raw: raw.flatten(1))
    assert ok.attributions.abs().max() > 0


def test_model_not_a_module(small_images):
    with pytest.raises(TypeError, match=r"^model: .*nn.Module"):
        call(lambda x: x, small_images)


def test_training_mode_warns(small_cnn, small_images):
    small_cnn.train()
    with pytest.warns(UserWarning, match=r"^model: .*training mode.*eval mode"):
        call(small_cnn, small_images)
    assert small_cnn.training  # explained in eval mode, the caller's flag restored


def test_valid_variants_are_accepted(small_cnn, small_images):
    """The accepted forms of target/baseline/inputs give the same map as the canonical form."""
    x, t = small_images, torch.tensor([2, 2, 2, 2])
    ref = fastattr.attribute(small_cnn, x, t, steps=3, batch_size=5)
    same = [
        fastattr.attribute(small_cnn, x, 2, steps=3, batch_size=5),
        fastattr.attribute(small_cnn, x, torch.tensor(2, dtype=torch.int32), steps=3, batch_size=5),
        fastattr.attribute(small_cnn, x, [2, 2, 2, 2], steps=3, batch_size=5),
        fastattr.attribute(small_cnn, x, t.to(torch.uint8)[:, None], steps=3, batch_size=5),
        fastattr.attribute(small_cnn, x, t, steps=3, batch_size=5, baseline=0.0),
        fastattr.attribute(small_cnn, x, t, steps=3, batch_size=5, baseline=torch.zeros(3, 16, 16)),
        fastattr.attribute(small_cnn, x, t, steps=3, batch_size=5, baseline=torch.zeros(1, 3, 16, 16)),
        fastattr.attribute(small_cnn, x, t, steps=3, batch_size=5, baseline=torch.zeros(3, 1, 1, dtype=torch.float64)),
        fastattr.attribute(small_cnn, x.double(), t, steps=3, batch_size=5),
        fastattr.attribute(small_cnn, x.to(memory_format=torch.channels_last), t, steps=3, batch_size=5),
        fastattr.attribute(small_cnn, x.clone().requires_grad_(True), t, steps=3, batch_size=5),
    ]
    for m in same:
        assert m.dtype == torch.float32
        torch.testing.assert_close(m, ref, rtol=0, atol=1e-7)


def test_runs_under_no_grad_and_inference_mode(small_cnn, small_images):
    ref = fastattr.attribute(small_cnn, small_images, 1, steps=3, batch_size=5)
    with torch.no_grad():
        a = fastattr.attribute(small_cnn, small_images, 1, steps=3, batch_size=5)
    with torch.inference_mode():
        b = fastattr.attribute(small_cnn, small_images, 1, steps=3, batch_size=5)
    torch.testing.assert_close(a, ref, rtol=0, atol=0)
    torch.testing.assert_close(b.clone(), ref, rtol=0, atol=0)
    assert ref.abs().max() > 0


# -- issue 16.4 and 16.15: inputs that used to give silent wrong answers or raw errors ----------

@pytest.mark.parametrize("method,opts", [("ig", {}), ("ig", dict(idgi=True)), ("guided_ig", {}),
                                         ("guided_ig", dict(idgi=True))])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scalar_baseline_is_refused(small_cnn, small_images, method, opts, bad):
    """16.4: a NaN/inf scalar baseline gave an all-NaN IG map, an all-zero IDGI map, and a
    zero Guided IG map with delta 0.0 that looked perfect."""
    with pytest.raises(ValueError, match=r"^baseline: must be finite"):
        fastattr.explain(small_cnn, small_images, 0, method=method, baseline=bad, steps=3, **opts)
    with pytest.raises(ValueError, match=r"^baseline: must be finite"):
        fastattr.Explainer(small_cnn, method=method, baseline=bad, **opts)


@pytest.mark.parametrize("baseline,exc,match", [
    (0.5 + 0.5j, TypeError, r"^baseline: must be real"),
    (torch.zeros(3, 16, 16, dtype=torch.complex64), TypeError, r"^baseline: expected a real-valued tensor"),
    (torch.zeros(3, 16, 16, dtype=torch.bool), TypeError, r"^baseline: expected a real-valued tensor"),
    (torch.full((1,), 1e300, dtype=torch.float64), ValueError, r"^baseline: contains NaN or inf"),
])
def test_complex_bool_and_overflowing_baselines_are_refused(small_cnn, small_images, baseline, exc, match):
    """16.15: a complex baseline was silently reduced to its real part."""
    with pytest.raises(exc, match=match):
        call(small_cnn, small_images, baseline=baseline)


@pytest.mark.parametrize("target,exc,match", [
    (2**70, ValueError, r"^target: class indices must lie in \[0, 10\), got 1180591620717411303424"),
    ([2**70, 0, 0, 0], ValueError, r"^target: class indices must lie in \[0, 10\)"),
    ("3", TypeError, r"^target: expected None, an int or \(N,\) integer class indices, got '3'"),
    (["3", "1", "0", "2"], TypeError, r"^target: "),
    (1.7, TypeError, r"^target: expected integer class indices, got float"),
    ([1.7, 2.2, 0.0, 1.0], TypeError, r"^target: expected integer class indices"),
    (np.int64(12), ValueError, r"^target: class indices must lie in \[0, 10\), got 12"),
    (object(), TypeError, r"^target: "),
])
def test_bad_target_values(small_cnn, small_images, target, exc, match):
    """16.15: target=2**70 raised a raw OverflowError, target="3" a raw torch error."""
    with pytest.raises(exc, match=match):
        call(small_cnn, small_images, target=target)


def test_numpy_targets_and_steps_are_accepted(small_cnn, small_images):
    ref = fastattr.attribute(small_cnn, small_images, 3, steps=3, batch_size=4)
    assert torch.equal(fastattr.attribute(small_cnn, small_images, np.int64(3), steps=np.int64(3), batch_size=4), ref)
    assert torch.equal(fastattr.attribute(small_cnn, small_images, np.full(4, 3), steps=3, batch_size=4), ref)


@pytest.mark.parametrize("method", ["ig", "guided_ig", "blur_ig"])
def test_absurd_steps_is_a_check_not_an_allocation(small_cnn, small_images, method):
    """16.15: steps=10**12 asked for an 8 TB allocation; now a ValueError before any work."""
    with pytest.raises(ValueError, match=r"^steps: must be <= 1000000, got 1000000000000"):
        fastattr.attribute(small_cnn, small_images, 0, method=method, steps=10**12)
    with pytest.raises(ValueError, match=r"^steps: must be <= "):
        fastattr.Explainer(small_cnn, method=method, steps=10**12)
