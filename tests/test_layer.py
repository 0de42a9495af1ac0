"""layer= attribution (SPEC.md "Layer attribution"), token-id inputs, model_kwargs= and padding
trimming, on tiny Hugging Face models with random weights: equal to captum's
LayerIntegratedGradients, IDGI complete, trimming exact, errors named."""
import pytest
import torch
from torch import nn

import fastattr
from fastattr.engine import default_batch_size

pytest.importorskip("transformers")
from captum.attr import IntegratedGradients, LayerIntegratedGradients  # noqa: E402

import text_models as tm  # noqa: E402

# captum's method names for the rules they share (SPEC.md IG table; riemann_trapezoid differs)
CAPTUM_RULES = {"left": "riemann_left", "middle": "riemann_middle", "gausslegendre": "gausslegendre"}
LENGTHS = [9, 4, 12, 6]


def close(a, b, rel=1e-5):
    """|a - b| <= rel * max|b| everywhere (the issue's 1e-5 relative)."""
    scale = b.abs().max().item()
    assert scale > 0
    err = (a - b).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} > {rel} * {scale:.3g}"


def logits_of(model):
    def f(ids, mask, *extra):
        kw = {"attention_mask": mask}
        if extra:
            kw["position_ids"] = extra[0]
        return model(ids, **kw).logits
    return f


@pytest.fixture(scope="module")
def models():
    return {"bert": tm.bert(), "distilbert": tm.distilbert(), "roberta": tm.roberta()}


# -- equal to captum's LayerIntegratedGradients -----------------------------------------------------

@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta"])
@pytest.mark.parametrize("rule", ["left", "gausslegendre"])
def test_sequence_classifiers_equal_captum(models, name, rule):
    model, layer = models[name]
    ids, mask, base = tm.sentences(LENGTHS, 14)
    target = torch.tensor([0, 2, 1, 2])
    ours = fastattr.attribute(model, ids, target, layer=layer, baseline=base, steps=12, rule=rule, output="logit",
                              model_kwargs={"attention_mask": mask})
    lig = LayerIntegratedGradients(logits_of(model), model.get_submodule(layer))
    ref = lig.attribute(ids, base, target=target, additional_forward_args=(mask,), n_steps=12,
                        method=CAPTUM_RULES[rule])
    assert ours.shape == ref.shape == (4, 14, 32)
    close(ours, ref)


def test_int_target_probability_and_middle_rule(models):
    model, layer = models["bert"]
    ids, mask, base = tm.sentences(LENGTHS)
    ours = fastattr.attribute(model, ids, 1, layer=layer, baseline=base, steps=10, rule="middle",
                              model_kwargs={"attention_mask": mask})
    lig = LayerIntegratedGradients(lambda i, m: model(i, attention_mask=m).logits.softmax(-1), model.bert.embeddings)
    ref = lig.attribute(ids, base, target=1, additional_forward_args=(mask,), n_steps=10, method="riemann_middle")
    close(ours, ref)


def test_gpt2_next_token_logit_left_padding():
    """One position's next-token logit of a causal LM (output= a callable), left-padded sentences
    with position_ids: every row's last column is its last real token."""
    model, layer = tm.gpt2()
    ids, mask, base = tm.sentences([7, 3, 10], side="left")
    pos = tm.position_ids(mask)
    target = torch.tensor([5, 17, 42])

    def last(out):
        return out.logits[:, -1, :]

    ex = fastattr.explain(model, ids, target, layer=layer, baseline=base, steps=12, output=last,
                          model_kwargs={"attention_mask": mask, "position_ids": pos})
    lig = LayerIntegratedGradients(lambda i, m, p: model(i, attention_mask=m, position_ids=p).logits[:, -1],
                                   model.transformer.wte)
    ref = lig.attribute(ids, base, target=target, additional_forward_args=(mask, pos), n_steps=12,
                        method="riemann_left")
    close(ex.attributions, ref)
    assert (ex.token_scores[mask == 0] == 0).all()


