"""Issue 12, every model a user brings: float64 models equal captum's float64 IG; fp16/bf16 models
give finite float32 maps close to the float32 model's; sigmoid and callable outputs equal captum
on the same function; (N, D), (N, T, D), (N, C, L) and (N, C, D, H, W) inputs; and the table of
the issue, row by row, as the user first tried it."""
import contextlib

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn

import fastattr
import zoo
from conftest import make_small_cnn
from fastattr.engine import Engine


@contextlib.contextmanager
def default_dtype(dtype):
    """captum builds its alphas with torch.linspace: float64 ones need float64 as the default."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def captum_ig(forward, x, target, steps, baseline=None):
    b = torch.zeros_like(x) if baseline is None else baseline
    with default_dtype(x.dtype if x.dtype == torch.float64 else torch.float32):
        return CaptumIG(forward).attribute(x, baselines=b, target=target, n_steps=steps,
                                           method="riemann_left").detach()


def max_rel_err(ours, ref) -> float:
    scale = ref.abs().max().item()
    assert scale > 0, "reference map is all zero: the comparison would be vacuous"
    return (ours.double() - ref.double()).abs().max().item() / scale


class Softmax(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(-1)


# -- float64 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["probability", "logit"])
@pytest.mark.parametrize("name", ["resnet", "vit", "mlp", "conv1d", "tokens"])
def test_float64_model_float64_inputs_ig_equals_captum_float64(name, output):
    """Issue 12 row 1: a float64 model with float64 inputs raised "Input type (float) and bias
    type (double)". Now the engine runs it in float64 and the map is float64, equal to captum's
    float64 IG to 1e-9 of the map's largest magnitude."""
    model = zoo.make(name, dtype=torch.float64)
    x = zoo.inputs(name, n=3).double()
    target = torch.tensor([0, 1, 2])
    ours = fastattr.attribute(model, x, target, steps=8, output=output, batch_size=5, channels_last=False)
    assert ours.dtype == torch.float64
    ref = captum_ig(Softmax(model) if output == "probability" else model, x, target, 8)
    assert max_rel_err(ours, ref) <= 1e-9


def test_float64_model_float32_inputs_runs_in_float64():
    """The points follow the model (float64), not the inputs (float32)."""
    model = zoo.make("mlp", dtype=torch.float64)
    x = zoo.inputs("mlp")
    e = fastattr.explain(model, x, 1, steps=4, idgi=True)
    assert e.attributions.dtype == e.scores.dtype == torch.float64
    assert e.delta.abs().max() < 1e-12


# -- low precision ---------------------------------------------------------------------------------

def rel_l2(a, ref) -> float:
    return ((a.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "vit", "mlp", "conv1d"])
def test_low_precision_models_give_float32_maps_close_to_float32(name, dtype):
    """Issue 12 row 2: model.half() / bfloat16 models raised the same dtype RuntimeError. Now:
    float32 inputs give finite float32 maps; their error against the float32 model's map is at
    most 2x that of a plain low-precision IG (captum on the same model with inputs cast to its
    dtype: the flash-attention test of a fused low-precision kernel) plus float32 noise; every
    map correlates > 0.9 with the float32 model's."""
    x = zoo.inputs(name, n=6, seed=3)
    f32 = zoo.make(name)
    target = f32(x).argmax(1)
    ref = fastattr.attribute(f32, x, target, steps=16, output="logit", channels_last=False)
    model = zoo.make(name, dtype=dtype)
    ours = fastattr.attribute(model, x, target, steps=16, output="logit")
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    plain = captum_ig(model, x.to(dtype), target, 16).float()
    assert rel_l2(ours, ref) <= 2 * rel_l2(plain, ref) + 1e-4, (rel_l2(ours, ref), rel_l2(plain, ref))
    for i in range(x.shape[0]):
        c = np.corrcoef(ours[i].flatten().numpy(), ref[i].flatten().numpy())[0, 1]
        assert c > 0.9, (i, c)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name,method", [(n, m) for n in ("resnet", "vit", "mlp") for m in ("ig", "guided_ig", "blur_ig")
                                         if m != "blur_ig" or zoo.ZOO[n].images])
