"""fastattr.captum against captum 0.9 on captum's own test models (captum.testing.helpers): the
same maps and deltas (1e-5 of the map's largest magnitude in float32, 1e-9 in float64), the same
return structures and dtypes, the same noise for the same seed, the same exception types."""
import functools

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel as CaptumNT
from captum.attr import Saliency as CaptumSaliency
from captum.testing.helpers import basic_models as bm
from captum.testing.helpers.classification_models import SigmoidModel, SoftmaxModel
from torch import nn

import fastattr
import fastattr.captum as fc
from fastattr.captum._forward import CallableModel, InputLayout, find_modules
from fastattr.captum._inputs import Target
from fastattr.methods.integrated_gradients import rule_points

# captum's Saliency warns that it set requires_grad on the caller's inputs (fastattr.captum leaves them alone)
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients:UserWarning")

METHODS = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
REL = {torch.float32: 1e-5, torch.float64: 1e-9}


def _seeded(cls, *args, seed=0):
    torch.manual_seed(seed)
    return cls(*args).eval()


def _rand(*shape, seed, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale + shift


class ViewAfterConv(nn.Module):
    """A conv net that flattens with .view (fails on channels-last activations): fastattr.captum
    must fall back to NCHW inputs for it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        h = self.conv(x).relu()
        return self.fc(h.view(h.shape[0], -1))


def _convnet():
    """captum's BasicModel_ConvNet with random fully-connected weights: its all-ones weights make the
    softmax outputs almost equal and the gradients pure float32 rounding (1e-9 of values near 0.1)."""
    m = _seeded(bm.BasicModel_ConvNet)
    with torch.no_grad():
        m.fc1.weight.copy_(_rand(8, 4, seed=50))
        m.fc2.weight.copy_(_rand(10, 8, seed=51))
    return m


# Each case: (forward_func, inputs (tuple or tensor), attribute kwargs). Built per dtype.
def case(name, dtype):
    def cast(t):
        return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t

    def model(m):
        return m.to(dtype)

    if name == "softmax_mlp":  # single (N, D) input, int target, default baseline
        return model(_seeded(SoftmaxModel, 10, 20, 5)), cast(_rand(4, 10, seed=1)), dict(target=2)
    if name == "sigmoid_mlp_list_target":  # list target, scalar baseline
        return (model(_seeded(SigmoidModel, 6, 8, 3)), cast(_rand(3, 6, seed=2)),
                dict(target=[0, 2, 1], baselines=0.25))
    if name == "basic_elementwise":  # BasicModel: (N, D) -> (N, D), tensor (N,) target, tensor baseline
        return (bm.BasicModel().eval(), cast(_rand(3, 5, seed=3, scale=2)),
                dict(target=torch.tensor([0, 4, 2]), baselines=cast(_rand(3, 5, seed=4, scale=0.1))))
    if name == "convnet_batched":  # conv model (channels-last), 1-element tensor target, internal batch
        return model(_convnet()), cast(_rand(3, 1, 10, 10, seed=5)), dict(target=torch.tensor(3), internal_batch_size=7)
    if name == "conv_padding_dilation":  # 1-row baseline broadcast to the batch
        return (model(_seeded(bm.BasicModel_ConvNetWithPaddingDilation)), cast(_rand(2, 1, 6, 6, seed=6)),
                dict(target=1, baselines=cast(_rand(1, 1, 6, 6, seed=7, scale=0.1))))
    if name == "conv_view":  # .view after a conv: NCHW fallback
        return model(_seeded(ViewAfterConv)), cast(_rand(2, 3, 8, 8, seed=8)), dict(target=4)
    if name == "conv1d_tuple_target":  # (N, C, L) input, output (N, 2, 1), index-tuple target
        return model(_seeded(bm.Conv1dSeqModel)), cast(_rand(2, 4, 1000, seed=9)), dict(target=(1, 0))
    if name == "multilayer_extra_args":  # additional_forward_args: per-example tensor and a bool
        m = model(_seeded(bm.BasicModel_MultiLayer))
        return m, cast(_rand(3, 3, seed=10, shift=1)), dict(
            target=1, additional_forward_args=(cast(_rand(3, 3, seed=11)), False), internal_batch_size=4)
    if name == "multilayer_multidim_list_of_tuples":  # output (N, 2, 2, 2), per-example index tuples
        m = model(_seeded(bm.BasicModel_MultiLayer))
        return m, cast(_rand(2, 3, seed=12, scale=3)), dict(
            target=[(1, 0, 1), (0, 1, 0)], additional_forward_args=(None, True))
    if name == "model2_two_inputs":  # tuple inputs, tuple baselines (number + tensor)
        return (bm.BasicModel2().eval(), (cast(_rand(3, 4, seed=13, shift=3)), cast(_rand(3, 4, seed=14))),
                dict(target=1, baselines=(0.5, cast(torch.zeros(1, 4)))))
    if name == "model4_multiargs":  # tuple inputs, extra args (tensor, int), scalar output
        return (bm.BasicModel4_MultiArgs().eval(), (cast(_rand(3, 4, seed=15, shift=3)), cast(_rand(3, 4, seed=16))),
                dict(additional_forward_args=(cast(_rand(3, 4, seed=17).abs() + 1), 2)))
    if name == "model5_list_arg":  # extra arg a Python list
        return (bm.BasicModel5_MultiArgs().eval(), (cast(_rand(2, 3, seed=18, shift=3)), cast(_rand(2, 3, seed=19))),
                dict(additional_forward_args=([2, 3], 1), internal_batch_size=3))
    if name == "linear_two_inputs_scalar_out":  # cat of (N, 3) and (N, 4) -> (N, 1), target None
        return (model(_seeded(bm.BasicLinearModel)), (cast(_rand(4, 3, seed=20)), cast(_rand(4, 4, seed=21))), {})
    if name == "true_multi_input":  # four inputs of one shape
        m = model(_seeded(bm.BasicModel_MultiLayer_TrueMultiInput))
        xs = tuple(cast(_rand(2, 3, seed=22 + k, scale=2)) for k in range(4))
        return m, xs, dict(target=0)
    if name == "lambda_softmax_closure":  # a plain callable wrapping a model, as users write it
        # (One_Conv's four outputs are equal by construction: scaled apart so the softmax moves)
        m, w = model(_seeded(bm.BasicModel_ConvNet_One_Conv)), cast(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        return (lambda x: (m(x) * w).softmax(-1)), cast(_rand(2, 1, 4, 4, seed=26, shift=7)), dict(target=2)
    if name == "tanh_convnet":  # a smooth conv net (no dead ReLU regions on the path)
        torch.manual_seed(0)
        m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
        return model(m), cast(_rand(2, 3, 6, 6, seed=27)), dict(target=[2, 0])
    raise KeyError(name)


CASES = ["softmax_mlp", "sigmoid_mlp_list_target", "basic_elementwise", "convnet_batched", "conv_padding_dilation",
         "conv_view", "conv1d_tuple_target", "multilayer_extra_args", "multilayer_multidim_list_of_tuples",
         "model2_two_inputs", "model4_multiargs", "model5_list_arg", "linear_two_inputs_scalar_out",
         "true_multi_input", "lambda_softmax_closure", "tanh_convnet"]


def _tuple(t):
    return t if isinstance(t, tuple) else (t,)


def assert_same_structure(ours, ref):
    assert isinstance(ours, tuple) == isinstance(ref, tuple)
    if isinstance(ref, tuple):
        assert len(ours) == len(ref)
    for o, r in zip(_tuple(ours), _tuple(ref)):
        assert isinstance(o, torch.Tensor)
        assert o.shape == r.shape and o.dtype == r.dtype, (o.shape, r.shape, o.dtype, r.dtype)


def assert_maps_close(ours, ref, rel):
    """Same structure, shapes, dtypes; |ours - ref| <= rel * (largest |ref| over all the maps)."""
    assert_same_structure(ours, ref)
    scale = max(r.detach().abs().max().item() for r in _tuple(ref))
    assert scale > 0, "reference maps are all zero: the comparison would be vacuous"
    for o, r in zip(_tuple(ours), _tuple(ref)):
        err = (o.detach() - r.detach()).abs().max().item()
        assert err <= rel * scale, f"max error {err:.3g} > {rel} * {scale:.3g}"


def assert_delta_close(ours, ref, ref_attrs, fwd, inputs, extra, rel):
    """Deltas are differences of O(|F|) numbers: compare to rel * (sum |attr| + |F(inputs)|)."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, (ours.shape, ref.shape, ours.dtype, ref.dtype)
    extra = () if extra is None else (extra if isinstance(extra, tuple) else (extra,))
    with torch.no_grad():
        f = fwd(*_tuple(inputs), *extra).abs().max().item()
    a = max(r.detach().reshape(r.shape[0], -1).abs().sum(1).max().item() for r in _tuple(ref_attrs))
    err = (ours - ref).abs().max().item()
    assert err <= rel * (a + f), f"delta error {err:.3g} > {rel} * ({a:.3g} + {f:.3g})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASES)
def test_ig_equals_captum(name, method, dtype):
    fwd, x, kw = case(name, dtype)
    kw = dict(kw, n_steps=7, method=method)
    ref, ref_delta = CaptumIG(fwd).attribute(x, return_convergence_delta=True, **kw)
    ours, delta = fc.IntegratedGradients(fwd).attribute(x, return_convergence_delta=True, **kw)
    assert_maps_close(ours, ref, REL[dtype])
    assert_delta_close(delta, ref_delta, ref, fwd, x, kw.get("additional_forward_args"), REL[dtype])
    plain = fc.IntegratedGradients(fwd).attribute(x, **kw)  # no delta: the maps alone, same structure
    assert_same_structure(plain, ref)
    assert_maps_close(plain, ours, 0.0 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["softmax_mlp", "model2_two_inputs", "convnet_batched"])
def test_ig_local_attribution_equals_captum(name, dtype):
    """multiply_by_inputs=False: the integrated gradients without the (x - b) factor."""
    fwd, x, kw = case(name, dtype)
    ref = CaptumIG(fwd, multiply_by_inputs=False).attribute(x, n_steps=5, **kw)
    ig = fc.IntegratedGradients(fwd, multiply_by_inputs=False)
    assert not ig.multiplies_by_inputs and ig.has_convergence_delta()
    assert_maps_close(ig.attribute(x, n_steps=5, **kw), ref, REL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("abs_", [True, False])
@pytest.mark.parametrize("name", ["softmax_mlp", "basic_elementwise", "convnet_batched", "conv_view",
                                  "conv1d_tuple_target", "multilayer_extra_args", "model2_two_inputs",
                                  "model4_multiargs", "lambda_softmax_closure"])
def test_saliency_equals_captum(name, abs_, dtype):
    fwd, x, kw = case(name, dtype)
    kw = {k: kw[k] for k in ("target", "additional_forward_args") if k in kw}
    ref = CaptumSaliency(fwd).attribute(x, abs=abs_, **kw)
    ours = fc.Saliency(fwd).attribute(x, abs=abs_, **kw)
    assert_maps_close(ours, ref, REL[dtype])


def _run_nt(lib, fwd, x, inner, nt_kw, seed):
    algo = (lib.IntegratedGradients if inner == "ig" else lib.Saliency)(fwd)
    torch.manual_seed(seed)
    np.random.seed(seed)
    return lib.NoiseTunnel(algo).attribute(x, **nt_kw)


class _CaptumLib:
    IntegratedGradients, Saliency, NoiseTunnel = CaptumIG, CaptumSaliency, CaptumNT


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("inner,name,extra", [
    ("ig", "softmax_mlp", dict(nt_samples=5, nt_samples_batch_size=2, stdevs=0.5, n_steps=6,
                                return_convergence_delta=True)),  # 2 batches of 2 and a last one of 1
    ("ig", "model2_two_inputs", dict(nt_samples=4, stdevs=(0.3, 0.6), n_steps=5, method="riemann_middle")),
    ("ig", "multilayer_extra_args", dict(nt_samples=3, nt_samples_batch_size=1, stdevs=0.2, n_steps=4,
                                          return_convergence_delta=True)),
    ("ig", "basic_elementwise", dict(nt_samples=4, nt_samples_batch_size=3, stdevs=0.4, n_steps=5)),  # (N,) baselines
    ("saliency", "convnet_batched", dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.3)),
    ("saliency", "lambda_softmax_closure", dict(nt_samples=3, stdevs=2.0, abs=False)),
])
def test_noise_tunnel_equals_captum(inner, name, extra, nt_type, dtype):
    fwd, x, kw = case(name, dtype)
    if inner == "saliency":
        kw = {k: kw[k] for k in ("target", "additional_forward_args") if k in kw}
    kw = dict(kw, nt_type=nt_type, **extra)
    kw.pop("internal_batch_size", None)
    ref = _run_nt(_CaptumLib, fwd, x, inner, kw, seed=11)
    ours = _run_nt(fc, fwd, x, inner, kw, seed=11)
    if kw.get("return_convergence_delta"):
        (ref, ref_delta), (ours, delta) = ref, ours
        assert delta.shape == (x.shape[0] * kw["nt_samples"],)
        # the deltas' F(copies) come from the same noise, so they check the noise is the same too
        assert_delta_close(delta, ref_delta, ref, fwd, x, kw.get("additional_forward_args"), REL[dtype])
    assert_maps_close(ours, ref, REL[dtype])


@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
def test_noise_tunnel_baselines_from_distribution_equal_captum(nt_type):
    """draw_baseline_from_distrib: baselines drawn with numpy's global RNG, as captum draws them."""
    fwd, x, kw = case("softmax_mlp", torch.float64)
    refs = _rand(6, 10, seed=30, scale=0.2).double()
    nt_kw = dict(kw, nt_type=nt_type, nt_samples=5, nt_samples_batch_size=2, stdevs=0.1, n_steps=5,
                 baselines=refs, draw_baseline_from_distrib=True, return_convergence_delta=True)
    (ref, ref_delta), (ours, delta) = (_run_nt(lib, fwd, x, "ig", nt_kw, seed=3) for lib in (_CaptumLib, fc))
    assert_maps_close(ours, ref, 1e-9)
    assert_delta_close(delta, ref_delta, ref, fwd, x, None, 1e-9)


def test_noise_tunnel_same_seed_same_maps_and_copies_in_few_walks():
    """One engine walk for all copies (nt_samples_batch_size only bounds captum's memory)."""
    fwd, x, kw = case("softmax_mlp", torch.float32)
    calls = []
    fwd.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    a = _run_nt(fc, fwd, x, "ig", dict(kw, nt_samples=6, nt_samples_batch_size=1, n_steps=8, stdevs=0.5), seed=4)
    b = _run_nt(fc, fwd, x, "ig", dict(kw, nt_samples=6, nt_samples_batch_size=1, n_steps=8, stdevs=0.5), seed=4)
    assert torch.equal(a, b)
    total = 4 * 6 * 8
    assert sum(calls) == 2 * total  # gradient points only (no forward-only passes), both calls
    assert len(calls) < 2 * total // 8  # in chunks of many points, not one call per copy


def test_noise_tunnel_over_a_captum_method_is_captum_noise_tunnel():
    fwd, x, kw = case("softmax_mlp", torch.float32)
    torch.manual_seed(1)
    ours = fc.NoiseTunnel(CaptumSaliency(fwd)).attribute(x, nt_samples=3, **kw)
    torch.manual_seed(1)
    ref = CaptumNT(CaptumSaliency(fwd)).attribute(x, nt_samples=3, **kw)
    assert torch.equal(ours, ref)


def test_gausslegendre_rule_equals_captum_approximation_and_ig():
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters("gausslegendre")
    for m in (1, 2, 7, 32, 50):
        a, w = rule_points("gausslegendre", m)
        assert a.dtype == w.dtype == torch.float64
        assert a.tolist() == alphas(m) and w.tolist() == step_sizes(m)  # bit for bit, float64
    from conftest import Softmax, make_small_cnn

    model = make_small_cnn()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 4, 7])
    ours = fastattr.attribute(model, x, t, steps=9, rule="gausslegendre", batch_size=5)
    ref = CaptumIG(Softmax(model)).attribute(x, target=t, n_steps=9, method="gausslegendre")
    assert_maps_close(ours, ref, 1e-5)
    idgi = fastattr.explain(model, x, t, steps=9, rule="gausslegendre", idgi=True)
    # IDGI on the Gauss-Legendre points: complete from the baseline (the segment before the first
    # node, a_0 > 0, goes with its gradient) to the input
    start = fastattr.explain(model, torch.zeros_like(x), t, method="vanilla").scores
    torch.testing.assert_close(idgi.attributions.flatten(1).sum(1), idgi.scores - start, rtol=0, atol=1e-5)


