"""schedule="adaptive" (fastattr/adaptive.py): the same machinery as the uniform schedule when it
does not refine, exact IDGI completeness, no refinement where the integrand is constant, images
independent, tol, errors; and better maps than uniform for the same budget on a kinked model."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import fastattr
from fastattr import adaptive
from fastattr.ops.gaussian_blur import gaussian_blur
from tests.conftest import make_small_cnn
from tests.path_shapes import PathShapeModel, relu_cnn, step


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture
def x():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))


@pytest.fixture
def model():
    return make_small_cnn(seed=3)


def test_round_size_depends_on_the_image_only():
    """MIN_ROUND points per round, 1/GROWTH of the intervals once that is more, never more than
    the budget left; no argument about the other images or the batch."""
    assert adaptive.round_size(28, 3) == 4 and adaptive.round_size(28, 31) == 4
    assert adaptive.round_size(3, 16) == 3  # never more than the budget left
    assert adaptive.round_size(1000, 127) == 15  # long budgets: rounds grow with the intervals
    assert adaptive.round_size(0, 16) == 0


def test_idgi_coefficients_match_the_span_rule():
    """The numpy span rule equals IdgiSum's documented examples: all non-zero -> y_{k+1} - y_k; a
    zero step passes its change to the nearest non-zero step (ties to the earlier)."""
    y = np.array([0.0, 1.0, 3.0, 6.0, 10.0])
    assert np.allclose(adaptive.idgi_coefficients(y, np.array([True] * 4)), [1, 2, 3, 4])
    # step 1 zero: [0,1] -> step 0 span [0, 1] ((0+2)//2+1 = 2 -> [0, 2]), step 2 gets [2, 3]
    assert np.allclose(adaptive.idgi_coefficients(y, np.array([True, False, True, True])), [3, 0, 3, 4])
    assert np.allclose(adaptive.idgi_coefficients(y, np.array([False] * 4)), 0)
    assert np.allclose(adaptive.idgi_coefficients(y, np.array([False, False, True, False])), [0, 0, 10, 0])


@pytest.mark.parametrize("idgi", [False, True])
def test_no_refinement_is_the_uniform_schedule(model, x, idgi, monkeypatch):
    """With the whole budget in the first round the adaptive code path gives the uniform
    schedule's map: IG trapezoid (Riemann) / IG left with IDGI, to float rounding."""
    monkeypatch.setattr(adaptive, "ROUND_SHARE", 1.0)
    a = fastattr.explain(model, x, method="ig", idgi=idgi, steps=12, schedule="adaptive")
    u = fastattr.explain(model, x, method="ig", idgi=idgi, steps=12, rule="left" if idgi else "trapezoid")
    assert rel(a.attributions, u.attributions) < 1e-5
    assert torch.allclose(a.baseline_scores, u.baseline_scores, atol=1e-7)
    assert a.grad_evals == u.grad_evals == 36


def test_blur_ig_idgi_no_refinement_is_uniform(model, x, monkeypatch):
    monkeypatch.setattr(adaptive, "ROUND_SHARE", 1.0)
    a = fastattr.explain(model, x, method="blur_ig", idgi=True, steps=10, schedule="adaptive", max_sigma=8.0)
    u = fastattr.explain(model, x, method="blur_ig", idgi=True, steps=10, max_sigma=8.0)
    assert rel(a.attributions, u.attributions) < 1e-5


