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


def test_eval_rows_follow_the_registries_and_table_is_written(tmp_path):
    from fastattr.backward import BACKWARDS
    from fastattr.evaluate import RowResult, Variant, variants, write_tables
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
    res = [RowResult(Variant("ig"), {"insertion": 0.2, "deletion": 0.1}, 1.0, 8),
           RowResult(Variant("ig", True), {"insertion": 0.3, "deletion": 0.2}, 1.0, 8),
           RowResult(Variant("x"), error="ValueError: boom")]
    md = write_tables(res, ["insertion", "deletion"], tmp_path, "# t")
    text = md.read_text()
    assert "| ig + IDGI | **0.300** | 0.200 |" in text and "| ig | 0.200 | **0.100** |" in text
    assert "error: ValueError: boom" in text and (tmp_path / "table.csv").read_text().count("\n") == 4