# -- exceptions: captum and fastattr.captum on the same bad inputs --------------------------------
def _softmax():
    return _seeded(SoftmaxModel, 10, 20, 5)


X = _rand(4, 10, seed=40)
X2 = (_rand(3, 4, seed=41), _rand(3, 4, seed=42))

BAD = [  # (name, parameter named in fastattr's message or None, call(lib))
    ("inputs_list", "inputs", lambda lib: lib.IntegratedGradients(_softmax()).attribute([X], target=0)),
    ("baselines_string", "baselines", lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, "zero", 0)),
    ("baselines_shape", "baselines",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, torch.zeros(2, 10), target=0)),
    ("baselines_count", "baselines",
     lambda lib: lib.IntegratedGradients(bm.BasicModel2().eval()).attribute(X2, baselines=(0.0,), target=0)),
    ("method_unknown", "method",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=0, method="simpson")),
    ("n_steps_negative", "n_steps", lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=0, n_steps=-1)),
    ("n_steps_zero", "n_steps", lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=0, n_steps=0)),
    ("n_steps_one_riemann", "n_steps",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=0, n_steps=1, method="riemann_left")),
    ("target_missing", "target", lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, n_steps=3)),
    ("target_out_of_range", "target",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=5, n_steps=3)),
    ("target_list_length", "target",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=[0, 1], n_steps=3)),
    ("target_tensor_length", "target",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=torch.tensor([0, 1]), n_steps=3)),
    ("target_tensor_out_of_range", "target",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=torch.tensor([0, 1, 9, 2]), n_steps=3)),
    ("target_list_out_of_range", "target",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=[0, 1, -1, 2], n_steps=3)),
    ("target_tuple_too_long", "target",
     lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=(1, 0), n_steps=3)),
    ("target_float", "target", lambda lib: lib.IntegratedGradients(_softmax()).attribute(X, target=1.5, n_steps=3)),
    ("missing_forward_args", None,
     lambda lib: lib.IntegratedGradients(bm.BasicModel4_MultiArgs().eval()).attribute(X2, n_steps=3)),
    ("saliency_target_out_of_range", "target", lambda lib: lib.Saliency(_softmax()).attribute(X, target=7)),
    ("saliency_target_missing", "target", lambda lib: lib.Saliency(_softmax()).attribute(X)),
    ("nt_type_unknown", "nt_type",
     lambda lib: lib.NoiseTunnel(lib.Saliency(_softmax())).attribute(X, nt_type="smooth", target=0)),
    ("nt_stdevs_int", "stdevs", lambda lib: lib.NoiseTunnel(lib.Saliency(_softmax())).attribute(X, stdevs=1, target=0)),
    ("nt_stdevs_count", "stdevs",
     lambda lib: lib.NoiseTunnel(lib.Saliency(bm.BasicModel2().eval())).attribute(
         X2, stdevs=(0.1, 0.2, 0.3), target=0)),
    ("nt_batch_size_zero", None,
     lambda lib: lib.NoiseTunnel(lib.Saliency(_softmax())).attribute(X, nt_samples_batch_size=0, target=0)),
    ("nt_saliency_delta", None,
     lambda lib: lib.NoiseTunnel(lib.Saliency(_softmax())).attribute(X, target=0, return_convergence_delta=True)),
    ("nt_unknown_kwarg", None,
     lambda lib: lib.NoiseTunnel(lib.IntegratedGradients(_softmax())).attribute(X, target=0, n_step=3)),
    ("nt_distribution_baseline_shape", "baselines",
     lambda lib: lib.NoiseTunnel(lib.IntegratedGradients(_softmax())).attribute(
         X, target=0, n_steps=3, baselines=torch.zeros(5, 9), draw_baseline_from_distrib=True)),
]


