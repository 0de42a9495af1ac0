"""IDGI on the IG path against a numpy oracle of the authors' function, its completeness at any
steps and batch size, and the degenerate cases (input == baseline, all-zero gradients)."""
import numpy as np
import pytest
import torch
from torch import nn

import fastattr
from fastattr.methods.integrated_gradients import rule_points
from fastattr.paths import IdgiSum

TARGETS = torch.tensor([1, 4, 6, 9])


def idgi_oracle(gradients, predictions, zero_safe=False):
    """The IDGI authors' function: lists of equal length N, loop i = 0..N-2, left-point gradient.
    zero_safe: fastattr's rule for all-zero gradient steps (the authors get 0/0): the step's output
    change d goes to the nearest step with a non-zero gradient (a tie to the earlier one)."""
    assert len(gradients) == len(predictions)
    result = np.zeros_like(gradients[0])
    m = len(gradients) - 1
    d = [predictions[i + 1] - predictions[i] for i in range(m)]
    if zero_safe:
        nonzero = [i for i in range(m) if np.any(gradients[i] != 0)]
        moved = [0.0] * m
        for i in range(m):
            if nonzero and i not in nonzero:
                j = min(nonzero, key=lambda j: (abs(j - i), j))  # nearest; a tie to the earlier
                moved[j] += d[i]
        d = [d[i] + moved[i] if i in nonzero else 0.0 for i in range(m)]
    for i in range(m):
        element_product = gradients[i] ** 2
        if zero_safe and np.sum(element_product) == 0:
            continue
        result += element_product * d[i] / np.sum(element_product)
    return result


def f_and_grad(model, x, target, output):
    """Plain autograd: f_c(x) and d f_c / dx for one point x (C, H, W), float64 numpy."""
    x = x[None].clone().requires_grad_(True)
    scores = model(x)
    if output == "probability":
        scores = scores.softmax(dim=-1)
    y = scores[0, target]
    (g,) = torch.autograd.grad(y, x)
    return y.item(), g[0].double().numpy()


def oracle_maps(model, x, targets, alphas, output, baseline=None, zero_safe=False):
    """Oracle IDGI maps (N, C, H, W) on points b + a (x - b), a in alphas (then a = 1 appended).
    When alphas[0] > 0 the segment [b, p_0] goes with p_0's gradient (SPEC.md, IDGI's end segments):
    f(b) is put before the predictions and g(p_0) repeated, so the authors' function gives g_0 the
    change f(p_1) - f(b)."""
    b = torch.zeros_like(x) if baseline is None else baseline
    maps = []
    for xi, bi, t in zip(x, b, targets.tolist()):
        grads, preds = [], []
        for a in list(alphas) + [1.0]:
            y, g = f_and_grad(model, bi + a * (xi - bi), t, output)
            grads.append(g)
            preds.append(y)
        if alphas[0] > 0:
            grads.insert(0, grads[0])
            preds.insert(0, f_and_grad(model, bi, t, output)[0])
        maps.append(idgi_oracle(grads, preds, zero_safe))
    return torch.from_numpy(np.stack(maps))


def assert_close_to_max(ours, ref, rel=1e-5):
    scale = ref.abs().max().item()
    assert scale > 0, "reference map is all zero: the comparison would be vacuous"
    err = (ours.double() - ref).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} > {rel} * {scale:.3g}"


@pytest.mark.parametrize("output", ["probability", "logit"])
@pytest.mark.parametrize("steps,batch_size", [(8, 3), (8, 7), (3, 8), (1, 2)])
def test_idgi_equals_authors_function(small_cnn, small_images, output, steps, batch_size):
    ours = fastattr.attribute(small_cnn, small_images, TARGETS, steps=steps, idgi=True, output=output,
                              batch_size=batch_size)
    alphas = [k / steps for k in range(steps)]
    assert_close_to_max(ours, oracle_maps(small_cnn, small_images, TARGETS, alphas, output))


@pytest.mark.parametrize("rule", ["right", "middle", "trapezoid", "pair", "gausslegendre"])
def test_idgi_with_other_rules_uses_their_points_below_one(small_cnn, small_images, rule):
    """IDGI takes a rule's points with a < 1 as p_0..p_{m-1}; p_m is the input; a rule whose first
    point lies past the baseline gives the segment [b, p_0] to p_0's gradient (issue 21: right,
    middle and gausslegendre missed f(p_0) - f(b))."""
    alphas, _ = rule_points(rule, 6)
    alphas = alphas[alphas < 1].tolist()
    e = fastattr.explain(small_cnn, small_images, TARGETS, steps=6, rule=rule, idgi=True, batch_size=5)
    assert e.grad_evals == len(alphas) * small_images.shape[0]
    assert_close_to_max(e.attributions, oracle_maps(small_cnn, small_images, TARGETS, alphas, "probability"))


