"""backward="guided" (SPEC.md "IG with guided non-linearity"): IG equals captum IG on a hooked copy
of a ReLU + non-overlapping max-pool CNN; overlapping max-pool follows a numpy oracle (clip, then
route); every functional / module / in-place form takes the rule; no mode or hook survives the
call (also on error); compile=True, idgi=True and EfficientNet-Lite0 work; the Triton kernels equal
the references under TRITON_INTERPRET=1 and compile for sm_90; opcheck passes on both ops."""
import contextlib
import copy
import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn

import fastattr
from conftest import Softmax
from fastattr.backward.guided import GuidedMode
from fastattr.kernels import guided_backward as kgb

TARGETS = torch.tensor([0, 3, 7, 9])


def mode_stack_depth() -> int:
    return torch._C._len_torch_function_stack()


# -- IG against captum on a hooked copy ---------------------------------------------------------

def hooked_copy(model: nn.Module) -> nn.Module:
    """A copy whose ReLU / max-pool modules replace their input gradient by its relu (the guided
    rule as module backward hooks; equal to SPEC.md's max-pool rule for non-overlapping windows)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, (nn.ReLU, nn.MaxPool2d)):
            mod.register_full_backward_hook(lambda _m, gin, _gout: (gin[0].clamp_min(0),))
    return m




@pytest.mark.parametrize("output", ["probability", "logit"])
def test_guided_ig_equals_captum_on_hooked_copy(small_cnn, small_images, output):
    steps = 8
    ours = fastattr.attribute(small_cnn, small_images, TARGETS, steps=steps, backward="guided",
                              output=output, batch_size=5)  # 5: an image's path spans two chunks
    fwd = hooked_copy(small_cnn)
    fwd = Softmax(fwd) if output == "probability" else fwd
    ref = CaptumIG(fwd).attribute(small_images, baselines=torch.zeros_like(small_images), target=TARGETS,
                                  n_steps=steps, method="riemann_left").detach()
    scale = ref.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, ref, atol=1e-5 * scale, rtol=1e-5)
    standard = fastattr.attribute(small_cnn, small_images, TARGETS, steps=steps, output=output, batch_size=5)
    assert (standard - ours).abs().max() > 1e-2 * scale, "guided map equals the standard one: rule not applied"


# -- overlapping max-pool against a numpy oracle -------------------------------------------------

def pool_out_size(n, k, s, p, d, ceil):
    """PyTorch's max-pool output length (the last window must start inside the padded input)."""
    eff = d * (k - 1) + 1
    num = n + 2 * p - eff
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def oracle_guided_vg(x, wc, w, target, k, s, p, d, ceil):
    """numpy oracle of the guided input gradient of logit_target for
    x -> conv1x1(wc) -> relu -> maxpool(k, s, p, d, ceil) -> flatten -> linear(w): clip the pool's
    output gradient with relu, route it to each window's (first) argmax, relu again at the ReLU."""
    z = np.einsum("oc,chw->ohw", wc, x)
    a = np.maximum(z, 0)
    C, H, W = a.shape
    Ho, Wo = pool_out_size(H, k, s, p, d, ceil), pool_out_size(W, k, s, p, d, ceil)
    g_pool = np.maximum(w[target].reshape(C, Ho, Wo), 0)  # d logit / d pooled, clipped
    g_a = np.zeros_like(a)
    for c in range(C):
        for i in range(Ho):
            for j in range(Wo):
                best, arg = -np.inf, None
                for u in range(k):
                    for v in range(k):
                        r, q = i * s - p + u * d, j * s - p + v * d
                        if 0 <= r < H and 0 <= q < W and a[c, r, q] > best:
                            best, arg = a[c, r, q], (r, q)
                g_a[c, arg[0], arg[1]] += g_pool[c, i, j]
    g_z = np.maximum(g_a * (z > 0), 0)
    return np.einsum("oc,ohw->chw", wc, g_z)


class PoolNet(nn.Module):
    def __init__(self, wc, w, pool):
        super().__init__()
        self.conv = nn.Conv2d(wc.shape[1], wc.shape[0], 1, bias=False)
        self.pool = pool
        self.fc = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(wc)[:, :, None, None])
            self.fc.weight.copy_(torch.from_numpy(w))

    def forward(self, x):
        return self.fc(self.pool(F.relu(self.conv(x))).flatten(1))


@pytest.mark.parametrize("k,s,p,d,ceil,size", [
    (3, 2, 1, 1, False, 9), (3, 1, 0, 1, False, 7), (3, 2, 1, 2, True, 11), (2, 1, 0, 1, True, 6),
    (3, 2, 0, 1, True, 8)])