def assert_captum_exception_type(call, captum_lib, param):
    """call(captum_lib) and call(fastattr.captum) both raise; ours is captum's type (and names param)."""
    with pytest.raises(Exception) as ref:
        call(captum_lib)
    with pytest.raises(Exception) as ours:
        call(fc)
    # ours is captum's type (or a subclass also deriving from ValueError/TypeError): every
    # `except` clause written for captum catches it
    assert isinstance(ours.value, type(ref.value)), (type(ours.value).__mro__, type(ref.value))
    if param is not None:
        assert str(ours.value).startswith(param + ":"), str(ours.value)
        assert isinstance(ours.value, (ValueError, TypeError))


@pytest.mark.parametrize("name,param,call", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise_captum_exception_types(name, param, call):
    assert_captum_exception_type(call, _CaptumLib, param)


# -- the adapter: module discovery, channels-last, frozen parameters -------------------------------
_GLOBAL_CONV = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(3))


def _uses_global(x):
    return _GLOBAL_CONV(x).softmax(-1)


class _Holder:
    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        return self.model(x)


def test_find_modules_looks_through_callables():
    m = _seeded(bm.BasicModel_ConvNet)
    assert find_modules(m) == [m]
    assert find_modules(m.forward) == [m]
    assert find_modules(lambda x: m(x).log_softmax(-1)) == [m]  # closure
    assert find_modules(functools.partial(lambda x, net: net(x), net=m)) == [m]
    assert find_modules(lambda x, net=m: net(x)) == [m]  # default argument
    assert find_modules(_uses_global) == [_GLOBAL_CONV]  # referenced global
    assert find_modules(_Holder(m)) == [m]  # a callable object holding the model
    assert find_modules(lambda x: torch.relu(x)) == []


