"""Issue 22: `fastattr eval` must never print a wrong table. Each numbered item as a user meets it,
the command in a subprocess: --maps with the run's model from another folder (1), with an image
changed since the run (2), a TorchScript model and the guided backward (3, also the Python API),
masks stored as 0/1, empty, multi-valued or of another aspect ratio (4), --methods / --steps with
--maps (5), an exported program at another --size (7), and an output callable giving (N, 0)
scores (9). (Bad values, item 6: test_cli_errors.py; killed workers, item 8: test_worker_processes.py.)"""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
from clitools import FAST_EVAL, make_images, one_line_error, run_fastattr, user_folder
from conftest import make_small_cnn
from PIL import Image

import fastattr
from fastattr import metrics as M
from fastattr.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _rows(path):
    return list(csv.DictReader(open(path, newline="", encoding="utf-8")))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """a/ (model.pt2, model_ts.pt, data/) with a `fastattr run` of it made from inside a/ with the
    model named by a relative path, as a user types it; b/ holds another model.pt2."""
    root = tmp_path_factory.mktemp("eval22")
    a, b = user_folder(root / "a", seed=1), user_folder(root / "b", seed=2)
    res = run_fastattr("run", "data", "--model", "model.pt2", "--out", "run", "--size", "32", "--steps", "2",
                       "--idgi", "--workers", "0", "--threads", "1", "--no-progress", cwd=a)
    assert res.returncode == 0, res.stderr[-2000:]
    return a, b


def test_item1_maps_use_the_runs_model_from_another_folder(folders, monkeypatch, capsys):
    """From b/, which has its own model.pt2, `eval --maps ../a/run` scores with a/model.pt2 (it used
    to load b/model.pt2 silently: another table under the same header); naming b's model is a
    one-line error naming both files, as is a run.json that recorded the path as typed."""
    a, b = folders
    res = run_fastattr("eval", "../a/data", "--maps", "../a/run", "--out", "e1", *FAST_EVAL, cwd=b)
    assert res.returncode == 0, res.stderr[-2000:]
    assert main(["eval", str(a / "data"), "--maps", str(a / "run"), "--model", str(a / "model.pt2"), "--out",
                 str(a / "e1"), *FAST_EVAL]) == 0  # the reference: the run's model named explicitly
    got, want = _rows(b / "e1" / "per_image.csv"), _rows(a / "e1" / "per_image.csv")
    assert [r["insertion"] for r in got] == [r["insertion"] for r in want] and len(got) == 5
    assert str(a / "model.pt2") in (b / "e1" / "table.md").read_text(encoding="utf-8")

    res = run_fastattr("eval", "../a/data", "--maps", "../a/run", "--model", "model.pt2", "--out", "e2",
                       *FAST_EVAL, cwd=b)
    assert res.returncode == 2
    line = one_line_error(res.stderr, "eval")
    assert f"were made with {a / 'model.pt2'} (sha256" in line and f"but {b / 'model.pt2'} is another model" in line
    assert not (b / "e2").exists()

    old = b / "old_run"  # run.json of a run made before the absolute path was recorded
    shutil.copytree(a / "run", old)
    cfg = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**cfg, "model": "model.pt2"}))
    monkeypatch.chdir(b)
    capsys.readouterr()
    assert main(["eval", "../a/data", "--maps", "old_run", "--out", "e3", *FAST_EVAL]) == 2
    line = one_line_error(capsys.readouterr().err, "eval")
    assert "were made with model.pt2 (sha256" in line and f"but {b / 'model.pt2'} is another model" in line


