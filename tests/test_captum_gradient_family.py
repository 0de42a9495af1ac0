"""fastattr.captum's InputXGradient, GuidedBackprop and GradientShap against captum 0.9 on captum's own
test models (captum.testing.helpers) and on the configurations of captum's test files for these
classes (tests/attr/test_input_x_gradient.py, test_guided_backprop.py, test_gradient_shap.py of
pytorch/captum): the same maps, deltas, return structures, dtypes and exception types; GradientShap
with the same seeds draws the same baselines, noise and fractions as captum, a chunk at a time."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GradientShap as CaptumGS
from captum.attr import GuidedBackprop as CaptumGBP
from captum.attr import InputXGradient as CaptumIXG
from captum.attr import NoiseTunnel as CaptumNT
from captum.testing.helpers import basic_models as bm
from captum.testing.helpers.classification_models import SoftmaxModel
from torch import nn

import fastattr
import fastattr.captum as fc
from fastattr.captum._noise import captum_noise
from test_captum_front import REL, _rand, _seeded, _tuple, assert_captum_exception_type, assert_delta_close, \
    assert_maps_close, assert_same_structure, case

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients:UserWarning",
                                        "ignore:Setting backward hooks on ReLU activations:UserWarning",
                                        # captum's test models are built in training mode (nothing in them
                                        # depends on it); fastattr says it explains them in eval mode
                                        "ignore:model. is in training mode:UserWarning")


# -- InputXGradient ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax_mlp", "basic_elementwise", "convnet_batched", "conv_view",
                                  "conv1d_tuple_target", "multilayer_extra_args", "model2_two_inputs",
                                  "model4_multiargs", "model5_list_arg", "lambda_softmax_closure"])
def test_input_x_gradient_equals_captum(name, dtype):
    fwd, x, kw = case(name, dtype)
    kw = {k: kw[k] for k in ("target", "additional_forward_args") if k in kw}
    ixg = fc.InputXGradient(fwd)
    assert ixg.multiplies_by_inputs and not ixg.has_convergence_delta()
    assert_maps_close(ixg.attribute(x, **kw), CaptumIXG(fwd).attribute(x, **kw), REL[dtype])


def test_input_x_gradient_captums_configurations():
    """captum's test_input_x_gradient.py: the rank-1 basic config (x.grad untouched), BasicModel5 with a
    list in additional_forward_args, SoftmaxModel with a 1-element tensor target."""
    x = torch.tensor([1.0, 2.0, 3.0, 0.0, -1.0, 7.0], requires_grad=True)
    x.grad = torch.randn_like(x)
    grad = x.grad.clone()
    ours = fc.InputXGradient(bm.BasicModel().eval()).attribute(x)
    assert ours.tolist() == (torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0]) * x.detach()).tolist()
    assert torch.equal(x.grad, grad) and x.requires_grad
    model = bm.BasicModel5_MultiArgs().eval()
    xs = (torch.tensor([[1.5, 2.0, 34.3], [3.4, 1.2, 2.0]]), torch.tensor([[3.0, 3.5, 23.2], [2.3, 1.2, 0.3]]))
    ours = fc.InputXGradient(model).attribute(xs, additional_forward_args=([2, 3], 1))
    for o, r in zip(ours, CaptumIXG(model).attribute(xs, additional_forward_args=([2, 3], 1))):
        torch.testing.assert_close(o, r.detach(), rtol=0, atol=1e-6)  # (zero here: the ReLU is off)
    sm = _seeded(SoftmaxModel, 5, 20, 10)
    xc = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    assert_maps_close(fc.InputXGradient(sm.forward).attribute(xc, torch.tensor(5)),
                      CaptumIXG(sm.forward).attribute(xc, torch.tensor(5)), 1e-6)


# -- GuidedBackprop ----------------------------------------------------------------------------------
class Stem(nn.Module):
    """ResNet-like: conv, in-place ReLU module, overlapping max-pool (3, stride 2), conv, ReLU, linear.
    act="functional" calls F.relu / torch.relu instead of the modules; act="gelu" uses GELU."""

    def __init__(self, act: str = "module", pool: bool = True):
        super().__init__()
        self.act, self.use_pool = act, pool
        self.c1, self.r1, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.c2, self.r2, self.fc = nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Linear(8, 5)

    def forward(self, x):
        if self.act == "module":
            h, act2 = self.r1(self.c1(x)), self.r2
        elif self.act == "functional":
            h, act2 = F.relu(self.c1(x)), torch.relu
        else:
            h, act2 = F.gelu(self.c1(x)), F.gelu
        if self.use_pool:
            h = self.pool(h)
        return self.fc(act2(self.c2(h)).mean((2, 3)))


def _stem(act, pool=True):
    torch.manual_seed(3)
    return Stem(act, pool).eval()


@pytest.mark.parametrize("name", ["one_conv", "convnet", "multilayer", "stem_overlapping_pool", "multi_input"])
def test_guided_backprop_equals_captum_on_relu_models(name):
    """captum's semantics: the gradient clipped at every ReLU module on the way back, max-pool's backward
    unchanged (overlapping windows included: captum does not touch max-pool)."""
    if name == "one_conv":  # captum's test: 100 * randn, every class
        model, x, targets = bm.BasicModel_ConvNet_One_Conv(), 100.0 * _rand(2, 1, 4, 4, seed=80), range(4)
    elif name == "convnet":
        model, x, targets = bm.BasicModel_ConvNet(), _rand(3, 1, 10, 10, seed=81), [3]
    elif name == "multilayer":
        model, x, targets = bm.BasicModel_MultiLayer(), _rand(4, 3, seed=82), [0, 1]
    elif name == "stem_overlapping_pool":
        model, x, targets = _stem("module"), _rand(2, 3, 12, 12, seed=83), [1, 4]
    else:
        model, x, targets = bm.BasicModel_ConvNet_One_Conv(), (_rand(2, 1, 4, 4, seed=84), _rand(2, 1, 4, 4, seed=85)), [2]
    gbp = fc.GuidedBackprop(model)
    assert not gbp.multiplies_by_inputs
    for t in targets:
        ref = CaptumGBP(model).attribute(x, target=t)
        ours = gbp.attribute(x, target=t)
        assert_same_structure(ours, ref)
        scale = max(r.abs().max().item() for r in _tuple(ref))
        for o, r in zip(_tuple(ours), _tuple(ref)):
            assert (o - r).abs().max().item() <= 1e-6 * max(scale, 1.0)
    assert not any(m._backward_hooks or m._backward_pre_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0


def test_guided_backprop_captums_expected_values():
    """captum's test_guided_backprop.py: hand-computed maps on BasicModel_ConvNet_One_Conv."""
    net = bm.BasicModel_ConvNet_One_Conv()
    inp = torch.arange(16, dtype=torch.float).view(1, 1, 4, 4)
    exp = torch.tensor([[[[0.0, 1.0, 1.0, 1.0], [1.0, 3.0, 3.0, 2.0], [1.0, 3.0, 3.0, 2.0], [1.0, 2.0, 2.0, 1.0]]]])
    torch.testing.assert_close(fc.GuidedBackprop(net).attribute(inp, target=0), exp, rtol=0, atol=0.01)
    ex2 = torch.tensor([[[[1.0, 2.0, 2.0, 1.0], [2.0, 4.0, 4.0, 2.0], [2.0, 4.0, 4.0, 2.0], [1.0, 2.0, 2.0, 1.0]]]])
    a, b = fc.GuidedBackprop(net).attribute((inp, torch.ones(1, 1, 4, 4)), target=0)
    torch.testing.assert_close(a, ex2, rtol=0, atol=0.01)
    torch.testing.assert_close(b, ex2, rtol=0, atol=0.01)