@pytest.mark.parametrize("output", ["probability", "logit"])
@pytest.mark.parametrize("rule", ["left", "right", "middle", "trapezoid", "pair", "gausslegendre"])
def test_idgi_complete_from_the_baseline_for_every_rule(rule, output):
    """Issue 21: on a small MLP right / middle / gausslegendre missed f(x) - f(b) by 0.03 / 0.014 /
    0.006 (the segment before their first point). Now sum(A) = f(x) - f(b) for every rule, and
    baseline_scores is f(b)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    b = 0.1 * torch.randn(1, 6, generator=torch.Generator().manual_seed(2))
    e = fastattr.explain(model, x, 1, baseline=b, steps=8, rule=rule, idgi=True, output=output, batch_size=5)
    with torch.no_grad():
        s = model(torch.cat([x, b]))
        s = s.softmax(-1) if output == "probability" else s
    fx, fb = s[:5, 1].double(), s[5, 1].double()
    assert (fx - fb).abs().min() > 1e-2
    torch.testing.assert_close(e.attributions.double().sum(1), fx - fb, rtol=0, atol=1e-6)
    torch.testing.assert_close(e.baseline_scores.double(), fb.expand(5), rtol=0, atol=1e-6)
    assert e.delta.abs().max() < 1e-6


@pytest.mark.parametrize("general", [False, True], ids=["cpu-fast-path", "sync-free-rule"])
@pytest.mark.parametrize("rule", ["middle", "gausslegendre"])
def test_idgi_start_segment_goes_to_the_first_nonzero_step(rule, general, monkeypatch):
    """The segment [b, p_0] of a rule with a_0 > 0 behaves as a zero-gradient step before p_0: when the
    first steps have all-zero gradients, the change up to them goes to the first non-zero step."""
    if general:
        init = IdgiSum.__init__
        monkeypatch.setattr(IdgiSum, "__init__", lambda self, *a, **kw: (init(self, *a, **kw), setattr(self, "fast", False))[0])
    x, steps = step_inputs()[:2], 16
    b = torch.full_like(x, 0.099)  # round(5 mean) jumps by 0.2 inside [b, p_0], where g = 0
    alphas = rule_points(rule, steps)[0].tolist()
    model = StepNet().eval()
    with torch.no_grad():
        p0 = b + alphas[0] * (x - b)
        assert (model(p0)[:, 0] - model(b)[:, 0]).abs().min() > 0.19
    e = fastattr.explain(model, x, 0, baseline=b, steps=steps, rule=rule, idgi=True, output="logit", batch_size=5)
    want = oracle_maps(model, x, torch.zeros(2, dtype=torch.long), alphas, "logit", baseline=b, zero_safe=True)
    assert_close_to_max(e.attributions, want, 1e-6)
    assert e.delta.abs().max() < 1e-6


@pytest.mark.parametrize("steps,batch_size", [(1, 1), (1, 3), (2, 3), (2, 8), (7, 3), (7, 8), (32, 5),
                                              (32, 64), (100, 7), (100, 64)])
def test_idgi_completeness(small_cnn, small_images, steps, batch_size):
    e = fastattr.explain(small_cnn, small_images, TARGETS, steps=steps, idgi=True, batch_size=batch_size)
    with torch.no_grad():  # f(x) and f(b), b = 0, by the model directly
        probs = small_cnn(torch.cat([small_images, torch.zeros_like(small_images)])).softmax(-1)
    fx, fb = probs[:4].gather(1, TARGETS[:, None])[:, 0], probs[4:].gather(1, TARGETS[:, None])[:, 0]
    total = e.attributions.double().flatten(1).sum(1)
    assert (total - (fx - fb).double()).abs().max().item() < 1e-5
    # explain().delta reports the same quantity
    assert torch.allclose(e.delta.double(), total - (e.scores - e.baseline_scores).double(), atol=1e-7)
    assert e.delta.abs().max().item() < 1e-5
    assert torch.allclose(e.baseline_scores, fb, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 7, 32])
def test_idgi_completeness_logit(small_cnn, small_images, steps):
    e = fastattr.explain(small_cnn, small_images, TARGETS, steps=steps, idgi=True, output="logit", batch_size=5)
    change = (e.scores - e.baseline_scores).abs().max().item()
    assert change > 0.1  # the logits move: the check below is not vacuous
    assert e.delta.abs().max().item() < 1e-5 * max(1.0, change)


@pytest.mark.parametrize("idgi", [False, True])
@pytest.mark.parametrize("rule", ["left", "middle", "pair"])
def test_input_equal_to_baseline_gives_zero_map(small_cnn, small_images, idgi, rule):
    e = fastattr.explain(small_cnn, small_images, TARGETS, baseline=small_images, steps=5, rule=rule,
                         idgi=idgi, batch_size=3)
    assert not torch.isnan(e.attributions).any()
    assert torch.equal(e.attributions, torch.zeros_like(small_images))
    assert e.delta.abs().max().item() == 0.0


class ThresholdNet(nn.Module):
    """Scores (s, -s) with s = mean relu(x - 0.5): the gradient is exactly zero where all x < 0.5
    (a mean, not a sum, so that the softmax does not saturate to a zero gradient)."""

    def forward(self, x):
        s = torch.relu(x - 0.5).flatten(1).mean(1)
        return torch.stack([s, -s], dim=1)


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_idgi_all_zero_gradient_steps_give_no_nan(small_images, output):
    """Early path points (a x < 0.5 everywhere) have g = 0: the authors divide 0 by 0; we pass
    their output change to the nearest non-zero step (zero here: f is flat there), no NaN."""
    model = ThresholdNet().eval()
    target = torch.zeros(4, dtype=torch.long)
    steps = 8
    alphas = [k / steps for k in range(steps)]
    x = small_images
    assert (x * alphas[1] < 0.5).all()  # steps 0 and 1 have all-zero gradients
    ours = fastattr.attribute(model, x, target, steps=steps, idgi=True, output=output, batch_size=3)
    assert torch.isfinite(ours).all()
    with np.errstate(invalid="ignore", divide="ignore"):
        authors = oracle_maps(model, x, target, alphas, output)
    assert torch.isnan(authors).any()  # the case really occurs: the authors' code gives NaN here
    assert_close_to_max(ours, oracle_maps(model, x, target, alphas, output, zero_safe=True))


@pytest.mark.parametrize("idgi", [False, True])
def test_zero_gradient_everywhere_and_input_equal_baseline(idgi):
    """Every step has g = 0 and dy = 0: an all-zero map, no NaN."""
    x = torch.full((2, 3, 8, 8), 0.25)
    e = fastattr.explain(ThresholdNet().eval(), x, 0, steps=4, idgi=idgi, baseline=x, batch_size=3)
    assert torch.equal(e.attributions, torch.zeros_like(x))
    e = fastattr.explain(ThresholdNet().eval(), x, 0, steps=4, idgi=idgi, batch_size=3)  # path below 0.5
    assert torch.equal(e.attributions, torch.zeros_like(x))


# -- zero-gradient steps: their output change goes to the nearest non-zero step -------------------

class StepNet(nn.Module):
    """(N, D) -> 2 logits. Score 0 = round(5 mean x) / 5 + mean(clamp(x, 0.3, 0.6)): the rounding
    jumps where its gradient is zero and the clamp has a gradient only inside its band, so along
    the path from 0 there are zero-gradient steps before, between and after the non-zero ones,
    and many of them change the output (issue 16.6's case in a closed form)."""

    def forward(self, x):
        s = torch.round(5 * x.mean(1)) / 5 + x.clamp(0.3, 0.6).mean(1)
        return torch.stack([s, -s], dim=1)


def step_inputs() -> torch.Tensor:
    """3 rows: scales 0.9 and 0.5 (band crossed late / mid path), 0.25 (never in the band)."""
    r = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    return torch.tensor([[0.9], [0.5], [0.25]]) * (1 + 0.05 * r)


def oracle_rows(model, x, steps, output="logit", dropped=False):
    """Per row: the nearest-step IDGI oracle map, and the sum of output changes at zero-gradient
    steps (what the old rule dropped)."""
    maps, lost = [], []
    for xi in x:
        grads, preds = [], []
        for a in [k / steps for k in range(steps)] + [1.0]:
            p = (a * xi)[None].clone().requires_grad_(True)
            s = model(p)
            y = (s.softmax(-1) if output == "probability" else s)[0, 0]
            grads.append(torch.autograd.grad(y, p)[0][0].double().numpy())
            preds.append(y.item())
        maps.append(idgi_oracle(grads, preds, zero_safe=True))
        lost.append(sum(preds[k + 1] - preds[k] for k in range(steps) if not np.any(grads[k] != 0)))
    return torch.from_numpy(np.stack(maps)), lost


@pytest.mark.parametrize("general", [False, True], ids=["cpu-fast-path", "sync-free-rule"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 7, 15, 16, 17, 33, 64])
def test_zero_gradient_steps_carry_their_output_change(batch_size, general, monkeypatch):
    """Issue 16.6: IDGI dropped the output change of steps whose gradient is all zero, so sum(A)
    missed part of f(x) - f(b). Now it equals the nearest-step oracle, for every chunk split of
    the paths, and is complete; a row with no non-zero step gets a zero map and an honest delta."""
    if general:  # the device rule (no host sync) on every chunk, as on a GPU
        init = IdgiSum.__init__
        monkeypatch.setattr(IdgiSum, "__init__", lambda self, *a, **kw: (init(self, *a, **kw), setattr(self, "fast", False))[0])
    x, steps = step_inputs(), 16
    e = fastattr.explain(StepNet().eval(), x, 0, steps=steps, idgi=True, output="logit", batch_size=batch_size)
    want, lost = oracle_rows(StepNet(), x, steps)
    assert abs(lost[0]) > 0.1 and abs(lost[1]) > 0.1  # the old rule lost this much of the span
    torch.testing.assert_close(e.attributions.double(), want, rtol=0, atol=1e-6 * want.abs().max().item())
    assert e.delta[:2].abs().max() < 1e-6
    assert torch.equal(e.attributions[2], torch.zeros(4))  # never in the band: every step zero
    torch.testing.assert_close(e.delta[2], -(e.scores[2] - e.baseline_scores[2]))
    assert abs(float(e.delta[2])) > 0.1


def test_sync_free_rule_equals_fast_path_when_no_step_is_zero(small_cnn, small_images, monkeypatch):
    """Both ways of accumulating give bit-identical maps on ordinary paths (every step non-zero)."""
    fast = fastattr.attribute(small_cnn, small_images, TARGETS, steps=9, idgi=True, batch_size=4)
    init = IdgiSum.__init__
    monkeypatch.setattr(IdgiSum, "__init__", lambda self, *a, **kw: (init(self, *a, **kw), setattr(self, "fast", False))[0])
    general = fastattr.attribute(small_cnn, small_images, TARGETS, steps=9, idgi=True, batch_size=4)
    assert torch.equal(fast, general)


class DeadStartMLP(nn.Module):
    """Linear-ReLU-Linear with negative first-layer biases: near the black baseline every unit is
    off (zero gradient), and the units switch on part-way along the path."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 4)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.rand(16, 6, generator=g))
            self.fc1.bias.copy_(-1.0 - torch.rand(16, generator=g))
            self.fc2.weight.copy_(torch.randn(4, 16, generator=g))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("backward", ["standard", "guided"])
@pytest.mark.parametrize("method", ["ig", "guided_ig"])
def test_guided_backward_idgi_is_complete(method, backward):
    """Issue 16.6 as reported: backward="guided" + IDGI left delta of -1.9e-3 on a span of 4.7e-2
    when some path points had an all-zero (guided) gradient. Complete now, for IG and Guided IG."""
    x = 0.6 + 0.4 * torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    model = DeadStartMLP().eval()
    e = fastattr.explain(model, x, 0, method=method, steps=12, idgi=True, backward=backward, batch_size=5)
    change = e.scores - e.baseline_scores
    assert change.abs().min() > 1e-3
    assert e.delta.abs().max() < 1e-6, (e.delta, change)
    if method == "ig":  # the case really occurs: zero-gradient steps whose output changes
        _, lost = oracle_rows(model, x, 12, output="probability")
        assert max(abs(v) for v in lost) > 1e-3


def test_blur_ig_idgi_zero_steps_complete(small_images):
    """Blur IG's path (most blurred first) through a model whose gradient vanishes on blurry points."""
    class Sharp(nn.Module):
        def forward(self, x):  # edge energy above a threshold: zero gradient on smooth images
            e = torch.relu((x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) - 0.2)
            return torch.stack([e + 0.1 * torch.round(10 * x.mean((1, 2, 3))), -e], 1)

    e = fastattr.explain(Sharp().eval(), small_images, 0, method="blur_ig", steps=10, max_sigma=4.0,
                         idgi=True, output="logit", batch_size=3)
    assert (e.scores - e.baseline_scores).abs().min() > 1e-3
    assert e.delta.abs().max() < 1e-6, e.delta
