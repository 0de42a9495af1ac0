"""NeFLAG: the method against a sample-by-sample oracle written from SPEC.md, the linear-model closed
form, reproducibility, the fused op against its reference (opcheck, CPU, CUDA when present), the
.cu compile check and argument errors."""
import os
import shutil
import subprocess

import pytest
import torch
from torch import nn

import fastattr
from conftest import make_small_cnn
from fastattr.ops.neflag_step import neflag_step_, neflag_step_ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the oracle: SPEC.md "NeFLAG", one sample at a time, no batching, no op ------------------------
def f_and_grad(model, x, c, output):
    """f_c and d f_c / dx at one point x (C, H, W), batch of 1."""
    x = x[None].clone().requires_grad_(True)
    logits = model(x)
    y = (logits.softmax(-1) if output == "probability" else logits)[0, c]
    (g,) = torch.autograd.grad(y, x)
    return y.item(), g[0]


def oracle(model, x, targets, eps, n, m, norm, generator, output="probability"):
    """Algorithm 1 with the documented draws -> (map (N, C, H, W), grad evals, samples that reached
    negative flux, samples negative at their random start)."""
    attributions = torch.zeros_like(x)
    evals = negatives = at_start = 0
    for i in range(x.shape[0]):
        c = int(targets[i])
        fx, _ = f_and_grad(model, x[i], c, output)
        if norm == "linf":  # a random vertex of the L-inf eps-sphere
            starts = 2 * torch.randint(0, 2, (n, *x.shape[1:]), generator=generator, dtype=torch.float32) - 1
        else:  # a uniform point of the L2 eps-sphere
            u = torch.randn((n, *x.shape[1:]), generator=generator, dtype=torch.float32)
            starts = torch.stack([v / v.norm() for v in u])
        for j in range(n):
            xt = x[i] + eps * starts[j]
            for k in range(m):
                y, F = f_and_grad(model, xt, c, output)
                evals += 1
                if y < fx:
                    negatives += 1
                    at_start += k == 0
                    break
                xt = x[i] - eps * (torch.sign(F) if norm == "linf" else F / F.norm())
            attributions[i] += F * (x[i] - xt)
    return attributions, evals, negatives, at_start


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("output", ["probability", "logit"])
def test_equals_oracle_small_cnn(norm, output, small_images):
    model = make_small_cnn(seed=0)
    x = small_images[:3]
    # eps chosen so that samples iterate (this random CNN's f_c rises on most random starts).
    kw = dict(eps=0.3 if output == "probability" else 0.1, n=6, m=4, norm=norm)
    exp = fastattr.explain(model, x, method="neflag", output=output, batch_size=5,
                           generator=torch.Generator().manual_seed(11), **kw)
    ref, evals, negatives, _ = oracle(model, x, exp.target, generator=torch.Generator().manual_seed(11),
                                      output=output, **kw)
    torch.testing.assert_close(exp.attributions, ref, rtol=1e-5, atol=1e-6)
    assert exp.grad_evals == evals  # finished samples cost nothing more (compaction)
    assert int(exp.extras["negative_flux"].sum()) == negatives
    assert exp.extras["mean_grad_evals"] == pytest.approx(evals / (3 * 6))
    assert int(exp.extras["grad_evals_per_image"].sum()) == evals
    assert evals > 3 * 6  # some samples iterated past their start
    assert exp.attributions.abs().sum() > 0


def test_all_branches_exercised_against_oracle(small_images):
    """Samples that stop at their start, stop after moving, and exhaust m, in one call, matched."""
    model = make_small_cnn(seed=3)
    x = small_images[:3]
    kw = dict(eps=0.4, n=6, m=2, norm="linf")
    exp = fastattr.explain(model, x, method="neflag", batch_size=4,
                           generator=torch.Generator().manual_seed(11), **kw)
    ref, evals, negatives, at_start = oracle(model, x, exp.target, generator=torch.Generator().manual_seed(11),
                                             **kw)
    torch.testing.assert_close(exp.attributions, ref, rtol=1e-5, atol=1e-6)
    assert exp.grad_evals == evals
    exhausted = 3 * 6 - negatives
    assert exhausted > 0 and 0 < at_start < negatives  # all three branches happened


def test_batch_size_does_not_change_the_map(small_cnn, small_images):
    # A sign iteration amplifies one-ulp gradient changes into different paths, so this needs
    # gradients that are bit-identical across chunk shapes: oneDNN's NCHW kernels give that on
    # this model, its channels-last ones do not (channels_last=True agrees to rounding only).
    maps, evals = [], []
    for bs in (1, 3, 16):
        exp = fastattr.explain(small_cnn, small_images, method="neflag", n=5, m=5, eps=0.2, batch_size=bs,
                               generator=torch.Generator().manual_seed(2), channels_last=False)
        maps.append(exp.attributions)
        evals.append(exp.grad_evals)
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps[0], maps[2], rtol=1e-5, atol=1e-6)
    assert evals[0] == evals[1] == evals[2]


