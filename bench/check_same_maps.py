"""Bit-for-bit check of maps against another commit: for engine and accumulation changes that must
not change any result (e.g. per-chunk overhead cuts).

    python bench/check_same_maps.py [--against HEAD~1] [--quick]

Computes ~100 configurations (models: the tiny conv model, the test zoo's ResNet/MobileNetV2/ViT/
MLP/1-D/3-D conv/token models, a float64 MLP, a model whose gradients vanish near the baseline
(IDGI's zero-step rule), EfficientNet-Lite0 at 64x64; methods vanilla, IG with every rule, IDGI,
guided backward, blur_ig, guided_ig, neflag, schedule="adaptive", smoothgrad, Explainer,
fastattr.captum IG; one and several images; chunk sizes that split images across chunks) with
this checkout and with the fastattr package of `--against` (extracted with `git archive` into a
temporary folder; it borrows this checkout's built C++ extension, so csrc/ must be unchanged).
Every tensor of every Explanation (maps, scores, baseline scores, delta), its dtype, shape and
contiguity, and grad_evals must be identical; bitwise, NaN payloads and signed zeros included.
Exit status 1 on any difference.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configurations(quick: bool):
    """(name, thunk -> dict of tensors/ints) for every configuration."""
    import torch
    from torch import nn

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import zoo
    from harness import tiny_model

    import fastattr

    def explanation(e):
        return {"attributions": e.attributions, "scores": e.scores, "baseline_scores": e.baseline_scores,
                "delta": e.delta, "target": e.target, "grad_evals": e.grad_evals}

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    class Vanishing(nn.Module):
        """Every ReLU is off near the zero baseline: IDGI steps with all-zero gradients."""

        def __init__(self, d):
            super().__init__()
            torch.manual_seed(3)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 4))
            with torch.no_grad():
                self.net[1].bias.fill_(-0.6)
                self.net[1].weight.abs_()

        def forward(self, x):
            return self.net(x)

    tiny = tiny_model()
    t1 = torch.rand(1, 3, 32, 32, generator=gen(0))
    t3 = torch.rand(3, 3, 32, 32, generator=gen(1))
    cfg = []

    def add(name, fn):
        cfg.append((name, fn))

    for x, tag in ((t1, "n1"), (t3, "n3")):
        for rule in ("left", "right", "middle", "trapezoid", "pair", "gausslegendre"):
            for idgi in (False, True):
                add(f"tiny {tag} ig {rule} idgi={idgi}", lambda x=x, r=rule, i=idgi: explanation(
                    fastattr.explain(tiny, x, 3, steps=24, rule=r, idgi=i)))
        for idgi in (False, True):
            for bs in (5, 16, 64):
                add(f"tiny {tag} ig batch={bs} idgi={idgi}", lambda x=x, b=bs, i=idgi: explanation(
                    fastattr.explain(tiny, x, 3, steps=16, batch_size=b, idgi=i)))
            add(f"tiny {tag} ig guided idgi={idgi}", lambda x=x, i=idgi: explanation(
                fastattr.explain(tiny, x, 3, steps=16, idgi=i, backward="guided", batch_size=7)))
            add(f"tiny {tag} ig nchw idgi={idgi}", lambda x=x, i=idgi: explanation(
                fastattr.explain(tiny, x, None, steps=16, idgi=i, channels_last=False)))
            add(f"tiny {tag} ig logit baseline idgi={idgi}", lambda x=x, i=idgi: explanation(
                fastattr.explain(tiny, x, 1, steps=16, idgi=i, output="logit", baseline=0.5)))
            add(f"tiny {tag} ig adaptive idgi={idgi}", lambda x=x, i=idgi: explanation(
                fastattr.explain(tiny, x, 3, steps=16, idgi=i, schedule="adaptive")))
        add(f"tiny {tag} vanilla", lambda x=x: explanation(fastattr.explain(tiny, x, 3, method="vanilla")))
        add(f"tiny {tag} explainer idgi", lambda x=x: explanation(
            fastattr.Explainer(tiny, idgi=True, steps=16, batch_size=12)(x, 3)))
        add(f"tiny {tag} smoothgrad ig", lambda x=x: explanation(fastattr.smoothgrad(
            tiny, x, 3, method="ig", nsamples=3, steps=8, generator=gen(5))))

    for name in ("resnet", "mobilenetv2", "vit", "mlp", "conv1d", "tokens", "conv3d"):
        model = zoo.make(name)
        x = zoo.inputs(name, n=3)
        for idgi in (False, True):
            for bs in (None, 7):
                add(f"{name} ig batch={bs} idgi={idgi}", lambda m=model, x=x, b=bs, i=idgi: explanation(
                    fastattr.explain(m, x, 1, steps=16, idgi=i, batch_size=b)))
            add(f"{name} ig guided idgi={idgi}", lambda m=model, x=x, i=idgi: explanation(
                fastattr.explain(m, x, 1, steps=16, idgi=i, backward="guided")))
        if quick:
            continue
        add(f"{name} vanilla", lambda m=model, x=x: explanation(fastattr.explain(m, x, 1, method="vanilla")))
        add(f"{name} guided_ig", lambda m=model, x=x: explanation(
            fastattr.explain(m, x, 1, method="guided_ig", steps=12)))
        add(f"{name} neflag", lambda m=model, x=x: explanation(
            fastattr.explain(m, x, 1, method="neflag", n=3, m=3, generator=gen(2))))
        if zoo.ZOO[name].images:
            for idgi in (False, True):
                add(f"{name} blur_ig idgi={idgi}", lambda m=model, x=x, i=idgi: explanation(
                    fastattr.explain(m, x, 1, method="blur_ig", steps=12, idgi=i)))

    m64 = zoo.make("mlp", dtype=torch.float64)
    x64 = zoo.inputs("mlp", n=3).double()
    for idgi in (False, True):
        add(f"mlp float64 ig idgi={idgi}", lambda i=idgi: explanation(
            fastattr.explain(m64, x64, 2, steps=16, idgi=i, batch_size=5)))

    van = Vanishing(3 * 8 * 8)
    xv = torch.rand(3, 3, 8, 8, generator=gen(4))
    for bs in (3, 5, 64):
        for rule in ("left", "pair"):
            add(f"vanishing ig idgi batch={bs} {rule}", lambda b=bs, r=rule: explanation(
                fastattr.explain(van, xv, 2, steps=16, idgi=True, batch_size=b, rule=r, output="logit")))

    from fastattr.captum import IntegratedGradients

    for idgi in (False, True):
        add(f"captum ig tiny idgi={idgi}", lambda i=idgi: {"attributions": IntegratedGradients(tiny).attribute(
            t3, target=3, n_steps=12, internal_batch_size=5, idgi=i)})

    if not quick:
        from fastattr.images import bundled_images
        from fastattr.models import load_default_model

        eff = load_default_model()
        xe = torch.nn.functional.interpolate(bundled_images()["chelsea"][None], size=(64, 64), mode="bilinear")
        for idgi in (False, True):
            add(f"effnet 64x64 ig idgi={idgi}", lambda i=idgi: explanation(
                fastattr.explain(eff, xe, 285, steps=16, idgi=i)))
            add(f"effnet 64x64 ig guided idgi={idgi}", lambda i=idgi: explanation(
                fastattr.explain(eff, xe, 285, steps=16, idgi=i, backward="guided")))
    return cfg


def compute(out: str, quick: bool) -> None:
    """Run every configuration in this process (whichever fastattr it imports) and save the results."""
    import torch

    import fastattr

    print(fastattr.__file__, file=sys.stderr)
    torch.set_num_threads(1)  # the same reduction splits in both runs
    results = {}
    for name, fn in configurations(quick):
        torch.manual_seed(0)
        try:
            res = fn()
        except Exception as exc:  # a configuration the other commit cannot run is a difference too
            res = {"error": f"{type(exc).__name__}: {exc}"}
        results[name] = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in res.items()}
        if isinstance(res.get("attributions"), torch.Tensor):
            results[name]["contiguous"] = res["attributions"].is_contiguous()
    torch.save(results, out)


def same(a, b) -> bool:
    import torch

    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return a == b
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():  # compare bits: NaN payloads and -0.0 count
        bits = {torch.float64: torch.int64, torch.float32: torch.int32}.get(a.dtype, torch.int16)
        return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))
    return torch.equal(a, b)


def extract(commit: str, dest: str) -> str:
    """fastattr (with kernels/ as fastattr.kernels) of `commit` under dest; returns the folder for PYTHONPATH."""
    changed = subprocess.run(["git", "diff", "--quiet", commit, "--", "csrc"], cwd=ROOT).returncode
    if changed:
        sys.exit(f"csrc/ differs from {commit}: build that commit's extension instead of borrowing this one")
    archive = subprocess.run(["git", "archive", commit, "fastattr", "kernels"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    shutil.move(os.path.join(dest, "kernels"), os.path.join(dest, "fastattr", "kernels"))
    for so in glob.glob(os.path.join(ROOT, "fastattr", "_C*.so")):
        shutil.copy(so, os.path.join(dest, "fastattr"))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", default="HEAD~1", help="commit whose maps must be matched")
    ap.add_argument("--quick", action="store_true", help="fewer configurations (no EfficientNet, fewer methods)")
    ap.add_argument("--compute", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compute:
        compute(args.compute, args.quick)
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "base"))
        base = extract(args.against, os.path.join(tmp, "base"))
        quick = ["--quick"] if args.quick else []
        runs = {}
        for tag, path in (("this checkout", None), (args.against, base)):
            env = dict(os.environ, OMP_NUM_THREADS="1")
            if path:
                env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
            out = os.path.join(tmp, f"{len(runs)}.pt")
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--compute", out] + quick, env=env,
                                  cwd=tmp, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{tag}: failed\n{proc.stderr[-3000:]}")
            where = proc.stderr.strip().splitlines()[0]
            print(f"{tag}: fastattr from {where}")
            runs[tag] = torch.load(out)
        new, old = runs["this checkout"], runs[args.against]
        bad = 0
        for name in old:
            diffs = [k for k in set(old[name]) | set(new.get(name, {}))
                     if not same(old[name].get(k), new.get(name, {}).get(k))]
            if diffs:
                bad += 1
                print(f"DIFFERENT {name}: {sorted(diffs)}")
        errors = [n for n in old if "error" in old[n]]
        print(f"{len(old)} configurations, {bad} different, {len(errors)} raising in both"
              + (f" ({errors[:3]})" if errors else ""))
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