def test_guided_backprop_beyond_captum_functional_calls_and_gelu():
    """Documented differences: functional ReLU calls take the rule (captum hooks modules only: on the
    F.relu model its map is the plain gradient, ours is its map of the same model written with modules);
    GELU takes relu(ordinary grad) (fastattr's guided backward, also vanilla + backward="guided")."""
    x = _rand(2, 3, 12, 12, seed=86)
    functional, modules = _stem("functional"), _stem("module")
    ours = fc.GuidedBackprop(functional).attribute(x, target=2)
    assert_maps_close(ours, CaptumGBP(modules).attribute(x, target=2), 1e-6)
    captums = CaptumGBP(functional).attribute(x, target=2)
    plain = fc.Saliency(functional).attribute(x, target=2, abs=False)
    assert_maps_close(captums, plain, 1e-6)  # captum: the ordinary gradient
    assert (ours - captums).abs().max() > 0.1 * captums.abs().max()
    gelu = _stem("gelu", pool=False)
    ref = fastattr.attribute(gelu, x, 2, method="vanilla", backward="guided", output="logit")
    assert_maps_close(fc.GuidedBackprop(gelu).attribute(x, target=2), ref, 1e-6)


def test_guided_backprop_needs_a_module_it_can_reach():
    with pytest.raises(AssertionError, match="^model:"):
        fc.GuidedBackprop(lambda x: x)
    scripted = torch.jit.script(bm.BasicModel_MultiLayer().eval())  # its ReLUs are graph ops: nothing to intercept
    with pytest.raises(ValueError, match="^model: GuidedBackprop cannot reach inside a TorchScript model"):
        fc.GuidedBackprop(scripted).attribute(_rand(2, 3, seed=101), target=0)


