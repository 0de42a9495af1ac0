"""Property-based tests (hypothesis): random small models (MLP, tokens, 1-D and 2-D convs with
random activations, max-pool, batch-norm in training mode), shapes, targets, steps, rules, methods,
backward modes, output forms and IDGI on/off. Properties: no NaN/inf in a map from finite inputs;
IDGI complete whenever f is finite (guided backward included); the model unchanged afterwards;
every rejected argument a ValueError/TypeError whose message starts with the parameter's name.

Profiles: "ci" (default; deterministic, a few seconds) and "long" for local runs:
    HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
"""
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fastattr
import zoo

settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "leaky": lambda: nn.LeakyReLU(0.1), "silu": nn.SiLU,
               "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU, "hardswish": nn.Hardswish}


class TokenHead(nn.Module):
    """(N, T, D) -> (N, K): per-token Linear + activation, mean over tokens, Linear."""

    def __init__(self, d, width, k, act):
        super().__init__()
        self.token, self.act, self.head = nn.Linear(d, width), act, nn.Linear(width, k)

    def forward(self, x):
        return self.head(self.act(self.token(x)).mean(1))


@st.composite
def models(draw):
    """(model, input shape without N, K, has spatial axes)."""
    arch = draw(st.sampled_from(["mlp", "tokens", "conv1d", "conv2d"]))
    act = ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))]()
    width, k, seed = draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(0, 2**16))
    batchnorm, train = draw(st.booleans()), draw(st.booleans())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "mlp":
            d = draw(st.integers(1, 6))
            shape = (d,)
            layers = [nn.Linear(d, width)] + ([nn.BatchNorm1d(width)] if batchnorm else []) + [act, nn.Linear(width, k)]
            model = nn.Sequential(*layers)
        elif arch == "tokens":
            shape = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
            model = TokenHead(shape[1], width, k, act)
        elif arch == "conv1d":
            shape = (draw(st.integers(1, 3)), draw(st.integers(1, 8)))
            layers = [nn.Conv1d(shape[0], width, 3, padding=1)] + ([nn.BatchNorm1d(width)] if batchnorm else [])
            model = nn.Sequential(*layers, act, nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Linear(2 * width, k))
        else:
            shape = (draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6)))
            pool = [nn.MaxPool2d(2, stride=1)] if draw(st.booleans()) else []
            layers = [nn.Conv2d(shape[0], width, 3, padding=1)] + ([nn.BatchNorm2d(width)] if batchnorm else [])
            model = nn.Sequential(*layers, act, *pool, nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                  nn.Linear(4 * width, k))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 1.5)
    model.train(train)
    return model, shape, k, arch == "conv2d"


