"""fastattr.captum.LayerIntegratedGradients equals captum 0.9's (float32, 1e-5 relative) on captum's
own test models (layer outputs and inputs, tuple outputs, lists of layers, additional_forward_args,
targets, internal_batch_size, deltas, multiply_by_inputs=False, every method) and on Hugging Face
models (BERT with attention_mask and token_type_ids, GPT-2); the fastattr extras (idgi=, backward=)
run on the same engine as fastattr's native layer=; bad calls are named errors."""
import pytest
import torch
from captum.attr import LayerIntegratedGradients as CaptumLIG
from captum.testing.helpers import basic_models as bm
from torch import nn

import fastattr
import fastattr.captum as fc

METHODS = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]


def _seeded(cls, *args, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(*args, **kw).eval()


def close(a, b, rel=1e-5):
    """Same structure (tensor / tuple / list) and |a - b| <= rel * max|b| per tensor."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(b, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y, rel)
        return
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    scale = b.abs().max().item()
    err = (a - b).abs().max().item()
    assert err <= rel * max(scale, 1e-30), f"max error {err:.3g} > {rel} * {scale:.3g}"


def close_delta(d1, d2, attrs):
    """Deltas are float32 rounding left-overs: equal to 1e-5 of the attributions' total size."""
    ts = attrs if isinstance(attrs, (tuple, list)) else (attrs,)
    flat = [t for a in ts for t in (a if isinstance(a, tuple) else (a,))]
    scale = sum(t.abs().sum().item() for t in flat)
    assert d1.shape == d2.shape and (d1 - d2).abs().max().item() <= 1e-5 * scale


def both(model, layer, *args, ctor=None, **kw):
    """fastattr's and captum's results of the same call."""
    ctor = ctor or {}
    ours = fc.LayerIntegratedGradients(model, layer, **ctor).attribute(*args, **kw)
    ref = CaptumLIG(model, layer, **ctor).attribute(*args, **kw)
    return ours, ref


@pytest.fixture(scope="module")
def multi():
    return _seeded(bm.BasicModel_MultiLayer, multi_input_module=True)


X = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * 3


# -- captum's test models --------------------------------------------------------------------------

@pytest.mark.parametrize("to_input", [False, True], ids=["output", "input"])
@pytest.mark.parametrize("layer", ["linear1", "multi_relu", "linear2"])
def test_single_layer_outputs_and_inputs(multi, layer, to_input):
    ours, ref = both(multi, multi.get_submodule(layer), X, target=0, attribute_to_layer_input=to_input)
    close(ours, ref)
    if layer == "multi_relu":  # two tensors in, two out: a tuple back, as captum
        assert isinstance(ours, tuple) and len(ours) == 2


@pytest.mark.parametrize("method", METHODS)
def test_every_method_with_per_example_target_and_delta(multi, method):
    (ours, d1), (ref, d2) = both(multi, multi.multi_relu, X, baselines=0.5, target=[0, 1, 1, 0], n_steps=7,
                                 method=method, return_convergence_delta=True)
    close(ours, ref)
    close_delta(d1, d2, ref)


@pytest.mark.parametrize("batch", [None, 1, 5, 64])
def test_internal_batch_size_and_tensor_target(multi, batch):
    target = torch.tensor([1, 0, 0, 1])
    ours, ref = both(multi, multi.linear1, X, target=target, n_steps=9, internal_batch_size=batch)
    close(ours, ref)


def test_additional_forward_args_and_multiply_by_inputs_false(multi):
    add = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    for ctor in ({}, {"multiply_by_inputs": False}):
        ours, ref = both(multi, multi.linear1, X, target=1, additional_forward_args=(add,), ctor=ctor)
        close(ours, ref)
    assert not fc.LayerIntegratedGradients(multi, multi.linear1, multiply_by_inputs=False).multiplies_by_inputs


def test_multidimensional_output_tuple_target(multi):
    ours, ref = both(multi, multi.linear1, X, target=(1, 0, 1), additional_forward_args=(None, True), n_steps=6)
    close(ours, ref)


@pytest.mark.parametrize("multiple", [False, True], ids=["one-embedding", "two-embeddings"])
def test_embedding_model_token_ids_target_none(multiple):
    model = _seeded(bm.BasicEmbeddingModel, nested_second_embedding=True)
    ids = torch.tensor([[2, 5, 0, 1], [3, 1, 1, 0], [7, 8, 9, 2]])
    i2 = torch.tensor([[0, 2, 4, 1], [2, 3, 5, 7], [1, 1, 1, 1]])
    i3 = torch.tensor([[3, 5, 6, 7], [2, 3, 0, 1], [4, 4, 4, 4]])
    if multiple:  # a list of layers: a list back
        layers = [model.embedding1, model.embedding2]
        (ours, d1), (ref, d2) = both(model, layers, (ids, i2, i3), baselines=(0, 0, 0), n_steps=20,
                                     return_convergence_delta=True)
        assert isinstance(ours, list) and len(ours) == 2
    else:
        (ours, d1), (ref, d2) = both(model, model.embedding1, ids, baselines=torch.zeros(1, 4, dtype=torch.long),
                                     additional_forward_args=(i2, i3), return_convergence_delta=True)
    close(ours, ref)
    close_delta(d1, d2, ref)


@pytest.mark.parametrize("to_input", [False, True], ids=["output", "input"])
def test_list_of_layers_one_holding_three_inputs(to_input):
    net = _seeded(bm.BasicModel_MultiLayer_TrueMultiInput)
    g = torch.Generator().manual_seed(3)
    xs = tuple(torch.randn(5, 3, generator=g) for _ in range(4))
    ours, ref = both(net, [net.m1, net.m234], xs, target=0, attribute_to_layer_input=to_input)
    close(ours, ref)
    assert isinstance(ours, list) and (isinstance(ours[1], tuple) if to_input else torch.is_tensor(ours[1]))


def test_a_listed_layer_feeding_only_another_listed_layer_gets_zeros(multi):
    """captum raises autograd's "not used in the graph"; the engine's rule: no dependence, zero gradient."""
    a = fc.LayerIntegratedGradients(multi, [multi.linear1, multi.multi_relu]).attribute(X, target=0)
    alone = fc.LayerIntegratedGradients(multi, multi.multi_relu).attribute(X, target=0)
    assert (a[0] == 0).all()
    close(a[1], alone)


def test_float64_and_conv_model():
    net = _seeded(bm.BasicModel_ConvNet).double()
    x = torch.randn(3, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ours, ref = both(net, net.conv2, x, target=[1, 5, 9], n_steps=8)
    close(ours, ref, rel=1e-10)


def test_interface_like_captum(multi):
    lig = fc.LayerIntegratedGradients(multi, [multi.linear1], device_ids=None)
    assert lig.has_convergence_delta() and lig.multiplies_by_inputs and lig.layer == [multi.linear1]
    assert fc.LayerIntegratedGradients(multi, "linear1").layer is multi.linear1  # fastattr: a dotted name
    assert "LayerIntegratedGradients" in fc.__all__


# -- Hugging Face models ---------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
import text_models as tm  # noqa: E402

LENGTHS = [9, 4, 12, 6]


@pytest.fixture(scope="module")
def bert():
    return tm.bert()


def bert_logits(model):
    def f(ids, mask, types):
        return model(ids, attention_mask=mask, token_type_ids=types).logits
    return f


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_bert_with_mask_and_token_types(bert, method):
    model, layer = bert
    ids, mask, base = tm.sentences(LENGTHS, 14)
    types = (torch.arange(14) >= 5).long().expand(4, 14) * mask
    f = bert_logits(model)
    target = torch.tensor([0, 2, 1, 2])
    (ours, d1), (ref, d2) = both(f, model.bert.embeddings, ids, baselines=base, target=target,
                                 additional_forward_args=(mask, types), n_steps=12, method=method,
                                 internal_batch_size=10, return_convergence_delta=True)
    assert ours.shape == (4, 14, 32)
    close(ours, ref)
    close_delta(d1, d2, ref)
    # the same call at the word embeddings and, as a list, at word and position embeddings
    emb = model.bert.embeddings
    close(*both(f, emb.word_embeddings, ids, base, 1, (mask, types), n_steps=8))
    close(*both(f, [emb.word_embeddings, emb.token_type_embeddings], ids, base, 1, (mask, types), n_steps=8))


def test_gpt2_next_token_logit():
    model, _ = tm.gpt2()
    ids, mask, base = tm.sentences([7, 3, 10], side="left")
    pos = tm.position_ids(mask)

    def f(i, m, p):
        return model(i, attention_mask=m, position_ids=p).logits[:, -1]

    target = torch.tensor([5, 17, 42])
    ours, ref = both(f, model.transformer.wte, ids, base, target, (mask, pos), n_steps=10)
    close(ours, ref)
    # a block's output is a tuple in some versions, a tensor in others: captum's form either way
    ours, ref = both(f, model.transformer.h[0], ids, base, target, (mask, pos), n_steps=6)
    close(ours, ref)


@pytest.mark.parametrize("backward", ["standard", "guided"])
def test_extras_run_on_the_native_layer_engine(bert, backward):
    """idgi=/backward= give what fastattr's own layer= gives for the same path (same engine), and the
    IDGI map is complete."""
    model, layer = bert
    ids, mask, base = tm.sentences(LENGTHS)
    target = torch.tensor([0, 2, 1, 2])
    ours = fc.LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits, model.bert.embeddings) \
        .attribute(ids, base, target, (mask,), n_steps=16, method="riemann_left", idgi=True, backward=backward)
    native = fastattr.explain(model, ids, target, layer=layer, baseline=base, idgi=True, steps=16, rule="left",
                              output="logit", model_kwargs={"attention_mask": mask}, backward=backward,
                              trim_padding=False)
    close(ours, native.attributions, rel=1e-5)
    change = native.scores - native.baseline_scores
    torch.testing.assert_close(ours.flatten(1).sum(1), change, rtol=0, atol=2e-6 * change.abs().max())
    if backward == "guided":
        plain = fc.LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits, model.bert.embeddings) \
            .attribute(ids, base, target, (mask,), n_steps=16, method="riemann_left", idgi=True)
        assert (ours - plain).abs().max() > 1e-3 * plain.abs().max()


