"""fastattr.metrics against references: PAIR's compute_pic_metric (exact), scikit-learn's
roc_auc_score, brute-force numpy oracles written from SPEC.md, and a hand-built model whose
insertion/deletion curve is known in closed form."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from fastattr.engine import Engine
from fastattr.metrics import deletion, insertion, insertion_deletion, localization, pic
from fastattr.metrics import pic_idgi, pic_pair
from fastattr.metrics.insertion_deletion import gaussian_blur_base
from fastattr.metrics.pic import random_masks_like
from conftest import make_small_cnn

if not hasattr(np, "trapz"):  # saliency 0.2.1 calls np.trapz, removed in numpy 2.4
    np.trapz = np.trapezoid


class RegionModel(nn.Module):
    """2 classes: logit_0 = a * mean of the pixels in rows/cols [r0, r1) (all channels), logit_1 = 0."""

    def __init__(self, r0, r1, a=6.0):
        super().__init__()
        self.r0, self.r1, self.a = r0, r1, a
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        m = x[:, :, self.r0:self.r1, self.r0:self.r1].mean((1, 2, 3))
        return torch.stack([self.a * m, torch.zeros_like(m)], 1)


# -- insertion / deletion -------------------------------------------------------------------------
def test_insertion_deletion_known_curve():
    # 10x10 image of ones; the model reads a 3x3 region (9 pixels); the map marks exactly that region.
    # Step k of 20 inserts round(5k) pixels, region first: the region is complete after 9 pixels,
    # i.e. from k = 2 on (10 pixels) it is full; at k = 1 (5 pixels) 5 of 9 region pixels are in.
    model = RegionModel(2, 5).eval()
    x = torch.ones(1, 3, 10, 10)
    amap = torch.zeros(1, 10, 10)
    amap[0, 2:5, 2:5] = 1.0 + torch.arange(9.0).reshape(3, 3) / 100  # distinct values inside
    sig = lambda v: 1 / (1 + math.exp(-6.0 * v))
    frac = [min(5 * k, 9) / 9 for k in range(21)]
    want_ins = torch.tensor([sig(f) for f in frac], dtype=torch.float64)
    want_del = torch.tensor([sig(1 - f) for f in frac], dtype=torch.float64)
    s, c = insertion(model, x, amap, targets=0, return_curves=True)
    torch.testing.assert_close(c[0].double(), want_ins, rtol=0, atol=1e-6)
    assert abs(float(s[0]) - float(torch.trapezoid(want_ins, dx=0.05))) < 1e-6
    s, c = deletion(model, x, amap, targets=0, return_curves=True)
    torch.testing.assert_close(c[0].double(), want_del, rtol=0, atol=1e-6)
    # probability ratio: the curve divided by p_c of the input (last insertion / first deletion point)
    _, r = insertion(model, x, amap, targets=0, curve="probability ratio", return_curves=True)
    torch.testing.assert_close(r[0].double(), want_ins / sig(1.0), rtol=0, atol=1e-6)
    # the blur of a constant image is the image: nothing changes along the curve
    _, b = deletion(model, x, amap, targets=0, base="blur", return_curves=True)
    torch.testing.assert_close(b[0].double(), torch.full((21,), sig(1.0), dtype=torch.float64), rtol=0, atol=1e-6)
    # both = mean of the black and blur runs
    s_both = deletion(model, x, amap, targets=0, base="both")
    s_black = deletion(model, x, amap, targets=0, base="black")
    s_blur = deletion(model, x, amap, targets=0, base="blur")
    torch.testing.assert_close(s_both, (s_black + s_blur) / 2)


def _oracle_curve(model, x, sal, base, target, steps, insert):
    """One model call per step, numpy ranking (stable, descending): the definition in SPEC.md."""
    h, w = sal.shape
    order = np.argsort(-sal.reshape(-1), kind="stable")
    ys = []
    for k in range(steps + 1):
        m = np.zeros(h * w, bool)
        m[order[: int(round(k * h * w / steps))]] = True
        m = torch.from_numpy(m.reshape(1, h, w))
        img = torch.where(m, x, base) if insert else torch.where(m, base, x)
        with torch.no_grad():
            ys.append(float(model(img[None]).softmax(1)[0, target]))
    return np.array(ys)


@pytest.mark.parametrize("base", ["black", "blur"])
def test_insertion_deletion_match_oracle_and_batch(small_images, base):
    model = make_small_cnn(3)
    attr = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    attr[0, :, :4] = 0.0  # ties: broken by pixel index in both
    with torch.no_grad():
        t = model(small_images).argmax(1)
    eng = Engine(model, batch_size=7)
    calls = []
    h = model.register_forward_hook(lambda *a: calls.append(1))
    si, ci = insertion(eng, small_images, attr, base=base, steps=10, return_curves=True)
    sd, cd = deletion(eng, small_images, attr, base=base, steps=10, return_curves=True)
    h.remove()
    # batched: 4 images x 11 points per metric in full chunks of 7; the targets come from the
    # original-image point of each curve (no extra forward)
    assert len(calls) == 2 * math.ceil(44 / 7)
    calls.clear()
    h = model.register_forward_hook(lambda *a: calls.append(1))
    both = insertion_deletion(eng, small_images, attr, base=base, steps=10)
    h.remove()
    assert len(calls) == math.ceil(88 / 7)  # both curves in one stream of full chunks
    torch.testing.assert_close(both["insertion_curve"], ci, rtol=0, atol=1e-6)
    torch.testing.assert_close(both["deletion_curve"], cd, rtol=0, atol=1e-6)
    assert torch.equal(both["target"], t)
    sal = attr.double().sum(1).numpy()
    bases = torch.zeros_like(small_images) if base == "black" else gaussian_blur_base(small_images, 20.0)
    for i in range(4):
        wi = _oracle_curve(model, small_images[i], sal[i], bases[i], int(t[i]), 10, True)
        wd = _oracle_curve(model, small_images[i], sal[i], bases[i], int(t[i]), 10, False)
        np.testing.assert_allclose(ci[i].numpy(), wi, atol=1e-5)
        np.testing.assert_allclose(cd[i].numpy(), wd, atol=1e-5)
        assert abs(float(si[i]) - np.trapezoid(wi, dx=0.1)) < 1e-5


def test_blur_base_matches_scipy_nearest():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    got = gaussian_blur_base(x, 3.0)
    want = gaussian_filter(x.double().numpy(), sigma=(0, 0, 3.0, 3.0), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


def test_insertion_argument_errors(small_cnn, small_images):
    a = torch.zeros_like(small_images)
    with pytest.raises(ValueError, match="base"):
        insertion(small_cnn, small_images, a, base="grey")
    with pytest.raises(ValueError, match="curve"):
        deletion(small_cnn, small_images, a, curve="logit")
    with pytest.raises(ValueError, match="attributions"):
        insertion(small_cnn, small_images, a[:, :, :8])
    with pytest.raises(ValueError, match="steps"):
        insertion(small_cnn, small_images, a, steps=0)


# -- localization ---------------------------------------------------------------------------------
def test_localization_matches_sklearn_and_brute_force():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(5)
    maps = torch.randn(3, 3, 12, 12, generator=g)
    maps[1] = torch.round(maps[1] * 2) / 2  # many ties
    masks = torch.zeros(3, 12, 12, dtype=torch.bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 5:, :4] = True
    masks[2] = torch.rand(12, 12, generator=g) > 0.7
    out = localization(maps, masks)
    for i in range(3):
        s = maps[i].sum(0).double().numpy().reshape(-1)
        s = (s - s.min()) / (s.max() - s.min())
        y = masks[i].numpy().reshape(-1)
        assert abs(float(out["auc"][i]) - roc_auc_score(y, s)) < 1e-12
        f1s, maes = [0.0], [y.mean()]
        for t in np.unique(s):
            p = s >= t
            tp = (p & y).sum()
            f1s.append(2 * tp / (p.sum() + y.sum()))
            maes.append(np.abs(p.astype(float) - y).mean())
        assert abs(float(out["f1"][i]) - max(f1s)) < 1e-12
        assert abs(float(out["mae"][i]) - min(maes)) < 1e-12


def test_localization_perfect_map_and_errors():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, 2:5, 2:5] = True
    out = localization(masks.float(), masks)  # (N, H, W) map equal to the mask
    assert float(out["auc"][0]) == 1.0 and float(out["f1"][0]) == 1.0 and float(out["mae"][0]) == 0.0
    assert math.isnan(float(localization(torch.ones(1, 8, 8), torch.zeros(1, 8, 8))["auc"][0]))
    with pytest.raises(ValueError, match="masks"):
        localization(torch.ones(1, 8, 8), torch.full((1, 8, 8), 2))


# -- PIC, variant 'pair' == saliency.metrics.pic ------------------------------------------------
def _pair_reference(model, img_u8, sal, rmask, target, min_pred, aic, thresholds):
    from saliency.metrics import pic as P

    def pred(batch):
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            lg = model(x).float().double()  # what fastattr reads: float32 scores, float64 softmax
        if aic:
            return (lg.argmax(1) == target).float().numpy().tolist()
        return lg.softmax(1)[:, target].numpy().tolist()

    try:
        return P.compute_pic_metric(img_u8, sal, rmask, pred, list(thresholds), min_pred_value=min_pred)
    except P.ComputePicMetricError:
        return None


def _check_against_pair(model, images, attr, targets, min_pred, workers, thresholds=pic_pair.PAIR_THRESHOLDS):
    from saliency.metrics import pic as P

    n, _, h, w = images.shape
    rm = random_masks_like(n, h, w, seed=3)
    res = pic(model, images, attr, targets, random_masks=rm, min_pred=min_pred, workers=workers,
              thresholds=thresholds)
    imgs = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    sal = attr.double().sum(1).numpy()  # fastattr ranks by the float64 channel sum
    for kind, agg in (("sic", "median"), ("aic", "mean")):
        refs = [_pair_reference(model, imgs[i], sal[i], rm[i].numpy(), int(res.targets[i]), min_pred,
                                kind == "aic", thresholds)
                for i in range(n)]
        got = res.per_image[f"{kind}_auc"]
        for i, r in enumerate(refs):
            if r is None:
                assert math.isnan(float(got[i])) and res.per_image[f"{kind}_skip"][i] is not None
            else:
                assert abs(float(got[i]) - r.auc) < 1e-6
                np.testing.assert_allclose(res.per_image[f"{kind}_curves"][i].numpy(), r.curve_y, atol=1e-6)
        kept = [r for r in refs if r is not None]
        if kept:
            assert abs(getattr(res, kind) - P.aggregate_individual_pic_results(kept, agg).auc) < 1e-6
    return res


def test_blurred_image_bit_identical_to_pair():
    from saliency.metrics import pic as P

    rng = np.random.default_rng(0)
    img = (rng.random((16, 14, 3)) * 255).astype(np.uint8)
    for frac in (0.0, 0.05, 0.5, 0.9):
        m = rng.random((16, 14)) < frac
        # a grid-aligned 3x3 hole: the degenerate (cocircular) case where qhull's choice matters
        m[8:11, 8:11] = False
        m[7, 7:12] = m[11, 7:12] = m[7:12, 7] = m[7:12, 11] = True
        np.testing.assert_array_equal(pic_pair.blurred_image(img, m), P.create_blurred_image(img, m))
        assert pic_pair.webp_length(img) == P.estimate_image_entropy(img)


class Float64(nn.Module):
    """Runs the wrapped model in float64: its outputs no longer depend on the batch composition
    (float32 convolutions do, by ~1e-7), so PAIR's one-image calls and our chunks agree to 1e-12."""

    def __init__(self, model):
        super().__init__()
        self.model = model.double()

    def forward(self, x):
        return self.model(x.double())


