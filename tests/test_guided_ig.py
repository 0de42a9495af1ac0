"""Guided IG (method="guided_ig") against PAIR's guided_ig_impl, an IDGI numpy oracle, and axioms."""
import types

import numpy as np
import pytest
import torch
from torch import nn

import fastattr
from fastattr.engine import Engine
from fastattr.methods.guided_ig import quantile_lower

from conftest import make_small_cnn

TARGETS = torch.tensor([1, 3, 5, 7])


@pytest.fixture(autouse=True)
def one_thread():
    # The small-model tests make thousands of tiny model calls; with 2 intra-op threads on a busy
    # 2-core machine each tiny op waits for a descheduled worker (measured: 1000x slower).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def pair_gig(monkeypatch):
    """PAIR's guided_ig_impl with np.quantile(interpolation=) shimmed to method= (numpy >= 2.4)."""
    import saliency.core.guided_ig as gig

    shim = types.ModuleType("numpy_shim")
    shim.__getattr__ = lambda name: getattr(np, name)
    shim.quantile = lambda a, q, interpolation="linear", **kw: np.quantile(a, q, method=interpolation, **kw)
    monkeypatch.setattr(gig, "np", shim)
    return gig.guided_ig_impl


class PerImage(nn.Module):
    """Runs `model` one image at a time. A zero baseline makes many |gradients| exactly equal
    (every interior pixel of a constant image looks the same to a conv net); a batched conv sums
    in another order, those ties break differently by one ulp and GIG's quantile selection picks
    other features. Per-image calls give the bit-identical gradients PAIR sees, so the comparison
    tests GIG's arithmetic, not conv rounding. The engine still sends one batch per step."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.cat([self.model(x[i:i + 1]) for i in range(x.shape[0])])


def float64_model(per_image: bool, seed: int = 0) -> nn.Module:
    """The small CNN in float64, no cast wrapper: the engine runs a float64 model on float64 points."""
    core = make_small_cnn(seed).double()
    return (PerImage(core) if per_image else core).eval()


def pair_grad_func(model: nn.Module, target: int):
    """PAIR grad_func: CHW float64 numpy point -> d softmax_target / d x, float64, one image."""

    def grad(x):
        xx = torch.tensor(x, dtype=torch.float64)[None].requires_grad_(True)
        y = model(xx).softmax(-1)[0, target]
        return torch.autograd.grad(y, xx)[0][0].numpy()

    return grad


def assert_close_per_image(ours: torch.Tensor, refs: list[np.ndarray], rel: float = 1e-6) -> None:
    for i, ref in enumerate(refs):
        scale = np.abs(ref).max()
        assert scale > 0, f"image {i}: reference map is all zeros"
        err = np.abs(ours[i].double().numpy() - ref).max()
        assert err <= rel * scale, f"image {i}: max error {err:.3g} > {rel} x {scale:.3g}"


def count_engine_calls(monkeypatch) -> list[int]:
    """Patches Engine.value_and_grad to record the chunk size of every call."""
    calls = []
    original = Engine.value_and_grad

    def counted(self, x, targets, **kw):
        calls.append(x.shape[0])
        return original(self, x, targets, **kw)

    monkeypatch.setattr(Engine, "value_and_grad", counted)
    return calls


@pytest.mark.parametrize("options", [{}, {"fraction": 0.5, "max_dist": 1.0}], ids=["defaults", "pair-examples"])
def test_float64_matches_pair_per_image(small_images, pair_gig, monkeypatch, options):
    model = float64_model(per_image=True)
    calls = count_engine_calls(monkeypatch)
    # PAIR's gradient function runs the model on NCHW tensors: GIG's feature ranking has exact
    # ties under the zero baseline, so both sides need the same convolution kernels.
    e = fastattr.explain(model, small_images, TARGETS, method="guided_ig", dtype=torch.float64,
                         channels_last=False, **options)
    steps = 200  # the default
    assert calls == [4] * steps, "one engine call per step carrying all 4 images"
    assert e.grad_evals == 4 * steps
    refs = [pair_gig(small_images[i].double().numpy(), np.zeros((3, 16, 16)),
                     pair_grad_func(model, int(TARGETS[i])), steps=steps, **options)
            for i in range(4)]
    assert_close_per_image(e.attributions, refs)
    # the images really differ, so a row mix-up cannot pass
    assert min(np.abs(refs[0] - r).max() for r in refs[1:]) > 1e-3 * np.abs(refs[0]).max()


def test_float64_batched_model_chunks_and_random_baseline(small_images, pair_gig):
    """Batched float64 conv (no exact ties under a random baseline), 4 images in chunks of 3."""
    model = float64_model(per_image=False, seed=2)
    base = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    e = fastattr.explain(model, small_images, TARGETS, method="guided_ig", baseline=base, steps=60,
                         batch_size=3, dtype=torch.float64, fraction=0.3, max_dist=0.1)
    refs = [pair_gig(small_images[i].double().numpy(), base[i].double().numpy(),
                     pair_grad_func(model, int(TARGETS[i])), steps=60, fraction=0.3, max_dist=0.1)
            for i in range(4)]
    assert_close_per_image(e.attributions, refs)


def correlations(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return [float(np.corrcoef(a[i].flatten().double().numpy(), b[i].flatten().double().numpy())[0, 1])
            for i in range(a.shape[0])]


def test_float32_path_correlates_with_float64_path(small_images):
    """Same float32 model; only the path arithmetic (dtype=) changes."""
    model = make_small_cnn()
    a32 = fastattr.attribute(model, small_images, TARGETS, method="guided_ig", steps=100)
    a64 = fastattr.attribute(model, small_images, TARGETS, method="guided_ig", steps=100, dtype=torch.float64)
    assert a32.dtype == torch.float32
    assert min(correlations(a32, a64)) > 0.999, correlations(a32, a64)


def test_float32_correlates_with_float64_model_and_path(small_images):
    """float32 model + path vs float64 model + path. A random baseline: under the zero baseline
    exact gradient ties (see PerImage) break differently in float32 and float64 conv arithmetic,
    and one of these 4 images then takes another path (correlation 0.98; the float64 batched conv
    does the same, so it is the model's rounding, not the path arithmetic)."""
    base = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    a32 = fastattr.attribute(make_small_cnn(), small_images, TARGETS, method="guided_ig", steps=100,
                             baseline=base)
    a64 = fastattr.attribute(float64_model(per_image=False), small_images, TARGETS, method="guided_ig",
                             steps=100, baseline=base, dtype=torch.float64)
    assert min(correlations(a32, a64)) > 0.999, correlations(a32, a64)


def idgi_oracle(gradients: list[np.ndarray], predictions: list[float]) -> np.ndarray:
    """The IDGI authors' loop (SPEC.md): i = 0..N-2, d = P[i+1] - P[i], g**2 d / sum(g**2)."""
    out = np.zeros_like(gradients[0])
    for i in range(len(gradients) - 1):
        g, d = gradients[i], predictions[i + 1] - predictions[i]
        out += g * g * d / (g * g).sum()
    return out


def test_idgi_matches_oracle_on_pair_path(small_images, pair_gig):
    """IDGI over PAIR's own GIG points (gradients taken there) plus the input, vs fastattr idgi=True."""
    model = float64_model(per_image=True)
    steps = 40
    e = fastattr.explain(model, small_images, TARGETS, method="guided_ig", steps=steps, idgi=True,
                         dtype=torch.float64, channels_last=False)  # same kernels as the reference
    for i in range(4):
        points = []
        grad = pair_grad_func(model, int(TARGETS[i]))

        def recording(x, grad=grad):
            points.append(x.copy())
            return grad(x)

        pair_gig(small_images[i].double().numpy(), np.zeros((3, 16, 16)), recording, steps=steps)
        points.append(small_images[i].double().numpy())
        with torch.no_grad():
            preds = [float(model(torch.tensor(p)[None]).softmax(-1)[0, TARGETS[i]]) for p in points]
        ref = idgi_oracle([grad(p) for p in points], preds)
        scale = np.abs(ref).max()
        # fastattr's f_c values come from the engine in float32 (engine contract), hence 1e-5
        assert np.abs(e.attributions[i].double().numpy() - ref).max() <= 1e-5 * scale
    assert e.delta.abs().max() <= 1e-5


def test_idgi_completeness_effnet(effnet, photos):
    x = photos[:2]
    e = fastattr.explain(effnet, x, method="guided_ig", steps=6, idgi=True)
    assert e.grad_evals == 2 * 6
    assert torch.isfinite(e.attributions).all()
    assert (e.scores - e.baseline_scores).abs().min() > 1e-3, "no signal: completeness would be vacuous"
    assert e.delta.abs().max() <= 1e-5, e.delta


def test_idgi_completeness_small_cnn_float32(small_images):
    e = fastattr.explain(make_small_cnn(), small_images, TARGETS, method="guided_ig", steps=50, idgi=True)
    assert (e.scores - e.baseline_scores).abs().min() > 1e-4
    assert e.delta.abs().max() <= 1e-5, e.delta


@pytest.mark.parametrize("idgi", [False, True])
def test_input_equal_to_baseline_gives_zeros(small_images, idgi):
    model = make_small_cnn()
    base = small_images.clone()
    base[0] = 0.0  # only image 0 differs from its baseline
    e = fastattr.explain(model, small_images, TARGETS, method="guided_ig", baseline=base, steps=10, idgi=idgi)
    assert (e.attributions[1:] == 0).all()
    assert e.attributions[0].abs().max() > 0
    assert e.grad_evals == 10, "images equal to their baseline need no gradient"
    assert torch.equal(e.baseline_scores[1:], e.scores[1:])
    all_equal = fastattr.explain(model, small_images, TARGETS, method="guided_ig", baseline=small_images,
                                 steps=10, idgi=idgi)
    assert (all_equal.attributions == 0).all() and all_equal.grad_evals == 0


def test_quantile_lower_matches_numpy():
    g = torch.Generator().manual_seed(3)
    v = torch.randint(0, 50, (5, 997), generator=g).double()  # many ties
    v[1, ::3] = float("inf")
    v[2, :] = float("inf")
    for q in (0.0, 0.25, 0.5, 0.73, 1.0):
        ours = quantile_lower(v, q)
        ref = np.quantile(v.numpy(), q, axis=1, method="lower")
        assert np.array_equal(ours.numpy(), ref), q


@pytest.mark.parametrize("options, name", [
    ({"fraction": 1.5}, "fraction"), ({"fraction": "a"}, "fraction"), ({"max_dist": -0.1}, "max_dist"),
    ({"dtype": torch.float16}, "dtype"),
])
def test_bad_options_name_the_parameter(small_images, options, name):
    with pytest.raises((ValueError, TypeError), match=name):
        fastattr.attribute(make_small_cnn(), small_images, TARGETS, method="guided_ig", steps=2, **options)


def test_rule_is_rejected(small_images):
    with pytest.raises(ValueError, match="rule"):
        fastattr.attribute(make_small_cnn(), small_images, TARGETS, method="guided_ig", steps=2, rule="middle")