def test_low_precision_idgi_is_complete_to_the_models_precision(name, dtype, method):
    """sum(A) = f_c(x) - f_c(p_0) for the engine's own scores to float32 accumulation (delta), and
    against the model evaluated directly (its own forward passes: another batch composition, and
    for ViT the fused no-grad encoder path) to a few units in the model's last place."""
    model = zoo.make(name, dtype=dtype)
    x = zoo.inputs(name, n=3, seed=4)
    opts = dict(max_sigma=3.0) if method == "blur_ig" else {}
    e = fastattr.explain(model, x, 1, method=method, steps=8, idgi=True, **opts)
    assert e.attributions.dtype == torch.float32 and torch.isfinite(e.attributions).all()
    assert e.delta.abs().max() < 1e-6
    if method == "ig":
        with torch.no_grad():
            f = model(torch.cat([x, torch.zeros_like(x)]).to(dtype)).float().softmax(-1)[:, 1]
        tol = 4 * torch.finfo(dtype).eps * f.abs().max().item()
        assert (e.attributions.flatten(1).sum(1) - (f[:3] - f[3:])).abs().max() <= tol


class TinyProbs(nn.Module):
    """Confident logits (x 40): probability gradients underflow fp16/bf16 to exactly zero at many
    path points (the IDGI division must add nothing there, never NaN)."""

    def __init__(self, dtype):
        super().__init__()
        self.lin = nn.Linear(8, 3).to(dtype)
        with torch.no_grad():
            self.lin.weight.copy_(torch.linspace(-1, 1, 24).view(3, 8) * 40)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_underflowed_steps_are_safe(dtype):
    x = torch.linspace(0, 1, 16).view(2, 8)
    e = fastattr.explain(TinyProbs(dtype).eval(), x, 0, steps=32, idgi=True)
    assert torch.isfinite(e.attributions).all()
    zero = (e.attributions.flatten(1) == 0).all(1)
    assert torch.where(zero, (e.delta + e.scores - e.baseline_scores).abs() < 1e-6,
                       e.delta.abs() < 1e-6).all()


# -- output forms ----------------------------------------------------------------------------------

class MultiLabel(nn.Module):
    """(N, D) -> (N, 4) multi-label logits."""

    def __init__(self):
        super().__init__()
        self.net = zoo.make("mlp")

    def forward(self, x):
        return self.net(x)[:, :4]


def test_sigmoid_output_equals_captum_on_the_same_function():
    """Issue 12 row 4: a multi-label model had no way to say sigmoid. output="sigmoid" explains
    sigmoid(scores)[c], equal to captum on x -> sigmoid(model(x))."""
    model = MultiLabel().eval()
    x = zoo.inputs("mlp", n=4)
    target = torch.tensor([0, 1, 2, 3])
    ours = fastattr.explain(model, x, target, steps=8, output="sigmoid", batch_size=5)
    ref = captum_ig(lambda z: model(z).sigmoid(), x, target, 8)
    assert max_rel_err(ours.attributions, ref) <= 1e-5
    torch.testing.assert_close(ours.scores, model(x).sigmoid().gather(1, target[:, None])[:, 0].detach())


class Segmenter(nn.Module):
    """(N, 3, H, W) -> (N, K, H, W) per-pixel class logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return self.net(x)


def region_scores(raw: torch.Tensor) -> torch.Tensor:
    """Sum of each class's logits inside a 6x6 region: (N, K, H, W) -> (N, K)."""
    return raw[:, :, 2:8, 5:11].sum((2, 3))


