"""fastattr run: discovery, shards + manifest equal to direct fastattr.explain calls, corrupt files
recorded and skipped, SIGKILL + resume byte-identical, torchrun (2 ranks, gloo) byte-identical
to one process, refusal to mix options, and write errors leaving no partial shard; and the
issue 16 regressions: options checked before anything is written (item 9), the folder lock
(item 10), shard checksums (item 11), FIFOs (item 12), absurd aspect ratios (item 13), the model
named by another path and images changed under the same name (item 16)."""
import errno
import json
import os
import shutil
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
from fastattr.cli import main as cli_main
from fastattr.images import load_image
from fastattr.cli import build_parser
from fastattr.cli import run as run_command
from fastattr.runner import WriteError, discover, load_shard, read_manifest, run
from fastattr.runner import shards as shards_mod

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# Options shared by the runs compared byte for byte: one thread everywhere, since the thread
# count may change floating-point summation order (and torchrun's 2 ranks get 1 thread each).
OPTS = ["--model", "{model}", "--size", "16", "--idgi", "--steps", "12", "--batch-size", "8",
        "--shard-size", "3", "--images-per-call", "2", "--threads", "1", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# The killed or blocked run: the real CLI with every group's explain call delayed (0.3 s, or
# FASTATTR_TEST_DELAY), so that a kill reliably lands with shards still to do however fast the
# machine is, and held back until the file named by FASTATTR_TEST_GO exists when that is set, after
# touching FASTATTR_TEST_STARTED (neither changes a result).
SLOW_RUN = """import importlib, os, sys, time
r = importlib.import_module("fastattr.runner.run")  # the module; fastattr.runner.run is the function
real = r._explain_group
def slow(*a, **k):
    if os.environ.get("FASTATTR_TEST_STARTED"):
        open(os.environ["FASTATTR_TEST_STARTED"], "a").close()
    go = os.environ.get("FASTATTR_TEST_GO")
    while go and not os.path.exists(go):
        time.sleep(0.02)
    time.sleep(float(os.environ.get("FASTATTR_TEST_DELAY", "0.3")))
    return real(*a, **k)
r._explain_group = slow
from fastattr.cli import main
sys.exit(main(["run", *sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """An ImageFolder tree of 11 small images (PNG/JPEG/WebP, odd sizes, grey and RGBA), one
    corrupt and one truncated file, a hidden folder and a text file (both ignored), and the
    small CNN saved as a torch.export program, as TorchScript and pickled whole (torch.save)."""
    root = tmp_path_factory.mktemp("runner")
    data = root / "data"
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("bird", "cat", "dog")):
        (data / cls).mkdir(parents=True)
        for j in range(4 - (c == 2)):
            h, w = 14 + 3 * j, 20 - j
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            im = Image.fromarray(arr)
            if j == 1:
                im = im.convert("L")
            if j == 2:
                im = im.convert("RGBA")
            ext = ("png", "jpg", "webp", "png")[j]
            im.save(data / cls / f"img{j}.{ext}", **({"lossless": True} if ext == "webp" else {}))
    (data / "cat" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = (data / "bird" / "img0.png").read_bytes()
    (data / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (data / ".hidden").mkdir()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / ".hidden" / "x.png")
    (data / "cat" / "notes.txt").write_text("not an image")
    model = make_small_cnn(seed=3)
    program = torch.export.export(model, (torch.rand(2, 3, 16, 16),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, root / "model.pt2")
    torch.save(model, root / "model.pt")
    torch.jit.save(torch.jit.script(model), root / "model_ts.pt")
    return root


def _args(tree, out, extra=(), model="model.pt2"):
    opts = [o.format(model=tree / model) for o in OPTS]
    return [str(tree / "data"), "--out", str(out), *opts, *extra]


def _main(argv) -> int:
    """fastattr run through the CLI's parser and command module, a UserError left raised (cli_main
    turns it into one line and exit code 2)."""
    return run_command.main(build_parser().parse_args(["run", *argv]))


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _shards(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("shard-*.safetensors"))


@pytest.fixture(scope="module")
def reference(tree):
    """One uninterrupted in-process run (decoding in the main process)."""
    out = tree / "ref"
    assert _main(_args(tree, out, ["--workers", "0"])) == 0
    return out


def test_discover_sorted_imagefolder(tree):
    images = discover(tree / "data")
    assert list(images.paths) == sorted(images.paths)
    assert len(images) == 13  # 11 images + corrupt.jpg + truncated.png; .hidden and notes.txt skipped
    assert images.classes == ("bird", "cat", "dog")
    assert [images.labels[images.paths.index(p)] for p in ("bird/img0.png", "cat/corrupt.jpg", "dog/img2.webp")] == [0, 1, 2]
    with pytest.raises(ValueError, match="INPUT"):
        discover(tree / "data" / "cat" / "notes.txt")


def test_maps_and_manifest_match_explain(tree, reference):
    """Each shard holds exactly the maps fastattr.explain gives for the same groups of images;
    the manifest has one record per input, in input order; failures are recorded, not fatal."""
    images = discover(tree / "data")
    records = read_manifest(reference)
    assert [r["path"] for r in records] == list(images.paths)
    assert [r["index"] for r in records] == list(range(len(images)))
    failed = {r["path"]: r for r in records if r["status"] == "failed"}
    assert set(failed) == {"cat/corrupt.jpg", "dog/truncated.png"}
    assert failed["cat/corrupt.jpg"]["error"] == "cannot identify the image format (not an image, or its header is damaged)"
    assert failed["dog/truncated.png"]["error"]
    assert all(r["row"] is None and r["target"] is None for r in failed.values())
    model = make_small_cnn(seed=3)  # the eager model the exported program was made from
    run_json = json.loads((reference / "run.json").read_text())
    assert run_json["steps"] == 12 and run_json["idgi"] is True and run_json["images"] == 13
    n_shards = -(-len(images) // 3)
    assert _shards(reference) == [f"shard-{k:06d}.safetensors" for k in range(n_shards)]
    assert sorted(p.name for p in reference.glob("shard-*.check")) == [f"shard-{k:06d}.check" for k in range(n_shards)]
    assert (reference / ".fastattr-lock").read_bytes() == b""  # released: emptied
    torch.set_num_threads(1)  # as the run did
    try:
        for k in range(n_shards):
            maps, index, recs = load_shard(reference / f"shard-{k:06d}.safetensors")
            block = list(range(3 * k, min(3 * k + 3, len(images))))
            assert [r["index"] for r in recs] == block
            assert index.tolist() == [r["index"] for r in recs if r["status"] == "ok"]
            for group in (block[:2], block[2:]):  # images_per_call = 2 within the shard
                ok = [i for i in group if records[i]["status"] == "ok"]
                if not ok:
                    continue
                x = torch.stack([load_image(tree / "data" / images.paths[i], size=16) for i in ok])
                ex = fastattr.explain(model, x, idgi=True, steps=12, batch_size=8)
                for j, i in enumerate(ok):
                    r = records[i]
                    assert torch.equal(maps[r["row"]], ex.attributions[j])
                    assert r["target"] == int(ex.target[j]) and r["score"] == float(ex.scores[j])
                    assert r["delta"] == float(ex.delta[j]) and abs(r["delta"]) < 1e-5  # IDGI completeness
                    assert r["grad_evals"] == 12 and r["label"] == images.labels[i]
                    st = os.stat(tree / "data" / images.paths[i])
                    assert (r["file_bytes"], r["file_mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    finally:
        torch.set_num_threads(2)


def test_sigkill_then_resume_is_byte_identical(tree, reference):
    """Kill the whole runner (process group, decoding workers included) right after its first
    shard appears, plant a stale temporary file as a kill during a write leaves, re-run the same
    command: the folder equals the uninterrupted run's byte for byte."""
    out = tree / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *_args(tree, out)], env=ENV,
                            start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob("shard-*.safetensors")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no shard within 120 s"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _shards(out)
    assert 1 <= len(done) < 5, f"the kill came too late to test resuming ({len(done)} of 5 shards done)"
    assert not (out / "manifest.jsonl").exists()
    (out / "shard-000004.safetensors.tmp-99999").write_bytes(b"half a shard")
    cmd = [sys.executable, "-m", "fastattr", "run", *_args(tree, out)]
    res = subprocess.run(cmd, env=ENV, stderr=subprocess.PIPE, timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    assert f"({5 - len(done)} computed now" in res.stderr.decode()
    assert _files(out) == _files(reference)


def test_torchrun_two_ranks_equal_single_process(tree, reference):
    """torchrun --nproc-per-node 2 (gloo on CPU; `python -m torch.distributed.run` is what the
    torchrun script runs): each rank writes its own shards, rank 0 merges the manifest; every file
    equals the single-process run's byte for byte. Uses the TorchScript copy of the model, and
    the pickled copy with --trust-pickle in one process: all three formats give the same maps."""
    single = tree / "single_ts"
    assert _main(_args(tree, single, ["--workers", "0"], model="model_ts.pt")) == 0
    out = tree / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fastattr", "run", *_args(tree, out, model="model_ts.pt")]
    res = subprocess.run(cmd, env=ENV, stderr=subprocess.PIPE, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert _files(out) == _files(single)
    pickled = tree / "single_pickle"
    assert _main(_args(tree, pickled, ["--workers", "0", "--trust-pickle"], model="model.pt")) == 0
    a, b, c = _files(single), _files(reference), _files(pickled)
    assert a.keys() == b.keys() == c.keys()
    assert [k for k in a if not (a[k] == b[k] == c[k])] == ["run.json"]  # only the model's name and sha256


def test_rerun_with_other_options_is_refused(tree, reference, capsys):
    before = _files(reference)
    args = _args(tree, reference, ["--workers", "0"])
    args[args.index("--steps") + 1] = "16"
    with pytest.raises(ValueError, match=r"refusing to mix.*steps: 12 -> 16"):
        _main(args)
    assert _main(_args(tree, reference, ["--workers", "0"])) == 0  # same options: nothing to do
    assert "0 computed now" in capsys.readouterr().err
    assert _files(reference) == before


def test_write_error_stops_without_partial_shard(tree, monkeypatch, capsys):
    """Disk full while the third shard is written: a clear message naming the cause, exit code 1,
    no partial or temporary file; re-running the same command completes the run."""
    out = tree / "diskfull"
    real_fsync = os.fsync

    def fsync(fd):
        if "shard-000001" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(shards_mod.os, "fsync", fsync)
    assert cli_main(["run", *_args(tree, out, ["--workers", "0"])]) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "shard-000001." in err and "re-run" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == [".fastattr-lock", "run.json", "shard-000000.check", "shard-000000.safetensors"]
    monkeypatch.setattr(shards_mod.os, "fsync", real_fsync)
    assert _main(_args(tree, out, ["--workers", "0"])) == 0
    assert len(read_manifest(out)) == 13


def test_float16_storage_and_label_targets(tree):
    """--dtype float16 stores the float32 maps rounded to half; --target label explains the
    ImageFolder class and records its folder name."""
    out32, out16 = tree / "t32", tree / "t16"
    common = dict(model=str(tree / "model.pt2"), steps=4, size=16, shard_size=16, images_per_call=16,
                  workers=0, threads=1, progress=False, target="label")
    s = run(tree / "data", out32, **common)
    assert (s.images, s.ok, s.failed, s.shards) == (13, 11, 2, 1)
    # An nn.Module object: an identity BatchNorm (fresh statistics, eps 0; its 0-d buffer
    # num_batches_tracked goes into the run.json fingerprint) before the saved CNN.
    module = torch.nn.Sequential(torch.nn.BatchNorm2d(3, eps=0.0), make_small_cnn(seed=3)).eval()
    run(tree / "data", out16, dtype="float16", **{**common, "model": module})  # an nn.Module object
    m32, _, recs = load_shard(out32 / "shard-000000.safetensors")
    m16, _, _ = load_shard(out16 / "shard-000000.safetensors")
    assert m16.dtype == torch.float16 and torch.equal(m16, m32.half())
    ok = [r for r in recs if r["status"] == "ok"]
    assert all(r["target"] == r["label"] for r in ok)
    assert {r["class_name"] for r in ok} == {"bird", "cat", "dog"}
    with pytest.raises(ValueError, match="dtype"):
        run(tree / "data", tree / "bad", dtype="int8", **common)
    with pytest.raises(ValueError, match="shard_size"):
        run(tree / "data", tree / "bad", **{**common, "shard_size": 0})


def test_write_atomic_never_leaves_a_prefix(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"

    def broken_replace(src, dst):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(shards_mod.os, "replace", broken_replace)
    with pytest.raises(WriteError, match="permission denied"):
        shards_mod.write_atomic(target, b"12345")
    assert list(tmp_path.iterdir()) == []


def test_bad_options_write_nothing(tree, capsys):
    """Item 9: options a method rejects, an unknown option, a target the model does not have: one
    named error line, exit code 2, and the folder is not even created, so the corrected command
    runs. A run.json left by a run that stopped before its first shard does not block it either."""
    out = tree / "bad_options"
    cases = [(["-O", "fooo=1"], "fooo: unknown option of method 'ig'"),
             (["--target", "5000"], "target: class indices must lie in [0, 10)"),
             (["--method", "guided_ig", "-O", "fraction=2"], "fraction: must lie in [0, 1]"),
             (["--rule", "trapezoid", "--steps", "1"], "rule='trapezoid' needs steps >= 2"),
             (["--target", "cat"], "target: expected 'predicted', 'label' or a class index"),
             (["--device", "tpu"], "device: unknown device 'tpu'; use cpu, cuda or cuda:N"),
             (["--shard-size", "0"], "argument --shard-size: must be >= 1, got 0"),
             (["--steps", "2000000"], "steps: must be <= 1000000, got 2000000")]
    for extra, message in cases:
        code = None
        try:
            code = cli_main(["run", *_args(tree, out, ["--workers", "0", *extra])])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and message in err, (extra, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not out.exists(), extra
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"format": "fastattr-run/2", "steps": 999}))
    assert _main(_args(tree, out, ["--workers", "0"])) == 0
    assert json.loads((out / "run.json").read_text())["steps"] == 12


def test_second_run_on_the_same_folder_is_refused(tree, reference, tmp_path):
    """Item 10, with two real processes: while a run holds the folder, a second one on it is
    refused at once, naming the holder's pid, and touches nothing (it used to delete the first
    run's temporary shard); the first run then completes with the same bytes as ever."""
    out, go, started = tree / "locked", tmp_path / "go", tmp_path / "started"
    first = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *_args(tree, out)],
                             env={**ENV, "FASTATTR_TEST_GO": str(go), "FASTATTR_TEST_STARTED": str(started),
                                  "FASTATTR_TEST_DELAY": "0"}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():  # past its start-up cleanup, computing its first group
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run did not start computing within 120 s"
            time.sleep(0.02)
        assert (out / ".fastattr-lock").read_bytes().startswith(f"pid {first.pid} on ".encode())
        planted = out / "shard-000002.safetensors.tmp-99999"  # as if the first run were writing it
        planted.write_bytes(b"being written")
        second = subprocess.run([sys.executable, "-m", "fastattr", "run", *_args(tree, out)], env=ENV,
                                stderr=subprocess.PIPE, timeout=300)
        err = second.stderr.decode()
        assert second.returncode == 2, err
        assert f"is in use by another fastattr run (pid {first.pid} on " in err and err.count("\n") == 1, err
        assert planted.read_bytes() == b"being written"
        planted.unlink()
        go.touch()
        assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    finally:
        first.kill()
    assert _files(out) == _files(reference)


