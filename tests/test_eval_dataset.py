"""fastattr eval on a user's folder (issue 15): a generated ImageFolder tree with masks and a bad
file, a tiny model saved as a torch.export program (and as TorchScript, which the guided backward
cannot reach); per-image values equal direct metric calls,
the table equals one metric call on all images, --maps from a `fastattr run` equals recomputing,
SIGKILL + the same command is byte-identical, torchrun with 2 processes equals 1."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_small_cnn
from PIL import Image

import fastattr
from fastattr import metrics as M
from fastattr.evaluation import run_eval
from fastattr.images import load_image
from fastattr.models import load_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SIZE = 16
# options of every run compared byte for byte: one thread (summation order), no worker processes
OPTS = ["--size", str(SIZE), "--steps", "4", "--methods", "vanilla", "ig", "--min-pred", "0",
        "--bootstrap", "50", "--metric-workers", "0", "--threads", "1", "--no-progress"]
SLOW_EVAL = """import sys, time, fastattr.api as api
real = api.explain
def slow(*a, **k):
    time.sleep(0.4)
    return real(*a, **k)
api.explain = slow
from fastattr.cli import main
sys.exit(main(["eval", *sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """ImageFolder tree: 2 classes x 4 images (odd sizes, PNG/JPEG), one corrupt file; masks for
    5 images (one with another extension); the small CNN saved as a torch.export program and as
    TorchScript."""
    root = tmp_path_factory.mktemp("evaldata")
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("bird", "cat")):
        (root / "data" / cls).mkdir(parents=True)
        (root / "masks" / cls).mkdir(parents=True)
        for j in range(4):
            arr = rng.integers(0, 256, (18 + j, 20, 3), dtype=np.uint8)
            ext = "jpg" if j == 3 else "png"
            Image.fromarray(arr).save(root / "data" / cls / f"im{j}.{ext}")
            if (c == 0 and j != 2) or (c == 1 and j < 2):  # bird/im3.jpg gets bird/im3.png
                m = np.zeros(arr.shape[:2], np.uint8)
                m[3:12, 4:14] = 255
                Image.fromarray(m).save(root / "masks" / cls / f"im{j}.png")
    (root / "data" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    model = make_small_cnn(seed=5).eval()
    torch.jit.save(torch.jit.script(model), root / "model_ts.pt")
    program = torch.export.export(model, (torch.rand(2, 3, SIZE, SIZE),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, root / "model.pt2")
    return root


def _args(tree, out, extra=()):
    return [str(tree / "data"), "--model", str(tree / "model.pt2"), "--masks", str(tree / "masks"),
            "--out", str(out), *OPTS, *extra]


def _eval(tree, out, **kw):
    """run_eval with the test's options (method options left out when kw has maps=)."""
    torch_threads = torch.get_num_threads()
    maps = {} if "maps" in kw else {"steps": 4, "methods": ["vanilla", "ig"], "size": SIZE}
    try:
        return run_eval(tree / "data", out, model=str(tree / "model.pt2"), masks=tree / "masks",
                        min_pred=0.0, bootstrap=50, metric_workers=0, threads=1, workers=0, progress=False,
                        **maps, **kw)
    finally:
        torch.set_num_threads(torch_threads)


def _rows(path):
    return list(csv.DictReader(open(path, newline="", encoding="utf-8")))


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def reference(tree):
    """One uninterrupted in-process eval (one thread, decoding in the main process)."""
    out = tree / "ref"
    s = _eval(tree, out)
    assert s.table is not None and s.failed == 1
    return out


def test_folder_with_masks_per_image_values_equal_direct_metric_calls(tree, reference):
    rows = _rows(reference / "per_image.csv")
    names = sorted(str(p.relative_to(tree / "data")) for p in (tree / "data").rglob("*.*"))
    variants = ["vanilla|plain|standard", "ig|plain|standard", "ig|idgi|standard", "ig|plain|guided",
                "ig|idgi|guided"]
    ok = [n for n in names if n != "cat/broken.png"]
    assert [r["image"] for r in rows if r["status"] == "ok"] == [n for n in ok for _ in variants]
    bad = [r for r in rows if r["status"] == "failed"]
    assert [r["image"] for r in bad] == ["cat/broken.png"] and bad[0]["error"]
    with_mask = {"bird/im0.png", "bird/im1.png", "bird/im3.jpg", "cat/im0.png", "cat/im1.png"}
    for r in rows:
        if r["status"] == "ok":
            assert (r["loc_auc"] != "") == (r["image"] in with_mask), r
            assert r["insertion"] and r["deletion"] and r["sic_pair"]
    # the same numbers as calling the metrics on the same group of maps
    model = load_model(tree / "model.pt2")
    x = torch.stack([load_image(tree / "data" / n, size=SIZE) for n in ok])
    torch.set_num_threads(1)
    try:
        ex = fastattr.explain(model, x, method="vanilla")
        got = M.insertion_deletion(model, x, ex.attributions, ex.target)
        pic = M.pic(model, x, ex.attributions, ex.target, min_pred=0.0, workers=0,
                    random_masks=torch.stack([_random_mask(n) for n in ok]))
    finally:
        torch.set_num_threads(2)
    van = [r for r in rows if r["method"] == "vanilla"]
    for j, r in enumerate(van):
        assert int(r["target"]) == int(ex.target[j])
        assert abs(float(r["insertion"]) - float(got["insertion"][j])) < 1e-6
        assert abs(float(r["deletion"]) - float(got["deletion"][j])) < 1e-6
        assert abs(float(r["sic_pair"]) - float(pic.per_image["sic_auc"][j])) < 1e-9
    # table cells: the statistic of one call on all images (mean, PAIR's median curve)
    table = {r["label"]: r for r in _rows(reference / "table.csv")}
    v = table["vanilla"]
    assert abs(float(v["insertion"]) - float(got["insertion"].double().mean())) < 1e-6
    assert abs(float(v["sic_pair"]) - pic.sic) < 1e-9 and abs(float(v["aic_pair"]) - pic.aic) < 1e-9
    assert float(v["insertion_low"]) <= float(v["insertion"]) <= float(v["insertion_high"])
    assert int(v["images"]) == 8 and "loc_auc" in v and "sic_msssim" not in v  # 16 px: no MS-SSIM
    md = (reference / "table.md").read_text(encoding="utf-8")
    assert "1 could not be read" in md and "| ig + IDGI |" in md
    for png in ("curves.png", "maps.png"):
        with Image.open(reference / png) as im:
            im.load()
            assert im.mode == "RGB" and min(im.size) > 100


def _random_mask(name):
    from fastattr.evaluation.sources import random_mask

    return random_mask(name, SIZE, SIZE)


def test_binned_aucs_equal_pic_idgi_binned_curves():
    from fastattr.evaluation.summary import binned_aucs
    from fastattr.metrics.pic_idgi import binned_curves

    g = torch.Generator().manual_seed(3)
    lv = torch.rand(7, 25, generator=g, dtype=torch.float64) * 0.8
    lv[2] = float("nan")
    r = torch.rand(7, 25, generator=g, dtype=torch.float64)
    c = (torch.rand(7, 25, generator=g) > 0.4).double()
    _, _, _, sic, aic, _ = binned_curves(lv, r, c)
    got = binned_aucs(lv.numpy(), r.numpy(), c.numpy())
    assert abs(got[0] - sic) < 1e-12 and abs(got[1] - aic) < 1e-12


def test_maps_from_a_run_equal_recomputed_maps(tree, reference):
    """`fastattr run --idgi` then `fastattr eval --maps`: no gradient evaluations, and the same
    metric values as eval computing ig + IDGI itself with the same options."""
    from fastattr.runner import run

    run_dir = tree / "run"
    run(tree / "data", run_dir, model=str(tree / "model.pt2"), idgi=True, steps=4, size=SIZE,
        threads=1, workers=0, progress=False)
    torch.set_num_threads(2)
    out = tree / "from_maps"
    s = _eval(tree, out, maps=run_dir)
    assert s.table is not None
    got = [r for r in _rows(out / "per_image.csv") if r["status"] == "ok"]
    want = [r for r in _rows(reference / "per_image.csv") if r["method"] == "ig" and r["idgi"] == "True"
            and r["backward"] == "standard"]
    assert len(got) == len(want) == 8
    for a, b in zip(got, want):
        for k in ("image", "target", "grad_evals", "insertion", "deletion", "sic_pair", "aic_pair", "loc_auc"):
            assert a[k] == b[k], (k, a, b)
    cfg = json.loads((out / "run.json").read_text())
    assert cfg["maps_run"]["idgi"] is True and cfg["maps_run"]["steps"] == 4
    assert "maps from the run" in (out / "table.md").read_text(encoding="utf-8")


SMALL_SHARDS = ["--shard-size", "2", "--images-per-call", "2"]


@pytest.fixture(scope="module")
def uninterrupted(tree):
    """The command of the kill and torchrun tests, run once without interruption."""
    out = tree / "single_2"
    res = subprocess.run([sys.executable, "-m", "fastattr", "eval", *_args(tree, out, SMALL_SHARDS + ["--workers", "0"])],
                         env=ENV, capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return out


def test_sigkill_then_same_command_is_byte_identical(tree, uninterrupted):
    out = tree / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVAL, *_args(tree, out, SMALL_SHARDS)], env=ENV, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(out.glob("shard-*.safetensors")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no shard within 240 s"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("shard-*.safetensors")))
    assert 1 <= done < 5, f"the kill came too late to test resuming ({done} of 5 shards done)"
    assert not (out / "table.md").exists()
    cmd = [sys.executable, "-m", "fastattr", "eval", *_args(tree, out, SMALL_SHARDS)]
    res = subprocess.run(cmd, env=ENV, capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert f"({5 - done} computed now" in res.stderr.decode()
    assert _files(out) == _files(uninterrupted)


def test_torchrun_two_processes_equal_one(tree, uninterrupted):
    """torchrun --nproc-per-node 2 (gloo on CPU): the ranks split the shards, rank 0 writes the
    tables; every file equals the single process's byte for byte."""
    out = tree / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fastattr", "eval", *_args(tree, out, SMALL_SHARDS)]
    res = subprocess.run(cmd, env=ENV, capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert _files(out) == _files(uninterrupted)


def test_eval_argument_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="metrics"):
        _eval(tree, tmp_path / "a", metrics=["pic_msssim"])  # 16 px
    with pytest.raises(ValueError, match="maps"):
        _eval(tree, tmp_path / "b", maps=tmp_path)
    with pytest.raises(ValueError, match="metrics"):
        run_eval(tree / "data", tmp_path / "c", model=str(tree / "model.pt2"), size=SIZE,
                 metrics=["localization"], progress=False)
    with pytest.raises(ValueError, match="steps"):
        run_eval(tree / "data", tmp_path / "d", model=str(tree / "model.pt2"), steps=0, progress=False)
    with pytest.raises(ValueError, match="target"):
        run_eval(tree / "data", tmp_path / "e", model=str(tree / "model.pt2"), target="dog", progress=False)


def test_a_variant_the_model_refuses_is_listed_not_fatal(tree, tmp_path, monkeypatch):
    """A method that refuses the model (here: every guided-backward variant) is left out and named
    in table.md; the other variants are evaluated."""
    import fastattr.api as api

    real = api.explain

    def refuse_guided(*a, backward="standard", **k):
        if backward == "guided":
            raise ValueError("backward: 'guided' cannot reach this model's activations")
        return real(*a, backward=backward, **k)

    monkeypatch.setattr(api, "explain", refuse_guided)
    s = _eval(tree, tmp_path / "o", metrics=["insertion"], max_images=2)
    labels = [r["label"] for r in _rows(tmp_path / "o" / "table.csv")]
    assert labels == ["vanilla", "ig", "ig + IDGI"]  # the order --methods gave
    md = (tmp_path / "o" / "table.md").read_text(encoding="utf-8")
    assert "Not evaluated" in md and "ig (guided bwd): ValueError: backward: 'guided'" in md and s.failed == 0


def test_damaged_eval_shards_are_recomputed_and_the_folder_is_locked(tree, reference, capsys):
    """Issue 16 items 10 and 11 for eval as for run: a truncated shard is named and computed
    again (the folder ends byte-identical), and an eval on a folder another run holds is refused."""
    import shutil

    from fastattr.runner.lock import FolderBusy

    out = tree / "damaged_eval"
    shutil.copytree(reference, out)
    shard = out / "shard-000000.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    (out / "table.md").unlink()
    _eval(tree, out)
    err = capsys.readouterr().err
    assert f"shard-000000.safetensors: it has {len(data) // 2} bytes, its record says {len(data)} (truncated" in err
    assert _files(out) == _files(reference)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from fastattr.runner.lock import folder_lock\n"
                               "with folder_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(60)",
                               str(out)], stdout=subprocess.PIPE, env=ENV)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(FolderBusy, match="in use by another fastattr run"):
            _eval(tree, out)
    finally:
        holder.kill()
        holder.wait()