@pytest.mark.parametrize("idgi", [False, True])
def test_callable_output_equals_captum_on_the_same_function(small_images, idgi):
    """Issue 12 row 4: "a score that is not a class column": a callable from the raw output to
    (N, K) scores, f_c = scores[:, c] with nothing applied after it."""
    model = Segmenter().eval()
    target = torch.tensor([0, 1, 2, 3])
    e = fastattr.explain(model, small_images, target, steps=8, output=region_scores, idgi=idgi, batch_size=6)
    torch.testing.assert_close(e.scores, region_scores(model(small_images)).gather(1, target[:, None])[:, 0].detach())
    if idgi:
        assert e.delta.abs().max() < 1e-5 * e.scores.abs().max()
    else:
        ref = captum_ig(lambda z: region_scores(model(z)), small_images, target, 8)
        assert max_rel_err(e.attributions, ref) <= 1e-5


def test_engine_logits_are_the_output_forms_scores(small_images):
    model = Segmenter().eval()
    eng = Engine(model, output=region_scores, batch_size=3)
    torch.testing.assert_close(eng.logits(small_images), region_scores(model(small_images)).detach())
    t = torch.tensor([3, 2, 1, 0])
    y, g = eng.value_and_grad(small_images[:3], t[:3])
    torch.testing.assert_close(y, eng.value(small_images[:3], t[:3]))
    assert g.shape == (3, 3, 16, 16)


def test_single_score_model_logit_and_sigmoid():
    """An (N,) output is one score (K = 1): target None means column 0; logit and sigmoid work."""
    single = Single().eval()
    x = zoo.inputs("mlp", n=3)
    for output in ("logit", "sigmoid"):
        e = fastattr.explain(single, x, steps=6, idgi=True, output=output)
        assert e.target.tolist() == [0, 0, 0] and e.delta.abs().max() < 1e-6
        ref = captum_ig(lambda z: single(z).sigmoid() if output == "sigmoid" else single(z), x, None, 6)
        assert max_rel_err(fastattr.attribute(single, x, steps=6, output=output), ref) <= 1e-5
    with pytest.raises(ValueError, match=r"^target: .*\[0, 1\)"):
        fastattr.attribute(single, x, 1, steps=2, output="logit")


