"""backward="guided" on Hugging Face transformers' activation modules (SPEC.md "IG with guided
non-linearity": relu(ordinary grad_in) for element-wise activations): GPT-2's NewGELUActivation
(a composition of tanh / pow, no activation function the mode could intercept) takes the rule; the
maps equal captum's LayerIntegratedGradients on a copy whose activations clamp their input gradient
in a backward hook; every ReLU-like class of transformers.activations is matched; IDGI stays
complete; no hook survives; importing fastattr does not import transformers."""
import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

import fastattr
from fastattr.backward._module_activations import TRANSFORMERS_ACTIVATIONS, is_transformers_activation

pytest.importorskip("transformers")
import transformers.activations as hf_act  # noqa: E402
from captum.attr import LayerIntegratedGradients  # noqa: E402

import text_models as tm  # noqa: E402

# classes of transformers.activations that are not ReLU-like (left unguided on purpose)
NOT_RELU_LIKE = {"LaplaceActivation", "SqrtSoftplusActivation", "LinearActivation"}


def clamped_copy(model: nn.Module) -> nn.Module:
    """A copy whose transformers activations clamp their input gradient at 0 (a module backward hook)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if is_transformers_activation(mod):
            mod.register_full_backward_hook(lambda _m, gin, _gout: (gin[0].clamp_min(0),))
    return m


def close(a, b, rel=1e-5):
    scale = b.abs().max().item()
    assert scale > 0
    err = (a - b).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} > {rel} * {scale:.3g}"


@pytest.fixture(scope="module")
def gpt2():
    model, layer = tm.gpt2()
    ids, mask, base = tm.sentences([7, 3, 10], side="left")
    kwargs = {"attention_mask": mask, "position_ids": tm.position_ids(mask)}
    return model, layer, ids, base, kwargs


def last_logit(out):
    return out.logits[:, -1, :]


def test_gpt2_uses_new_gelu_modules(gpt2):
    model = gpt2[0]
    acts = [m for m in model.modules() if isinstance(m, hf_act.NewGELUActivation)]
    assert len(acts) == 2 and all(is_transformers_activation(m) for m in acts)


def test_gpt2_guided_map_differs_and_equals_the_hooked_reference(gpt2):
    model, layer, ids, base, kwargs = gpt2
    target = torch.tensor([5, 17, 42])
    opts = dict(layer=layer, baseline=base, steps=10, rule="left", output=last_logit, model_kwargs=kwargs)
    plain = fastattr.attribute(model, ids, target, **opts)
    guided = fastattr.attribute(model, ids, target, backward="guided", **opts)
    assert (guided - plain).abs().max() > 0.05 * plain.abs().max()  # the rule reached the GELUs

    ref_model = clamped_copy(model)
    lig = LayerIntegratedGradients(lambda i, m, p: ref_model(i, attention_mask=m, position_ids=p).logits[:, -1],
                                   ref_model.transformer.wte)
    ref = lig.attribute(ids, base, target=target, additional_forward_args=(kwargs["attention_mask"],
                                                                           kwargs["position_ids"]),
                        n_steps=10, method="riemann_left")
    close(guided, ref)
    # the model is left as it was: no hook of the guided mode survives the call
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_gpt2_guided_through_fastattr_captum(gpt2):
    """fastattr.captum.LayerIntegratedGradients(backward="guided") reaches the GELUs of a model held
    by a lambda (the modules found in forward_func) and equals the same clamped-hook reference."""
    import fastattr.captum as fc

    model, _, ids, base, kwargs = gpt2
    args = (kwargs["attention_mask"], kwargs["position_ids"])
    target = torch.tensor([5, 17, 42])
    ours = fc.LayerIntegratedGradients(lambda i, m, p: model(i, attention_mask=m, position_ids=p).logits[:, -1],
                                       model.transformer.wte).attribute(ids, base, target, args, n_steps=8,
                                                                        backward="guided")
    ref_model = clamped_copy(model)
    ref = LayerIntegratedGradients(lambda i, m, p: ref_model(i, attention_mask=m, position_ids=p).logits[:, -1],
                                   ref_model.transformer.wte).attribute(ids, base, target=target,
                                                                        additional_forward_args=args, n_steps=8)
    close(ours, ref)


def test_gpt2_idgi_with_guided_is_complete(gpt2):
    model, layer, ids, base, kwargs = gpt2
    ex = fastattr.explain(model, ids, torch.tensor([5, 17, 42]), layer=layer, baseline=base, idgi=True, steps=16,
                          output=last_logit, model_kwargs=kwargs, backward="guided")
    change = ex.scores - ex.baseline_scores
    assert change.abs().min() > 1e-3
    torch.testing.assert_close(ex.attributions.flatten(1).sum(1), change, rtol=0, atol=2e-6 * change.abs().max())


def relu_like_classes():
    """Every activation class transformers.activations defines, but the ones that are not ReLU-like."""
    return sorted(n for n, c in vars(hf_act).items() if isinstance(c, type) and issubclass(c, nn.Module)
                  and c.__module__ == hf_act.__name__ and n not in NOT_RELU_LIKE)


def test_every_relu_like_transformers_activation_is_listed():
    """A new transformers release adding an activation class shows up here (decide: guide it or not)."""
    assert set(relu_like_classes()) <= TRANSFORMERS_ACTIVATIONS


def _instance(name: str) -> nn.Module:
    cls = getattr(hf_act, name)
    if name == "ClippedGELUActivation":
        return cls(-0.1, 0.8)
    if name == "XIELUActivation":
        return cls(dtype=torch.float32)
    return cls()


@pytest.mark.parametrize("name", relu_like_classes())
def test_each_activation_class_takes_the_rule(name):
    """Linear -> activation -> Linear: the guided input gradient equals the one of a copy whose
    activation clamps its input gradient (computed by torch's own autograd), and differs from the
    plain gradient."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), _instance(name), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        net[2].weight.copy_(torch.randn(3, 16))  # gradients of both signs reach the activation
    x = torch.randn(5, 6) * 2
    guided = fastattr.attribute(net, x, 1, method="vanilla", output="logit", backward="guided")
    plain = fastattr.attribute(net, x, 1, method="vanilla", output="logit")
    ref_net = clamped_copy(net)
    xr = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(ref_net(xr)[:, 1].sum(), xr)
    close(guided, ref)
    assert (guided - plain).abs().max() > 1e-3 * plain.abs().max()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_hooks_removed_when_the_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.act = nn.Linear(4, 4), hf_act.NewGELUActivation()

        def forward(self, x):
            self.act(self.lin(x))
            raise RuntimeError("boom")

    net = Boom().eval()
    with pytest.raises(RuntimeError, match="boom"):
        fastattr.attribute(net, torch.randn(2, 4), 0, method="vanilla", backward="guided")
    assert not net.act._forward_hooks and not net.act._forward_pre_hooks


def test_a_non_elementwise_subclass_is_a_named_error():
    class Pooling(hf_act.QuickGELUActivation):
        def forward(self, x):
            return super().forward(x).mean(-1, keepdim=True)

    net = nn.Sequential(nn.Linear(4, 4), Pooling(), nn.Linear(1, 2)).eval()
    with pytest.raises(ValueError, match=r"^backward: 'guided' expected Pooling to be an element-wise"):
        fastattr.attribute(net, torch.randn(2, 4), 0, method="vanilla", backward="guided")


def test_importing_fastattr_does_not_import_transformers():
    code = ("import sys, fastattr, fastattr.captum, fastattr.backward.guided; "
            "assert 'transformers' not in sys.modules, 'transformers imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