def test_item2_maps_of_an_image_changed_since_are_refused(folders, tmp_path):
    a, _ = folders
    data = tmp_path / "data"
    shutil.copytree(a / "data", data)
    assert main(["run", str(data), "--model", str(a / "model.pt2"), "--out", str(tmp_path / "run"), "--size", "32",
                 "--steps", "2", "--workers", "0", "--no-progress"]) == 0
    changed = data / "c.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(changed)
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime even on coarse clocks
    res = run_fastattr("eval", "data", "--maps", "run", "--out", "e", *FAST_EVAL, cwd=tmp_path)
    assert res.returncode == 2
    line = one_line_error(res.stderr, "eval")
    assert "1 of the run's images changed since it made their maps (size or modification time: c.png)" in line
    assert not (tmp_path / "e").exists()


def test_item3_torchscript_guided_rows_are_skipped_with_the_reason(folders, tmp_path):
    """eval used to print '(guided bwd)' rows equal to the standard ones image for image."""
    a, _ = folders
    res = run_fastattr("eval", a / "data", "--model", a / "model_ts.pt", "--methods", "ig", "--size", "32",
                       "--steps", "2", "--out", tmp_path / "e", *FAST_EVAL)
    assert res.returncode == 0, res.stderr[-2000:]
    assert ("fastattr eval: not evaluated: ig (guided bwd), ig + IDGI (guided bwd): ValueError: backward: 'guided' "
            "cannot reach inside a TorchScript model") in res.stderr
    assert [r["label"] for r in _rows(tmp_path / "e" / "table.csv")] == ["ig", "ig + IDGI"]
    assert "Not evaluated" in (tmp_path / "e" / "table.md").read_text(encoding="utf-8")


def test_item3_python_api_refuses_guided_on_torchscript():
    model = make_small_cnn(seed=1)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for scripted in (torch.jit.script(model), torch.jit.trace(model, x), torch.nn.Sequential(torch.jit.script(model)).eval()):
        with pytest.raises(ValueError, match=r"^backward: 'guided' cannot reach inside a TorchScript model"):
            fastattr.attribute(scripted, x, backward="guided")
    assert not torch.equal(fastattr.attribute(model, x, backward="guided"), fastattr.attribute(model, x))


def test_item4_masks_in_either_convention_and_refusals(folders, tmp_path):
    """The same image with its mask stored as 0/1 and as 0/255 scores the same localization (0/1
    used to read as empty: F1 = 0 averaged in); an empty mask, a label map and a mask of another
    aspect ratio get no score, are named and counted, and the table is the mean of the others."""
    a, _ = folders
    data, masks = tmp_path / "data", tmp_path / "masks"
    photo = np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    obj = np.zeros((30, 40), np.uint8)
    obj[5:20, 10:30] = 1
    labels = obj * 15
    labels[0, :] = 255
    for name, m in (("ones.png", obj), ("full255.png", obj * 255), ("empty.png", obj * 0), ("labels.png", labels),
                    ("aspect.png", np.ones((30, 30), np.uint8) * 255)):
        data.mkdir(exist_ok=True), masks.mkdir(exist_ok=True)
        Image.fromarray(photo).save(data / name)
        Image.fromarray(m).save(masks / name)
    res = run_fastattr("eval", data, "--masks", masks, "--model", a / "model.pt2", "--size", "32", "--methods",
                       "vanilla", "--metrics", "localization", "--bootstrap", "0", "--workers", "0",
                       "--no-progress", "--out", tmp_path / "e")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {r["image"]: r for r in _rows(tmp_path / "e" / "per_image.csv")}
    keys = ("loc_auc", "loc_f1", "loc_mae", "loc_auc_abs")
    assert all(rows["ones.png"][k] == rows["full255.png"][k] != "" for k in keys)
    for name in ("empty.png", "labels.png", "aspect.png"):
        assert all(rows[name][k] == "" for k in keys), rows[name]
    assert rows["empty.png"]["mask"] == "empty: no object pixel"
    assert rows["labels.png"]["mask"].startswith("refused: it is not a binary mask (3 values: 0, 15, 255)")
    assert rows["aspect.png"]["mask"].startswith("refused: it is 30x30 pixels, its image 40x30: another aspect")
    # the statistic: over the two usable masks only, equal to a direct call with the object mask
    table = _rows(tmp_path / "e" / "table.csv")[0]
    assert float(table["loc_f1"]) == pytest.approx(float(rows["ones.png"]["loc_f1"]), abs=1e-12)
    from fastattr.images import load_image
    from fastattr.models import load_model

    x = load_image(data / "ones.png", size=32)[None]
    want_mask = load_image(obj.astype(np.float32), size=32)[0][None] > 0.5
    model = load_model(a / "model.pt2")
    got = M.localization(fastattr.attribute(model, x, method="vanilla"), want_mask)
    assert float(rows["ones.png"]["loc_f1"]) == pytest.approx(float(got["f1"][0]), abs=1e-9)
    note = ("Localization skipped 1 with an empty mask (no object pixel) (empty.png), 2 with a refused mask "
            "(aspect.png: it is 30x30 pixels")
    assert note in (tmp_path / "e" / "table.md").read_text(encoding="utf-8") and note in res.stderr