class Single(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = zoo.make("mlp")

    def forward(self, x):
        return self.net(x)[:, 0] - self.net(x)[:, 1]


# -- inputs of any rank ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp", "conv1d", "tokens", "conv3d"])
def test_non_image_inputs_equal_captum_idgi_complete_blur_refused(name):
    """Issue 12 row 5: (N, D), (N, T, D), (N, C, L) inputs were refused ("expected a 4-D
    tensor"). IG equals captum; IDGI is complete; Guided IG, NeFLAG and vanilla run and keep the
    input's shape; Blur IG refuses with a message naming inputs."""
    model = zoo.make(name)
    x = zoo.inputs(name, n=3)
    target = torch.tensor([0, 2, 1])
    ours = fastattr.attribute(model, x, target, steps=8, output="logit", batch_size=5)
    assert max_rel_err(ours, captum_ig(model, x, target, 8)) <= 1e-5
    e = fastattr.explain(model, x, target, steps=8, idgi=True)
    assert e.attributions.shape == x.shape and e.delta.abs().max() < 1e-6
    for method, opts in (("guided_ig", dict(steps=5)), ("neflag", dict(n=2, m=2)), ("vanilla", {})):
        a = fastattr.attribute(model, x, target, method=method, **opts)
        assert a.shape == x.shape and torch.isfinite(a).all() and a.abs().max() > 0
    with pytest.raises(ValueError, match=r"^inputs: method 'blur_ig' .*\(N, C, H, W\)"):
        fastattr.attribute(model, x, target, method="blur_ig", steps=2)


class ScalarModel(nn.Module):
    """(N,) -> (N, 3): N examples of one scalar feature; asserts it is called with rank-1 inputs."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.fc1, self.fc2 = nn.Linear(1, 8), nn.Linear(8, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        assert x.dim() == 1, f"called with {tuple(x.shape)}"
        return self.fc2(torch.relu(self.fc1(x[:, None])))


def test_rank1_inputs_are_examples_of_one_scalar():
    """Issue 21: fastattr.attribute refused x = torch.rand(N) (rank 1). The model is called with (B,)
    points; IG equals captum's; IDGI is complete for every rule; vanilla, guided_ig, neflag, smoothgrad,
    the Explainer and the guided backward keep the (N,) shape; Blur IG refuses naming inputs."""
    model = ScalarModel().eval()
    x = torch.linspace(-2.0, 3.0, 7)
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    ours = fastattr.attribute(model, x, target, steps=8, output="logit", batch_size=5)
    assert ours.shape == (7,)
    assert max_rel_err(ours, captum_ig(model, x, target, 8)) <= 1e-5
    for rule in ("left", "right", "middle", "gausslegendre"):
        e = fastattr.explain(model, x, target, steps=8, rule=rule, idgi=True, batch_size=5)
        assert e.attributions.shape == (7,) and e.delta.abs().max() < 1e-6
    for method, opts in (("guided_ig", dict(steps=5)), ("neflag", dict(n=2, m=2)), ("vanilla", {}),
                         ("ig", dict(backward="guided", steps=4))):
        e = fastattr.explain(model, x, target, method=method, **opts)
        assert e.attributions.shape == (7,) and torch.isfinite(e.attributions).all()
    g = fastattr.attribute(model, x, target, method="vanilla", output="logit")
    xr = x.clone().requires_grad_(True)
    model(xr).gather(1, target[:, None]).sum().backward()
    torch.testing.assert_close(g, xr.grad)
    sg = fastattr.smoothgrad(model, x, target, nsamples=3, method="ig", steps=4)
    assert sg.attributions.shape == (7,)
    assert fastattr.Explainer(model, steps=4)(x, target).attributions.shape == (7,)
    with pytest.raises(ValueError, match=r"^inputs: method 'blur_ig' .*\(N, C, H, W\).*\(7,\)"):
        fastattr.attribute(model, x, target, method="blur_ig", steps=2)


def test_explainer_takes_sequences_and_single_images(small_cnn, small_images):
    """A 3-D input to an Explainer of a 2-d conv model is one image; for others it is a batch."""
    seq = zoo.make("tokens")
    x = zoo.inputs("tokens", n=3)
    ex = fastattr.Explainer(seq, steps=4, idgi=True)(x)
    assert ex.attributions.shape == x.shape
    one = fastattr.Explainer(small_cnn, steps=4)(small_images[0])
    assert one.attributions.shape == (1, 3, 16, 16)


# -- the rest of issue 12's table ----------------------------------------------------------------

class Constant(nn.Module):
    """Scores that do not depend on the input: from a parameter, or computed from x.detach(), or
    x times zero (a graph exists but the gradient is zero)."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.bias = nn.Parameter(torch.tensor([0.3, -0.2, 0.5]))

    def forward(self, x):
        n = x.shape[0]
        if self.how == "parameter":
            return self.bias.expand(n, 3)
        if self.how == "detached":
            return x.detach().flatten(1)[:, :3]
        return x.flatten(1)[:, :3] * 0 + self.bias


@pytest.mark.parametrize("method,opts", [("vanilla", {}), ("ig", dict(steps=3)), ("ig", dict(steps=3, idgi=True)),
                                         ("guided_ig", dict(steps=3)), ("guided_ig", dict(steps=3, idgi=True)),
                                         ("blur_ig", dict(steps=3, max_sigma=2.0)),
                                         ("blur_ig", dict(steps=3, idgi=True, max_sigma=2.0)),
                                         ("neflag", dict(n=2, m=2))])
@pytest.mark.parametrize("how", ["parameter", "detached", "times-zero"])
def test_model_that_ignores_its_input_gives_an_exactly_zero_map(small_images, how, method, opts):
    """Issue 12 row 6: raw "element 0 of tensors does not require grad". Now an exactly zero map."""
    model = Constant(how).eval()
    for backward in ("standard", "guided"):
        e = fastattr.explain(model, small_images, 0, method=method, backward=backward, **opts)
        assert torch.equal(e.attributions, torch.zeros_like(small_images))
        if how != "detached":
            assert e.delta.abs().max() == 0


class NanAt(nn.Module):
    """small CNN whose score is NaN (or inf) for one image: at the input (an image of constant
    0.5), or at path points only (channel 0 constant in (0, 0.9): the input has 1, the path from
    black and the blurs pass below), as a broken model would."""

    def __init__(self, where: str, value: float = float("nan")):
        super().__init__()
        self.model = make_small_cnn()
        self.where, self.value = where, value

    def forward(self, x):
        out = self.model(x)
        if self.where == "input":
            bad = (x.mean((1, 2, 3)) - 0.5).abs() < 1e-6
        else:
            c0 = x[:, 0].amin((1, 2))
            bad = (c0 > 0) & (c0 < 0.9)
        return torch.where(bad[:, None], torch.full_like(out, self.value), out)


NAN_CASES = [("vanilla", {}), ("ig", dict(steps=4)), ("ig", dict(steps=4, idgi=True)),
             ("guided_ig", dict(steps=4)), ("guided_ig", dict(steps=4, idgi=True)),
             ("blur_ig", dict(steps=4, max_sigma=2.0)), ("blur_ig", dict(steps=4, idgi=True, max_sigma=2.0)),
             ("neflag", dict(n=2, m=2))]


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("method,opts", NAN_CASES)
def test_nan_scores_are_a_value_error_naming_the_image(small_images, method, opts, value):
    """Issue 12 row 7 and 16.5: NaN scores gave a NaN map (IG) or an all-zero finite map (IDGI),
    silently. Now a ValueError saying the model produced non-finite scores, for which image."""
    x = small_images.clone()
    x[2] = 0.5  # image 2 is the one the model breaks on
    with pytest.raises(ValueError, match=r"^model: produced non-finite scores .*at the inputs for image 2 "):
        fastattr.explain(NanAt("input", value).eval(), x, 1, method=method, **opts)
    if method in ("vanilla", "neflag"):  # no path from a baseline or a blur
        return
    x = small_images.clone()
    x[:, 0] = 0
    x[1, 0] = 1  # image 1's path points (not the image itself) break the model
    with pytest.raises(ValueError, match=r"^model: produced non-finite scores .*at a path point for image 1 "):
        fastattr.explain(NanAt("path", value).eval(), x, 1, method=method, **opts)


def test_nan_gradient_with_finite_scores_names_the_image(small_images):
    """A NaN gradient under finite scores (sqrt at 0) must not vanish in IDGI's division."""
    class SqrtNet(nn.Module):
        def forward(self, x):
            s = x[:, 0, 0, 0].sqrt()  # d/dx at x = 0 is inf; at the black baseline, inf * 0 -> NaN
            return torch.stack([s, -s], 1)

    for idgi in (False, True):
        with pytest.raises(ValueError, match=r"^model: its gradient of f_c is NaN or inf for image 0"):
            fastattr.explain(SqrtNet().eval(), small_images, 0, steps=4, idgi=idgi, output="logit")


@pytest.mark.parametrize("method", ["vanilla", "blur_ig", "neflag"])
def test_baseline_given_to_a_method_without_one_is_refused(small_cnn, small_images, method):
    """Issue 12 row 8: baseline= was silently ignored by vanilla, blur_ig and neflag."""
    with pytest.raises(ValueError, match=rf"^baseline: method '{method}' has no baseline"):
        fastattr.attribute(small_cnn, small_images, 0, method=method, baseline=0.5)
    with pytest.raises(ValueError, match=rf"^baseline: method '{method}' has no baseline"):
        fastattr.Explainer(small_cnn, method=method, baseline=torch.zeros(3, 16, 16))


PATH_CASES = [("ig", dict(rule=r)) for r in ("left", "right", "middle", "trapezoid", "pair")] + [
    ("guided_ig", {})]


@pytest.mark.parametrize("idgi", [False, True])
@pytest.mark.parametrize("method,opts", PATH_CASES)
@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 64])
def test_baseline_equal_to_input_gives_bitwise_zero_maps(small_cnn, small_images, method, opts, idgi, batch_size):
    """Issue 12 row 9: IDGI with baseline == input gave ~1e-22 noise (the end score and the path
    scores come from forward passes in different chunk compositions). Now exactly zero, with
    delta exactly zero, whatever the chunking; images that differ from their baseline in the same
    batch still get their (non-zero) maps."""
    base = small_images.clone()
    base[1] = 0.0  # only image 1 differs from its baseline
    for b in (small_images, base):
        e = fastattr.explain(small_cnn, small_images, 3, method=method, baseline=b, steps=5, idgi=idgi,
                             batch_size=batch_size, **opts)
        same = [0, 2, 3] if b is base else [0, 1, 2, 3]
        assert torch.equal(e.attributions[same], torch.zeros_like(small_images[same]))
        assert torch.equal(e.delta[same], torch.zeros(len(same)))
        assert torch.equal(e.baseline_scores[same], e.scores[same])
        if b is base:
            assert e.attributions[1].abs().max() > 0