def test_pic_pair_equals_pair_small_model_with_skips():
    # 16x16 images on a random CNN (run in float64, see Float64); each skip rule of PAIR is hit:
    # a flat image (blurred entropy not lower), a target the model does not predict (low
    # prediction), and AIC where the blurred image is still classified correctly.
    model = Float64(make_small_cnn(7, num_classes=3)).eval()
    g = torch.Generator().manual_seed(11)
    images = torch.rand(5, 3, 16, 16, generator=g)
    images[1] = torch.rand(3, 1, 1, generator=g).expand(3, 16, 16)  # flat
    images[2] = torch.nn.functional.avg_pool2d(images[2][None], 3, 1, 1)[0]  # smooth
    attr = torch.randn(5, 3, 16, 16, generator=g)
    with torch.no_grad():
        t = model(images).argmax(1)
    t[3] = (t[3] + 1) % 3
    res = _check_against_pair(model, images, attr, t, min_pred=0.5, workers=2)  # worker processes
    reasons = set(res.per_image["sic_skip"] + res.per_image["aic_skip"])
    assert {None, "low prediction", "blurred entropy >= original", "blurred prediction >= original"} <= reasons
    _check_against_pair(model, images[:3], attr[:3], t[:3], min_pred=0.0, workers=0)  # in-process
    # the original and fully blurred images computed once for several maps: the same result
    from fastattr.metrics.pic import pair_reference

    rm = random_masks_like(5, 16, 16, seed=3)
    ref = pair_reference(model, images, rm, workers=0)
    for a in (attr, attr.flip(-1)):
        want = pic(model, images, a, t, random_masks=rm, min_pred=0.5, workers=0)
        got = pic(model, images, a, t, random_masks=rm, min_pred=0.5, workers=0, reference=ref)
        assert np.array_equal([got.sic, got.aic], [want.sic, want.aic], equal_nan=True)
        assert torch.equal(got.per_image["entropies"].nan_to_num(-1), want.per_image["entropies"].nan_to_num(-1))
    with pytest.raises(ValueError, match="reference"):
        pic(model, images, attr, t, random_masks=random_masks_like(5, 16, 16, seed=4), reference=ref)