def test_channels_last_chosen_for_callables_wrapping_conv_models():
    conv = _seeded(bm.BasicModel_ConvNet)
    x = torch.zeros(2, 1, 10, 10)
    layout = InputLayout((x,))
    assert CallableModel(lambda t: conv(t), layout, Target("none"), ()).channels_last
    assert not CallableModel(lambda t: conv(t), layout, Target("none"), (), channels_last=False).channels_last
    mlp = _seeded(SoftmaxModel, 10, 20, 5)
    assert not CallableModel(lambda t: mlp(t), InputLayout((torch.zeros(2, 10),)), Target("none"), ()).channels_last
    # a parameter-free callable: the engine finds the inputs' device through a marker buffer
    from fastattr.engine import model_device

    assert model_device(CallableModel(torch.relu, InputLayout((x,)), Target("none"), ())) == x.device
    # a model that cannot take channels-last inputs is found out on its first call and remembered
    fwd, xv, kw = case("conv_view", torch.float32)
    ig = fc.IntegratedGradients(fwd)
    ig.attribute(xv, n_steps=3, **kw)
    assert ig._channels_last is False


def test_parameters_frozen_during_the_call_and_restored():
    model = _seeded(SoftmaxModel, 10, 20, 5)
    model.lin2.weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    seen = []

    def fwd(x):
        seen.append([p.requires_grad for p in model.parameters()])
        return model(x)

    fc.IntegratedGradients(fwd).attribute(X, target=1, n_steps=4)
    assert seen and all(not any(s) for s in seen)  # no parameter gradients inside the walk
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_works_under_no_grad_and_inference_mode():
    fwd, x, kw = case("softmax_mlp", torch.float32)
    ref = fc.IntegratedGradients(fwd).attribute(x, n_steps=4, **kw)
    with torch.no_grad():
        a = fc.IntegratedGradients(fwd).attribute(x, n_steps=4, **kw)
    with torch.inference_mode():
        b = fc.Saliency(fwd).attribute(x, **kw)
    assert torch.equal(a, ref)
    assert torch.equal(b, fc.Saliency(fwd).attribute(x, **kw))


