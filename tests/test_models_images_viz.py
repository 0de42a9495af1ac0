"""Tests for fastattr.models (default model, class names), fastattr.images and fastattr.viz."""
import os

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
    # the centre square is cropped before resizing: only green, no red/blue bleeding in at the edges
    torch.testing.assert_close(c, torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 50, 50))
    # direct resize keeps all three
    d = images.load_image(wide, size=50, crop=False)
    assert float(d[0, :, 0].min()) > 0.99 and float(d[2, :, -1].min()) > 0.99


def test_absurd_aspect_ratios_and_empty_images_are_refused():
    """Issue 16 item 13: a 1x5000 strip is refused by name (UserError) before any resize; 50:1 is
    the limit; the refusal is the same for files and arrays."""
    from fastattr.errors import UserError

    with pytest.raises(UserError, match=r"1x5000 pixels: an aspect ratio beyond 50:1"):
        images.load_image(np.zeros((5000, 1, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="aspect ratio"):
        images.load_image(np.zeros((2, 101), dtype=np.float32), crop=False)
    assert images.load_image(np.zeros((1, 50, 3), dtype=np.uint8), size=8).shape == (3, 8, 8)
    with pytest.raises(UserError, match="empty"):
        images.load_image(np.zeros((0, 4, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="size"):
        images.load_image(np.zeros((4, 4, 3), dtype=np.uint8), size=0)


def test_large_images_are_reduced_before_the_float_resize(tmp_path):
    """Sources over 4x the output are box-reduced in uint8 (and JPEGs decoded at a smaller DCT
    scale) before the float resize: the result stays close to a full-resolution float resize."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    big = np.kron(small, np.ones((40, 40, 1), dtype=np.uint8))  # 2400x2400, smooth at the 32 px scale
    full = torch.nn.functional.interpolate(torch.from_numpy(big).permute(2, 0, 1)[None].float() / 255,
                                           size=(32, 32), mode="bilinear", antialias=True)[0]
    x = images.load_image(big, size=32)
    assert float((x - full).abs().max()) < 0.05
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    xj = images.load_image(tmp_path / "big.jpg", size=32)
    assert float((xj - full).abs().mean()) < 0.03


def test_fifo_and_folders_are_refused_without_blocking(tmp_path):
    """Issue 16 item 12: a FIFO named *.png used to block open() forever."""
    import signal

    from fastattr.errors import UserError

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    signal.alarm(20)  # a regression hangs: fail the test instead of the suite
    try:
        with pytest.raises(UserError, match="a FIFO, not an image file"):
            images.load_image(fifo)
        with pytest.raises(UserError, match="not a regular file"):
            images.load_image(tmp_path)
    finally:
        signal.alarm(0)


# ru_maxrss is the process's peak, so one fresh process for the three images bounds the largest
# of them (the peak only rises).
MEMORY_PROBE = """
import json, resource, sys
import numpy as np
from fastattr.images import load_image
from fastattr.errors import UserError
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
load_image(np.zeros((8, 8, 3), np.uint8), size=224)  # warm up torch's resize
before, results = peak_mb(), {}
for name, size in (("strip.png", 224), ("narrow.png", 2048), ("huge.jpg", 224)):
    try:
        load_image(f"{sys.argv[1]}/{name}", size=size)
        results[name] = "ok"
    except UserError as exc:
        results[name] = str(exc)
print(json.dumps([peak_mb() - before, results]))
"""


def test_decoding_memory_is_bounded_by_the_output(tmp_path):
    """Issue 16 item 13, measured as the audit did (peak RSS of a fresh process). Before / after
    the fix, measured here one image per process: a 1x5000 PNG at --size 224 2.9 GB / 0.3 MB
    (refused from its header), a 5x200 PNG at 2048 (the whole image resized before cropping)
    2.0 GB / 48 MB, a 6000x6000 JPEG at 224 1.07 GB / 21 MB (DCT-scaled decode). The bound for
    the largest of the three is generous."""
    import json
    import subprocess
    import sys

    Image.fromarray(np.full((5000, 1, 3), 128, np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 5, 3), dtype=np.uint8)).save(tmp_path / "narrow.png")
    yy, xx = np.mgrid[0:6000, 0:6000]
    Image.fromarray(np.dstack([(xx % 256), (yy % 256), ((xx + yy) % 256)]).astype(np.uint8)).save(
        tmp_path / "huge.jpg", quality=80)
    del yy, xx
    res = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    peak, results = json.loads(res.stdout.strip().splitlines()[-1])
    assert "aspect ratio beyond 50:1" in results["strip.png"], results
    assert results["narrow.png"] == results["huge.jpg"] == "ok", results
    assert peak < 250, f"decoding peaked at {peak:.0f} MB above the baseline"


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


def test_overlay_shows_smoothed_clipped_saliency_over_the_dimmed_photo():
    """Below the 80th percentile of the smoothed |A| the overlay is the photo at 55%; at a strong
    blob it is the colour map's top colour (alpha 0.9); sigma=0 turns the smoothing off."""
    import matplotlib

    rng = np.random.default_rng(0)
    img = rng.random((3, 64, 64)).astype(np.float32)
    attr = np.zeros((3, 64, 64), np.float32)
    attr[:, 20:30, 20:30] = -1.0  # sign does not matter: |A|
    ov = viz.overlay(img, attr)
    assert ov.shape == (64, 64, 3) and ov.dtype == np.float32 and 0 <= ov.min() and ov.max() <= 1
    np.testing.assert_allclose(ov[50:, 50:], 0.55 * img.transpose(1, 2, 0)[50:, 50:], atol=1e-6)
    top = np.asarray(matplotlib.colormaps["inferno"](1.0)[:3], np.float32)
    np.testing.assert_allclose(ov[25, 25], 0.1 * 0.55 * img[:, 25, 25] + 0.9 * top, atol=1e-5)
    m = viz.clip_percentile(attr)
    col = matplotlib.colormaps["inferno"](m)[:, :, :3]
    a = 0.9 * m[:, :, None]
    np.testing.assert_allclose(viz.overlay(img, attr, sigma=0), (1 - a) * 0.55 * img.transpose(1, 2, 0) + a * col,
                               atol=1e-5)
    with pytest.raises(ValueError, match="image is"):
        viz.overlay(img, attr[:, :32])


def test_signed_limits_matches_numpy_oracle():
    rng = np.random.default_rng(2)
    attr = rng.standard_normal((3, 20, 30)).astype(np.float32)
    s, v, signed = viz.signed_limits(attr)
    np.testing.assert_array_equal(s, attr.sum(0))
    assert v == pytest.approx(np.percentile(np.abs(attr.sum(0)), 99)) and signed
    s, v, signed = viz.signed_limits(np.abs(attr))
    assert not signed and v == pytest.approx(np.percentile(np.abs(attr).sum(0), 99))
    assert viz.signed_limits(np.zeros((3, 4, 4)))[1:] == (1.0, False)
    spike = np.zeros((3, 20, 20))
    spike[0, 0, 0] = 5.0  # 99th percentile 0: clip at the max instead of dividing by zero
    assert viz.signed_limits(spike)[1] == 5.0
    with pytest.raises(ValueError, match="NaN"):
        viz.signed_limits(np.full((3, 4, 4), np.nan))


def test_heatmap_has_input_map_with_colour_bar_and_overlay(bundled):
    """Three panels: the input itself; the channel sum in RdBu_r centred at 0, clipped at
    +-99th percentile of |sum|, with a colour bar; the overlay. Unsigned maps use a sequential map."""
    img = bundled["chelsea"]
    attr = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
    fig = viz.heatmap_figure(img, attr, title="t")
    panels = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 and len(fig.axes) == 4  # + the colour bar
    np.testing.assert_array_equal(panels[0].images[0].get_array(), img.permute(1, 2, 0).numpy())
    m = panels[1].images[0]
    v = np.percentile(np.abs(attr.sum(0).numpy()), 99)
    assert m.get_cmap().name == "RdBu_r" and m.get_clim() == pytest.approx((-v, v))
    np.testing.assert_allclose(m.get_array(), attr.sum(0).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(panels[2].images[0].get_array(), viz.overlay(img, attr))
    unsigned = viz.heatmap_figure(img, attr.abs()).axes[1].images[0]
    assert unsigned.get_cmap().name == "magma" and unsigned.get_clim()[0] == 0


def test_save_heatmap_and_grid(tmp_path, bundled):
    img = bundled["chelsea"]
    attr = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "sub" / "h.png"
    viz.save_heatmap(path, img, attr, title="Egyptian cat - IG")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB", "full colour, no palette"
        w, h = im.size
        assert 1000 <= w <= 1400 and 350 <= h <= 500
        # the photo keeps its colours: a palette would leave at most 256
        assert len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 5000

    gpath = tmp_path / "grid.png"
    imgs = [bundled["chelsea"], bundled["coffee"]]
    maps = {"IG": [attr, attr], "VG": [attr.abs(), attr[:1]]}
    viz.save_grid(gpath, imgs, maps, row_titles=["chelsea", "coffee"], col_titles=["image", "IG", "VG"])
    with Image.open(gpath) as im:
        assert im.format == "PNG"
        w, h = im.size
        assert w > h > 200  # 3 columns x 2 rows
        assert im.mode == "RGB", "a grid of photos keeps full colour (no palette)"
    with pytest.raises(ValueError):
        viz.save_grid(gpath, imgs, {"IG": [attr]})
