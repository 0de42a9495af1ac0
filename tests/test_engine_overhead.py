"""Per-chunk work of the engine and the path sums, counted in dispatched torch ops (not timed: the
timings live in bench/bench_overhead.py): channels-last points go to the model and come back
into the Riemann sum without a copy, a walk enters no context per chunk, and the results are
those of the straightforward computation, bit for bit."""
import collections

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import fastattr
from fastattr.engine import Engine
from fastattr.methods.integrated_gradients import rows
from fastattr.paths import RiemannSum

COPIES = ("aten.clone.default", "aten.copy_.default", "aten._to_copy.default", "aten.index.Tensor")
BIG = 4 * 3 * 16 * 16  # elements: a copy of at least 4 points of 3x16x16 counts as a copy of points


class OpCount(TorchDispatchMode):
    """Counts every aten/fastattr op dispatched while active (forward and backward); ops whose
    result has at least BIG elements are counted again under "big:<op>"."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops[str(func)] += 1
        if isinstance(out, torch.Tensor) and out.numel() >= BIG:
            self.ops[f"big:{func}"] += 1
        return out


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 10)).eval()


def ops_per_chunk(fn_of_steps, n=1, steps=(16, 48), batch=16):
    """Ops that one more chunk adds (two runs of n images that differ by whole chunks)."""
    counts = []
    for s in steps:
        fn_of_steps(s, batch)  # warm-up: lazy initialisation is not per chunk
        with OpCount() as c:
            fn_of_steps(s, batch)
        counts.append(c.ops)
    chunks = n * (steps[1] - steps[0]) // batch
    return {k: (counts[1][k] - counts[0][k]) / chunks for k in counts[1] | counts[0]}


def copies(per_chunk):
    """Copies of whole chunks of points (or gradients) per chunk."""
    return sum(per_chunk.get(f"big:{k}", 0) for k in COPIES)


@pytest.mark.parametrize("baseline", [None, 0.25])
@pytest.mark.parametrize("n", [1, 3])
def test_ig_on_channels_last_model_copies_nothing_per_chunk(n, baseline):
    """Points are built channels-last and gradients summed in that order: no copy of the chunk's
    points or gradients (the old path made two permuting copies per chunk; the floor makes its
    channels-last input). Several images: the rows of b and x - b are gathered (row copies); with
    the zero baseline only the rows of x (its points are a x)."""
    model, x = tiny(), torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    per_chunk = ops_per_chunk(lambda s, b: fastattr.attribute(model, x, 3, steps=s, batch_size=b,
                                                              baseline=baseline), n)
    assert copies(per_chunk) == 0, per_chunk
    gathers = 0 if n == 1 else (1 if baseline is None else 2)
    assert per_chunk.get("big:aten.index_select.default", 0) == gathers
    assert per_chunk.get("aten.mul.Tensor" if baseline is None else "aten.addcmul.default", 0) == 1, per_chunk


def test_idgi_on_channels_last_model_copies_nothing_per_chunk():
    """IDGI takes channels-last gradients as rows in (H, W, C) order, as the Riemann sum does: no
    copy per chunk (the floor makes one, its channels-last input), and the map equals the one
    accumulated in NCHW order up to the order of each step's sum of squares."""
    model, x = tiny(), torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    per_chunk = ops_per_chunk(lambda s, b: fastattr.attribute(model, x, 3, steps=s, batch_size=b, idgi=True))
    floor = ops_per_chunk(lambda s, b: floor_walk(model, x[0], s, b))
    assert copies(per_chunk) == 0 and copies(floor) == 1, (per_chunk, floor)
    e = fastattr.explain(model, x, 3, steps=24, batch_size=16, idgi=True)
    assert e.attributions.is_contiguous()
    assert e.delta.abs().max() < 1e-6 * max(1.0, float((e.scores - e.baseline_scores).abs().max()))
    # NCHW order: the same channels-last points and gradients, summed through an NCHW IdgiSum
    import fastattr.methods.integrated_gradients as ig
    from fastattr.paths import IdgiSum

    class NchwIdgi(IdgiSum):
        def __init__(self, like, steps, end, channels_last=False):
            super().__init__(like, steps, end)

    old, ig.IdgiSum = ig.IdgiSum, NchwIdgi
    try:
        nchw = fastattr.attribute(model, x, 3, steps=24, batch_size=16, idgi=True)
    finally:
        ig.IdgiSum = old
    assert torch.allclose(e.attributions, nchw, rtol=1e-6, atol=1e-9 * float(nchw.abs().max()))


def floor_walk(model, image, steps, batch):
    """The model-only floor of bench/harness.py: channels-last chunks, f_c forward+backward."""
    for p in model.parameters():
        p.requires_grad_(False)
    for start in range(0, steps, batch):
        n = min(batch, steps - start)
        xc = image.expand(n, *image.shape).clone(memory_format=torch.channels_last).requires_grad_(True)
        torch.autograd.grad(model(xc).softmax(-1)[:, 0].sum(), xc)
    for p in model.parameters():
        p.requires_grad_(True)


def test_walk_enters_no_session_per_chunk(monkeypatch):
    """walk_path holds one session; value_and_grad inside it does not enter another."""
    model, x = tiny(), torch.rand(1, 3, 16, 16)
    entered = []
    original = Engine.session

    def counting(self, *a, **k):
        entered.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(Engine, "session", counting)
    fastattr.attribute(model, x, 3, steps=64, batch_size=8)
    few = len(entered)
    entered.clear()
    fastattr.attribute(model, x, 3, steps=8, batch_size=8)
    assert few == len(entered) <= 6  # explain, logits, walk_path: independent of the chunk count