def test_item4_localization_metric_gives_nan_for_degenerate_masks():
    maps = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[1] = True
    masks[2, :4] = True
    out = M.localization(maps, masks)
    for k in ("auc", "f1", "mae"):
        assert torch.isnan(out[k][:2]).all() and torch.isfinite(out[k][2]), k


@pytest.mark.parametrize("extra, option", [(["--methods", "ig"], "methods"), (["--steps", "4"], "steps"),
                                           (["--rule", "trapezoid"], "rule"), (["--target", "3"], "target")])
def test_item5_map_options_with_maps_are_refused(folders, tmp_path, capsys, extra, option):
    """The run made the maps: --methods / --steps / --rule / --target used to be ignored silently."""
    a, _ = folders
    argv = ["eval", str(a / "data"), "--maps", str(a / "run"), "--model", str(a / "model.pt2"), "--out",
            str(tmp_path / "e"), *FAST_EVAL, *extra]
    if option == "methods":  # once as a user types it
        res = run_fastattr(*argv)
        code, err = res.returncode, res.stderr
    else:
        code, err = main(argv), capsys.readouterr().err
    assert code == 2
    line = one_line_error(err, "eval")
    assert line.startswith(f"fastattr eval: error: {option}: with --maps the maps and the options that made them "
                           f"come from the run in {a / 'run'} (ig + IDGI, steps=2, rule=left")
    assert not (tmp_path / "e").exists()


def test_item7_exported_program_at_another_size(folders, tmp_path):
    a, _ = folders
    res = run_fastattr("eval", a / "data", "--model", a / "model.pt2", "--size", "48", "--out", tmp_path / "e",
                       *FAST_EVAL)
    assert res.returncode == 2
    line = one_line_error(res.stderr, "eval")
    assert "model: does not take (N, 3, 48, 48) inputs" in line and "== 32" in line and "--size" in line
    assert not (tmp_path / "e").exists()


def test_item9_output_callable_with_no_scores_is_named():
    model = make_small_cnn(seed=1)
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"^output: the output callable returned a torch.float32 tensor of shape "
                                         r"\(2, 0\): no scores \(K = 0\)"):
        fastattr.attribute(model, x, output=lambda raw: raw[:, :0])
    with pytest.raises(ValueError, match=r"^output: .*\(2, 0\): no scores"):
        fastattr.Explainer(model, method="vanilla", output=lambda raw: raw[:, :0])(x)


def test_images_of_other_names_with_maps_are_refused(folders, tmp_path, capsys):
    a, _ = folders
    make_images(tmp_path / "other", [("x.png", (32, 32))])
    assert main(["eval", str(tmp_path / "other"), "--maps", str(a / "run"), "--out", str(tmp_path / "e"),
                 *FAST_EVAL]) == 2
    assert "--maps: the run in" in one_line_error(capsys.readouterr().err, "eval")