def test_readme_snippet_runs_as_shown():
    """The README's fastattr.captum snippet ("Text and transformer models"), after the section's example's
    model and batch: captum's map and delta, and a complete IDGI map."""
    import test_layer

    blocks = test_layer._readme_blocks()
    scope: dict = {}
    exec(blocks[0].split("ex = fastattr.explain")[0], scope)
    snippet = blocks[2]
    assert "from fastattr.captum import LayerIntegratedGradients" in snippet
    exec(snippet.replace("attr, delta = lig", "attr_ig, delta = lig"), scope)
    model, ids, baseline, mask = (scope[k] for k in ("model", "ids", "baseline", "mask"))
    ref = CaptumLIG(lambda i, m: model(i, attention_mask=m).logits, model.bert.embeddings).attribute(
        ids, baseline, target=1, additional_forward_args=(mask,), n_steps=50)
    close(scope["attr_ig"], ref)
    with torch.no_grad():
        change = model(ids, attention_mask=mask).logits[:, 1] - model(baseline, attention_mask=mask).logits[:, 1]
    torch.testing.assert_close(scope["attr"].flatten(1).sum(1), change, rtol=0, atol=1e-5 * change.abs().max())


# -- errors ----------------------------------------------------------------------------------------

def test_layer_not_a_module(multi):
    with pytest.raises(TypeError, match=r"^layer: expected an nn.Module"):
        fc.LayerIntegratedGradients(multi, 3)
    with pytest.raises(ValueError, match=r"^layer: the model has no submodule 'linear9'"):
        fc.LayerIntegratedGradients(multi, "linear9")
    with pytest.raises(ValueError, match=r"^layer: the list of layers is empty"):
        fc.LayerIntegratedGradients(multi, [])