@pytest.mark.slow
def test_pic_pair_equals_pair_effnet(effnet, photos):
    import fastattr

    # one photo and three thresholds: PAIR's three Delaunay triangulations per threshold at
    # 224x224 take seconds each; the full threshold list is covered by the small-model test
    attr = fastattr.attribute(effnet, photos[:1], method="vanilla")
    res = _check_against_pair(effnet, photos[:1], attr, None, min_pred=0.5, workers=0, thresholds=(0.02, 0.1, 0.34))
    assert res.per_image["sic_skip"] == [None] and 0 <= res.sic <= 1


# -- PIC, variant 'idgi' ------------------------------------------------------------------------
def test_binned_curves_oracle():
    g = torch.Generator().manual_seed(0)
    lv = torch.rand(5, 25, generator=g, dtype=torch.float64) * 0.5  # bins above 0.5 stay empty
    r = torch.rand(5, 25, generator=g, dtype=torch.float64)
    c = (torch.rand(5, 25, generator=g) > 0.5).double()
    cx, sic, aic, sic_auc, aic_auc, filled = pic_idgi.binned_curves(lv, r, c)
    b = np.minimum((lv.numpy().reshape(-1) * 100).astype(int), 99)
    for k in np.unique(b):
        assert abs(sic[k] - np.median(r.numpy().reshape(-1)[b == k])) < 1e-12
        assert abs(aic[k] - c.numpy().reshape(-1)[b == k].mean()) < 1e-12
    assert not filled[60:].any() and float(sic[99]) == float(sic[filled][-1])  # held flat past the data
    assert abs(sic_auc - float(sic.mean())) < 1e-12


