"""Engine guarantees: no parameter gradients, requires_grad restored (also on error), chunks within
batch_size, compile path equal to eager with one batch shape, grad_evals, vanilla = autograd."""
import pytest
import torch
from torch import nn

import fastattr
import fastattr.engine as engine_mod
import fastattr.forward as forward_mod
from fastattr.engine import Engine
from conftest import make_small_cnn


class Recorder(nn.Module):
    """Wraps a model and records the batch size and grad mode of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = []  # (batch, grad enabled)

    def forward(self, x):
        self.calls.append((x.shape[0], torch.is_grad_enabled()))
        return self.model(x)


class FailOn(nn.Module):
    """Wraps a model and raises on its `fail_at`-th forward call (0-based)."""

    def __init__(self, model, fail_at):
        super().__init__()
        self.model = model
        self.fail_at = fail_at
        self.n = 0

    def forward(self, x):
        self.n += 1
        if self.n - 1 == self.fail_at:
            raise RuntimeError("forward failed on purpose")
        return self.model(x)


def mixed_flags(model):
    """Leave requires_grad off on the first parameter, on elsewhere; return the flags."""
    params = list(model.parameters())
    params[0].requires_grad_(False)
    return [p.requires_grad for p in params]


@pytest.mark.parametrize("method,idgi", [("ig", False), ("ig", True), ("vanilla", False)])
def test_no_parameter_gradients_and_flags_restored(small_cnn, small_images, method, idgi):
    flags = mixed_flags(small_cnn)
    e = fastattr.explain(small_cnn, small_images, method=method, idgi=idgi, steps=3, batch_size=5)
    assert e.attributions.abs().max() > 0
    assert all(p.grad is None for p in small_cnn.parameters())
    assert [p.requires_grad for p in small_cnn.parameters()] == flags


@pytest.mark.parametrize("fail_at", [0, 1, 3])  # the target forward, the first / a later chunk
def test_flags_restored_when_forward_raises(small_cnn, small_images, fail_at):
    flags = mixed_flags(small_cnn)
    model = FailOn(small_cnn, fail_at).eval()
    with pytest.raises(RuntimeError, match="on purpose"):
        fastattr.explain(model, small_images, steps=4, batch_size=3)
    assert model.n == fail_at + 1
    assert [p.requires_grad for p in small_cnn.parameters()] == flags
    assert all(p.grad is None for p in small_cnn.parameters())


def test_flags_frozen_only_inside_session(small_cnn, small_images):
    eng = Engine(small_cnn, batch_size=4)
    with eng.session():
        assert not any(p.requires_grad for p in small_cnn.parameters())
        with eng.session():  # re-entrant: the inner exit does not restore early
            pass
        assert not any(p.requires_grad for p in small_cnn.parameters())
    assert all(p.requires_grad for p in small_cnn.parameters())


@pytest.mark.parametrize("steps,batch_size", [(8, 3), (5, 8), (1, 1), (7, 64)])
def test_chunks_never_exceed_batch_size_and_grad_evals_counts_points(small_cnn, small_images, steps, batch_size):
    model = Recorder(small_cnn).eval()
    e = fastattr.explain(model, small_images, steps=steps, batch_size=batch_size)
    sizes = [b for b, _ in model.calls]
    assert max(sizes) <= batch_size
    grad_sizes = [b for b, grad in model.calls if grad]
    n_points = small_images.shape[0] * steps
    assert sum(grad_sizes) == n_points == e.grad_evals  # eager: no padding, every point once
    assert len(grad_sizes) == -(-n_points // batch_size)  # chunks are full except the last


def test_engine_rejects_oversized_chunk(small_cnn, small_images):
    eng = Engine(small_cnn, batch_size=3)
    with pytest.raises(ValueError, match="batch_size=3"):
        eng.value_and_grad(small_images, torch.zeros(4, dtype=torch.long))


def test_engine_chunks_cover_range():
    eng = Engine(make_small_cnn(), batch_size=4)
    assert list(eng.chunks(10)) == [(0, 4), (4, 8), (8, 10)]
    assert list(eng.chunks(4)) == [(0, 4)]


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_vanilla_equals_autograd(small_cnn, small_images, output):
    target = torch.tensor([3, 1, 4, 1])
    e = fastattr.explain(small_cnn, small_images, target, method="vanilla", output=output, batch_size=3)
    x = small_images.clone().requires_grad_(True)
    scores = small_cnn(x)
    if output == "probability":
        scores = scores.softmax(-1)
    (g,) = torch.autograd.grad(scores.gather(1, target[:, None]).sum(), x)
    torch.testing.assert_close(e.attributions, g, rtol=0, atol=1e-6 * g.abs().max().item())  # chunks of 3 vs 4: summation order
    assert e.grad_evals == 4
    torch.testing.assert_close(e.scores, scores.gather(1, target[:, None])[:, 0].detach())


def test_value_and_grad_leaves_caller_tensor_untouched(small_cnn, small_images):
    eng = Engine(small_cnn, batch_size=8)
    x = small_images.clone()
    y, g = eng.value_and_grad(x, torch.zeros(4, dtype=torch.long))
    assert not x.requires_grad and x.grad is None
    assert y.shape == (4,) and g.shape == x.shape and eng.grad_evals == 4


@pytest.mark.slow
def test_compile_equals_eager_and_sees_one_shape(small_images, monkeypatch):
    """torch.compile on CPU: one small case (compiling takes tens of seconds)."""
    model = make_small_cnn(seed=5)
    x = small_images[:2]
    eager = fastattr.explain(model, x, steps=3, batch_size=4)
    shapes = []
    real = forward_mod._compiled

    def recording():
        fn = real()

        def call(m, inp, **kwargs):
            shapes.append(tuple(inp.shape))
            return fn(m, inp, **kwargs)

        return call

    monkeypatch.setattr(forward_mod, "_compiled", recording)
    compiled = fastattr.explain(model, x, steps=3, batch_size=4, compile=True)
    # 2 images x 3 steps = 6 points -> chunks of 4 and 2; the 2 are padded to 4, as is the
    # 2-image target forward: the compiled model sees one batch shape only.
    assert set(shapes) == {(4, 3, 16, 16)}
    assert compiled.grad_evals == eager.grad_evals == 6
    torch.testing.assert_close(compiled.attributions, eager.attributions, rtol=0,
                               atol=1e-5 * eager.attributions.abs().max().item())
    torch.testing.assert_close(compiled.scores, eager.scores)


def test_default_chunk_grows_for_small_inputs(small_cnn):
    cpu = torch.device("cpu")
    base = engine_mod.DEFAULT_BATCH["cpu"]
    assert engine_mod.default_batch_size(cpu) == base
    assert engine_mod.default_batch_size(cpu, 3 * 224 * 224) == base
    assert engine_mod.default_batch_size(cpu, 3 * 512 * 512) == base  # never below the measured size
    assert engine_mod.default_batch_size(cpu, 3 * 112 * 112) == 4 * base  # same elements per chunk
    assert engine_mod.default_batch_size(cpu, 3 * 8 * 8) == engine_mod.MAX_BATCH
    model = Recorder(small_cnn).eval()
    x = torch.rand(2, 3, 16, 16)
    e = fastattr.explain(model, x, steps=100)  # 200 points of 768 elements: chunks of MAX_BATCH
    grad_sizes = [b for b, grad in model.calls if grad]
    mb = engine_mod.MAX_BATCH
    assert grad_sizes == [mb] * (200 // mb) + ([200 % mb] if 200 % mb else []) and e.grad_evals == 200
    model.calls.clear()
    fastattr.explain(model, x, steps=100, batch_size=7)  # the caller's size is kept
    assert max(b for b, grad in model.calls if grad) == 7