def test_overlapping_max_pool_follows_spec_oracle(k, s, p, d, ceil, size):
    rng = np.random.default_rng(k * 100 + s * 10 + size)
    C = 3
    x = rng.random((2, 3, size, size)).astype(np.float32)
    wc = rng.standard_normal((C, 3)).astype(np.float32)
    n_out = C * pool_out_size(size, k, s, p, d, ceil) ** 2
    w = rng.standard_normal((5, n_out)).astype(np.float32)
    pool = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)
    model = PoolNet(wc, w, pool).eval()
    targets = torch.tensor([1, 4])
    ours = fastattr.attribute(model, torch.from_numpy(x), targets, method="vanilla", backward="guided",
                              output="logit")
    ref = np.stack([oracle_guided_vg(x[i], wc.astype(np.float64), w.astype(np.float64), int(t), k, s, p, d, ceil)
                    for i, t in enumerate(targets)])
    assert np.abs(ref).max() > 0
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# -- every functional / module / in-place form ---------------------------------------------------

ACT_FORMS = {
    "F.relu": F.relu, "F.relu inplace": lambda z: F.relu(z, inplace=True), "torch.relu": torch.relu,
    "torch.relu_": torch.relu_, "F.relu_": F.relu_, "Tensor.relu": lambda z: z.relu(),
    "Tensor.relu_": lambda z: z.relu_(), "nn.ReLU": nn.ReLU(), "nn.ReLU inplace": nn.ReLU(inplace=True),
    "nn.ReLU6": nn.ReLU6(), "nn.ReLU6 inplace": nn.ReLU6(inplace=True), "F.relu6": F.relu6,
    "F.hardtanh": lambda z: F.hardtanh(z, -2.0, 3.0), "F.hardtanh_": lambda z: F.hardtanh_(z, min_val=-2.0),
    "nn.Hardtanh": nn.Hardtanh(), "F.leaky_relu": lambda z: F.leaky_relu(z, 0.2),
    "F.leaky_relu_": F.leaky_relu_, "nn.LeakyReLU inplace": nn.LeakyReLU(0.1, inplace=True),
    "nn.LeakyReLU negative slope": nn.LeakyReLU(-0.5), "F.silu": F.silu,
    "F.silu inplace": lambda z: F.silu(z, inplace=True), "nn.SiLU": nn.SiLU(), "F.gelu": F.gelu,
    "F.gelu tanh": lambda z: F.gelu(z, approximate="tanh"), "nn.GELU tanh": nn.GELU(approximate="tanh"),
    "F.hardswish": F.hardswish, "nn.Hardswish inplace": nn.Hardswish(inplace=True),
    "F.elu": lambda z: F.elu(z, alpha=0.7), "F.elu_": F.elu_, "nn.ELU inplace": nn.ELU(1.3, inplace=True),
    "F.selu": F.selu, "nn.SELU inplace": nn.SELU(inplace=True), "F.celu": lambda z: F.celu(z, alpha=0.5),
    "torch.celu_": torch.celu_,
}


def act_input():
    """(2, 3, 5, 7) values spanning every activation's kinks, boundaries included."""
    z = torch.linspace(-7, 7, 210).reshape(2, 3, 5, 7)
    z.view(-1)[:8] = torch.tensor([0.0, 6.0, -3.0, 3.0, -2.0, 1.0, -1.0, 1e-8])
    return z


@pytest.mark.parametrize("name", list(ACT_FORMS))
def test_every_activation_form_takes_relu_of_its_gradient(name):
    f = ACT_FORMS[name]
    v = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))

    def grad(guided):
        x = act_input().requires_grad_(True)
        with GuidedMode() if guided else contextlib.nullcontext():
            z = x * 1.0  # a non-leaf, so in-place forms are legal
            y = f(z)
            (g,) = torch.autograd.grad((y * v).sum(), x)
        return y.detach(), g

    y_std, g_std = grad(False)
    y_gui, g_gui = grad(True)
    assert torch.equal(y_gui, y_std), "the guided mode changed the forward"
    assert (g_std < 0).any(), "the test input gives no negative gradient: vacuous"
    torch.testing.assert_close(g_gui, g_std.clamp_min(0), rtol=1e-6, atol=1e-7)