# -- fastattr extras ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax_mlp", "linear_two_inputs_scalar_out", "tanh_convnet"])
def test_idgi_extra_is_complete(name):
    """idgi=True: IDGI on captum's path points; from the baseline (riemann_left) it is complete, so
    captum's convergence delta vanishes (models with no all-zero gradient step on the path: such a
    step contributes nothing, SPEC.md)."""
    fwd, x, kw = case(name, torch.float64)
    attrs, delta = fc.IntegratedGradients(fwd).attribute(x, n_steps=8, method="riemann_left", idgi=True,
                                                         return_convergence_delta=True, **kw)
    scale = max(a.abs().flatten(1).sum(1).max().item() for a in _tuple(attrs))
    assert scale > 0
    assert delta.abs().max().item() <= 1e-6 * scale


def test_guided_backward_extra_equals_fastattr_guided_ig():
    from conftest import make_small_cnn

    model = make_small_cnn(seed=4)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([2, 6])
    ours = fc.IntegratedGradients(model).attribute(x, target=t, n_steps=6, method="riemann_left", backward="guided")
    ref = fastattr.attribute(model, x, t, steps=6, rule="left", output="logit", backward="guided")
    assert_maps_close(ours, ref, 1e-5)
    plain = fc.IntegratedGradients(model).attribute(x, target=t, n_steps=6, method="riemann_left")
    assert (plain - ours).abs().max() > 1e-3 * ours.abs().max()  # the guided backward changed the map


