"""IDGI on the IG path against a numpy oracle of the authors' function, its completeness at any
steps and batch size, and the degenerate cases (input == baseline, all-zero gradients)."""
import numpy as np
import pytest
import torch
from torch import nn

import fastattr
from fastattr.methods.integrated_gradients import rule_points

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
    """Oracle IDGI maps (N, C, H, W) on points b + a (x - b), a in alphas (then a = 1 appended)."""
    b = torch.zeros_like(x) if baseline is None else baseline
    maps = []
    for xi, bi, t in zip(x, b, targets.tolist()):
        grads, preds = [], []
        for a in list(alphas) + [1.0]:
            y, g = f_and_grad(model, bi + a * (xi - bi), t, output)
            grads.append(g)
            preds.append(y)
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


@pytest.mark.parametrize("rule", ["right", "middle", "trapezoid", "pair"])
def test_idgi_with_other_rules_uses_their_points_below_one(small_cnn, small_images, rule):
    """IDGI takes a rule's points with a < 1 as p_0..p_{m-1}; p_m is the input."""
    alphas, _ = rule_points(rule, 6)
    alphas = alphas[alphas < 1].tolist()
    e = fastattr.explain(small_cnn, small_images, TARGETS, steps=6, rule=rule, idgi=True, batch_size=5)
    assert e.grad_evals == len(alphas) * small_images.shape[0]
    assert_close_to_max(e.attributions, oracle_maps(small_cnn, small_images, TARGETS, alphas, "probability"))


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