POOL_FORMS = {
    "nn.MaxPool2d": lambda a: nn.MaxPool2d(3, 2, 1)(a),
    "nn.MaxPool2d indices": lambda a: nn.MaxPool2d(3, 2, 1, return_indices=True)(a)[0],
    "F.max_pool2d": lambda a: F.max_pool2d(a, 3, stride=2, padding=1),
    "F.max_pool2d indices": lambda a: F.max_pool2d(a, (3, 3), (2, 2), 1, return_indices=True)[0],
    "F.max_pool2d_with_indices": lambda a: F.max_pool2d_with_indices(a, 3, 2, 1)[0],
    "torch.max_pool2d": lambda a: torch.max_pool2d(a, [3, 3], [2, 2], [1, 1]),
    "torch._C._nn.max_pool2d_with_indices": lambda a: torch._C._nn.max_pool2d_with_indices(a, 3, 2, 1)[0],
    "unbatched F.max_pool2d": lambda a: torch.stack([F.max_pool2d(a[i], 3, 2, 1) for i in range(len(a))]),
}


@pytest.mark.parametrize("name", list(POOL_FORMS))
def test_every_max_pool_form_clips_then_routes(name):
    f = POOL_FORMS[name]
    a0 = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    v = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    a = a0.clone().requires_grad_(True)
    with GuidedMode():
        (g,) = torch.autograd.grad((f(a) * v).sum(), a)
    # Expected: ordinary max-pool backward of the clipped output gradient.
    _, idx = F.max_pool2d(a0, 3, 2, 1, return_indices=True)
    want = torch.ops.aten.max_pool2d_with_indices_backward(v.clamp_min(0), a0, [3, 3], [2, 2], [1, 1], [1, 1],
                                                           False, idx)
    torch.testing.assert_close(g, want)
    (g_std,) = torch.autograd.grad((F.max_pool2d(a0.requires_grad_(True), 3, 2, 1) * v).sum(), a0)
    assert not torch.equal(g, g_std)


def functional_cnn(module_cnn: nn.Module) -> nn.Module:
    """The same network as make_small_cnn written with functional calls (sharing the weights)."""

    class Functional(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            m = self.m
            x = torch.relu(m[0](x))
            x = F.max_pool2d(x, 2)
            x = m[3](x).relu_()
            return m[7](F.adaptive_avg_pool2d(x, 1).flatten(1))

    return Functional(module_cnn).eval()


def test_functional_and_module_forms_give_identical_maps(small_cnn, small_images):
    mod = fastattr.attribute(small_cnn, small_images, TARGETS, steps=6, backward="guided")
    fun = fastattr.attribute(functional_cnn(small_cnn), small_images, TARGETS, steps=6, backward="guided")
    assert torch.equal(mod, fun)
    std = fastattr.attribute(functional_cnn(small_cnn), small_images, TARGETS, steps=6)
    assert not torch.allclose(std, fun)


# -- nothing survives the call --------------------------------------------------------------------

def plain_grad(model, x, t):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x)[torch.arange(len(t)), t].sum(), x)
    return g


def test_model_unchanged_after_guided_call(small_cnn, small_images):
    before = plain_grad(small_cnn, small_images, TARGETS)
    state = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    fastattr.attribute(small_cnn, small_images, TARGETS, steps=4, backward="guided")
    assert mode_stack_depth() == 0
    assert torch.equal(plain_grad(small_cnn, small_images, TARGETS), before)
    assert all(torch.equal(v, small_cnn.state_dict()[k]) for k, v in state.items())
    for m in small_cnn.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
    assert all(p.requires_grad for p in small_cnn.parameters())