@pytest.mark.parametrize("sqrt", [False, True])
def test_blur_ig_trapezoid_oracle(model, x, sqrt, monkeypatch):
    """Riemann Blur IG without refinement: -sum of trapezoid weights in sigma times
    d blur/d sigma * grad, from a plain loop over the sigma grid (exact derivative)."""
    monkeypatch.setattr(adaptive, "ROUND_SHARE", 1.0)
    steps, max_sigma = 9, 6.0
    a = fastattr.explain(model, x, method="blur_ig", steps=steps, schedule="adaptive", max_sigma=max_sigma,
                         derivative="exact", sqrt=sqrt, channels_last=False)
    s = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    sig = (s * max_sigma).sqrt() if sqrt else s * max_sigma
    w = torch.diff(sig)
    tw = torch.cat([w[:1] / 2, (w[1:] + w[:-1]) / 2, w[-1:] / 2])
    ref = torch.zeros_like(x)
    for k in range(steps):
        p, d = gaussian_blur(x, sig[k:k + 1].repeat(3), torch.arange(3), derivative=True)
        p = p.clone().requires_grad_(True)
        y = model(p).softmax(-1).gather(1, a.target[:, None]).sum()
        (g,) = torch.autograd.grad(y, p)
        ref -= tw[k].item() * d * g
    assert rel(a.attributions, ref) < 1e-4


def test_linear_along_the_path():
    """A linear model's gradient is constant on the path: every interval's indicator is 0 (the
    completeness residual only rounding), so the estimate is ~0 and tol= stops after the first
    round; without tol the budget is still spent (agreeing ends do not prove that nothing lies
    between them: the widest intervals are bisected). The map is IG's exact answer either way."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(48, 4)).eval()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    exact = x * lin[1].weight[1].detach().view(3, 4, 4)
    e = fastattr.explain(lin, x, target=1, method="ig", steps=32, output="logit", schedule="adaptive", tol=1e-3)
    assert e.grad_evals == 2 * 4  # the first round's 32 / 8 points
    assert e.extras["grad_evals_per_image"].tolist() == [4, 4]
    # 0, or float32 rounding the allowance missed (up to 1.3e-6 seen over 60 random weight draws)
    assert (e.extras["error_estimate"] < 1e-5).all()
    assert rel(e.attributions, exact) < 1e-5
    full = fastattr.explain(lin, x, target=1, method="ig", steps=32, output="logit", schedule="adaptive")
    assert full.grad_evals == 64 and (full.extras["error_estimate"] < 1e-5).all()
    assert rel(full.attributions, exact) < 1e-5


@pytest.mark.parametrize("method", ["ig", "blur_ig"])
@pytest.mark.parametrize("backward", ["standard", "guided"])
def test_idgi_complete_under_adaptive(model, x, method, backward):
    e = fastattr.explain(model, x, method=method, idgi=True, steps=24, backward=backward, schedule="adaptive")
    span = (e.scores - e.baseline_scores).abs().max()
    assert float(e.delta.abs().max()) <= 1e-5 * max(float(span), 1e-6)
    assert e.grad_evals == 3 * 24 and e.extras["grad_evals_per_image"].tolist() == [24] * 3
    assert torch.isfinite(e.extras["error_estimate"]).all()


@pytest.mark.parametrize("method,idgi", [("ig", False), ("ig", True), ("blur_ig", False)])
def test_images_refine_independently(method, idgi, monkeypatch):
    """Each image's refinement is its own: its map (and estimate) is bitwise the same alone and
    in a call of 20 at the same batch_size, within 1e-5 at another batch_size; small memory
    groups change nothing. (Rounds of up to 8 points when few images refined gave 6% relative
    L2 between the two.)"""
    model = relu_cnn(0)
    x = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    kw = dict(method=method, idgi=idgi, steps=32, schedule="adaptive", batch_size=8,
              **({"max_sigma": 4.0} if method == "blur_ig" else {}))
    both = fastattr.explain(model, x, **kw)
    assert both.grad_evals == 20 * 32
    for j in (0, 9, 19):  # (all 20 take minutes on a loaded machine; each image is independent)
        one = fastattr.explain(model, x[j:j + 1], target=both.target[j:j + 1], **kw)
        assert torch.equal(one.attributions[0], both.attributions[j]), j
        assert torch.equal(one.extras["error_estimate"][0], both.extras["error_estimate"][j])
    other = fastattr.explain(model, x, **dict(kw, batch_size=3))
    assert rel(other.attributions, both.attributions) < 1e-5
    monkeypatch.setattr(adaptive, "GROUP_BYTES", 1)  # one image per group
    grouped = fastattr.explain(model, x, **kw)
    assert torch.equal(grouped.attributions, both.attributions)


def test_any_rank_and_riemann_completeness():
    """Tabular (N, D) inputs; the Riemann map's delta shrinks with the budget."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    x = torch.randn(4, 10)
    d = [float(fastattr.explain(mlp, x, method="ig", steps=s, schedule="adaptive").delta.abs().max())
         for s in (4, 64)]
    assert d[1] < d[0] and d[1] < 1e-3