def test_vit_patch_embeddings_equal_captum():
    model, layer = tm.vit()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = fastattr.attribute(model, x, torch.tensor([0, 3, 4]), layer=layer, steps=10, output="logit")
    lig = LayerIntegratedGradients(lambda p: model(p).logits, model.get_submodule(layer))
    ref = lig.attribute(x, torch.zeros_like(x), target=torch.tensor([0, 3, 4]), n_steps=10, method="riemann_left")
    assert ours.shape == (3, 16, 32)
    close(ours, ref)


def test_input_space_model_kwargs_equal_captum(models):
    """model_kwargs without a layer: float inputs (word embeddings fed as inputs_embeds) with their
    attention_mask, against captum's IntegratedGradients with additional_forward_args."""
    model, _ = models["bert"]

    class Embeds(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, embeds, attention_mask):
            return self.model(inputs_embeds=embeds, attention_mask=attention_mask).logits

    net = Embeds().eval()
    ids, mask, _ = tm.sentences(LENGTHS)
    x = model.bert.embeddings.word_embeddings(ids).detach()
    ours = fastattr.explain(net, x, 2, steps=8, output="logit", model_kwargs={"attention_mask": mask})
    ref = IntegratedGradients(net).attribute(x, target=2, additional_forward_args=(mask,), n_steps=8,
                                             method="riemann_left")
    close(ours.attributions * mask[..., None], ref * mask[..., None])
    assert (ours.attributions[mask == 0] == 0).all()


# -- axioms, independence, trimming -----------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"schedule": "adaptive"}, {"backward": "guided"}],
                         ids=["uniform", "adaptive", "guided"])
def test_idgi_on_the_layer_path_is_complete(models, options):
    model, layer = models["bert"]
    ids, mask, base = tm.sentences(LENGTHS)
    ex = fastattr.explain(model, ids, layer=layer, baseline=base, idgi=True, steps=16, output="logit",
                          model_kwargs={"attention_mask": mask}, **options)
    change = ex.scores - ex.baseline_scores
    assert change.abs().min() > 1e-3  # a real output change to be complete about
    torch.testing.assert_close(ex.attributions.flatten(1).sum(1), change, rtol=0, atol=2e-6 * change.abs().max())


def test_a_sentence_map_does_not_depend_on_the_others(models):
    model, layer = models["distilbert"]
    ids, mask, base = tm.sentences(LENGTHS)
    kw = dict(layer=layer, steps=8, output="logit", rule="middle")
    together = fastattr.attribute(model, ids, 1, baseline=base, model_kwargs={"attention_mask": mask}, **kw)
    for i, length in enumerate(LENGTHS):
        alone = fastattr.attribute(model, ids[i:i + 1, :length], 1, baseline=base[i:i + 1, :length], **kw)
        close(together[i, :length], alone[0])
        assert (together[i, length:] == 0).all()


@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta", "gpt2"])
@pytest.mark.parametrize("method", ["ig", "vanilla"])
def test_trimming_is_exact(models, name, method):
    """Each row computed at its own length equals the untrimmed padded computation on real tokens
    (1e-5 relative); padding gets exactly zero."""
    if name == "gpt2":
        model, layer = tm.gpt2()
        ids, mask, base = tm.sentences(LENGTHS, side="left")
        kwargs = {"attention_mask": mask, "position_ids": tm.position_ids(mask)}
        output = lambda out: out.logits[:, -1]  # noqa: E731
    else:
        model, layer = models[name]
        ids, mask, base = tm.sentences(LENGTHS)
        kwargs, output = {"attention_mask": mask}, "probability"
    opts = dict(layer=layer, output=output, model_kwargs=kwargs, target=7 if name == "gpt2" else 0)
    if method == "ig":
        opts.update(baseline=base, steps=8, idgi=True)
    else:
        opts.update(method="vanilla")
    trimmed = fastattr.explain(model, ids, **opts)
    full = fastattr.explain(model, ids, trim_padding=False, **opts)
    real = mask.bool()
    close(trimmed.attributions[real], full.attributions[real])
    assert (trimmed.attributions[~real] == 0).all() and (trimmed.token_scores[~real] == 0).all()
    close(trimmed.scores, full.scores)
    assert len(trimmed.extras["buckets"]) > 1  # the lengths were really split


