"""fastattr.Explainer: the same maps as fastattr.explain for every option, call after call, with
the compiled graph reused (no recompilation on later calls) and the model left as it was."""
import pytest
import torch

import fastattr
import fastattr.forward as forward_mod
from fastattr.explainer import CudaGraphEngine


@pytest.mark.parametrize("options", [
    dict(method="ig", steps=7, batch_size=4),
    dict(method="ig", steps=7, batch_size=4, rule="trapezoid"),
    dict(method="ig", steps=9, batch_size=4, idgi=True),
    dict(method="ig", steps=5, batch_size=3, idgi=True, output="logit", baseline=0.5),
    dict(method="vanilla", batch_size=4),
])
def test_equals_explain_every_call(small_cnn, small_images, options):
    explainer = fastattr.Explainer(small_cnn, **options)
    ref = fastattr.explain(small_cnn, small_images, **options)
    for _ in range(2):  # state kept between calls must not change the answer
        ex = explainer(small_images)
        assert torch.equal(ex.attributions, ref.attributions)
        assert torch.equal(ex.target, ref.target) and torch.equal(ex.scores, ref.scores)
        assert torch.equal(ex.delta, ref.delta)
        assert ex.grad_evals == ref.grad_evals  # per call, not cumulative


def test_single_image_targets_and_shapes(small_cnn, small_images):
    explainer = fastattr.Explainer(small_cnn, idgi=True, steps=6, batch_size=4)
    one = explainer(small_images[1])
    assert one.attributions.shape == (1, 3, 16, 16) and one.grad_evals == 6
    assert torch.equal(one.attributions[0], fastattr.attribute(small_cnn, small_images[1:2], idgi=True, steps=6,
                                                               batch_size=4)[0])
    t = torch.tensor([1, 2, 3, 4])
    ex = explainer(small_images, target=t)
    assert torch.equal(ex.target, t)
    assert torch.equal(ex.attributions, fastattr.attribute(small_cnn, small_images, t, idgi=True, steps=6,
                                                           batch_size=4))
    assert torch.allclose(ex.delta, torch.zeros(4), atol=1e-5)  # IDGI completeness
    assert explainer(small_images[:2], target=5).target.tolist() == [5, 5]  # another N: new baseline
    with pytest.raises(ValueError, match="target"):
        explainer(small_images, target=10)


def test_tensor_baseline(small_cnn, small_images):
    b = torch.full((1, 3, 1, 1), 0.25)
    explainer = fastattr.Explainer(small_cnn, steps=8, baseline=b)
    ref = fastattr.explain(small_cnn, small_images, steps=8, baseline=b)
    assert torch.equal(explainer(small_images).attributions, ref.attributions)
    assert torch.equal(explainer(small_images[:1]).attributions, ref.attributions[:1])


def test_model_left_unchanged(small_cnn, small_images):
    params = list(small_cnn.parameters())
    params[0].requires_grad_(False)
    flags = [p.requires_grad for p in params]
    state = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    fastattr.Explainer(small_cnn, idgi=True, steps=4)(small_images)
    assert [p.requires_grad for p in params] == flags
    assert all(p.grad is None for p in params)
    assert all(torch.equal(state[k], v) for k, v in small_cnn.state_dict().items())
    assert all(not m._forward_hooks and not m._backward_hooks for m in small_cnn.modules())


def test_compiled_graph_is_reused(small_cnn, small_images, monkeypatch):
    """compile=True: later calls run the graphs compiled on the first call, no recompilation.
    dynamo's 'eager' backend stands in for inductor (same capture and guards; no C++ codegen,
    which takes over a minute here)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    monkeypatch.setattr(forward_mod, "_compiled_call",
                        torch.compile(forward_mod._call_model, dynamic=False, backend="eager"))
    explainer = fastattr.Explainer(small_cnn, idgi=True, steps=6, batch_size=4, compile=True)
    first = explainer(small_images)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    for _ in range(3):
        again = explainer(small_images)
        assert torch.equal(again.attributions, first.attributions)
    assert counters["stats"]["unique_graphs"] == graphs
    eager = fastattr.explain(small_cnn, small_images, idgi=True, steps=6, batch_size=4)
    torch.testing.assert_close(first.attributions, eager.attributions, rtol=1e-5, atol=1e-7)
    torch._dynamo.reset()


def test_effnet_single_photo(effnet, photos):
    explainer = fastattr.Explainer(effnet, idgi=True, steps=2)
    ex = explainer(photos[0])
    ref = fastattr.explain(effnet, photos[:1], idgi=True, steps=2)
    assert torch.equal(ex.attributions, ref.attributions) and int(ex.target[0]) == 285
    assert abs(float(ex.delta[0])) < 1e-4


def test_errors_name_the_parameter(small_cnn, small_images):
    with pytest.raises(ValueError, match="method"):
        fastattr.Explainer(small_cnn, method="nope")
    with pytest.raises(ValueError, match="idgi"):
        fastattr.Explainer(small_cnn, method="vanilla", idgi=True)
    with pytest.raises(ValueError, match="steps"):
        fastattr.Explainer(small_cnn, steps=0)
    with pytest.raises(ValueError, match="rule"):
        fastattr.Explainer(small_cnn, rule="simpson")
    with pytest.raises(TypeError, match="max_sigma"):
        fastattr.Explainer(small_cnn, method="ig", max_sigma=3)  # another method's option
    with pytest.raises(TypeError, match="baseline"):
        fastattr.Explainer(small_cnn, baseline="black")
    with pytest.raises(ValueError, match="cuda_graphs"):
        fastattr.Explainer(small_cnn, cuda_graphs=True)  # the model is on the CPU
    with pytest.raises(TypeError, match="inputs"):
        fastattr.Explainer(small_cnn)(small_images.numpy())
    assert fastattr.Explainer(small_cnn).engine.__class__ is not CudaGraphEngine