def test_tol_stops_images_early(model, x):
    full = fastattr.explain(model, x, method="ig", idgi=True, steps=32, schedule="adaptive", tol=0.0)
    assert full.grad_evals == 96
    loose = fastattr.explain(model, x, method="ig", idgi=True, steps=32, schedule="adaptive", tol=0.5)
    assert loose.grad_evals < 96
    per = loose.extras["grad_evals_per_image"]
    assert int(per.sum()) == loose.grad_evals and (per >= 4).all()
    stopped = per < 32  # stopped early: because their estimate reached tol
    assert stopped.any() and (loose.extras["error_estimate"][stopped] <= 0.5).all()
    assert float(loose.delta.abs().max()) < 1e-5  # IDGI complete whatever the budget spent


def test_adaptive_beats_uniform_on_a_kinked_model():
    """ReLU model, reference 1001 uniform steps: at 32 evaluations adaptive has the lower median
    error (relative L2 to the reference) for IDGI-IG, IG and IDGI-Blur IG."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    x = torch.rand(4, 3, 16, 16, generator=g)
    for method, idgi in (("ig", True), ("ig", False), ("blur_ig", True)):
        kw = {"max_sigma": 4.0} if method == "blur_ig" else {}  # 16 px images: sigma 50 is flat early
        ref = fastattr.attribute(model, x, method=method, idgi=idgi, steps=1001, **kw,
                                 **({} if idgi or method != "ig" else {"rule": "trapezoid"}))

        def err(a):
            return float(((a - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).median())

        u = fastattr.attribute(model, x, method=method, idgi=idgi, steps=32, **kw)
        a = fastattr.attribute(model, x, method=method, idgi=idgi, steps=32, schedule="adaptive", **kw)
        assert err(a) < err(u), (method, idgi, err(a), err(u))


def test_error_estimate_tracks_the_error(model, x):
    """The estimate falls with the budget, as the error to a long run does, and is of the
    error's order (within 0.3x-30x of it here)."""
    ref = fastattr.attribute(model, x, method="ig", idgi=True, steps=2001)
    est, err = [], []
    for b in (8, 64):
        e = fastattr.explain(model, x, method="ig", idgi=True, steps=b, schedule="adaptive")
        est.append(float(e.extras["error_estimate"].median()))
        err.append(float(((e.attributions - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).median()))
    assert est[1] < est[0] and err[1] < err[0]
    for a, b in zip(est, err):
        assert 0.3 * b < a < 30 * b, (est, err)


def test_errors(model, x):
    with pytest.raises(ValueError, match="^schedule"):
        fastattr.explain(model, x, method="ig", schedule="random")
    with pytest.raises(ValueError, match="^tol"):
        fastattr.explain(model, x, method="ig", tol=0.1)  # tol without the adaptive schedule
    for bad in (-1.0, math.nan, "0.1", True):
        with pytest.raises(ValueError, match="^tol"):
            fastattr.explain(model, x, method="ig", schedule="adaptive", tol=bad)
    with pytest.raises(ValueError, match="^schedule"):
        fastattr.explain(model, x, method="ig", schedule="adaptive", rule="middle")
    with pytest.raises(ValueError, match="^steps"):
        fastattr.explain(model, x, method="ig", schedule="adaptive", steps=1)
    for method in ("vanilla", "guided_ig", "neflag"):
        with pytest.raises(TypeError, match="schedule"):
            fastattr.explain(model, x, method=method, schedule="adaptive")


def test_nan_model_is_named(x):
    """f_c NaN on part of the path only (finite at the input and the baseline): a ValueError."""
    x0 = x[:1]

    class NaNMidPath(nn.Module):
        def forward(self, z):
            out = z.flatten(1)[:, :3] * 2
            a = z.flatten(1)[:, :1] / x0.flatten(1)[:, :1]  # the path fraction
            return torch.where((a > 0.3) & (a < 0.6), out * math.nan, out)

    with pytest.raises(ValueError, match="non-finite|NaN"):
        fastattr.explain(NaNMidPath().eval(), x0, method="ig", steps=8, output="logit", schedule="adaptive")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_one_point_first_round_with_tol(model, x):
    """IDGI with steps=8 starts from one point (its interval cannot be measured yet: estimate
    inf, so it refines); no overflow warning from the estimate (inf was turned into 1.8e308)."""
    e = fastattr.explain(model, x, method="ig", idgi=True, steps=8, schedule="adaptive", tol=1e-9)
    assert e.grad_evals == 24 and torch.isfinite(e.extras["error_estimate"]).all()


def test_runner_takes_the_schedule_as_a_method_option(model, tmp_path):
    """`fastattr run ... -O schedule=adaptive -O tol=...`: the runner's grad_evals per image come
    from the schedule's own count."""
    import numpy as np
    from PIL import Image

    from fastattr.runner import read_manifest, run

    (tmp_path / "in").mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((20, 20, 3)) * 255).astype("uint8")).save(
            tmp_path / "in" / f"im{i}.png")
    run(tmp_path / "in", tmp_path / "out", model=model, steps=16, size=16, idgi=True, progress=False,
        method_options={"schedule": "adaptive"})
    recs = read_manifest(tmp_path / "out")
    assert [r["grad_evals"] for r in recs] == [16, 16] and all(abs(r["delta"]) < 1e-6 for r in recs)