# -- NoiseTunnel over the new classes, both ways --------------------------------------------------
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("cls", ["ixg", "gbp"])
def test_noise_tunnel_over_new_classes_equals_captum_both_ways(cls, nt_type):
    model, x = (_stem("module"), _rand(3, 3, 8, 8, seed=87)) if cls == "gbp" else \
        (_seeded(SoftmaxModel, 10, 20, 5), _rand(4, 10, seed=88))
    ours_cls, captum_cls = (fc.GuidedBackprop, CaptumGBP) if cls == "gbp" else (fc.InputXGradient, CaptumIXG)
    kw = dict(nt_type=nt_type, nt_samples=5, nt_samples_batch_size=2, stdevs=0.2, target=1)
    torch.manual_seed(4)
    ref = CaptumNT(captum_cls(model)).attribute(x, **kw)
    torch.manual_seed(4)
    ours = fc.NoiseTunnel(ours_cls(model)).attribute(x, **kw)
    torch.manual_seed(4)
    mixed = CaptumNT(ours_cls(model)).attribute(x, **kw)  # captum's NoiseTunnel around fastattr.captum's class
    assert_maps_close(ours, ref, 1e-5)
    assert_maps_close(mixed, ours, 1e-5)


# -- GradientShap ------------------------------------------------------------------------------------
def _gs_both(fwd, x, baselines, seed=0, multiply_by_inputs=True, **kw):
    """captum's and fastattr.captum's GradientShap with the same seeds; also the RNG states after."""
    out = []
    for cls in (CaptumGS, fc.GradientShap):
        np.random.seed(seed)
        torch.manual_seed(seed + 1)
        extra = {} if cls is CaptumGS else {k: v for k, v in kw.items() if k in ("internal_batch_size",)}
        plain = {k: v for k, v in kw.items() if k != "internal_batch_size"}
        res = cls(fwd, multiply_by_inputs=multiply_by_inputs).attribute(x, baselines, **plain, **extra)
        out.append((res, torch.get_rng_state(), np.random.get_state()[1].copy()))
    (ref, t_ref, n_ref), (ours, t_ours, n_ours) = out
    assert torch.equal(t_ref, t_ours) and np.array_equal(n_ref, n_ours), "RNG states differ after the call"
    return ref, ours