def test_layer_not_in_the_model_or_never_called(multi):
    with pytest.raises(ValueError, match=r"^layer: 'Linear' \(Linear\) is never called"):
        fc.LayerIntegratedGradients(multi, nn.Linear(3, 4)).attribute(X, target=0)
    plain = _seeded(bm.BasicModel_MultiLayer)
    with pytest.raises(ValueError, match=r"^layer: 'multi_relu' \(MultiRelu\) is never called"):
        fc.LayerIntegratedGradients(plain, plain.multi_relu).attribute(X, target=0)


def test_layer_called_twice():
    net = _seeded(bm.BasicModelWithReusedModules)
    with pytest.raises(ValueError, match=r"^layer: 'relu' is called 2 times"):
        fc.LayerIntegratedGradients(net, net.relu).attribute(X, target=0)


def test_integer_layer_tensors():
    model = _seeded(bm.BasicEmbeddingModel)
    ids = torch.tensor([[2, 5, 0, 1]])
    with pytest.raises(ValueError, match=r"^layer: 'embedding1' has a torch.int64 among its inputs"):
        fc.LayerIntegratedGradients(model, model.embedding1).attribute(ids, additional_forward_args=(ids,),
                                                                       attribute_to_layer_input=True)


def test_integer_layer_outputs():
    class Bucketize(nn.Module):  # floats -> bucket ids: an integer output, no path through it
        def forward(self, x):
            return (x.clamp(0, 0.99) * 10).long()

    net = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid(), Bucketize(), nn.Embedding(10, 2), nn.Flatten()).eval()
    with pytest.raises(ValueError, match=r"^layer: '2' has a torch.int64 among its output"):
        fc.LayerIntegratedGradients(net, net[2]).attribute(X, target=0)


