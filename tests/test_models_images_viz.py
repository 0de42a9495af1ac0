"""Tests for fastattr.models (default model, class names), fastattr.images and fastattr.viz."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastattr import images, models, viz


# ---------------------------------------------------------------- class names


def test_class_names():
    names = models.class_names()
    assert len(names) == 1000
    assert names[0] == "tench"
    assert names[285] == "Egyptian cat"
    assert names[967] == "espresso"
    assert names[999] == "toilet tissue"
    assert names[638] == names[639] == "maillot"  # duplicated in the standard list
    assert not any("_" in n for n in names)
    assert models.class_name(285) == "Egyptian cat"
    assert models.class_name(np.int64(967)) == "espresso"
    names[0] = "mutated"  # a copy: the cached list is not affected
    assert models.class_name(0) == "tench"
    with pytest.raises(IndexError):
        models.class_name(1000)


# ---------------------------------------------------------------- model


@pytest.fixture(scope="module")
def model():
    return models.load_default_model()


@pytest.fixture(scope="module")
def bundled():
    return images.bundled_images()


def test_normalized_zeros_are_black():
    net = models.Normalized(torch.nn.Identity())
    out = net(torch.zeros(2, 3, 4, 4))
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (-mean / std).expand(2, 3, 4, 4))
    assert not list(net.parameters())  # mean/std are buffers


def test_load_default_model_quiet_and_fresh(capsys, model):
    m2 = models.load_default_model()
    assert capsys.readouterr().out == ""  # "Loaded pretrained weights..." suppressed
    assert isinstance(m2, models.Normalized) and not m2.training
    assert m2 is not model
    p1, p2 = next(model.parameters()), next(m2.parameters())
    assert p1 is not p2 and torch.equal(p1, p2)


def test_bundled_images(bundled):
    assert tuple(bundled) == images.BUNDLED
    assert {"chelsea", "coffee"} <= set(bundled)
    for x in bundled.values():
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


@pytest.mark.parametrize("name, cls, pmin", [("chelsea", 285, 0.7), ("coffee", 967, 0.7)])
def test_default_model_predictions(model, bundled, name, cls, pmin):
    with torch.no_grad():
        p = model(bundled[name][None]).softmax(-1)[0]
    assert p.shape == (1000,)
    assert int(p.argmax()) == cls
    assert float(p[cls]) > pmin


def test_all_bundled_confident(model, bundled):
    x = torch.stack(list(bundled.values()))
    with torch.no_grad():
        p = model(x).softmax(-1)
    assert (p.max(-1).values >= 0.5).all()


# ---------------------------------------------------------------- load_image


def test_load_image_png_file(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    x = images.load_image(path)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # same pixels via a file and via the array
    torch.testing.assert_close(x, images.load_image(arr))
    assert images.load_image(str(path), size=64, crop=False).shape == (3, 64, 64)
    # greyscale / RGBA files become RGB
    Image.fromarray(arr[:, :, 0]).save(tmp_path / "g.png")
    Image.fromarray(np.dstack([arr, arr[:, :, :1]])).save(tmp_path / "a.png")
    assert images.load_image(tmp_path / "g.png", size=32).shape == (3, 32, 32)
    assert images.load_image(tmp_path / "a.png", size=32).shape == (3, 32, 32)


def test_load_image_array_values_and_centre_crop():
    # constant colour survives resizing exactly (up to float rounding)
    arr = np.full((50, 80, 3), (51, 102, 255), dtype=np.uint8)
    x = images.load_image(arr, size=16)
    torch.testing.assert_close(x, torch.tensor([0.2, 0.4, 1.0]).view(3, 1, 1).expand(3, 16, 16))
    # float arrays are taken as [0, 1]
    xf = images.load_image(arr.astype(np.float32) / 255, size=16)
    torch.testing.assert_close(xf, x)
    # wide image: red | green | blue thirds; the centre crop keeps only green
    wide = np.zeros((100, 300, 3), dtype=np.uint8)
    wide[:, :100, 0] = 255
    wide[:, 100:200, 1] = 255
    wide[:, 200:, 2] = 255
    c = images.load_image(wide, size=50)
    assert c.shape == (3, 50, 50)
    inner = c[:, :, 2:-2]  # the antialiasing filter blends the outermost columns with red/blue
    assert float(inner[1].min()) > 0.99 and float(inner[0].max()) < 0.01 and float(inner[2].max()) < 0.01
    assert float(c[1].min()) > 0.8
    # direct resize keeps all three
    d = images.load_image(wide, size=50, crop=False)
    assert float(d[0, :, 0].min()) > 0.99 and float(d[2, :, -1].min()) > 0.99


# ---------------------------------------------------------------- viz


def test_clip_percentile_matches_numpy_oracle():
    rng = np.random.default_rng(1)
    attr = rng.standard_normal((3, 40, 50)).astype(np.float32)
    out = viz.clip_percentile(attr)
    s = np.abs(attr).sum(0)
    lo, hi = np.percentile(s.astype(np.float64), [80, 99])
    assert out.shape == (40, 50) and out.dtype == np.float32
    assert np.all(out[s <= lo] == 0.0)
    assert np.all(out[s >= hi] == 1.0)
    assert (s <= lo).mean() >= 0.8 and (s >= hi).mean() >= 0.01
    mid = (s > lo) & (s < hi)
    np.testing.assert_allclose(out[mid], (s[mid] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert np.all((out[mid] > 0) & (out[mid] < 1))
    # torch input and (H, W) input give the same
    np.testing.assert_array_equal(viz.clip_percentile(torch.from_numpy(attr)), out)
    np.testing.assert_array_equal(viz.clip_percentile(s), out)
    # signed: channel sum without abs
    ss = attr.sum(0)
    lo2, hi2 = np.percentile(ss.astype(np.float64), [80, 99])
    outs = viz.clip_percentile(attr, signed=True)
    assert np.all(outs[ss <= lo2] == 0.0) and np.all(outs[ss >= hi2] == 1.0)
    # a constant map is all zeros, not NaN
    assert np.all(viz.clip_percentile(np.zeros((3, 8, 8))) == 0.0)


def test_save_heatmap_and_grid(tmp_path, bundled):
    img = bundled["chelsea"]
    attr = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "sub" / "h.png"
    viz.save_heatmap(path, img, attr, title="Egyptian cat - IG")
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert 400 <= w <= 900 and 200 <= h <= 500 and w > h
    assert path.stat().st_size <= 160_000

    gpath = tmp_path / "grid.png"
    imgs = [bundled["chelsea"], bundled["coffee"]]
    maps = {"IG": [attr, attr], "VG": [attr.abs(), attr[:1]]}
    viz.save_grid(gpath, imgs, maps, row_titles=["chelsea", "coffee"], col_titles=["image", "IG", "VG"])
    with Image.open(gpath) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w > h > 200  # 3 columns x 2 rows
        assert im.mode in ("RGB", "RGBA"), "a grid of photos keeps full colour (no palette)"
    with pytest.raises(ValueError):
        viz.save_grid(gpath, imgs, {"IG": [attr]})