def _gs_case(name, dtype):
    """(forward_func, inputs, baselines, attribute kwargs) for GradientShap."""
    def cast(t):
        return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    if name == "softmax_mlp":
        fwd, x, kw = case("softmax_mlp", dtype)
        return fwd, x, cast(_rand(6, 10, seed=90)), dict(kw, n_samples=7, stdevs=0.3)
    if name == "two_inputs_number_baseline":  # tuple inputs, a tensor and a number baseline, stdevs tuple
        fwd, x, kw = case("model2_two_inputs", dtype)
        return fwd, x, (cast(_rand(4, 4, seed=91)), 0.5), dict(target=1, n_samples=5, stdevs=(0.1, 0.4))
    if name == "extra_args_list_target":
        fwd, x, kw = case("multilayer_extra_args", dtype)
        return fwd, x, cast(_rand(3, 3, seed=92)), dict(target=[0, 1, 1], n_samples=4, stdevs=0.2,
                                                        additional_forward_args=kw["additional_forward_args"])
    if name == "conv_tensor_target":  # conv model: channels-last inputs; chunks span examples
        fwd, x, kw = case("convnet_batched", dtype)
        return fwd, x, cast(_rand(5, 1, 10, 10, seed=93)), dict(target=torch.tensor([1, 3, 5]), n_samples=6,
                                                                stdevs=0.1, internal_batch_size=4)
    if name == "four_inputs":
        fwd, x, kw = case("true_multi_input", dtype)
        bs = (cast(_rand(3, 3, seed=94)), cast(_rand(2, 3, seed=95)), 0.0, cast(_rand(1, 3, seed=96)))
        return fwd, x, bs, dict(target=0, n_samples=5, stdevs=(0.1, 0.0, 0.2, 0.3))
    if name == "rank1":
        lin = _seeded(nn.Sequential, nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
        return (lambda z: lin(z[:, None])), cast(_rand(5, seed=97)), cast(_rand(4, seed=98)), \
            dict(target=2, n_samples=6, stdevs=0.5)
    if name == "integer_counts":  # integer inputs and baselines: x + float noise
        torch.manual_seed(0)
        lin = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval().to(dtype)
        return (lambda z: lin(z.to(dtype))), torch.tensor([[3, 1, 2, 5], [0, 4, 1, 2]]), \
            torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 0, 1, 0]]), dict(target=1, n_samples=5, stdevs=0.5)
    raise KeyError(name)


GS_CASES = ["softmax_mlp", "two_inputs_number_baseline", "extra_args_list_target", "conv_tensor_target",
            "four_inputs", "rank1", "integer_counts"]