def test_extras_checked():
    fwd, x, kw = case("softmax_mlp", torch.float32)
    with pytest.raises(ValueError, match="^backward:"):
        fc.IntegratedGradients(fwd).attribute(x, backward="guidded", **kw)
    with pytest.raises(TypeError, match="^idgi:"):
        fc.IntegratedGradients(fwd).attribute(x, idgi="yes", **kw)
    with pytest.raises(ValueError, match="^idgi:"):
        fc.IntegratedGradients(fwd, multiply_by_inputs=False).attribute(x, idgi=True, **kw)
    with pytest.raises(TypeError, match="^forward_func:"):
        fc.Saliency("model")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_forward_func_sees_captums_path_points_bit_for_bit(method, dtype):
    """The points given to forward_func are captum's (baseline + alpha * (input - baseline) with
    captum's alphas, in the input's dtype), in another order: captum goes step-major."""
    seen = []

    def fwd(a, b, c):
        seen.append((a.detach().clone(), b.detach().clone()))
        return (a.float().sum(1) * b.float().flatten(1).sum(1) * c).reshape(-1, 1)

    x = (_rand(3, 4, seed=60).to(dtype), _rand(3, 2, 2, seed=61).to(dtype))
    kw = dict(baselines=(0.3, _rand(1, 2, 2, seed=62).to(dtype)), additional_forward_args=2.0, n_steps=5,
              method=method, target=0)
    ref_maps = CaptumIG(fwd).attribute(x, **kw)
    ref = [torch.cat(t) for t in zip(*seen)]
    seen.clear()
    maps = fc.IntegratedGradients(fwd).attribute(x, internal_batch_size=4, **kw)
    ours = [torch.cat(t) for t in zip(*seen)]
    assert_maps_close(maps, ref_maps, 1e-5)  # float16 inputs: float32 maps, as captum's
    for r, o in zip(ref, ours):
        step_major = r.reshape(5, 3, *r.shape[1:]).transpose(0, 1).reshape(r.shape)
        assert o.dtype == r.dtype
        assert torch.equal(o, step_major)