def test_bad_arguments(multi):
    lig = fc.LayerIntegratedGradients(multi, multi.linear1)
    with pytest.raises(ValueError, match=r"^baselines: element 0 has shape"):
        lig.attribute(X, baselines=torch.zeros(2, 3), target=0)
    with pytest.raises(TypeError, match=r"^idgi: expected a bool"):
        lig.attribute(X, target=0, idgi=1)
    with pytest.raises(TypeError, match=r"^attribute_to_layer_input: expected a bool"):
        lig.attribute(X, target=0, attribute_to_layer_input="yes")
    with pytest.raises(ValueError, match=r"^idgi: IDGI maps have no"):
        fc.LayerIntegratedGradients(multi, multi.linear1, multiply_by_inputs=False).attribute(X, target=0, idgi=True)
    with pytest.raises(ValueError, match=r"^backward: unknown"):
        lig.attribute(X, target=0, backward="nope")
    with pytest.raises(ValueError, match=r"^n_steps:"):
        lig.attribute(X, target=0, n_steps=0)


def test_baselines_the_layer_maps_to_another_shape():
    emb, lin = nn.Embedding(10, 4), nn.Linear(4, 2)

    def f(ids):  # cuts trailing pad ids (0) before embedding: the layer's length follows the values
        n = max(1, int((ids != 0).sum(1).max()))
        return lin(emb(ids[:, :n])).sum(1)

    with pytest.raises(ValueError, match=r"^baselines: the layer 'Embedding' holds a tensor of shape \(2, 1, 4\)"):
        fc.LayerIntegratedGradients(f, emb).attribute(torch.tensor([[1, 2, 3], [4, 5, 0]]), target=0)