def test_damaged_shards_are_verified_and_recomputed(tree, reference, capsys):
    """Item 11: a truncated, a zero-byte, a flipped-byte shard and one without its checksum record
    are each named and computed again; the folder ends byte-identical to the reference."""
    out = tree / "damaged"
    shutil.copytree(reference, out)
    names = [f"shard-{k:06d}.safetensors" for k in range(4)]
    data = (out / names[0]).read_bytes()
    (out / names[0]).write_bytes(data[: len(data) // 2])
    (out / names[1]).write_bytes(b"")
    flipped = bytearray((out / names[2]).read_bytes())
    flipped[-7] ^= 0x01  # inside the maps: the shard still loads, with one wrong value
    (out / names[2]).write_bytes(bytes(flipped))
    load_shard(out / names[2])
    (out / "shard-000003.check").unlink()
    (out / "manifest.jsonl").unlink()
    assert _main(_args(tree, out, ["--workers", "0"])) == 0
    err = capsys.readouterr().err
    assert f"{names[0]}: it has {len(data) // 2} bytes, its record says {len(data)} (truncated" in err
    assert f"{names[1]}: it has 0 bytes, its record says" in err
    assert f"{names[2]}: its sha256 differs from its record (the file is corrupt); computing it again" in err
    assert f"{names[3]}: it has no checksum record" in err
    assert "(4 computed now" in err
    assert _files(out) == _files(reference)


def test_odd_files_are_recorded_and_skipped(tree, tmp_path):
    """Items 12 and 13 through `python -m fastattr run`: a FIFO named *.png (used to hang the run
    forever), a 1x5000 PNG (used to take 3 GB) and a dangling symlink are failed records with
    their reason; the good image gets its map."""
    data = tmp_path / "odd"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(data / "good.png")
    os.mkfifo(data / "pipe.png")
    Image.fromarray(np.full((5000, 1, 3), 200, np.uint8)).save(data / "strip.png")
    (data / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "fastattr", "run", str(data), "--out", str(out), "--size", "16",
                          "--steps", "2", "--model", str(tree / "model.pt2"), "--no-progress"],
                         env=ENV, stderr=subprocess.PIPE, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    records = {r["path"]: r for r in read_manifest(out)}
    assert records["good.png"]["status"] == "ok"
    assert records["pipe.png"]["error"] == "a FIFO, not an image file"
    assert "1x5000 pixels: an aspect ratio beyond 50:1" in records["strip.png"]["error"]
    assert records["gone.jpg"]["error"].startswith("FileNotFoundError")
    assert all(records[k]["status"] == "failed" for k in ("pipe.png", "strip.png", "gone.jpg"))


def test_model_by_another_path_is_the_same_run(tree, reference, monkeypatch, capsys):
    """Item 16: the model named by a relative path resumes the run made with its absolute path (the
    sha256 is compared, not the path); another model file is still refused."""
    monkeypatch.chdir(tree)
    args = _args(tree, reference, ["--workers", "0"])
    args[args.index("--model") + 1] = "model.pt2"
    before = _files(reference)
    assert _main(args) == 0
    assert "(0 computed now" in capsys.readouterr().err
    assert _files(reference) == before
    args[args.index("--model") + 1] = "model_ts.pt"
    with pytest.raises(ValueError, match="refusing to mix.*model_sha256"):
        _main(args)


def test_image_changed_under_the_same_name_is_detected(tree, tmp_path, capsys):
    """Item 16: an image rewritten with other pixels under the same name: on resume its shard is
    named and computed again (sizes and mtimes are compared per shard; see runner/files.py), and
    the folder equals a fresh run's on the changed images."""
    data = tmp_path / "data"
    shutil.copytree(tree / "data", data)
    out = tmp_path / "out"
    args = [str(data), "--out", str(out), *[o.format(model=tree / "model.pt2") for o in OPTS], "--workers", "0"]
    assert _main(args) == 0
    capsys.readouterr()
    changed = data / "cat" / "img1.jpg"
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (17, 19, 3), dtype=np.uint8)).save(changed)
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later mtime even on coarse clocks
    assert _main(args) == 0
    err = capsys.readouterr().err
    assert "shard-000002.safetensors: 1 of its images changed since it was written (size or modification " \
           "time: cat/img1.jpg); computing it again" in err and "(1 computed now" in err
    fresh = tmp_path / "fresh"
    assert _main([str(data), "--out", str(fresh), *args[3:]]) == 0
    assert _files(out) == _files(fresh)


def test_run_json_from_before_precision_existed_resumes(tmp_path):
    """A run.json written before the precision option existed ran float32: the same run resumes,
    a bf16 run is refused."""
    import json

    from fastattr.runner.manifest import CONFIG, ConfigMismatch, check_config

    config = {"method": "ig", "steps": 2, "precision": "fp32"}
    (tmp_path / CONFIG).write_text(json.dumps({"method": "ig", "steps": 2}))
    check_config(tmp_path, config, write=True, started=True)
    with pytest.raises(ConfigMismatch, match="precision"):
        check_config(tmp_path, dict(config, precision="bf16"), write=True, started=True)
    check_config(tmp_path, {"method": "ig", "steps": 2}, write=True, started=True)  # eval records none
