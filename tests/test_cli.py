"""The `fastattr` command as users type it (issue 16: "End-to-end CLI tests", items 1, 14, 15):
`fastattr explain`, `fastattr eval`, `fastattr run` and `python -m fastattr` in subprocesses as the
README shows them, every promised file opened and checked; bad input as one named line with exit
code 2; an internal bug keeps its traceback. (`torchrun ... -m fastattr run` is in test_runner.py.)"""
import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_small_cnn
from PIL import Image

import fastattr
from fastattr.cli import main, output_names
from fastattr.images import load_image
from fastattr.models import load_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FASTATTR = shutil.which("fastattr", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def run_fastattr(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the installed `fastattr` command."""
    assert FASTATTR, "the fastattr command is not installed next to this Python (pip install -e .)"
    return subprocess.run([FASTATTR, *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _png(path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        return im.copy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small exported CNN (the README's recipe), a few photos-like images in two folders, and
    bad model files."""
    root = tmp_path_factory.mktemp("cli")
    model = make_small_cnn(seed=1)
    program = torch.export.export(model.eval(), (torch.rand(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, root / "model.pt2")
    rng = np.random.default_rng(0)
    for rel, shape in (("a/cat.png", (40, 30)), ("b/cat.png", (36, 36)), ("a/cat.jpg", (30, 44))):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(root / rel)
    (root / "text.pt").write_text("hello, I am not a model\n")
    (root / "empty.pt").write_bytes(b"")
    data = (root / "model.pt2").read_bytes()
    (root / "truncated.pt2").write_bytes(data[: len(data) // 3])
    with zipfile.ZipFile(root / "junk.zip", "w") as z:
        z.writestr("readme.txt", "not a model")
    torch.save(model, root / "pickled.pt")
    torch.jit.save(torch.jit.script(model), root / "scripted.pt")
    (root / "afile").write_text("x")
    return root


@pytest.mark.slow
def test_readme_demo_command(tmp_path):
    """The fastattr part of the README's demo, as written: the bundled model and photos, IDGI-IG
    with the default 32 steps. Heatmaps are full-colour three-panel PNGs, maps have the input's
    shape, and IDGI's completeness shows in the printed deltas."""
    res = run_fastattr("explain", "--method", "ig", "--idgi", "--out", "fastattr_out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Egyptian cat (285)" in res.stdout and "espresso (967)" in res.stdout
    out = tmp_path / "fastattr_out"
    for name in ("chelsea", "coffee"):
        im = _png(out / f"{name}_ig_idgi.png")
        assert im.mode == "RGB" and 1000 <= im.size[0] <= 1400 and 350 <= im.size[1] <= 500
        m = np.load(out / f"{name}_ig_idgi.npy")
        assert m.shape == (3, 224, 224) and m.dtype == np.float32 and np.isfinite(m).all() and np.abs(m).sum() > 0
    rows = [line.split() for line in res.stdout.splitlines() if line.startswith(("chelsea", "coffee"))]
    assert len(rows) == 2 and max(abs(float(r[-2])) for r in rows) < 1e-5
    assert "64 gradient evaluations" in res.stdout


def test_explain_same_file_names_in_several_folders(files, tmp_path, capsys, monkeypatch):
    """Item 14: a/cat.png b/cat.png a/cat.jpg used to leave one map; now three, named from the
    paths relative to the files' common folder, each holding its own image's map."""
    out = tmp_path / "o"
    monkeypatch.chdir(files)  # relative paths, as typed
    assert main(["explain", "a/cat.png", "b/cat.png", "a/cat.jpg", "--model", str(files / "model.pt2"),
                 "--size", "32", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    res = capsys.readouterr()
    names = ["a/cat_png", "b/cat", "a/cat_jpg"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.npy")) == sorted(f"{n}_ig.npy" for n in names)
    maps = [np.load(out / f"{n}_ig.npy") for n in names]
    assert all(m.shape == (3, 32, 32) for m in maps)
    assert not np.array_equal(maps[0], maps[2]) and not np.array_equal(maps[0], maps[1])
    for n in names:
        assert _png(out / f"{n}_ig.png").mode == "RGB"
        assert n in res.out


def test_output_names_are_unique_and_deterministic():
    assert output_names(["x/cat.png", "x/dog.png"]) == ["cat", "dog"]
    assert output_names(["a/cat.png", "b/cat.png", "a/cat.jpg"]) == ["a/cat_png", "b/cat", "a/cat_jpg"]
    assert output_names(["p/q/cat.png", "p/r/cat.png"]) == ["q/cat", "r/cat"]
    assert output_names(["cat.png", "cat.png"]) == ["cat_png", "cat_png-2"]  # the same file twice
    names = output_names(["cat.png", "cat.jpg", "cat_png.webp"])
    assert len(set(names)) == 3 and names == output_names(["cat.png", "cat.jpg", "cat_png.webp"])


def test_eval_command(tmp_path):
    """`fastattr eval` as the before-stop smoke run types it (it died at its last step, issue 16
    item 1): every file the README promises exists and opens."""
    res = run_fastattr("eval", "--methods", "vanilla", "--metrics", "insertion", "--max-images", "1", "--steps", "2",
                   "--out", "e", "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "1/1 [" not in res.stderr  # --no-progress: no bar
    out = tmp_path / "e"
    assert "Insertion" in (out / "table.md").read_text()
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"method", "idgi", "backward", "insertion", "grad_evals_per_image"} <= set(rows[0])
    assert [r["method"] for r in rows] == ["vanilla"] and 0 <= float(rows[0]["insertion"]) <= 1
    for png in ("curves.png", "maps.png"):
        assert _png(out / png).mode == "RGB"


def test_run_command_and_python_m(files, tmp_path):
    """`fastattr run` with the bundled model (as the README and the smoke run type it) and
    `python -m fastattr run` on the same folder: the same files byte for byte; shards load with
    the promised tensors, the manifest has a record per image with the promised fields."""
    data = tmp_path / "data"
    shutil.copytree(files / "a", data)
    args = [data, "--steps", "2", "--size", "32", "--no-progress", "--threads", "1"]
    res = run_fastattr("run", *args, "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 images in 1 shards (1 computed now" in res.stderr and "2 ok, 0 failed" in res.stderr
    res2 = subprocess.run([sys.executable, "-m", "fastattr", "run", *map(str, args), "--out", str(tmp_path / "run2")],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert res2.returncode == 0, res2.stderr[-3000:]
    from fastattr.runner import load_shard, read_manifest

    out = tmp_path / "run"
    a = {p.name: p.read_bytes() for p in out.iterdir()}
    assert a == {p.name: p.read_bytes() for p in (tmp_path / "run2").iterdir()}
    assert set(a) == {".fastattr-lock", "run.json", "manifest.jsonl", "shard-000000.safetensors", "shard-000000.check"}
    maps, index, records = load_shard(out / "shard-000000.safetensors")
    assert maps.shape == (2, 3, 32, 32) and maps.dtype == torch.float32 and index.tolist() == [0, 1]
    manifest = read_manifest(out)
    assert [r["path"] for r in manifest] == ["cat.jpg", "cat.png"] and manifest == records
    assert {"path", "label", "target", "class_name", "score", "baseline_score", "delta", "grad_evals", "status",
            "error", "shard", "row", "file_bytes", "file_mtime_ns"} <= set(manifest[0])
    assert all(r["status"] == "ok" and r["class_name"] for r in manifest)
    config = json.loads((out / "run.json").read_text())
    assert config["model"] == "default" and len(config["model_sha256"]) == 64 and config["steps"] == 2


def _one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastattr {command}: error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_model_files_from_the_command_line(files, capsys):
    """Item 15 (and item 2) as a user meets them: text / truncated / empty / junk-zip model files
    and a pickled module: one named line, exit code 2, no traceback, nothing computed. One in a
    real process, the rest through the same main()."""
    cases = (("truncated.pt2", "is not a model file"),
             ("pickled.pt", "is a pickled Python object (torch.save(model)); unpickling runs"),
             ("text.pt", "is not a model file"), ("empty.pt", "is empty (0 bytes)"), ("junk.zip", "is not a model file"))
    for i, (name, message) in enumerate(cases):
        argv = ["explain", str(files / "a/cat.png"), "--model", str(files / name), "--out", str(files / "never")]
        if i < 1:
            res = run_fastattr(*argv)
            code, err = res.returncode, res.stderr
        else:
            code, err = main(argv), capsys.readouterr().err
        assert code == 2, (name, err)
        assert message in _one_line_error(err, "explain"), name
    assert not (files / "never").exists()


@pytest.mark.parametrize("argv, message", [
    (["explain", "--device", "tpu"], "device: unknown device 'tpu'; use cpu, cuda or cuda:N"),
    (["explain", "--device", "cuda"], "device: 'cuda' asked for, but CUDA is not available"),
    (["explain", "--size", "0"], "argument --size: must be >= 1, got 0"),
    (["explain", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["explain", "--out", "{files}/afile"], "--out: {files}/afile is a file, not a folder"),
    (["run", "{files}/a", "--out", "{files}/afile"], "--out: {files}/afile is a file, not a folder"),
    (["explain", "{files}/missing.png", "--model", "{files}/model.pt2"], "cannot read image {files}/missing.png"),
    (["explain", "{files}/a/cat.png", "--model", "{files}/model.pt2", "--size", "32", "--target", "10"],
     "target: class indices must lie in [0, 10), got 10"),
    (["explain", "{files}/a/cat.png", "--model", "{files}/model.pt2", "--size", "48"],
     "model: does not take (N, 3, 48, 48) inputs"),
    (["explain", "{files}/a/cat.png", "--model", "{files}/model.pt2", "--size", "32", "--rule", "trapezoid",
      "--steps", "1"],
     "rule='trapezoid' needs steps >= 2"),
    (["explain", "{files}/a/cat.png", "--model", "{files}/scripted.pt", "--size", "32", "--backward", "guided"],
     "backward: 'guided' cannot reach inside a TorchScript model"),
])
def test_user_errors_are_one_named_line(files, capsys, argv, message):
    """Item 15: each a one-line named error and exit code 2 (argparse's own errors included)."""
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = [a.format(files=files) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message.format(files=files) in _one_line_error(capsys.readouterr().err, argv[0])


def test_sigmoid_output(files, tmp_path, capsys):
    """--output sigmoid (multi-label models): the map explains sigmoid(logit_c), checked against
    the Python API."""
    assert main(["explain", str(files / "a/cat.png"), "--model", str(files / "model.pt2"), "--size", "32",
                 "--steps", "3", "--output", "sigmoid", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "sigmoid" in capsys.readouterr().out.splitlines()[0]
    expected = fastattr.attribute(load_model(files / "model.pt2"), load_image(files / "a/cat.png", size=32)[None],
                                  steps=3, output="sigmoid")[0]
    np.testing.assert_array_equal(np.load(tmp_path / "cat_ig.npy"), expected.numpy())


def test_trust_pickle_loads_a_pickled_module(files, tmp_path, capsys):
    code = main(["explain", str(files / "a/cat.png"), "--model", str(files / "pickled.pt"), "--trust-pickle",
                 "--size", "32", "--method", "vanilla", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    assert np.load(tmp_path / "cat_vanilla.npy").shape == (3, 32, 32)


def test_internal_bug_keeps_its_traceback(files, tmp_path, monkeypatch):
    """Item 1: the CLI catches only the errors it raises for users; a ValueError from inside the
    library is a bug and propagates with its traceback (it used to become an 'error:' line)."""
    import fastattr.api

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(fastattr.api, "explain", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["explain", str(files / "a/cat.png"), "--model", str(files / "model.pt2"), "--size", "32",
              "--out", str(tmp_path), "--no-progress"])


def test_unwritable_out_is_one_line_and_exit_1(tmp_path):
    """An --out that cannot be created (/proc/x) is a write error: one line naming it, exit code
    1, before any map is computed (it used to be a raw FileNotFoundError after the maps)."""
    res = run_fastattr("explain", "--steps", "2", "--size", "32", "--out", "/proc/fastattr_x", "--no-progress",
                       cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().startswith("fastattr explain: error: cannot write /proc/fastattr_x")
    assert "Traceback" not in res.stderr and "IG" not in res.stdout