def test_one_bucket_shorter_than_the_padding(models):
    """Every sentence shorter than the padded length (padding="max_length"): one bucket, cut, and
    the maps put back at the padded shape."""
    model, layer = models["bert"]
    ids, mask, base = tm.sentences([5, 5, 5], tokens=9)
    kw = dict(layer=layer, baseline=base, steps=4, model_kwargs={"attention_mask": mask})
    trimmed = fastattr.explain(model, ids, 0, **kw)
    full = fastattr.explain(model, ids, 0, trim_padding=False, **kw)
    assert trimmed.attributions.shape == full.attributions.shape == (3, 9, 32)
    assert [b["length"] for b in trimmed.extras["buckets"]] == [5]
    close(trimmed.attributions[:, :5], full.attributions[:, :5])
    assert (trimmed.attributions[:, 5:] == 0).all()


def test_cuda_graphs_refused_with_a_layer(models):
    model, layer = models["bert"]
    with pytest.raises(ValueError, match=r"^cuda_graphs: .*layer= or model_kwargs= pass cuda_graphs=False"):
        fastattr.Explainer(model, layer=layer, cuda_graphs=True)


def test_chunks_are_sized_from_the_layer_space(models):
    model, layer = models["bert"]
    ids, mask, _ = tm.sentences([12, 12])
    explainer = fastattr.Explainer(model, layer=layer, steps=4)
    explainer(ids)
    assert explainer.engine.batch_size == default_batch_size(torch.device("cpu"), 12 * 32)


def test_explainer_and_smoothgrad_take_layer_and_model_kwargs(models):
    model, layer = models["bert"]
    ids, mask, base = tm.sentences(LENGTHS)
    kw = {"attention_mask": mask}
    ref = fastattr.explain(model, ids, 1, layer=layer, baseline=base, steps=8, model_kwargs=kw)
    explainer = fastattr.Explainer(model, layer=model.bert.embeddings, baseline=base, steps=8)
    for _ in range(2):
        got = explainer(ids, 1, model_kwargs=kw)
        torch.testing.assert_close(got.attributions, ref.attributions, rtol=0, atol=0)
    assert not model.bert.embeddings._forward_hooks
    # SmoothGrad with no noise is the method's own map (the copies are L(x) itself)
    sg = fastattr.smoothgrad(model, ids, 1, method="vanilla", nsamples=3, spread=0.0, layer=layer, model_kwargs=kw)
    van = fastattr.explain(model, ids, 1, method="vanilla", layer=layer, model_kwargs=kw)
    torch.testing.assert_close(sg.attributions, van.attributions, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sg.baseline_scores, van.baseline_scores, rtol=1e-5, atol=1e-7)
    sg = fastattr.smoothgrad(model, ids, 1, method="ig", steps=4, nsamples=2, spread=0.0, baseline=base,
                             layer=layer, model_kwargs=kw)
    ig = fastattr.explain(model, ids, 1, steps=4, baseline=base, layer=layer, model_kwargs=kw)
    torch.testing.assert_close(sg.attributions, ig.attributions, rtol=1e-5, atol=1e-7)


def test_guided_ig_and_neflag_run_in_the_layer_space(models):
    model, layer = models["bert"]
    ids, mask, base = tm.sentences(LENGTHS)
    kw = {"attention_mask": mask}
    gig = fastattr.explain(model, ids, 0, method="guided_ig", idgi=True, steps=8, baseline=base, layer=layer,
                           model_kwargs=kw, output="logit")
    change = gig.scores - gig.baseline_scores
    torch.testing.assert_close(gig.attributions.flatten(1).sum(1), change, rtol=0, atol=2e-6 * change.abs().max())
    nf = fastattr.explain(model, ids, 0, method="neflag", n=3, m=2, layer=layer, model_kwargs=kw,
                          generator=torch.Generator().manual_seed(0))
    assert nf.attributions.shape == (4, 12, 32) and (nf.token_scores[mask == 0] == 0).all()


