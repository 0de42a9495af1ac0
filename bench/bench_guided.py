"""Side by side, one run: the guided backward's cost over the standard backward, and guided IG /
guided IDGI-IG against the model-only floor and a captum peer.

    python bench/bench_guided.py [--repeats 7] [--steps 32] [--skip-compile]

Model: the bundled EfficientNet-Lite0 at 224x224 (17 ReLU6), one photo, CPU, 2 threads, chunks of
the engine's default batch. All candidates run interleaved in one process; medians and ratios.

* "standard fwd+bwd" is the floor (forward + input-gradient backward, parameters frozen) and
  "guided fwd+bwd" the same passes inside the guided mode: their ratio is the guided backward's
  cost (target <= 1.05).
* guided IG / IDGI-IG rows are fastattr.attribute(backward="guided") vs the floor of the same
  number of passes; the peer is captum IG on a copy of the model whose ReLU6 modules clip their
  input gradient with backward hooks (the hook form of the same guided rule).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, interleaved, report  # noqa: E402
from peers import captum_ig  # noqa: E402

import fastattr  # noqa: E402
from fastattr.backward.guided import GuidedMode  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.MaxPool2d)


def hooked_copy(model: nn.Module) -> nn.Module:
    """A copy whose activation / max-pool modules replace their input gradient by its relu."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, ACTIVATIONS):
            mod.register_full_backward_hook(lambda _m, gin, _gout: (gin[0].clamp_min(0),))
    return m


def guided_floor_fn(model, image, passes, batch):
    """The floor's passes with the guided backward mode active."""
    run = floor_fn(model, image, passes, batch)

    def guided():
        with GuidedMode():
            run()

    return guided


def backward_cost(model, image, batch, repeats):
    """Standard vs guided forward+backward of `batch` points, interleaved."""
    c = {"floor": floor_fn(model, image, batch, batch), "guided fwd+bwd": guided_floor_fn(model, image, batch, batch)}
    t = interleaved(c, repeats=repeats)
    print(report(t, title=f"guided vs standard backward: one chunk of {batch} points"))
    med = {k: statistics.median(v) for k, v in t.items()}
    # Per-round ratios (each round runs both back to back) are less noisy than ratio of medians.
    ratios = [g / s for g, s in zip(t["guided fwd+bwd"], t["floor"])]
    print(f"\nguided / standard backward: median of per-round ratios {statistics.median(ratios):.3f}, "
          f"ratio of medians {med['guided fwd+bwd'] / med['floor']:.3f} (target <= 1.05)")


def method_rows(model, image, target, steps, batch, repeats, with_compile):
    x = image[None]
    hooked = hooked_copy(model)

    def attr(**kw):
        return lambda: fastattr.attribute(model, x, target, steps=steps, batch_size=batch, **kw)

    c = {
        "floor": floor_fn(model, image, steps, batch),
        "guided floor": guided_floor_fn(model, image, steps, batch),
        "fastattr IG": attr(),
        "fastattr guided IG": attr(backward="guided"),
        "fastattr guided IDGI-IG": attr(backward="guided", idgi=True),
    }
    if with_compile:
        c["fastattr guided IG compile"] = attr(backward="guided", compile=True)
        c["fastattr guided IDGI-IG compile"] = attr(backward="guided", idgi=True, compile=True)
    c["captum IG, hooked copy"] = lambda: captum_ig(hooked, x, target, steps, internal_batch_size=batch)
    t = interleaved(c, repeats=repeats)
    print("\n" + report(t, title=f"EfficientNet-Lite0 224x224, {steps} steps, 1 image, batch {batch}"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--skip-compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from fastattr.images import bundled_images
    from fastattr.models import load_default_model

    batch = default_batch_size(torch.device("cpu"))
    print(f"threads={torch.get_num_threads()} batch={batch} steps={args.steps} repeats={args.repeats}\n")
    model = load_default_model()
    image = bundled_images()["chelsea"]
    backward_cost(model, image, batch, 3 * args.repeats)
    method_rows(model, image, 285, args.steps, batch, args.repeats, not args.skip_compile)


if __name__ == "__main__":
    main()