@pytest.mark.parametrize("idgi", [False, True])
def test_blur_ig_of_a_black_image_is_exactly_zero(small_cnn, idgi):
    """Blur IG has no baseline; its zero-length path is a black image (every blur is black)."""
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    x[1] = 0
    e = fastattr.explain(small_cnn, x, 0, method="blur_ig", steps=4, idgi=idgi, batch_size=3)
    assert torch.equal(e.attributions[1], torch.zeros(3, 16, 16)) and e.delta[1] == 0
    assert e.attributions[0].abs().max() > 0


# -- dtype of parameter-free models ----------------------------------------------------------------

class Func(nn.Module):
    """A parameter-free wrapper of a callable (how a captum-style forward_func is brought in)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_parameter_free_model_dtype_follows_inputs_or_override():
    w = torch.linspace(-1, 1, 36, dtype=torch.float64).view(12, 3)
    f64 = Func(lambda x: x.double() @ w).eval()  # computes in float64 whatever it gets
    x = zoo.inputs("mlp", n=2)
    assert fastattr.attribute(f64, x, 0, steps=4).dtype == torch.float32  # unknown: float32 inputs
    assert fastattr.attribute(f64, x.double(), 0, steps=4).dtype == torch.float64  # follows float64 inputs
    e = fastattr.explain(f64, x, 0, steps=4, model_dtype=torch.float64, idgi=True, output="logit")
    assert e.attributions.dtype == torch.float64 and e.delta.abs().max() < 1e-12
    assert Engine(f64, model_dtype=torch.float64).point_dtype() == torch.float64
    with pytest.raises(TypeError, match=r"^model_dtype: "):
        fastattr.attribute(f64, x, 0, model_dtype="float64")
    with pytest.raises(ValueError, match=r"^model_dtype: "):
        fastattr.attribute(f64, x, 0, model_dtype=torch.int32)
    bf = Func(lambda z: (z.to(torch.bfloat16) @ w.to(torch.bfloat16))).eval()
    e = fastattr.explain(bf, x, 0, steps=4, model_dtype=torch.bfloat16, output="logit")
    assert e.attributions.dtype == torch.float32 and torch.isfinite(e.attributions).all()