@pytest.mark.parametrize("multiply", [True, False], ids=["global", "local"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", GS_CASES)
def test_gradient_shap_equals_captum_same_seed(name, dtype, multiply):
    """Same np.random / torch seeds: the same baselines, noise and fractions, so the same maps and
    per-sample deltas (N * n_samples, captum's order), and both generators left where captum leaves them."""
    fwd, x, bs, kw = _gs_case(name, dtype)
    (ref, ref_delta), (ours, delta) = _gs_both(fwd, x, bs, multiply_by_inputs=multiply, return_convergence_delta=True,
                                               **kw)
    assert_maps_close(ours, ref, REL[dtype])
    n = _tuple(x)[0].shape[0]
    assert delta.shape == ref_delta.shape == (n * kw["n_samples"],)
    assert_delta_close(delta, ref_delta, ref, fwd, x, kw.get("additional_forward_args"), REL[dtype])
    plain_ref, plain = _gs_both(fwd, x, bs, multiply_by_inputs=multiply, **kw)
    assert_same_structure(plain, plain_ref)
    assert_maps_close(plain, ours, 0.0 if dtype == torch.float64 else 1e-6)


def test_gradient_shap_captums_configurations():
    """captum's test_gradient_shap.py cases, against captum with the same seeds: BasicLinearModel with two
    inputs and 20 baselines, 50 samples (delta and the IG comparison), multiply_by_inputs=False, callable
    baselines (no argument / the inputs), a callable returning an array (AssertionError), the external
    compute_convergence_delta, and BasicModel2's ReLU with many samples."""
    model = bm.BasicLinearModel().eval()
    inputs = (torch.ones(10, 3), torch.ones(10, 4))
    baselines = (torch.zeros(20, 3), torch.zeros(20, 4))
    (ref, ref_delta), (ours, delta) = _gs_both(model, inputs, baselines, n_samples=50, return_convergence_delta=True)
    assert_maps_close(ours, ref, 1e-5)
    assert delta.shape == (500,) and delta.reshape(10, -1).mean(1).abs().max() < 6e-4
    ig = fc.IntegratedGradients(model).attribute(inputs, baselines=(torch.zeros(10, 3), torch.zeros(10, 4)))
    for a, b in zip(ours, ig):
        assert (a - b).abs().max() < 5e-3
    near = (torch.ones(20, 3) + 2e-5, torch.ones(20, 4) + 2e-5)
    glob, local = (_gs_both(model, inputs, near, n_samples=50, stdevs=0.0, multiply_by_inputs=m)[1] for m in (True, False))
    torch.testing.assert_close(local[0] * (inputs[0] - near[0][0:1]), glob[0])

    sm = _seeded(SoftmaxModel, 40, 20, 10)
    x = torch.arange(0.0, 80.0).reshape(2, 40)
    for make in (lambda: torch.arange(0.0, 160.0).reshape(4, 40),
                 lambda inp: torch.arange(0.0, inp.shape[1] * 2.0).reshape(2, inp.shape[1])):
        (ref, ref_delta), (ours, delta) = _gs_both(sm, x, make, target=torch.tensor(1), n_samples=10, stdevs=0.009,
                                                   return_convergence_delta=True)
        assert_maps_close(ours, ref, 1e-5)
        assert_delta_close(delta, ref_delta, ref, sm, x, None, 1e-5)
    with pytest.raises(AssertionError, match="^baselines:"):
        fc.GradientShap(sm).attribute(x, lambda: np.zeros((4, 40)), target=1)
    gs = fc.GradientShap(sm)
    base = torch.arange(0.0, 160.0).reshape(4, 40)
    attrs = gs.attribute(x, base, target=torch.tensor(1), n_samples=10, stdevs=0.009)
    with pytest.raises(AssertionError):
        gs.compute_convergence_delta(attrs, x, base, target=torch.tensor(1))
    external = gs.compute_convergence_delta(attrs, base[[1, 3]], x, target=torch.tensor([1, 1]))
    assert external.shape == (2,)

    m2 = bm.BasicModel2()
    xs, bs = (torch.tensor([[3.0]]), torch.tensor([[1.0]])), (torch.tensor([[0.0]]), torch.tensor([[0.0]]))
    (ref, _), (ours, delta) = _gs_both(m2, xs, bs, n_samples=3000, return_convergence_delta=True)
    assert_maps_close(ours, ref, 1e-5)
    assert delta.shape == (3000,)


def test_gradient_shap_memory_is_bounded_by_the_chunk():
    """Every sample goes through engine chunks of internal_batch_size points (captum: all N * n_samples
    at once), the noise drawn a chunk at a time; the map still equals captum's."""
    fwd, x, bs, kw = _gs_case("conv_tensor_target", torch.float32)
    model = fwd
    calls = []
    handle = model.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    try:
        kw = dict(kw, n_samples=200, internal_batch_size=16)
        ref, ours = _gs_both(fwd, x, bs, **kw)
    finally:
        handle.remove()
    assert_maps_close(ours, ref, 1e-5)
    ours_calls = calls[1:]  # captum made one call of 600 rows
    assert calls[0] == 600 and max(ours_calls) <= 16 and sum(ours_calls) == 600


@pytest.mark.parametrize("default", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("rows,shape,take", [(7, (3, 5), 2), (50, (1,), 7), (3, (2, 3, 7), 1), (2, (5,), 2),
                                            (1, (3,), 1), (40, (4, 4), 40)])
def test_noise_streams_draw_captums_numbers_a_chunk_at_a_time(rows, shape, take, default):
    """NormalStream: the rows handed out chunk by chunk are torch.normal(0, std) of the whole
    (rows, *shape) tensor, input after input, bit for bit, and the global generator ends where captum's
    draws leave it."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        shapes, stds = [shape, (4,)], [0.3, 0.0]
        torch.manual_seed(5)
        ref = [torch.normal(0, torch.tensor(sd).repeat((rows,) + s)) for s, sd in zip(shapes, stds)]
        after = torch.randn(3)
        torch.manual_seed(5)
        streams = captum_noise(rows, shapes, stds, "cpu")
        assert torch.equal(torch.randn(3), after)
        for st, r in zip(streams, ref):
            got = torch.cat([st.take(min(take, rows - i)) for i in range(0, rows, take)])
            assert got.dtype == r.dtype and torch.equal(got, r)
    finally:
        torch.set_default_dtype(old)


def test_gradient_shap_inside_noise_tunnel_is_captums_noise_tunnel():
    fwd, x, bs, kw = _gs_case("softmax_mlp", torch.float64)
    # captum's NoiseTunnel checks and expands baselines per example: one row per input example
    nt_kw = dict(nt_samples=3, stdevs=0.1, baselines=bs[:4], target=2, n_samples=4)
    np.random.seed(2)
    torch.manual_seed(2)
    ref = CaptumNT(CaptumGS(fwd)).attribute(x, **nt_kw)
    np.random.seed(2)
    torch.manual_seed(2)
    ours = fc.NoiseTunnel(fc.GradientShap(fwd)).attribute(x, **nt_kw)
    assert_maps_close(ours, ref, 1e-9)


def test_gradient_shap_guided_backward_extra():
    """backward="guided": the same samples (same seed) through the guided backward."""
    model, x = _stem("module"), _rand(2, 3, 8, 8, seed=99)
    bs = _rand(3, 3, 8, 8, seed=100)
    np.random.seed(0)
    torch.manual_seed(0)
    guided = fc.GradientShap(model).attribute(x, bs, n_samples=4, stdevs=0.1, target=1, backward="guided")
    np.random.seed(0)
    torch.manual_seed(0)
    plain = fc.GradientShap(model).attribute(x, bs, n_samples=4, stdevs=0.1, target=1)
    assert (guided - plain).abs().max() > 1e-3 * plain.abs().max()
    with pytest.raises(ValueError, match="^backward:"):
        fc.GradientShap(model).attribute(x, bs, target=1, backward="guidded")


# -- exceptions ------------------------------------------------------------------------------------
def _softmax():
    return _seeded(SoftmaxModel, 10, 20, 5)


X = _rand(4, 10, seed=40)
B = _rand(6, 10, seed=41)
X2 = (_rand(3, 4, seed=42), _rand(3, 4, seed=43))

BAD = [  # (name, parameter named in fastattr's message or None, call(lib))
    ("gs_number_baseline", "baselines", lambda lib: lib.GradientShap(_softmax()).attribute(X, 0.0, target=0)),
    ("gs_none_baseline", "baselines", lambda lib: lib.GradientShap(_softmax()).attribute(X, None, target=0)),
    ("gs_array_from_callable", "baselines",
     lambda lib: lib.GradientShap(_softmax()).attribute(X, lambda: np.zeros((3, 10)), target=0)),
    ("gs_baseline_shape", "baselines",
     lambda lib: lib.GradientShap(_softmax()).attribute(X, torch.zeros(5, 9), target=0)),
    ("gs_baseline_count", "baselines",
     lambda lib: lib.GradientShap(bm.BasicModel2()).attribute(X2, (torch.zeros(2, 4),), target=0)),
    ("gs_stdevs_int", "stdevs", lambda lib: lib.GradientShap(_softmax()).attribute(X, B, stdevs=1, target=0)),
    ("gs_stdevs_count", "stdevs",
     lambda lib: lib.GradientShap(_softmax()).attribute(X, B, stdevs=(0.1, 0.2), target=0)),
    ("gs_n_samples_zero", "n_samples", lambda lib: lib.GradientShap(_softmax()).attribute(X, B, n_samples=0, target=0)),
    ("gs_n_samples_negative", "n_samples",
     lambda lib: lib.GradientShap(_softmax()).attribute(X, B, n_samples=-2, target=0)),
    ("gs_n_samples_float", "n_samples",
     lambda lib: lib.GradientShap(_softmax()).attribute(X, B, n_samples=2.0, target=0)),
    ("gs_target_missing", "target", lambda lib: lib.GradientShap(_softmax()).attribute(X, B)),
    ("gs_target_out_of_range", "target", lambda lib: lib.GradientShap(_softmax()).attribute(X, B, target=7)),
    ("gs_target_list_length", "target", lambda lib: lib.GradientShap(_softmax()).attribute(X, B, target=[0, 1])),
    ("gs_inputs_list", "inputs", lambda lib: lib.GradientShap(_softmax()).attribute([X], B, target=0)),
    ("gs_delta_rows", "attributions",
     lambda lib: lib.GradientShap(_softmax()).compute_convergence_delta(torch.zeros(4, 10), X, B, target=0)),
    ("gs_delta_start_shape", "start_point",
     lambda lib: lib.GradientShap(_softmax()).compute_convergence_delta(torch.zeros(4, 10), B, X, target=0)),
    ("ixg_target_out_of_range", "target", lambda lib: lib.InputXGradient(_softmax()).attribute(X, target=9)),
    ("ixg_target_missing", "target", lambda lib: lib.InputXGradient(_softmax()).attribute(X)),
    ("ixg_inputs_list", "inputs", lambda lib: lib.InputXGradient(_softmax()).attribute([X], target=0)),
    ("gbp_not_a_module", "model", lambda lib: lib.GuidedBackprop(lambda x: x)),
    ("gbp_target_out_of_range", "target", lambda lib: lib.GuidedBackprop(_softmax()).attribute(X, target=9)),
    ("gbp_target_missing", "target", lambda lib: lib.GuidedBackprop(_softmax()).attribute(X)),
    ("gs_future", None, lambda lib: lib.GradientShap(_softmax()).attribute_future()),
    ("ixg_future", None, lambda lib: lib.InputXGradient(_softmax()).attribute_future()),
    ("gbp_future", None, lambda lib: lib.GuidedBackprop(_softmax()).attribute_future()),
]


@pytest.mark.parametrize("name,param,call", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise_captum_exception_types(name, param, call):
    import captum.attr as captum_lib

    assert_captum_exception_type(call, captum_lib, param)


def test_signatures_and_defaults_are_captums():
    """The positional order, names and defaults of captum 0.9's constructors and attribute methods
    (fastattr's extras are keyword-only, after them)."""
    import inspect

    import captum.attr as captum_lib

    for name in ("InputXGradient", "GuidedBackprop", "GradientShap", "IntegratedGradients", "Saliency", "NoiseTunnel"):
        ours, theirs = getattr(fc, name), getattr(captum_lib, name)
        for fn in ("__init__", "attribute"):
            o = inspect.signature(getattr(ours, fn)).parameters
            t = inspect.signature(getattr(theirs, fn)).parameters
            captum_params = [(p.name, p.default) for p in t.values()]
            assert [(p.name, p.default) for p in o.values()][:len(captum_params)] == captum_params, (name, fn)
            extras = list(o.values())[len(captum_params):]
            assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extras), (name, fn)
    assert copy.copy(fc.GradientShap(_softmax())).has_convergence_delta()


@pytest.mark.slow
def test_effnet_gradient_shap_equals_captum(effnet, photos):
    """The bench's call (bench/bench_gradient_shap.py) at 4 samples: NCHW (channels_last=False) gives
    captum's map; the default channels-last inputs a map within the float32 rounding of the model."""
    x = photos[:1]
    fwd = lambda inp: effnet(inp).softmax(-1)  # noqa: E731
    bs = torch.stack([torch.zeros(3, 224, 224), torch.full((3, 224, 224), 0.5)])
    (ref, ref_delta), (ours, delta) = _gs_both(fwd, x, bs, n_samples=4, stdevs=0.1, target=285,
                                               return_convergence_delta=True, internal_batch_size=3)
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-2
    np.random.seed(0)
    torch.manual_seed(1)
    nchw = fc.GradientShap(fwd).attribute(x, bs, n_samples=4, stdevs=0.1, target=285, channels_last=False)
    assert_maps_close(nchw, ref, 1e-4)
