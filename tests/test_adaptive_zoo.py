"""schedule="adaptive" on adversarial path shapes (tests/path_shapes.py: steep steps at several
positions, bumps of the score, plateaus, linear and smooth paths, ReLU CNNs), for IG, IDGI-IG,
Blur IG and IDGI-Blur IG with 32 evaluations, against uniform with the same 32 and a converged
map (adaptive, 1024 evaluations):

- Riemann sums (IG, Blur IG): the completeness residual |delta| / |f(x) - f(b)| is never worse
  than uniform's by more than 0.1 (before the completeness indicator, the step at 0.45 of the
  path gave an all-zero map, residual 1.0, after 4 evaluations);
- every variant: error_estimate >= the real relative L2 error to the converged map (before:
  0.0 against 1.0 on the step model).

`python bench/adaptive_zoo.py` prints the table (errors, estimates, residuals) of the same runs."""
import pytest
import torch

import fastattr
from tests.path_shapes import ZOO, PathShapeModel, relu_cnn

VARIANTS = [("ig", False), ("ig", True), ("blur_ig", False), ("blur_ig", True)]
CASES = list(ZOO) + ["relu cnn 0", "relu cnn 1"]
# IDGI-IG cannot see a bump of the score narrower than the grid whose flanks no point touches:
# the output differences and slopes at the points around it agree exactly (the IG map does not
# depend on it, IDGI's does). At 32 evaluations the 0.005-wide bump at 0.3 is such a bump here
# (error 0.042, estimate 0.017; uniform 32 is 0.057 off and uniform 64 1.79: every schedule is
# at the mercy of where its points fall). docs/adaptive.md "What the estimate cannot see".
INVISIBLE = {("bump 0.3 / 0.85", "ig", True)}


def zoo_case(name: str, method: str):
    """(model, image, target, output, options) of a zoo case."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 8, 8, generator=g) * 0.8 + 0.1
    kw = {"max_sigma": 4.0} if method == "blur_ig" else {}  # 8 px: sigma 50 is flat early
    if name.startswith("relu cnn"):
        return relu_cnn(int(name[-1])), torch.rand(1, 3, 8, 8, generator=g), None, "probability", kw
    return PathShapeModel(x, ZOO[name], "ig" if method == "ig" else "blur", 4.0).eval(), x, 0, "logit", kw


@pytest.mark.parametrize("method,idgi", VARIANTS, ids=["IG", "IDGI-IG", "BlurIG", "IDGI-BlurIG"])
@pytest.mark.parametrize("name", CASES)
def test_zoo(name, method, idgi):
    model, x, target, output, kw = zoo_case(name, method)

    def run(**k):
        return fastattr.explain(model, x, target, method=method, idgi=idgi, output=output, **kw, **k)

    uniform, adaptive = run(steps=32), run(steps=32, schedule="adaptive")
    ref = run(steps=1024, schedule="adaptive").attributions
    assert adaptive.grad_evals <= 32
    span = float((adaptive.scores - adaptive.baseline_scores).abs())
    if not idgi:
        res_a, res_u = abs(float(adaptive.delta)) / span, abs(float(uniform.delta)) / span
        assert res_a <= res_u + 0.1, (res_a, res_u)
    err = float((adaptive.attributions - ref).norm() / ref.norm())
    est = float(adaptive.extras["error_estimate"])
    if name.startswith("step"):  # before: an all-zero map with estimate 0 (the step model)
        assert float(adaptive.attributions.abs().sum()) > 0.1 * span and est > 0
    if (name, method, idgi) not in INVISIBLE:
        assert est >= err - 1e-6, (est, err)
