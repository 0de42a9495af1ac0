"""The adaptive schedule on the adversarial path shapes of tests/path_shapes.py (the runs of
tests/test_adaptive_zoo.py), as a table: per shape and variant, the completeness residual
|delta| / |f(x) - f(b)| of uniform and adaptive with --budget evaluations, their relative L2 error
to the converged map (adaptive, --ref-steps evaluations), error_estimate and its ratio to the
real error. Ends with the smallest and the median ratio per variant. Accuracy only (no timing); ~1-2 min.

    python bench/adaptive_zoo.py [--budget 32] [--ref-steps 1024] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastattr  # noqa: E402
from tests.test_adaptive_zoo import CASES, INVISIBLE, VARIANTS, zoo_case  # noqa: E402

NAMES = {("ig", False): "IG", ("ig", True): "IDGI-IG", ("blur_ig", False): "Blur IG", ("blur_ig", True): "IDGI-Blur IG"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--ref-steps", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| shape | variant | residual uniform | residual adaptive | error uniform | error adaptive | "
          f"error_estimate | estimate / error | evaluations |\n|---|---|---|---|---|---|---|---|---|")
    smallest: dict[str, tuple[float, str]] = {}
    ratios: dict[str, list[float]] = {}
    for name in CASES:
        for method, idgi in VARIANTS:
            model, x, target, output, kw = zoo_case(name, method)

            def run(**k):
                return fastattr.explain(model, x, target, method=method, idgi=idgi, output=output, **kw, **k)

            u, a = run(steps=args.budget), run(steps=args.budget, schedule="adaptive")
            ref = run(steps=args.ref_steps, schedule="adaptive").attributions
            span = float((a.scores - a.baseline_scores).abs())
            err = float((a.attributions - ref).norm() / ref.norm())
            uerr = float((u.attributions - ref).norm() / ref.norm())
            est = float(a.extras["error_estimate"])
            ratio = est / err if err > 1e-9 else float("inf")
            variant = NAMES[(method, idgi)]
            note = " (invisible bump)" if (name, method, idgi) in INVISIBLE else ""
            if not note:
                if err > 1e-9:  # an exact map (linear paths) has no ratio
                    ratios.setdefault(variant, []).append(ratio)
                if ratio < smallest.get(variant, (float("inf"), ""))[0]:
                    smallest[variant] = (ratio, name)
            print(f"| {name} | {variant} | {abs(float(u.delta)) / span:.3f} | {abs(float(a.delta)) / span:.3f} | "
                  f"{uerr:.4f} | {err:.4f} | {est:.4f} | {ratio:.2f}{note} | {a.grad_evals} |", flush=True)
    print("\nsmallest error_estimate / error: " + "; ".join(f"{v} {r:.2f} ({n})" for v, (r, n) in smallest.items()))
    print("median error_estimate / error: " + "; ".join(f"{v} {statistics.median(r):.2f}" for v, r in ratios.items()))


if __name__ == "__main__":
    main()