def test_pic_idgi_entropy_small_model():
    model = make_small_cnn(4, num_classes=3)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    attr = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res = pic(model, images, attr, variant="idgi", info="entropy", workers=0)
    lv, ratios = res.per_image["levels"], res.per_image["ratios"]
    assert lv.shape == (3, 25)
    # 100% revealed is the input itself: information 1 and ratio 1
    torch.testing.assert_close(lv[:, -1], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(ratios[:, -1], torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6)
    # 0% revealed is the PIL blur: its information level is 0 by construction
    torch.testing.assert_close(lv[:, 0], torch.zeros(3, dtype=torch.float64))
    assert 0 <= res.aic <= 1 and math.isfinite(res.sic)
    # WebP sizes from worker processes (running while the model does): the same levels
    par = pic(model, images, attr, variant="idgi", info="entropy", workers=2)
    assert torch.equal(par.per_image["levels"], lv) and par.sic == res.sic


def test_pic_idgi_levels_both_infos_equal_separate_calls():
    from fastattr.metrics.pic import pic_idgi_levels

    model = make_small_cnn(4, num_classes=3)
    g = torch.Generator().manual_seed(7)
    # MS-SSIM's 5 scales need > 160 px; a smooth image and map (one boundary between the revealed
    # and the blurred part) keep the WebP encodings quick
    images = torch.nn.functional.interpolate(torch.rand(1, 3, 21, 21, generator=g), size=168, mode="bilinear")
    attr = torch.linspace(0, 1, 168)[None, None, :, None] + torch.linspace(0, 0.5, 168)[None, None, None, :]
    attr = attr.expand(1, 3, 168, 168)
    both = pic_idgi_levels(model, images, attr, infos=("entropy", "msssim"), workers=0)
    for info in ("entropy", "msssim"):
        one = pic(model, images, attr, variant="idgi", info=info, workers=0)
        assert both[info].sic == one.sic and both[info].aic == one.aic
        assert torch.equal(both[info].per_image["levels"], one.per_image["levels"])


def test_msssim_levels_identity_and_order():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 176, 176, generator=g)
    noisy = (img + 0.3 * torch.randn(3, 176, 176, generator=g)).clamp(0, 1)
    lv = pic_idgi.msssim_levels(torch.stack([img, noisy]), img)
    assert abs(float(lv[0]) - 1.0) < 1e-6 and float(lv[1]) < 0.9
    with pytest.raises(ValueError, match="160"):
        pic_idgi.msssim_levels(img[None, :, :64, :64], img[:, :64, :64])


