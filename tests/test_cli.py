"""The `fastattr explain` command: defaults (bundled model and photos), user files, bad input."""
import numpy as np
import pytest
from PIL import Image

from fastattr.cli import main


@pytest.mark.slow
def test_explain_defaults_writes_heatmaps_and_maps(tmp_path, capsys):
    assert main(["explain", "--steps", "2", "--idgi", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Egyptian cat (285)" in out and "espresso (967)" in out
    for name in ("chelsea", "coffee"):
        png = tmp_path / f"{name}_ig_idgi.png"
        assert Image.open(png).size[0] > 300
        m = np.load(tmp_path / f"{name}_ig_idgi.npy")
        assert m.shape == (3, 224, 224) and np.isfinite(m).all() and np.abs(m).sum() > 0
    # IDGI completeness is exact: every printed delta is ~0
    deltas = [float(line.split()[-2]) for line in out.splitlines() if line.startswith(("chelsea", "coffee"))]
    assert len(deltas) == 2 and max(abs(d) for d in deltas) < 1e-5


def test_explain_user_file_and_saved_model(tmp_path, capsys):
    import torch

    from conftest import make_small_cnn

    img = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "pic.png")
    torch.save(make_small_cnn(), tmp_path / "model.pt")
    code = main(["explain", str(tmp_path / "pic.png"), "--model", str(tmp_path / "model.pt"), "--size", "16",
                 "--method", "vanilla", "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 0
    assert np.load(tmp_path / "o" / "pic_vanilla.npy").shape == (3, 16, 16)


def test_explain_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert main(["explain", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", "--method", "nope"])