# -- linear model closed form ---------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 20])
def test_linear_model_closed_form(m):
    """f = w.x + b (logit): start x + eps*s stops at once iff w.s < 0 and adds -eps*w*s; any other
    sample moves to x - eps*sign(w) (negative flux there) and adds eps*|w| (also as the m=1 exit)."""
    C, H, W, K, n, eps = 3, 6, 6, 4, 32, 0.05
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K)).eval()
    x = torch.rand(2, C, H, W, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([2, 0])
    exp = fastattr.explain(model, x, targets, method="neflag", output="logit", eps=eps, n=n, m=m,
                           generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # the documented draw order: image by image, (n, C, H, W)
    expected = torch.zeros_like(x)
    starts_negative = []
    for i in range(2):
        w = model[1].weight[targets[i]].detach().view(C, H, W)
        s = 2 * torch.randint(0, 2, (n, C, H, W), generator=g, dtype=torch.float32) - 1
        ws = (w * s).flatten(1).sum(1)
        assert ws.abs().min() > 1e-3  # no draw sits on the decision boundary (float rounding)
        neg = ws < 0
        starts_negative.append(int(neg.sum()))
        expected[i] = (-eps * w * s[neg]).sum(0) + (~neg).sum() * eps * w.abs()
    torch.testing.assert_close(exp.attributions, expected, rtol=1e-5, atol=1e-6)
    assert 0 < sum(starts_negative) < 2 * n  # both kinds of samples occur
    reached = [n, n] if m > 1 else starts_negative
    assert exp.extras["negative_flux"].tolist() == reached
    mean_evals = 1 + (2 * n - sum(starts_negative)) / (2 * n) if m > 1 else 1.0
    assert exp.extras["mean_grad_evals"] == pytest.approx(mean_evals)


# -- reproducibility, completeness report ---------------------------------------------------------
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_seeds(norm, small_cnn, small_images):
    def run(seed):
        return fastattr.attribute(small_cnn, small_images[:2], method="neflag", n=4, m=3, norm=norm,
                                  generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_global_rng_when_no_generator(small_cnn, small_images):
    torch.manual_seed(3)
    a = fastattr.attribute(small_cnn, small_images[:1], method="neflag", n=3, m=2)
    torch.manual_seed(3)
    b = fastattr.attribute(small_cnn, small_images[:1], method="neflag", n=3, m=2)
    assert torch.equal(a, b)


def test_baseline_scores_and_delta(small_cnn, small_images):
    exp = fastattr.explain(small_cnn, small_images[:2], method="neflag", n=3, m=3,
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(exp.baseline_scores, exp.scores)
    torch.testing.assert_close(exp.delta, exp.attributions.flatten(1).sum(1))
    assert exp.extras["samples"] == 3 and exp.extras["norm"] == "linf"
    assert 1.0 <= exp.extras["mean_grad_evals"] <= 3.0


def test_effnet_matches_oracle(effnet, photos):
    """The real model, one photo, few samples: batched method == sample-by-sample oracle."""
    x = photos[:1]
    kw = dict(eps=0.1, n=3, m=3, norm="linf")
    # The oracle calls the model on NCHW tensors; the sign iteration needs the same kernels.
    exp = fastattr.explain(effnet, x, method="neflag", generator=torch.Generator().manual_seed(0),
                           channels_last=False, **kw)
    ref, evals, negatives, _ = oracle(effnet, x, exp.target, generator=torch.Generator().manual_seed(0), **kw)
    assert exp.grad_evals == evals
    assert int(exp.extras["negative_flux"].sum()) == negatives
    # Batch-1 vs batched convolutions round differently (~1e-6 relative on the gradients).
    scale = ref.abs().max()
    assert scale > 0
    torch.testing.assert_close(exp.attributions / scale, ref / scale, rtol=0, atol=1e-4)


# -- argument errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("opts, param", [
    (dict(eps=0.0), "eps"), (dict(eps=-0.1), "eps"), (dict(eps=float("nan")), "eps"), (dict(eps="a"), "eps"),
    (dict(n=0), "n"), (dict(n=2.5), "n"), (dict(m=0), "m"), (dict(m=-3), "m"),
    (dict(norm="l1"), "norm"), (dict(generator=3), "generator"), (dict(steps=5), "steps"),
])
def test_bad_options(opts, param, small_cnn, small_images):
    with pytest.raises((ValueError, TypeError), match=rf"^{param}:"):
        fastattr.attribute(small_cnn, small_images[:1], method="neflag", **opts)


def test_idgi_rejected(small_cnn, small_images):
    with pytest.raises(ValueError, match="^idgi:"):
        fastattr.attribute(small_cnn, small_images[:1], method="neflag", idgi=True)


# -- the fused op ---------------------------------------------------------------------------------
def op_args(seed=0, N=3, S=7, D=300, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).to(device)

    grads = r(S, D)
    grads[0, :20] = 0  # sign(0) = 0 elements
    grads[1] = 0  # an all-zero gradient (l2: no direction)
    index = torch.tensor([0, 1, 1, 2, 0, 1, 1][:S]).to(device)  # one image several times per chunk
    # Samples 0, 4, 6 have negative flux; 1, 3, 5 move; 2 moves on its last evaluation.
    values = torch.tensor([-1.0, 1.0, 0.0, 1.0, -1.0, 1.0, -1.0][:S]).to(device)
    scores = torch.zeros(N).to(device)
    last = torch.tensor([True, False, True, False, True, False, True][:S]).to(device)
    return [r(N, D), r(S, D), r(N, D), grads, values, scores, index, last]


@pytest.mark.parametrize("l2", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_op_matches_reference(l2, dtype):
    args = op_args(dtype=dtype)
    a = [t.clone() for t in args]
    b = [t.clone() for t in args]
    done_op = neflag_step_(*a, 0.25, l2)
    done_ref = neflag_step_ref(*b, 0.25, l2)
    torch.testing.assert_close(a[0], b[0], rtol=1e-6, atol=1e-6)  # acc
    torch.testing.assert_close(a[1], b[1], rtol=1e-6, atol=1e-6)  # points
    assert torch.equal(done_op, done_ref)
    values, scores, index, last = args[4:]
    neg = values < scores[index]
    assert torch.equal(done_op, neg | last)
    assert neg.any() and (~neg & last).any() and (~neg & ~last).any()  # every branch is exercised


def test_op_semantics_by_hand():
    """One image, three samples: negative flux, moving, exhausted - each written out."""
    x = torch.tensor([[1.0, 2.0, 3.0]])
    pts = torch.tensor([[1.5, 1.5, 3.5], [0.5, 2.5, 3.5], [1.5, 2.5, 2.5]])
    grads = torch.tensor([[1.0, -2.0, 0.0], [3.0, -1.0, 0.5], [-1.0, 4.0, 0.0]])
    values, scores = torch.tensor([0.1, 0.9, 0.9]), torch.tensor([0.5])
    acc = torch.zeros(1, 3)
    done = neflag_step_(acc, pts, x, grads, values, scores, torch.zeros(3, dtype=torch.long),
                        torch.tensor([False, False, True]), 0.5, False)
    assert done.tolist() == [True, False, True]
    # sample 0: F*(x - p) = [1*-0.5, -2*0.5, 0] ; sample 2 moves to x - 0.5*sign(F) = [1.5, 1.5, 3]
    # and adds F*(x - p_new) = [-1*-0.5, 4*0.5, 0] = 0.5*|F|
    torch.testing.assert_close(acc, torch.tensor([[-0.5 + 0.5, -1.0 + 2.0, 0.0]]))
    torch.testing.assert_close(pts, torch.tensor([[1.5, 1.5, 3.5], [0.5, 2.5, 2.5], [1.5, 1.5, 3.0]]))


@pytest.mark.parametrize("l2", [False, True])
def test_opcheck(l2):
    torch.library.opcheck(torch.ops.fastattr.neflag_step_, (*op_args(), 0.1, l2))
    torch.library.opcheck(torch.ops.fastattr.neflag_step_, (*op_args(dtype=torch.float64, S=2), 0.1, l2))


def test_op_errors():
    args = op_args()
    with pytest.raises((RuntimeError, ValueError), match="eps"):  # C++ op or the reference fallback
        neflag_step_(*[t.clone() for t in args], 0.0, False)
    bad = [t.clone() for t in args]
    bad[6] = torch.tensor([0, 1, 1, 9, 0, 1, 1])
    with pytest.raises((RuntimeError, IndexError)):
        neflag_step_(*bad, 0.1, False)
    bad = [t.clone() for t in args]
    bad[3] = bad[3][:, :10]
    with pytest.raises(RuntimeError):
        neflag_step_(*bad, 0.1, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("l2", [False, True])
def test_op_cuda_matches_reference(l2):
    args = op_args(device="cuda")
    a = [t.clone() for t in args]
    b = [t.cpu().clone() for t in args]
    done = neflag_step_(*a, 0.25, l2)
    neflag_step_ref(*b, 0.25, l2)
    torch.testing.assert_close(a[0].cpu(), b[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1].cpu(), b[1], rtol=1e-6, atol=1e-6)
    assert done.dtype == torch.bool


def test_cpu_kernel_is_the_cpp_op_when_built():
    from fastattr.ops._library import HAS_C

    if not HAS_C:
        pytest.skip("fastattr._C not built")
    cpu = [l for l in torch._C._dispatch_dump("fastattr::neflag_step_").splitlines() if l.startswith("CPU:")]
    assert "neflag_step.cpp" in cpu[0], f"stale fastattr._C without the C++ op (rebuild): {cpu}"
    pts = torch.zeros(4, 2).t()  # non-contiguous: the C++ op refuses (it writes through pointers)
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.fastattr.neflag_step_(torch.zeros(1, 4), pts, torch.zeros(1, 4), torch.zeros(2, 4), torch.zeros(2),
                                        torch.zeros(1), torch.zeros(2, dtype=torch.long),
                                        torch.zeros(2, dtype=torch.bool), 0.1, False)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cu_compiles(tmp_path):
    out = subprocess.run(["nvcc", "-c", "-arch=sm_90", f"-I{ROOT}/csrc/include",
                          f"{ROOT}/csrc/cuda/neflag_step.cu", "-o", str(tmp_path / "neflag_step.o")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