def test_pic_argument_errors(small_cnn, small_images):
    a = torch.zeros_like(small_images)
    with pytest.raises(ValueError, match="variant"):
        pic(small_cnn, small_images, a, variant="xrai")
    with pytest.raises(ValueError, match="info"):
        pic(small_cnn, small_images, a, variant="pair", info="msssim")
    with pytest.raises(ValueError, match="random_masks"):
        pic(small_cnn, small_images, a, random_masks=torch.zeros(1, 4, 4, dtype=torch.bool))


# -- arguments (issue 12 item 5, issue 16 items 3, 7, 15) -------------------------------------------
ALL_METRICS = {
    "insertion": lambda m, x, a, **k: insertion(m, x, a, steps=4, **k),
    "deletion": lambda m, x, a, **k: deletion(m, x, a, steps=4, **k),
    "insertion_deletion": lambda m, x, a, **k: insertion_deletion(m, x, a, steps=4, **k),
    "pic_pair": lambda m, x, a, **k: pic(m, x, a, min_pred=0.0, workers=0, thresholds=(0.1, 0.5), **k),
    "pic_idgi": lambda m, x, a, **k: pic(m, x, a, variant="idgi", workers=0, **k),
}


def _values(r):
    """Comparable numbers of any metric's result."""
    if isinstance(r, dict):
        return torch.cat([r["insertion"], r["deletion"]])
    if hasattr(r, "sic"):
        return torch.tensor([r.sic, r.aic], dtype=torch.float64).nan_to_num(-1.0)
    return r


@pytest.mark.parametrize("name", sorted(ALL_METRICS))
def test_target_keyword_and_targets_alias(name, small_cnn, small_images):
    f = ALL_METRICS[name]
    a = torch.randn(small_images.shape, generator=torch.Generator().manual_seed(0))
    by_target = _values(f(small_cnn, small_images, a, target=3))
    torch.testing.assert_close(_values(f(small_cnn, small_images, a, targets=3)), by_target)
    torch.testing.assert_close(_values(f(small_cnn, small_images, a, target=[3, 3, 3, 3])), by_target)
    with pytest.raises(TypeError, match="target"):
        f(small_cnn, small_images, a, target=3, targets=3)