def test_precision_bf16_on_the_layer_path(models):
    model, layer = models["bert"]
    ids, mask, base = tm.sentences(LENGTHS)
    kw = dict(layer=layer, baseline=base, steps=8, model_kwargs={"attention_mask": mask}, output="logit")
    fp32 = fastattr.attribute(model, ids, 1, **kw)
    bf16 = fastattr.attribute(model, ids, 1, precision="bf16", **kw)
    assert bf16.dtype == torch.float32
    c = torch.corrcoef(torch.stack([fp32.flatten(), bf16.flatten()]))[0, 1]
    assert c > 0.95


# -- layer outputs: tuples, mappings, in-place use ---------------------------------------------------

class Block(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.lin, self.kind = nn.Linear(6, 6), kind

    def forward(self, x):
        h = self.lin(x)
        if self.kind == "tuple":
            return h, h.sum()
        if self.kind == "dict":
            return {"hidden": h, "aux": h.mean()}
        if self.kind == "modeloutput":
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            return BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=h.mean(0))
        return h


class Net(nn.Module):
    def __init__(self, kind: str, inplace: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.block, self.head, self.inplace = Block(kind), nn.Linear(6, 3), inplace
        self.eval()

    def forward(self, x):
        out = self.block(x)
        h = out if isinstance(out, torch.Tensor) else (out[0] if isinstance(out, tuple) else
                                                       out["hidden"] if "hidden" in out else out.last_hidden_state)
        if self.inplace:
            h.mul_(2).tanh_()  # in place on the layer's output
        else:
            h = h.mul(2).tanh()
        return self.head(h)


@pytest.mark.parametrize("kind", ["tuple", "dict", "modeloutput"])
def test_tuple_and_mapping_layer_outputs(kind):
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    plain = fastattr.attribute(Net("tensor"), x, 1, layer="block", steps=6, output="logit")
    other = fastattr.attribute(Net(kind), x, 1, layer="block", steps=6, output="logit")
    torch.testing.assert_close(other, plain, rtol=0, atol=0)


def test_in_place_ops_on_the_layer_output():
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    plain = fastattr.attribute(Net("tensor"), x, 1, layer="block", steps=6, output="logit")
    inplace = fastattr.attribute(Net("tensor", inplace=True), x, 1, layer="block", steps=6, output="logit")
    torch.testing.assert_close(inplace, plain, rtol=1e-6, atol=1e-7)


# -- errors ----------------------------------------------------------------------------------------

class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.lin, self.unused = nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, ids):
        return self.lin(self.lin(self.emb(ids))).sum(1)


@pytest.mark.parametrize("layer, match", [
    ("bert.embedings", r"^layer: the model has no submodule 'bert.embedings'; did you mean .*bert.embeddings"),
    (nn.Linear(2, 2), r"^layer: the Linear given is not a submodule of the model"),
    (3, r"^layer: expected a submodule of the model or its dotted name, got int"),
    ("", r"^layer: is the model itself"),
])
def test_bad_layer(models, layer, match):
    model, _ = models["bert"]
    ids, mask, _ = tm.sentences([5, 3])
    with pytest.raises((ValueError, TypeError), match=match):
        fastattr.explain(model, ids, layer=layer, steps=2)


def test_layer_never_called_or_called_twice():
    ids = torch.randint(0, 10, (2, 5))
    with pytest.raises(ValueError, match=r"^layer: 'unused' \(Linear\) is never called in the model's forward"):
        fastattr.explain(Twice().eval(), ids, layer="unused", steps=2)
    model = Twice().eval()
    with pytest.raises(ValueError, match=r"^layer: 'lin' is called 2 times in one forward"):
        fastattr.explain(model, ids, layer="lin", steps=2)
    assert not model.lin._forward_hooks  # removed after the error
    with pytest.raises(ValueError, match=r"^layer: .0. outputs a torch.int64 tensor; .* must be floating"):
        fastattr.explain(nn.Sequential(nn.Identity(), nn.Flatten()).eval(), ids, layer="0", steps=2)