class MeanStep(nn.Module):
    """The issue's model: 10 * sigmoid(k * (mean pixel - c)), in float32: so steep that the
    gradient is exactly 0 (underflow) at every first-round point 0, 1/3, 2/3, 1."""

    def __init__(self, c: float, k: float):
        super().__init__()
        self.c, self.k = c, k

    def forward(self, z):
        return 10 * torch.sigmoid(self.k * (z.flatten(1).mean(1, keepdim=True) - self.c))


def test_step_between_first_round_points():
    """The issue's model, rising between 40% and 50% of the path. Before: an all-zero map with
    error_estimate 0 after 4 evaluations (uniform IG 32 sums to most of the 10). Now the
    completeness residual of [1/3, 2/3] (the output rises by 10, the end gradients say 0) sends
    the points there."""
    x = torch.full((1, 3, 8, 8), 0.5)
    x[:, 0] += torch.linspace(-0.1, 0.1, 64).view(8, 8)  # not one value: a map with a shape
    model = MeanStep(0.45 * 0.5, 2000.0).eval()
    uniform = fastattr.explain(model, x, 0, method="ig", steps=32, output="logit")
    for tol in (None, 0.3):
        e = fastattr.explain(model, x, 0, method="ig", steps=32, output="logit", schedule="adaptive", tol=tol)
        assert e.grad_evals > 4
        assert float(e.attributions.abs().sum()) > 1.0 and float(e.extras["error_estimate"]) > 0
        residual = abs(float(e.delta)) / 10
        assert residual < (tol or 0.1) and residual <= abs(float(uniform.delta)) / 10
        assert float(e.extras["error_estimate"]) >= residual
        if tol is not None:  # it stops once both the estimate and the residual are <= tol, not before
            assert e.grad_evals == 32 or float(e.extras["error_estimate"]) <= tol