def test_training_mode_model_explained_in_eval_mode_and_restored():
    """captum runs a model as it is; fastattr's engine explains it in eval mode (dropout off),
    says so, and restores every training flag."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    with pytest.warns(UserWarning, match="training mode"):
        ours = fc.IntegratedGradients(model).attribute(X, target=1, n_steps=5)
    assert model.training and all(m.training for m in model.modules())
    ref = CaptumIG(model.eval()).attribute(X, target=1, n_steps=5)
    assert_maps_close(ours, ref, 1e-5)


def test_non_finite_scores_are_an_error():
    """captum returns NaN maps for a forward_func that produces NaN; fastattr names the problem."""
    def fwd(x):
        out = x.sum(1, keepdim=True)
        return torch.where(x[:, :1] > 0, out, out * float("nan"))

    with pytest.raises(ValueError, match="non-finite"):
        fc.IntegratedGradients(fwd).attribute(X, n_steps=4)
    # finite scores, infinite gradient (sqrt at 0): named too, not a NaN/inf map
    x = X.clone()
    x[1, 3] = 0.0
    with pytest.raises(ValueError, match="image 1"):
        fc.Saliency(lambda t: t.abs().sqrt().sum(1)).attribute(x)


@pytest.mark.slow
def test_effnet_softmax_lambda_equals_captum(effnet, photos):
    """The bench's call (bench/bench_captum.py) at 4 steps: a softmax lambda over the pretrained
    EfficientNet-Lite0 (found through the closure: channels-last inputs), gausslegendre."""
    x = photos[:1]
    fwd = lambda inp: effnet(inp).softmax(-1)  # noqa: E731
    kw = dict(target=285, n_steps=4, internal_batch_size=8, return_convergence_delta=True)
    assert find_modules(fwd) == [effnet]
    ref, ref_delta = CaptumIG(fwd).attribute(x, **kw)
    ours, delta = fc.IntegratedGradients(fwd).attribute(x, **kw)
    assert_maps_close(ours, ref, 1e-4)
    assert_delta_close(delta, ref_delta, ref, fwd, x, None, 1e-4)


# -- issue 21: rank-1 inputs, integer and bool inputs, captum's wrappers around ours, IDGI ends -----
def _tanh_scalar_model(dtype=torch.float32):
    """(N,) -> (N, 3): one scalar feature per example (captum's basic configurations)."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 3)).eval().to(dtype)
    return lambda x: lin(x[:, None])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("method", METHODS)
def test_rank1_inputs_ig_equals_captum(method, dtype):
    """Issue 21: x = torch.rand(4) (N examples of one scalar) was an IndexError from check_map_finite."""
    fwd = _tanh_scalar_model(dtype)
    x = _rand(5, seed=70).to(dtype)
    kw = dict(target=1, n_steps=6, method=method, baselines=0.2)
    ref, ref_delta = CaptumIG(fwd).attribute(x, return_convergence_delta=True, **kw)
    ours, delta = fc.IntegratedGradients(fwd).attribute(x, return_convergence_delta=True, **kw)
    assert ours.shape == (5,)
    assert_maps_close(ours, ref, REL[dtype])
    assert_delta_close(delta, ref_delta, ref, fwd, x, None, REL[dtype])


@pytest.mark.parametrize("abs_", [True, False])
def test_rank1_inputs_saliency_leaves_grad_and_requires_grad_alone(abs_):
    """captum's own Saliency test: x = tensor([1, 2, 3, 0, -1, 7], requires_grad=True) with a .grad set;
    the map is captum's and x.grad / x.requires_grad are exactly as they were."""
    model = bm.BasicModel()
    for requires_grad in (True, False):
        x = torch.tensor([1.0, 2.0, 3.0, 0.0, -1.0, 7.0], requires_grad=requires_grad)
        if requires_grad:
            x.grad = torch.randn_like(x)
        before = None if x.grad is None else x.grad.clone()
        ours = fc.Saliency(model).attribute(x, abs=abs_)
        assert x.requires_grad == requires_grad and x.is_leaf
        assert (x.grad is None) if before is None else torch.equal(x.grad, before)
        assert ours.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]  # captum's hand-computed gradients (abs or not)
        assert not ours.requires_grad
        ig = fc.IntegratedGradients(model).attribute(x, n_steps=5)
        assert ig.shape == (6,) and ((x.grad is None) if before is None else torch.equal(x.grad, before))


@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
def test_rank1_inputs_noise_tunnel_equals_captum(nt_type):
    fwd = _tanh_scalar_model(torch.float64)
    x = _rand(4, seed=71).double()
    kw = dict(nt_type=nt_type, nt_samples=5, nt_samples_batch_size=2, stdevs=0.3, target=2)
    ref = _run_nt(_CaptumLib, fwd, x, "ig", dict(kw, n_steps=5), seed=2)
    ours = _run_nt(fc, fwd, x, "ig", dict(kw, n_steps=5), seed=2)
    assert_maps_close(ours, ref, 1e-9)
    assert_maps_close(_run_nt(fc, fwd, x, "saliency", kw, seed=2), _run_nt(_CaptumLib, fwd, x, "saliency", kw, seed=2),
                      1e-9)


