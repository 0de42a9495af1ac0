"""Every method x {standard, guided backward} x {float32, float64, bfloat16} on the zoo (ResNet-,
MobileNetV2-, ViT-style images, a tabular MLP, 1-D convs, token sequences, 3-D convs): maps of the
input's shape and dtype, finite, IDGI complete, the model unchanged afterwards (parameters,
buffers, requires_grad and training flags, hooks, torch-function modes), also when the model
raises mid-call; dict / tuple / .logits outputs give the plain model's maps."""
import warnings

import pytest
import torch
from torch import nn

import fastattr
import zoo

CONFIGS = {
    "vanilla": dict(method="vanilla"),
    "ig": dict(method="ig", steps=3),
    "ig-idgi": dict(method="ig", steps=4, idgi=True),
    "guided_ig": dict(method="guided_ig", steps=3),
    "guided_ig-idgi": dict(method="guided_ig", steps=3, idgi=True),
    "blur_ig": dict(method="blur_ig", steps=3, max_sigma=2.0),
    "blur_ig-idgi": dict(method="blur_ig", steps=3, max_sigma=2.0, idgi=True),
    "neflag": dict(method="neflag", n=2, m=2),
}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
CASES = [(name, cfg) for name in zoo.ZOO for cfg in CONFIGS
         if zoo.ZOO[name].images or not cfg.startswith("blur_ig")]


def map_dtype(model_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if model_dtype == torch.float64 else torch.float32


def assert_complete(e, dtype: torch.dtype) -> None:
    """IDGI: sum(map) = f_c(x) - f_c(p_0) to the accumulation's precision, or an all-zero map
    when every step's gradient was zero (then delta is the whole output change, reported)."""
    change = (e.scores - e.baseline_scores).double()
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    zero = (e.attributions.flatten(1) == 0).all(1)
    ok = torch.where(zero, (e.delta.double() + change).abs() <= tol,
                     e.delta.double().abs() <= tol * torch.clamp(change.abs(), min=1.0))
    assert ok.all(), (e.delta, change)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("backward", ["standard", "guided"])
@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_zoo_matrix(name, cfg, backward, dtype):
    model = zoo.make(name, dtype=DTYPES[dtype])
    x = zoo.inputs(name)
    before = zoo.snapshot(model)
    e = fastattr.explain(model, x, backward=backward, **CONFIGS[cfg])
    assert e.attributions.shape == x.shape
    assert e.attributions.dtype == map_dtype(DTYPES[dtype]) == e.scores.dtype
    assert torch.isfinite(e.attributions).all() and torch.isfinite(e.delta).all()
    if cfg != "neflag":  # NeFLAG samples may all stop at once with a zero-flux map
        assert e.attributions.abs().amax() > 0
    if CONFIGS[cfg].get("idgi"):
        assert_complete(e, DTYPES[dtype])
    zoo.assert_unchanged(model, before)


class FailAt(nn.Module):
    """Runs `model`, raising on its `fail_at`-th forward call (0-based)."""

    def __init__(self, model: nn.Module, fail_at: int):
        super().__init__()
        self.model, self.fail_at, self.calls = model, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls - 1 == self.fail_at:
            raise RuntimeError("forward failed on purpose")
        return self.model(x)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("cfg,backward", [("ig-idgi", "standard"), ("guided_ig", "guided"),
                                          ("neflag", "guided"), ("vanilla", "standard")])
@pytest.mark.parametrize("name", list(zoo.ZOO))
@pytest.mark.parametrize("fail_at", [0, 2])  # the target forward, a path chunk
def test_model_unchanged_when_it_raises_mid_call(name, cfg, backward, fail_at, dtype):
    """Mixed training flags (the model in training mode, one submodule in eval mode) and one
    frozen parameter: all restored although the call dies inside the model."""
    inner = zoo.make(name, dtype=DTYPES[dtype])
    inner.train()
    next(inner.children()).eval()
    next(inner.parameters()).requires_grad_(False)
    model = FailAt(inner, fail_at).train()
    before = zoo.snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "explained in eval mode"
        with pytest.raises(RuntimeError, match="on purpose"):
            fastattr.explain(model, zoo.inputs(name), batch_size=2, **CONFIGS[cfg])
    assert model.calls == fail_at + 1
    zoo.assert_unchanged(model, before)


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "vit", "conv1d"])
def test_training_mode_leaves_batchnorm_and_flags_exactly_as_they_were(name):
    """Issue 16.8: a model in training mode used to have its BatchNorm running statistics and
    num_batches_tracked updated by the call. Now it is explained in eval mode (same map as the
    eval-mode model), warned about, and left bit-identical with its own flags."""
    model = zoo.make(name)
    ref = fastattr.attribute(model, zoo.inputs(name), 1, steps=3, idgi=True)
    model.train()
    before = zoo.snapshot(model)
    with pytest.warns(UserWarning, match=r"^model: is in training mode; .*eval mode"):
        got = fastattr.attribute(model, zoo.inputs(name), 1, steps=3, idgi=True)
    zoo.assert_unchanged(model, before)  # buffers (running stats, num_batches_tracked) included
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(got, ref)


def test_explainer_in_a_training_loop_leaves_the_model_training():
    model = zoo.make("resnet").train()
    explainer = fastattr.Explainer(model, idgi=True, steps=3)
    before = zoo.snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(2):
            explainer(zoo.inputs("resnet"))
    zoo.assert_unchanged(model, before)


@pytest.mark.parametrize("wrapper", list(zoo.WRAPPERS))
@pytest.mark.parametrize("name,cfg", [("resnet", "ig-idgi"), ("vit", "guided_ig"), ("mlp", "ig"),
                                      ("conv1d", "vanilla"), ("mobilenetv2", "blur_ig-idgi"),
                                      ("tokens", "neflag")])
def test_dict_tuple_and_logits_outputs_give_the_plain_models_map(wrapper, name, cfg):
    model = zoo.make(name)
    x = zoo.inputs(name)
    opts = dict(CONFIGS[cfg])
    if cfg == "neflag":
        opts["generator"] = torch.Generator().manual_seed(0)
    plain = fastattr.explain(model, x, **opts)
    if cfg == "neflag":
        opts["generator"] = torch.Generator().manual_seed(0)
    wrapped = fastattr.explain(zoo.WRAPPERS[wrapper](model).eval(), x, **opts)
    assert plain.attributions.abs().amax() > 0
    assert torch.equal(wrapped.attributions, plain.attributions)
    assert torch.equal(wrapped.target, plain.target) and torch.equal(wrapped.scores, plain.scores)


def test_model_restored_when_the_training_mode_warning_is_an_error():
    """-W error turns the eval-mode warning into an exception before anything is switched."""
    model = zoo.make("resnet").train()
    before = zoo.snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(UserWarning, match="training mode"):
            fastattr.explain(model, zoo.inputs("resnet"), steps=2)
    zoo.assert_unchanged(model, before)
    model.eval()
    assert torch.isfinite(fastattr.attribute(model, zoo.inputs("resnet"), steps=2)).all()