def test_integer_inputs_need_a_layer(models):
    model, _ = models["bert"]
    ids, _, _ = tm.sentences([5, 3])
    with pytest.raises(TypeError, match=r"^inputs: expected a floating-point tensor, got torch.int64\. Token ids .*pass layer="):
        fastattr.explain(model, ids)


def test_bad_baselines_for_ids(models):
    model, layer = models["bert"]
    ids, _, base = tm.sentences([5, 3])
    with pytest.raises(TypeError, match=r"^baseline: inputs are torch.int64 ids, so the baseline is ids too"):
        fastattr.explain(model, ids, layer=layer, baseline=base.float(), steps=2)
    with pytest.raises(ValueError, match=r"^baseline: shape \(2, 4\) does not broadcast to inputs \(2, 5\)"):
        fastattr.explain(model, ids, layer=layer, baseline=base[:, :4], steps=2)
    with pytest.raises(TypeError, match=r"^baseline: inputs are torch.int64 ids"):
        fastattr.explain(model, ids, layer=layer, baseline=0.5, steps=2)
    # an int id and a broadcast row are fine
    a = fastattr.attribute(model, ids, 0, layer=layer, baseline=0, steps=2)
    b = fastattr.attribute(model, ids, 0, layer=layer, baseline=torch.zeros(5, dtype=torch.long), steps=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_model_kwargs(models):
    model, layer = models["bert"]
    ids, mask, _ = tm.sentences([5, 3, 4])
    with pytest.raises(ValueError, match=r"^model_kwargs: 'attention_mask' has shape \(2, 5\), but inputs hold 3 "
                                         r"examples\. A tensor whose first dimension is N=3 belongs"):
        fastattr.explain(model, ids, layer=layer, model_kwargs={"attention_mask": mask[:2]}, steps=2)
    with pytest.raises(TypeError, match=r"^model_kwargs: expected a dict"):
        fastattr.explain(model, ids, layer=layer, model_kwargs=[mask], steps=2)
    with pytest.raises(TypeError, match=r"^trim_padding: expected a bool"):
        fastattr.explain(model, ids, layer=layer, model_kwargs={"attention_mask": mask}, trim_padding="no")


def test_shared_model_kwargs_pass_as_they_are(models):
    model, layer = models["bert"]
    ids, mask, base = tm.sentences([7, 7])
    shared = fastattr.attribute(model, ids, 0, layer=layer, steps=4, model_kwargs={"attention_mask": mask[:1],
                                                                                  "return_dict": True})
    per_row = fastattr.attribute(model, ids, 0, layer=layer, steps=4, model_kwargs={"attention_mask": mask})
    torch.testing.assert_close(shared, per_row, rtol=1e-6, atol=1e-8)


def test_blur_ig_refuses_a_layer(models):
    model, layer = models["bert"]
    ids, _, _ = tm.sentences([5, 3])
    with pytest.raises(ValueError, match=r"^layer: method 'blur_ig' blurs the model's input image"):
        fastattr.explain(model, ids, method="blur_ig", layer=layer)
    with pytest.raises(ValueError, match=r"^layer: method 'blur_ig'"):
        fastattr.Explainer(model, method="blur_ig", layer=layer)


def test_expected_gradients_refuses_per_example_inputs(models):
    model, layer = models["bert"]
    ids, mask, _ = tm.sentences([5, 3])
    with pytest.raises(ValueError, match=r"^layer: method 'expected_gradients' evaluates references"):
        fastattr.explain(model, ids, method="expected_gradients", layer=layer)
    x = torch.randn(2, 5, 32)
    with pytest.raises(ValueError, match=r"^model_kwargs: method 'expected_gradients' evaluates references .*"
                                         r"\['attention_mask'\]"):
        fastattr.explain(model, x, method="expected_gradients", model_kwargs={"attention_mask": mask})


def test_trimming_needs_a_token_axis():
    class Pool(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(10, 4), nn.Linear(4, 3)
            self.pool = nn.Identity()

        def forward(self, ids, attention_mask):
            return self.head(self.pool((self.emb(ids) * attention_mask[..., None]).sum(1)))

    ids = torch.randint(0, 10, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match=r"^trim_padding: the layer space has shape \(1, 4\) for 3 tokens"):
        fastattr.explain(Pool().eval(), ids, layer="pool", model_kwargs={"attention_mask": mask}, steps=2)
    out = fastattr.explain(Pool().eval(), ids, layer="pool", model_kwargs={"attention_mask": mask}, steps=2,
                           trim_padding=False)
    assert out.attributions.shape == (2, 4)
    with pytest.raises(ValueError, match=r"^token_scores: the map has shape \(2, 4\)"):
        out.token_scores


def test_nonfinite_scores_name_the_callers_row(models):
    """A NaN in one sentence of a later length bucket names that sentence's index in the call."""
    model, layer = models["bert"]
    ids, mask, base = tm.sentences([9, 4, 12, 6])
    bad = 2

    class Poison(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, ids, attention_mask):
            out = self.model(ids, attention_mask=attention_mask).logits
            poisoned = (ids == ids_bad_first).all(1) if ids.shape[1] == 12 else torch.zeros(ids.shape[0], dtype=bool)
            return torch.where(poisoned[:, None], float("nan"), out)

    ids_bad_first = ids[bad]
    with pytest.raises(ValueError, match=rf"non-finite scores .* for image {bad} \(index into inputs\)"):
        fastattr.explain(Poison().eval(), ids, layer="model.bert.embeddings", model_kwargs={"attention_mask": mask}, steps=2)


# -- the runner's Python entry ----------------------------------------------------------------------

class Scaled(nn.Module):
    """A CNN with a further input: its logits times `scale`."""

    def __init__(self):
        super().__init__()
        from conftest import make_small_cnn

        self.net = make_small_cnn(seed=3)

    def forward(self, x, scale=None):
        out = self.net(x)
        return out if scale is None else out * scale


def test_runner_takes_shared_model_kwargs(tmp_path):
    import numpy as np
    from PIL import Image

    from fastattr.runner import load_shard, run
    from fastattr.runner.manifest import ConfigMismatch

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for j in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / f"img{j}.png")
    model = Scaled().eval()
    common = dict(model=model, steps=4, size=16, workers=0, threads=1, progress=False, output="logit",
                  channels_last=False)
    run(data, tmp_path / "out", model_kwargs={"scale": torch.tensor(3.0)}, **common)
    maps, index, records = load_shard(tmp_path / "out" / "shard-000000.safetensors")
    from fastattr.images import load_image

    x = torch.stack([load_image(data / f"img{j}.png", 16) for j in range(3)])
    ref = fastattr.explain(model, x, [r["target"] for r in records], steps=4, output="logit", channels_last=False,
                           model_kwargs={"scale": torch.tensor(3.0)})
    torch.testing.assert_close(maps, ref.attributions, rtol=1e-6, atol=1e-7)
    plain = fastattr.attribute(model, x, [r["target"] for r in records], steps=4, output="logit", channels_last=False)
    torch.testing.assert_close(maps, 3 * plain, rtol=1e-5, atol=1e-6)  # the kwarg reached the model
    with pytest.raises(ConfigMismatch, match="model_kwargs_sha256"):
        run(data, tmp_path / "out", model_kwargs={"scale": torch.tensor(2.0)}, **common)
    with pytest.raises(ValueError, match=r"^model_kwargs: 'scale' has shape \(3,\); a dataset run"):
        run(data, tmp_path / "bad", model_kwargs={"scale": torch.ones(3)}, **common)


# -- the README's example, as a user pastes it ------------------------------------------------------

def _readme_blocks():
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index("## Text and transformer models"):text.index("## Saving a model for the CLI")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_text_example_runs_as_shown():
    import subprocess
    import sys

    example, switch = _readme_blocks()[:2]  # (the third is the text view's, with a tokenizer of your own)
    res = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "torch.Size([2, 8, 64])"
    # the captum switch: both halves give the same map
    scope: dict = {}
    exec(example.split("ex = fastattr.explain")[0], scope)
    exec("from captum.attr import LayerIntegratedGradients\n" + switch.replace("attr = fastattr", "ours = fastattr"),
         scope)
    close(scope["ours"], scope["attr"])
