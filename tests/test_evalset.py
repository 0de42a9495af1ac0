"""The bundled evaluation set: exact composite masks, determinism, the confidence filter, caching."""
import pytest
import torch
from torch import nn

from fastattr import evalset as E


class FavourCat(nn.Module):
    """1000 logits, class 285 (Egyptian cat) far ahead for every input: keeps exactly the cat images."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 1000)
        out[:, 285] = 20.0
        return out + 0 * x.mean()


def test_composite_mask_is_exactly_the_pasted_pixels():
    tex = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    obj = torch.full((3, 10, 10), 2.0)  # out of range on purpose: pasted pixels are clamped to 1
    img, mask = E.composite(obj, tex, side=12, top=5, left=20)
    assert mask.sum() == 144 and mask[5:17, 20:32].all()
    assert torch.equal(img[:, ~mask], tex[:, ~mask])
    assert (img[:, mask] == 1.0).all()


def test_candidates_deterministic_and_masks_inside():
    a = E.candidates()
    b = E.candidates()
    assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])
    names, imgs, labels, masks, has = a
    assert imgs.shape[1:] == (3, 224, 224) and float(imgs.min()) >= 0 and float(imgs.max()) <= 1
    from fastattr.images import BUNDLED

    assert len(names) == len(BUNDLED) + len(E.TEXTURES) * len(E.OBJECTS) * len(E.PLACEMENTS)
    assert not has[:2].any() and has[2:].all()
    for m, n in zip(masks[2:], names[2:]):
        side = int(n.split("_")[3])
        assert int(m.sum()) == side * side


def test_filter_keeps_confident_object_class():
    es = E.build_evalset(model=FavourCat())
    assert len(es) > 0 and (es.labels == 285).all() and (es.probs >= E.MIN_PROB).all()
    assert all(n == "chelsea" or n.startswith("cat_") for n in es.names)
    assert es.random_masks.shape == es.masks.shape and int(es.random_masks[0].sum()) == int(224 * 224 * 0.01)


def test_cache_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTATTR_CACHE", str(tmp_path))
    calls = []
    real = E.build_evalset

    def fake(size=224):
        calls.append(size)
        return real(model=FavourCat(), size=size)

    monkeypatch.setattr(E, "build_evalset", fake)
    a = E.load_evalset()
    b = E.load_evalset()
    assert calls == [224] and list(tmp_path.glob("evalset_v*_224.pt"))
    assert a.names == b.names and torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert len(a.subset(2)) == 2


@pytest.mark.slow
def test_default_set_is_confident_under_default_model(effnet):
    es = E.load_evalset()
    assert 8 <= len(es) <= 16 and int(es.has_mask.sum()) >= 6
    with torch.no_grad():
        p = effnet(es.images).softmax(1)
    assert (p.argmax(1) == es.labels).all()
    assert (p.gather(1, es.labels[:, None]).squeeze(1) >= E.MIN_PROB - 1e-4).all()


def test_eval_rows_follow_the_registries_and_table_is_written():
    from fastattr.backward import BACKWARDS
    from fastattr.evaluation.report import table_csv, table_markdown
    from fastattr.evaluation.summary import Cell
    from fastattr.evaluation.variants import Variant, variants
    from fastattr.methods import METHODS

    rows = variants()
    labels = {(v.method, v.idgi, v.backward) for v in rows}
    for name, spec in METHODS.items():  # whatever is registered now, incl. methods added later
        assert (name, False, "standard") in labels
        assert ((name, True, "standard") in labels) == spec.path
        if "guided" in BACKWARDS:
            assert ((name, True, "guided") in labels) == spec.path
    with pytest.raises(ValueError, match="methods"):
        variants(["no_such_method"])
    info = {"images": 9, "grad_evals": 8.0}
    res = [(Variant("ig"), {"insertion": Cell(0.2, 0.15, 0.25), "deletion": Cell(0.1, 0.05, 0.12)}, info),
           (Variant("ig", True), {"insertion": Cell(0.3, 0.2, 0.4), "deletion": Cell(0.2)}, info)]
    text = table_markdown(res, ["insertion", "deletion"], "# t")
    assert "| ig + IDGI | **0.300** [0.200, 0.400] | 0.200 | 9 | 8 |" in text
    assert "| ig | 0.200 [0.150, 0.250] | **0.100** [0.050, 0.120] | 9 | 8 |" in text
    lines = table_csv(res, ["insertion", "deletion"]).splitlines()
    assert lines[0].startswith("method,idgi,backward,label,images,grad_evals_per_image,insertion,insertion_low")
    assert lines[2].split(",")[6:] == ["0.3", "0.2", "0.4", "0.2", "", ""]