def _count_model():
    """A model of integer counts (it casts them), as users write one for count data."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    return lambda z: lin(z.float())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("baselines", [None, 1, "int_tensor"])
def test_integer_inputs_ig_equals_captum_and_is_complete(method, baselines):
    """Issue 21: torch.tensor([[3, 1, 2, 5]]) gave a map summing to -0.72 where f(x) - f(0) = -0.62:
    the path points were truncated to integers. captum computes them in floating point."""
    fwd = _count_model()
    x = torch.tensor([[3, 1, 2, 5], [0, 4, 1, 2]])
    b = torch.tensor([[1, 0, 0, 1]]) if baselines == "int_tensor" else baselines
    kw = dict(target=1, n_steps=40, method=method, baselines=b)
    ref, ref_delta = CaptumIG(fwd).attribute(x, return_convergence_delta=True, **kw)
    ours, delta = fc.IntegratedGradients(fwd).attribute(x, return_convergence_delta=True, **kw)
    assert ours.dtype == ref.dtype == torch.float32
    assert_maps_close(ours, ref, 1e-5)
    assert_delta_close(delta, ref_delta, ref, fwd, x, None, 1e-5)
    assert delta.abs().max() < 0.02  # completeness up to the rule's error at 40 steps (the bug: 0.1)
    complete = fc.IntegratedGradients(fwd).attribute(x, return_convergence_delta=True, idgi=True, **kw)[1]
    assert complete.abs().max() < 1e-6


def test_integer_inputs_forward_func_sees_captums_points_bit_for_bit():
    seen = []
    lin = _count_model()

    def fwd(z):
        seen.append(z.detach().clone())
        return lin(z)

    x = torch.tensor([[3, 1, 2, 5], [0, 4, 1, 2]])
    CaptumIG(fwd).attribute(x, target=0, n_steps=5)
    ref = torch.cat(seen)
    seen.clear()
    fc.IntegratedGradients(fwd).attribute(x, target=0, n_steps=5)
    ours = torch.cat(seen)
    assert ours.dtype == ref.dtype == torch.float32
    assert torch.equal(ours, ref.reshape(5, 2, 4).transpose(0, 1).reshape(10, 4))


def test_bool_and_integer_inputs_in_every_class():
    """Bool inputs (captum's IG cannot subtract them) are explained as 0/1; integer and bool inputs
    of Saliency / InputXGradient are differentiated at their float values (captum: RuntimeError);
    NoiseTunnel's noisy copies are float, as in captum."""
    fwd = _count_model()
    xb = torch.tensor([[True, False, True, True], [False, True, True, False]])
    xf = xb.float()
    ig_b, d_b = fc.IntegratedGradients(fwd).attribute(xb, target=1, n_steps=20, return_convergence_delta=True)
    assert_maps_close(ig_b, CaptumIG(fwd).attribute(xf, target=1, n_steps=20), 1e-6)
    assert d_b.abs().max() < 1e-3
    for x in (xb, xb.long()):
        assert_maps_close(fc.Saliency(fwd).attribute(x, target=1), CaptumSaliency(fwd).attribute(xf, target=1), 1e-6)
    kw = dict(target=1, nt_samples=4, stdevs=0.5)
    torch.manual_seed(5)
    ref = CaptumNT(CaptumSaliency(fwd)).attribute(xb, **kw)
    torch.manual_seed(5)
    assert_maps_close(fc.NoiseTunnel(fc.Saliency(fwd)).attribute(xb, **kw), ref, 1e-6)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("inner,name,extra", [
    ("ig", "softmax_mlp", dict(nt_samples=5, nt_samples_batch_size=2, stdevs=0.5, n_steps=6)),
    ("ig", "model2_two_inputs", dict(nt_samples=4, stdevs=(0.3, 0.6), n_steps=5, method="riemann_middle",
                                     return_convergence_delta=True)),
    ("saliency", "convnet_batched", dict(nt_samples=6, nt_samples_batch_size=4, stdevs=0.3)),
    ("saliency", "lambda_softmax_closure", dict(nt_samples=3, stdevs=2.0, abs=False)),
    ("saliency", "multilayer_extra_args", dict(nt_samples=3, stdevs=0.2)),  # additional_forward_args
])
def test_captums_noise_tunnel_around_ours_equals_our_noise_tunnel(inner, name, extra, nt_type):
    """Issue 21: captum's NoiseTunnel calls attribute.__wrapped__ (AttributeError: 'function' object has
    no attribute '__wrapped__'). It works now and gives fastattr.captum's NoiseTunnel's maps."""
    fwd, x, kw = case(name, torch.float64)
    if inner == "saliency":
        kw = {k: kw[k] for k in ("target", "additional_forward_args") if k in kw}
    kw = dict(kw, nt_type=nt_type, **extra)
    kw.pop("internal_batch_size", None)
    algo = (fc.IntegratedGradients if inner == "ig" else fc.Saliency)(fwd)
    torch.manual_seed(8)
    theirs = CaptumNT(algo).attribute(x, **kw)
    ours = _run_nt(fc, fwd, x, inner, kw, seed=8)
    if kw.get("return_convergence_delta"):
        (theirs, theirs_delta), (ours, delta) = theirs, ours
        torch.testing.assert_close(delta, theirs_delta, rtol=0, atol=1e-9)
    if nt_type == "vargrad" and name == "multilayer_extra_args":  # piecewise linear: every copy's gradient is equal
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    else:
        assert_maps_close(ours, theirs, 1e-9)
    assert fc.IntegratedGradients.attribute.__wrapped__.__name__ == "attribute"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["softmax_mlp", "linear_two_inputs_scalar_out", "tanh_convnet", "model2_two_inputs"])
def test_idgi_extra_is_complete_for_every_rule(name, method):
    """Issue 21: idgi=True missed f(x) - f(b) by the segment before the first point for riemann_right,
    riemann_middle and gausslegendre. captum's convergence delta now vanishes for every rule."""
    fwd, x, kw = case(name, torch.float64)
    attrs, delta = fc.IntegratedGradients(fwd).attribute(x, n_steps=8, method=method, idgi=True,
                                                         return_convergence_delta=True, internal_batch_size=5, **kw)
    scale = max(a.abs().flatten(1).sum(1).max().item() for a in _tuple(attrs))
    assert scale > 0
    assert delta.abs().max().item() <= 1e-9 * max(scale, 1.0)