def test_memory_follows_the_points_and_a_budget_that_cannot_fit_is_refused(monkeypatch):
    """steps=100000 on one 64 px image: up to 4.9 GB of rows. With tol= and a model that
    converges at once, storage grows only with the points evaluated; a budget whose rows cannot
    fit in the memory available is a ValueError naming steps before any gradient is taken."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2)).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    grown = []
    real_grow = adaptive.AdaptivePath._grow

    def spy(self, im, k):
        real_grow(self, im, k)
        grown.append(im.rows.shape[0])

    monkeypatch.setattr(adaptive.AdaptivePath, "_grow", spy)
    monkeypatch.setattr(adaptive, "available_bytes", lambda device: 8 << 30)
    e = fastattr.explain(lin, x, 0, method="ig", steps=100000, output="logit", schedule="adaptive", tol=0.01)
    assert e.grad_evals == 4 and max(grown) == 4  # rows for 4 points, not 100000
    monkeypatch.setattr(adaptive, "available_bytes", lambda device: 1 << 30)
    evals = []
    monkeypatch.setattr(adaptive.AdaptivePath, "_evaluate", lambda *a: evals.append(1))
    with pytest.raises(ValueError, match=r"^steps: .*4\.92 GB.*1\.07 GB"):
        fastattr.explain(lin, x, 0, method="ig", steps=100000, output="logit", schedule="adaptive", tol=0.01)
    assert not evals
    with pytest.raises(ValueError, match="^steps"):  # without tol= too: the same worst case
        fastattr.explain(lin, x, 0, method="ig", steps=100000, output="logit", schedule="adaptive")


def test_numpy_scalars_are_numbers():
    """np.float32(0.1) and other numpy scalars are accepted wherever a number is (tol was refused
    as 'must be a finite number >= 0, got np.float32(0.1)')."""
    model = make_small_cnn(seed=3)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    e = fastattr.explain(model, x, method="ig", steps=np.int64(8), schedule="adaptive", tol=np.float32(0.5))
    assert e.grad_evals <= 16
    fastattr.explain(model, x, np.int64(2), method="ig", steps=np.int32(8), batch_size=np.int16(4),
                     baseline=np.float32(0.1))
    fastattr.explain(model, x, method="blur_ig", steps=np.int64(4), max_sigma=np.float32(4.0),
                     grad_step=np.float64(0.01), schedule="adaptive", tol=np.float64(0.2))
    fastattr.explain(model, x, method="guided_ig", steps=np.int64(4), fraction=np.float32(0.25),
                     max_dist=np.float16(0.02))
    fastattr.explain(model, x, method="neflag", eps=np.float32(0.1), n=np.int64(2), m=np.int8(2))
    fastattr.smoothgrad(model, x, nsamples=np.int64(2), spread=np.float32(0.1))
    with pytest.raises(ValueError, match="^tol"):
        fastattr.explain(model, x, method="ig", schedule="adaptive", tol=np.bool_(True))
    with pytest.raises(ValueError, match="^tol"):
        fastattr.explain(model, x, method="ig", schedule="adaptive", tol=np.float32("nan"))


def test_smooth_path_bisects_and_a_jump_spreads(monkeypatch):
    """Riemann sums, every first-round interval flagged: on a smooth path the second round
    bisects (trisecting one interval cost IG 5% of median error on the evaluation set); where an
    interval's output jump dominates (steps at 0.2 / 0.5 / 0.73, uniform's residual 1.23) its
    points are spread over the flagged intervals (bisecting gave a residual of 1.38)."""
    rounds = []
    real = adaptive.AdaptivePath._evaluate
    monkeypatch.setattr(adaptive.AdaptivePath, "_evaluate",
                        lambda self, by, new: (rounds.append(sorted(new[0])), real(self, by, new))[1])
    smooth = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 4)
    fastattr.explain(smooth, x, 0, method="ig", steps=32, schedule="adaptive", output="logit")
    assert rounds[0] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert len(rounds[1]) == 3 and all(any(abs(s - m) < 1e-12 for m in (1 / 6, 1 / 2, 5 / 6)) for s in rounds[1])
    rounds.clear()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 8, 8, generator=g) * 0.8 + 0.1
    from tests.path_shapes import ZOO
    jumps = PathShapeModel(x, ZOO["steps 0.2 / 0.5 / 0.73"], "ig").eval()
    fastattr.explain(jumps, x, 0, method="ig", steps=32, schedule="adaptive", output="logit")
    assert len(rounds[1]) == 4  # one interval gets two points