@pytest.mark.parametrize("name", sorted(ALL_METRICS))
def test_bad_targets_images_and_maps_are_named_errors(name, small_cnn, small_images):
    f = ALL_METRICS[name]
    x = small_images[:2]
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="target"):  # was silently truncated to [1, 2]
        f(small_cnn, x, a, target=[1.7, 2.2])
    with pytest.raises(TypeError, match="target"):
        f(small_cnn, x, a, target="3")
    for bad in (10, -1, [0, 10], 2 ** 70):  # the small CNN has 10 classes
        with pytest.raises(ValueError, match="target"):
            f(small_cnn, x, a, target=bad)
    with pytest.raises(ValueError, match="target"):
        f(small_cnn, x, a, target=[0, 1, 2])  # 3 targets for 2 images
    with pytest.raises(ValueError, match="images"):
        f(small_cnn, x[:0], a[:0])
    nan_map = a.clone()
    nan_map[1, 0, 3, 4] = float("nan")  # one NaN pixel: was a NaN AUC
    with pytest.raises(ValueError, match="attributions"):
        f(small_cnn, x, nan_map)
    with pytest.raises(ValueError, match="attributions"):
        f(small_cnn, x, a[:, :, :8])


@pytest.mark.parametrize("name", sorted(ALL_METRICS))
def test_huge_finite_map_ranks_like_the_scaled_map(name, small_cnn, small_images):
    # |A| up to ~3e38: the float32 channel sum overflowed and the map was refused as "NaN or inf"
    a = torch.randn(small_images.shape, generator=torch.Generator().manual_seed(1))
    a = a / a.abs().max()
    f = ALL_METRICS[name]
    huge = f(small_cnn, small_images, a * 3e38)
    torch.testing.assert_close(_values(huge), _values(f(small_cnn, small_images, a)))