class Raising(nn.Module):
    """Raises in forward after a ReLU ran, once armed."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.armed = False

    def forward(self, x):
        y = self.model(x)
        if self.armed and torch.is_grad_enabled():
            raise RuntimeError("boom")
        return y


def test_model_unchanged_when_forward_raises(small_cnn, small_images):
    model = Raising(small_cnn).eval()
    before = plain_grad(model, small_images, TARGETS)
    model.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        fastattr.attribute(model, small_images, TARGETS, steps=4, backward="guided")
    model.armed = False
    assert mode_stack_depth() == 0
    assert torch.equal(plain_grad(model, small_images, TARGETS), before)


# -- composition: IDGI, compile, EfficientNet -----------------------------------------------------

def test_guided_idgi_completeness_is_exact(small_cnn, small_images):
    e = fastattr.explain(small_cnn, small_images, TARGETS, steps=16, backward="guided", idgi=True)
    assert e.delta.abs().max() < 1e-5 * e.scores.abs().max()
    std = fastattr.attribute(small_cnn, small_images, TARGETS, steps=16, idgi=True)
    assert not torch.allclose(std, e.attributions)


def test_guided_compile_equals_eager_without_graph_breaks(small_images):
    import torch._dynamo

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
                          nn.Hardswish(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()
    torch._dynamo.reset()
    x = small_images[:2]
    eager = fastattr.attribute(model, x, TARGETS[:2], steps=4, backward="guided", batch_size=4)
    comp = fastattr.attribute(model, x, TARGETS[:2], steps=4, backward="guided", batch_size=4, compile=True)
    torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6 * eager.abs().max().item())
    xx = x.repeat(2, 1, 1, 1).requires_grad_(True)
    with GuidedMode():
        report = torch._dynamo.explain(lambda m, t: m(t))(model, xx)
    assert report.graph_break_count == 0, report.break_reasons
    assert mode_stack_depth() == 0


def test_effnet_guided_runs(effnet, photos):
    # EfficientNet-Lite0's non-linearities are ReLU6 modules: the guided gradient equals the plain
    # gradient of a hooked copy (ReLU6 modules clip their input gradient).
    x = photos[:1]
    ours = fastattr.explain(effnet, x, method="vanilla", backward="guided", output="logit")
    hooked = copy.deepcopy(effnet)
    for mod in hooked.modules():
        if isinstance(mod, nn.Hardtanh):
            mod.register_full_backward_hook(lambda _m, gin, _gout: (gin[0].clamp_min(0),))
    ref = plain_grad(hooked, x, ours.target)
    scale = ref.abs().max().item()
    torch.testing.assert_close(ours.attributions, ref, rtol=1e-4, atol=1e-5 * scale)
    assert not torch.allclose(plain_grad(effnet, x, ours.target), ref, atol=1e-3 * scale)
    e2 = fastattr.explain(effnet, x, ours.target, steps=3, backward="guided", idgi=True)
    assert torch.isfinite(e2.attributions).all()
    assert e2.delta.abs().max() < 1e-4 * e2.scores.abs().max()


# -- ops: opcheck, Triton kernels -----------------------------------------------------------------

ACT_PARAMS = {kgb.RELU: (0, 0, 0), kgb.HARDTANH: (0.0, 6.0, 0), kgb.LEAKY_RELU: (0.1, 0, 0),
              kgb.SILU: (0, 0, 0), kgb.GELU: (0, 0, 0), kgb.GELU_TANH: (0, 0, 0), kgb.HARDSWISH: (0, 0, 0),
              kgb.ELU: (0.7, 1.2, 0.5), kgb.ELU_RESULT: (0.7, 1.2, 0.5)}


@pytest.mark.parametrize("act", sorted(ACT_PARAMS))
def test_opcheck_guided_act_backward(act):
    g = torch.randn(2, 3, 4, 5)
    s = torch.randn(2, 3, 4, 5) * 4
    torch.library.opcheck(torch.ops.fastattr.guided_act_backward.default, (g, s, act, *map(float, ACT_PARAMS[act])))
    cl = g.to(memory_format=torch.channels_last), s.to(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.fastattr.guided_act_backward.default, (*cl, act, *map(float, ACT_PARAMS[act])))


def test_opcheck_guided_max_pool2d_backward():
    a = torch.randn(2, 3, 9, 9)
    y, idx = F.max_pool2d(a, 3, 2, 1, return_indices=True)
    torch.library.opcheck(torch.ops.fastattr.guided_max_pool2d_backward.default, (torch.randn_like(y), idx, 9, 9))


def test_op_errors_name_the_parameter():
    with pytest.raises(ValueError, match="act"):
        kgb.guided_act_backward_ref(torch.ones(3), torch.ones(3), 42, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="saved"):
        kgb.guided_act_backward_ref(torch.ones(3), torch.ones(4), 0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="indices"):
        kgb.guided_max_pool2d_backward_ref(torch.ones(2, 2), torch.zeros(2, 3, dtype=torch.long), 4, 4)


@contextlib.contextmanager
def env(**values):
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fresh_kernel_module(interpret: bool):
    """kernels/guided_backward.py loaded anew with TRITON_INTERPRET set or unset (triton.jit
    decides interpreted vs compiled when the module is executed)."""
    pytest.importorskip("triton")
    with env(TRITON_INTERPRET="1" if interpret else None):
        spec = importlib.util.spec_from_file_location(f"_guided_backward_{interpret}", kgb.__file__)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def interp():
    return fresh_kernel_module(interpret=True)


DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def low_precision_tol(dtype):
    return {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (3, 5, 7), (2, 3, 17, 31), (1037,)])
def test_triton_act_kernel_equals_reference(interp, shape, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    g64 = torch.randn(shape, generator=gen, dtype=torch.float64)
    s64 = torch.randn(shape, generator=gen, dtype=torch.float64) * 4
    kinks = torch.tensor([0.0, 6.0, -3.0, 3.0, -1.0, 1.0, 1e-8, -1e-8], dtype=torch.float64)
    s64.view(-1)[:len(kinks)] = kinks[:s64.numel()]  # each activation's boundary conventions
    g, s = g64.to(dtype), s64.to(dtype)
    for act, (a, b, c) in ACT_PARAMS.items():
        exact = kgb.guided_act_backward_ref(g.double(), s.double(), act, a, b, c)
        ours = interp.guided_act_backward_triton(g, s, act, a, b, c)
        torch_lp = kgb.guided_act_backward_ref(g, s, act, a, b, c)
        assert ours.dtype == dtype and ours.shape == g.shape
        # flash-attention style: the kernel's error is at most 2x the error of the same computation
        # in plain torch at this dtype (plus one rounding of the stored value).
        err = (ours.double() - exact).abs().max().item()
        err_torch = (torch_lp.double() - exact).abs().max().item()
        assert err <= 2 * err_torch + low_precision_tol(dtype) * max(1.0, exact.abs().max().item()), (act, err, err_torch)
        assert (ours >= 0).all()


def test_triton_act_kernel_channels_last_and_noncontiguous(interp):
    g = torch.randn(2, 5, 3, 7).to(memory_format=torch.channels_last)
    s = torch.randn(2, 5, 3, 7)
    out = interp.guided_act_backward_triton(g, s, kgb.RELU, 0.0, 0.0, 0.0)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, kgb.guided_act_backward_ref(g, s, kgb.RELU, 0.0, 0.0, 0.0))
    ge = torch.randn(1, 5, 1, 1).expand(2, 5, 3, 7)  # autograd passes expanded gradients
    torch.testing.assert_close(interp.guided_act_backward_triton(ge, s, kgb.SILU, 0.0, 0.0, 0.0),
                               kgb.guided_act_backward_ref(ge, s, kgb.SILU, 0.0, 0.0, 0.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", [(3, 2, 1, 1, False, 9, 11), (3, 1, 0, 1, True, 7, 5), (2, 2, 0, 1, True, 13, 13),
                                 (3, 2, 1, 2, False, 15, 9)])
def test_triton_max_pool_kernel_equals_reference(interp, dtype, cfg):
    k, s, p, d, ceil, h, w = cfg
    gen = torch.Generator().manual_seed(h * w)
    a = torch.randn(2, 3, h, w, generator=gen)
    y, idx = F.max_pool2d(a, k, s, p, d, ceil_mode=ceil, return_indices=True)
    g = torch.randn(y.shape, generator=gen).to(dtype)
    ours = interp.guided_max_pool2d_backward_triton(g, idx, h, w)
    ref = kgb.guided_max_pool2d_backward_ref(g, idx, h, w)
    exact = kgb.guided_max_pool2d_backward_ref(g.double(), idx, h, w)
    assert ours.dtype == dtype and ours.shape == a.shape
    torch.testing.assert_close(ours, ref, rtol=low_precision_tol(dtype), atol=low_precision_tol(dtype))
    torch.testing.assert_close(ours.double(), exact, rtol=2 * low_precision_tol(dtype), atol=2 * low_precision_tol(dtype))


def test_triton_kernels_compile_for_sm90():
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    mod = fresh_kernel_module(interpret=False)
    # One variant per act (fp16/bf16/fp32 rotating) and every max-pool dtype; test_gpu_build.py
    # compiles all GPU_COMPILE_SPECS.
    picked = [sp for i, sp in enumerate(mod.GPU_COMPILE_SPECS)
              if sp["fn"] is mod._guided_max_pool_kernel or i % 3 == sp["constexprs"]["ACT"] % 3]
    assert len(picked) == len(kgb.ACTS) + 3
    for spec in picked:
        fn = spec["fn"]
        attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in spec.get("divisible_by_16", [])}
        k = triton.compile(ASTSource(fn, spec["signature"], constexprs=spec["constexprs"], attrs=attrs),
                           target=GPUTarget("cuda", 90, 32))
        ptx = k.asm["ptx"]
        assert ".target sm_90" in ptx
        assert "ld.global.v4" in ptx, "aligned sizes should give 128-bit loads"