@st.composite
def calls(draw):
    """A valid call: (model, inputs, target, keyword arguments)."""
    model, shape, k, spatial = draw(models())
    n = draw(st.integers(1, 3))
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    x = x * draw(st.sampled_from([1.0, 3.0])) - draw(st.sampled_from([0.0, 0.5]))
    methods = ["vanilla", "ig", "guided_ig", "neflag"] + (["blur_ig"] if spatial else [])
    method = draw(st.sampled_from(methods))
    spec = fastattr.METHODS[method]
    kw = dict(method=method, backward=draw(st.sampled_from(["standard", "guided"])),
              output=draw(st.sampled_from(["probability", "logit", "sigmoid"] if k > 1 else ["logit", "sigmoid"])),
              batch_size=draw(st.integers(1, 8)))
    if spec.path:
        kw["idgi"] = draw(st.booleans())
        kw["steps"] = draw(st.integers(1, 6))
    if method == "ig":
        kw["rule"] = draw(st.sampled_from(["left", "right", "middle", "trapezoid", "pair"]))
        if kw["rule"] == "trapezoid":
            kw["steps"] = max(kw["steps"], 2)
    if spec.baseline:
        kw["baseline"] = draw(st.sampled_from([None, 0.0, 0.5, "input", "tensor"]))
        if kw["baseline"] == "input":
            kw["baseline"] = x.clone()
        elif kw["baseline"] == "tensor":
            kw["baseline"] = torch.rand(shape, generator=torch.Generator().manual_seed(3))
    if method == "blur_ig":
        kw["max_sigma"] = draw(st.sampled_from([0.5, 2.0]))
        kw["derivative"] = draw(st.sampled_from(["finite", "exact"]))
    if method == "neflag":
        kw.update(n=draw(st.integers(1, 3)), m=draw(st.integers(1, 3)), generator=torch.Generator().manual_seed(0))
    target = draw(st.one_of(st.none(), st.integers(0, k - 1), st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    return model, x, target, kw


@given(calls())
def test_maps_are_finite_complete_and_the_model_is_unchanged(call):
    model, x, target, kw = call
    before = zoo.snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # models drawn in training mode
        e = fastattr.explain(model, x, target, **kw)
    zoo.assert_unchanged(model, before)
    assert e.attributions.shape == x.shape and e.attributions.dtype == torch.float32
    assert torch.isfinite(e.attributions).all() and torch.isfinite(e.scores).all()
    assert torch.isfinite(e.baseline_scores).all() and torch.isfinite(e.delta).all()
    if kw.get("idgi"):
        change = (e.scores - e.baseline_scores).double()
        scale = torch.clamp(torch.maximum(e.scores.abs(), e.baseline_scores.abs()).double(), min=1.0)
        zero = (e.attributions.flatten(1) == 0).all(1)  # every step's gradient was zero
        ok = torch.where(zero, (e.delta.double() + change).abs() <= 1e-6 * scale,
                         e.delta.double().abs() <= 1e-5 * scale)
        assert ok.all(), (e.delta, change)


NAN = float("nan")
# (parameter, bad value, extra keyword arguments that make the call otherwise valid)
BAD = [
    ("inputs", "0-d", {}), ("inputs", "int", {}), ("inputs", "empty", {}), ("inputs", "nan", {}),
    ("inputs", "list", {}), ("inputs", "blur-1d", {"method": "blur_ig"}),
    ("steps", 0, {}), ("steps", -2, {}), ("steps", 2.5, {}), ("steps", "3", {}), ("steps", True, {}),
    ("steps", 10**12, {}), ("batch_size", 0, {}), ("batch_size", 1.5, {}),
    ("target", "k", {}), ("target", -1, {}), ("target", 2**70, {}), ("target", "3", {}), ("target", 1.5, {}),
    ("target", "long", {}), ("target", True, {}),
    ("baseline", NAN, {}), ("baseline", float("inf"), {}), ("baseline", "black", {}), ("baseline", 1j, {}),
    ("baseline", "shape", {}), ("baseline", 0.0, {"method": "vanilla"}), ("baseline", 0.0, {"method": "neflag"}),
    ("method", "gradcam", {}), ("rule", "simpson", {}), ("rule", "middle", {"method": "guided_ig"}),
    ("output", "softmax", {}), ("output", 3, {}), ("output", "probability", {"k1": True}),
    ("backward", "deconv", {}), ("idgi", True, {"method": "vanilla"}), ("idgi", True, {"method": "neflag"}),
    ("fraction", 2.0, {"method": "guided_ig"}), ("eps", -1.0, {"method": "neflag"}),
    ("n_samples", 3, {}), ("model_dtype", "float64", {}), ("model", "callable", {}),
]


@given(st.sampled_from(BAD), models(), st.integers(1, 3))
def test_every_rejected_input_names_its_parameter(bad, drawn, n):
    name, value, extra = bad
    model, shape, k, spatial = drawn
    if extra.get("k1"):
        model, k = nn.Sequential(model, nn.Linear(k, 1)), 1
    x = torch.rand(n, *shape)
    kw = dict(steps=2, batch_size=4, **{key: v for key, v in extra.items() if key != "k1"})
    if k == 1 and name != "output":
        kw["output"] = "logit"  # softmax of one score is refused (tested as the "output" case)
    target = None
    if name == "inputs":
        x = {"0-d": torch.tensor(0.5), "int": x.long(), "empty": x[:0], "nan": x.clone().fill_(NAN),
             "list": x.tolist(), "blur-1d": torch.rand(n, 5)}[value]
    elif name == "target":
        target = {"k": k, "long": [0] * (n + 1)}.get(value, value) if isinstance(value, str) else value
    elif name == "baseline":
        kw["baseline"] = torch.rand(n + 1, *shape) if value == "shape" else value
    elif name == "model":
        model = lambda z: z  # noqa: E731
    else:
        kw[name] = value
    before = zoo.snapshot(model) if isinstance(model, nn.Module) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises((ValueError, TypeError)) as info:
            fastattr.explain(model, x, target, **kw)
    assert str(info.value).startswith(f"{name}: "), (name, value, str(info.value))
    if before is not None:
        zoo.assert_unchanged(model, before)