def test_numpy_integers_accepted_and_counts_checked(small_cnn, small_images):
    a = torch.randn(small_images.shape, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(insertion(small_cnn, small_images, a, steps=np.int64(5)),
                               insertion(small_cnn, small_images, a, steps=5))
    torch.testing.assert_close(deletion(small_cnn, small_images, a, target=np.int64(2), batch_size=np.int32(3)),
                               deletion(small_cnn, small_images, a, target=2))
    torch.testing.assert_close(deletion(small_cnn, small_images, a, target=np.array([2, 1, 0, 2])),
                               deletion(small_cnn, small_images, a, target=[2, 1, 0, 2]))
    with pytest.raises(ValueError, match="num_points"):  # was a NaN AIC
        pic(small_cnn, small_images, a, num_points=0, min_pred=0.0, workers=0)
    with pytest.raises(ValueError, match="steps"):
        insertion(small_cnn, small_images, a, steps=0)
    with pytest.raises(TypeError, match="steps"):
        insertion(small_cnn, small_images, a, steps=2.5)
    with pytest.raises(ValueError, match="steps"):  # a check, not a 10**12-point allocation
        insertion(small_cnn, small_images, a, steps=10 ** 12)
    with pytest.raises(ValueError, match="batch_size"):
        insertion(small_cnn, small_images, a, batch_size=0)
    with pytest.raises(ValueError, match="sigma"):
        insertion(small_cnn, small_images, a, base="blur", sigma=float("nan"))
    with pytest.raises(ValueError, match="min_pred"):
        pic(small_cnn, small_images, a, min_pred=float("inf"))
    with pytest.raises(ValueError, match="workers"):
        pic(small_cnn, small_images, a, workers=-1)
    with pytest.raises(TypeError, match="absolute"):
        localization(a, torch.ones(4, 16, 16, dtype=torch.bool), absolute="yes")
    with pytest.raises(ValueError, match="masks"):
        localization(a[:0], torch.ones(0, 16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="random_masks"):
        pic(small_cnn, small_images, a, random_masks=torch.full((4, 16, 16), 0.5))


def test_pic_idgi_in_process_when_the_blur_is_not_smaller():
    # a flat image: its PIL blur is the image, so the WebP sizes give no scale. In process
    # (workers=0) this raised NameError 'bokeh'; now that image's levels are NaN (no curve points)
    model = make_small_cnn(4, num_classes=3)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=g)
    images[0] = 0.5
    attr = torch.randn(2, 3, 32, 32, generator=g)
    res = pic(model, images, attr, variant="idgi", info="entropy", workers=0)
    lv = res.per_image["levels"]
    assert torch.isnan(lv[0]).all() and torch.isfinite(lv[1]).all()
    assert math.isfinite(res.sic) and math.isfinite(res.aic)


def test_pic_idgi_levels_and_ratios_match_a_direct_oracle():
    """Every bokeh image built, encoded and classified one by one (SPEC: top-t% pixels of the
    input over the PIL blur, 25 evenly spaced percentiles, WebP-size entropy)."""
    model = make_small_cnn(6, num_classes=4)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 24, 24, generator=g)
    attr = torch.randn(2, 3, 24, 24, generator=g)
    res = pic(model, images, attr, target=[1, 2], variant="idgi", info="entropy", workers=0)
    u8 = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(2):
        base = pic_idgi.pil_blur(u8[i])
        order = np.argsort(-attr[i].double().sum(0).numpy().reshape(-1), kind="stable")
        lo, hi = pic_pair.webp_length(base), pic_pair.webp_length(u8[i])
        with torch.no_grad():
            p_in = float(model(torch.from_numpy(u8[i]).permute(2, 0, 1)[None].float() / 255).double().softmax(1)[0, i + 1])
        for k, pct in enumerate(np.linspace(0, 100, 25)):
            m = np.zeros(24 * 24, bool)
            m[order[: int(round(pct / 100 * 24 * 24))]] = True
            bokeh = np.where(m.reshape(24, 24, 1), u8[i], base)
            level = np.clip((pic_pair.webp_length(bokeh) - lo) / (hi - lo), 0, 1)
            assert float(res.per_image["levels"][i, k]) == level
            with torch.no_grad():
                lg = model(torch.from_numpy(bokeh).permute(2, 0, 1)[None].float() / 255).double()
            # float32 convolutions differ by batch composition (chunks of 64 vs one image): ~1e-6
            want = float(lg.softmax(1)[0, i + 1]) / p_in
            assert abs(float(res.per_image["ratios"][i, k]) - want) < 1e-5 * max(1.0, want)
            assert float(res.per_image["correct"][i, k]) == float(lg.argmax(1)[0] == i + 1)


MARK = torch.tensor([128 / 255, 0.0, 1.0])  # exact in uint8 too; no blur or insertion makes it


class NaNModel(nn.Module):
    """3 classes; the scores are NaN when the top-left pixel is MARK (only image 1 has it)."""

    def forward(self, x):
        s = x.mean((1, 2, 3))
        bad = (x[:, :, 0, 0] == MARK).all(1)
        return torch.stack([s, 2 * s, torch.where(bad, torch.full_like(s, float("nan")), s)], 1)


@pytest.mark.parametrize("name", sorted(ALL_METRICS))
def test_model_with_nan_scores_is_a_named_error(name):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    x[1, :, 0, 0] = MARK
    a = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"non-finite.*images\[1\]"):
        ALL_METRICS[name](NaNModel().eval(), x, a)


def test_metrics_on_a_float64_model_equal_float32(small_images):
    """The engine runs the model in its own dtype; the metrics give the float32 model's numbers."""
    m32 = make_small_cnn(8)
    m64 = make_small_cnn(8).double()
    a = torch.randn(small_images.shape, generator=torch.Generator().manual_seed(4))
    r32 = insertion_deletion(m32, small_images, a, steps=5)
    r64 = insertion_deletion(m64, small_images, a, steps=5)
    torch.testing.assert_close(r64["insertion"].float(), r32["insertion"], rtol=0, atol=1e-5)
    p32 = pic(m32, small_images, a, min_pred=0.0, workers=0, thresholds=(0.1, 0.5))
    p64 = pic(m64, small_images, a, min_pred=0.0, workers=0, thresholds=(0.1, 0.5))
    assert abs(p32.aic - p64.aic) < 1e-5 or (math.isnan(p32.aic) and math.isnan(p64.aic))