def test_value_and_grad_alone_holds_its_own_session():
    model, x = tiny(), torch.rand(4, 3, 16, 16)
    engine = Engine(model)
    y, g = engine.value_and_grad(x, torch.full((4,), 3))
    assert engine._depth == 0 and all(p.requires_grad for p in model.parameters())
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(model(xr.contiguous(memory_format=torch.channels_last)).softmax(-1)[:, 3].sum(), xr)
    assert torch.equal(g, ref)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("rule", ["left", "pair"])
def test_channels_last_points_give_the_maps_of_nchw_points_fed_channels_last(n, rule):
    """The old path by hand (NCHW points in the same chunks, copied to channels-last at the model
    call, gradients summed in NCHW order): maps equal bit for bit."""
    model = tiny()
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    steps, batch = 12, 5
    a = fastattr.attribute(model, x, 3, steps=steps, rule=rule, batch_size=batch)
    assert a.is_contiguous()
    if rule == "pair":
        alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
        points = (alphas.view(1, -1, 1, 1, 1) * x[:, None].double()).float()
    else:
        alphas = (torch.arange(steps, dtype=torch.float64) / steps).float()
        points = torch.addcmul(torch.zeros(1), alphas.view(1, -1, 1, 1, 1), x[:, None])
    points = points.reshape(n * steps, 3, 8, 8)
    w = torch.tensor(1.0 / steps).float()
    ref = torch.zeros(n, 3 * 8 * 8)
    for start in range(0, n * steps, batch):
        p = points[start:start + batch].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(
            model(p.contiguous(memory_format=torch.channels_last)).softmax(-1)[:, 3].sum(), p)
        for j, row in enumerate(g.reshape(len(p), -1)):
            ref[(start + j) // steps] += row * w
    assert torch.equal(a, x * ref.view_as(x))


def test_riemann_sum_channels_last_equals_nchw_order():
    """The same sums (each element's terms in the same order), returned like `like`."""
    g = torch.randn(7, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    like = torch.empty(2, 3, 5, 4)
    i, k = torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 2, 3])
    w = torch.rand(4, dtype=torch.float64)
    plain, nhwc = RiemannSum(like, w), RiemannSum(like, w, channels_last=True)
    for sl in (slice(0, 3), slice(3, 7)):
        y = torch.randn(sl.stop - sl.start)
        plain(i[sl], k[sl], y, g[sl])
        nhwc(i[sl], k[sl], y, g[sl].contiguous(memory_format=torch.channels_last))
    assert torch.equal(plain.result(like), nhwc.result(like))
    assert nhwc.result(like).shape == like.shape
    assert torch.equal(plain.start_scores, nhwc.start_scores) and not plain.start_scores.isnan().any()


def test_riemann_start_scores_only_from_step_zero():
    """Chunks in walk_path's order (3 images x 2 steps, chunks of 3 and 2): each image's start
    score is its step 0's f_c, never another step's; an image not reached yet stays NaN."""
    like = torch.empty(3, 4)
    acc = RiemannSum(like, torch.ones(2, dtype=torch.float64))
    acc(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([5.0, 6.0, 7.0]), torch.ones(3, 4))
    assert acc.start_scores[:2].tolist() == [5.0, 7.0] and acc.start_scores[2].isnan() and acc.start_scores.shape == (3,)
    acc(torch.tensor([1, 2]), torch.tensor([1, 0]), torch.tensor([8.0, 9.0]), torch.ones(2, 4))
    assert acc.start_scores.tolist() == [5.0, 7.0, 9.0]
    assert torch.equal(acc.acc, torch.full((3, 4), 2.0) - torch.tensor([[0.0], [0.0], [1.0]]))


def test_rows_keeps_the_memory_format():
    t = torch.randn(4, 3, 5, 6)
    i = torch.tensor([2, 0, 2])
    for fmt in (torch.contiguous_format, torch.channels_last):
        r = rows(t.contiguous(memory_format=fmt), i)
        assert torch.equal(r, t[i]) and r.is_contiguous(memory_format=fmt)
    odd = torch.randn(4, 7)[:, :3]  # neither format: index_select
    assert torch.equal(rows(odd, i), odd[i])


class InPlaceInput(nn.Module):
    """Writes into its input (some models normalise that way)."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        x.mul_(2.0)
        return self.body(x)


class Doubled(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x * 2.0)


@pytest.mark.parametrize("idgi", [False, True])
def test_conv_model_writing_into_its_input(idgi):
    """Channels-last points are now the leaf itself (they used to reach the model as a copy), and
    autograd refuses in-place writes into a leaf: the engine then hands the model a copy. The maps
    are those of x * 2 computed out of place, the inputs unchanged. (With channels_last=False the
    forward at the inputs, under no_grad, still writes into the caller's tensor, as before.)"""
    channels_last = True
    body = tiny()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    inplace, doubled = InPlaceInput(body).eval(), Doubled(body).eval()
    before = x.clone()
    kw = dict(steps=8, batch_size=5, idgi=idgi, channels_last=channels_last)
    a = fastattr.attribute(inplace, x, 3, **kw)
    assert torch.equal(a, fastattr.attribute(doubled, x, 3, **kw))
    assert torch.equal(x, before)


def test_the_benchs_hand_written_ig_gives_fastattrs_map():
    """bench/bench_overhead.py reports a hand-written IG loop as the least any library pays over
    the floor: it bounds nothing unless it computes the same map (zero baseline, left rule)."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    try:
        from harness import handwritten_ig_fn
    finally:
        sys.path.pop(0)
    model, image = tiny(), torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    hand = handwritten_ig_fn(model, image, 64, 16, target=3)()
    ours = fastattr.attribute(model, image[None], 3, steps=64, batch_size=16)[0]
    torch.testing.assert_close(hand, ours, rtol=1e-5, atol=1e-5 * float(ours.abs().max()))
