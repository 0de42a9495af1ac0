"""precision="bf16" / "fp16" (issue 13, item 3 "Cheaper passes"): a float32 model's forward and
backward under torch.autocast; maps, scores and sums stay float32. Checked on a conv model and an
MLP from the zoo: finite float32 maps close to the float32 ones, IDGI still exactly complete, the
model untouched; named errors for other dtypes and unknown values; the CLI flag and run.json."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import zoo
from conftest import make_small_cnn
from PIL import Image

import fastattr
from fastattr import model_io
from fastattr.engine import Engine
from fastattr.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FASTATTR = shutil.which("fastattr", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
MODELS = ("resnet", "mlp")  # a conv model (BN, max-pool, residual) and a tabular MLP


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_autocast_maps_are_finite_float32_and_close_to_float32(name, precision):
    model, x = zoo.make(name), zoo.inputs(name, n=3)
    before = zoo.snapshot(model)
    ref = fastattr.explain(model, x, method="ig", steps=16)
    ex = fastattr.explain(model, x, method="ig", steps=16, precision=precision)
    for t in (ex.attributions, ex.scores, ex.baseline_scores, ex.delta):
        assert t.dtype == torch.float32 and bool(torch.isfinite(t).all())
    assert ex.attributions.shape == x.shape
    assert all(_corr(a, b) > 0.9 for a, b in zip(ex.attributions, ref.attributions))
    assert not torch.equal(ex.attributions, ref.attributions)  # autocast did run in low precision
    zoo.assert_unchanged(model, before)  # parameters bitwise, dtype, flags, hooks, modes
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # "fp32" is today's behaviour, bit for bit
    assert torch.equal(fastattr.attribute(model, x, method="ig", steps=16, precision="fp32"), ref.attributions)


def test_autocast_reaches_the_model_and_the_backward():
    """The model's layers compute in bfloat16; the gradient reaches the float32 points as float32."""
    model, x = zoo.make("mlp"), zoo.inputs("mlp")
    seen = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        engine = Engine(model, precision="bf16", output="logit")
        y, g = engine.value_and_grad(x, torch.zeros(2, dtype=torch.long))
    finally:
        for h in hooks:
            h.remove()
    assert seen == {torch.bfloat16} and y.dtype == g.dtype == torch.float32
    assert engine.autocast_dtype == torch.bfloat16 and Engine(model, precision="fp32").autocast_dtype is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", MODELS)
def test_idgi_is_complete_under_autocast(name, precision):
    model, x = zoo.make(name), zoo.inputs(name, n=3)
    ex = fastattr.explain(model, x, method="ig", steps=16, idgi=True, precision=precision)
    change = (ex.scores - ex.baseline_scores).abs()
    assert bool((change > 0).all())
    assert bool((ex.delta.abs() <= 1e-5 * change).all()), (ex.delta, change)


def test_explainer_smoothgrad_and_guided_take_precision():
    model, x = make_small_cnn(), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = fastattr.Explainer(model, method="ig", steps=8)(x).attributions
    ex = fastattr.Explainer(model, method="ig", steps=8, precision="bf16")(x)
    assert ex.attributions.dtype == torch.float32 and all(_corr(a, b) > 0.9 for a, b in zip(ex.attributions, ref))
    g = fastattr.explain(model, x, method="ig", steps=8, idgi=True, backward="guided", precision="bf16")
    assert bool(torch.isfinite(g.attributions).all()) and bool((g.delta.abs() <= 1e-6).all())
    sg = fastattr.smoothgrad(model, x, nsamples=3, precision="fp16", generator=torch.Generator().manual_seed(0))
    sg32 = fastattr.smoothgrad(model, x, nsamples=3, generator=torch.Generator().manual_seed(0))
    assert sg.attributions.dtype == torch.float32
    assert all(_corr(a, b) > 0.9 for a, b in zip(sg.attributions, sg32.attributions))


def test_compile_with_autocast():
    """torch.compile traces under the active autocast: the same maps as eager bf16."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    eager = fastattr.attribute(model, x, method="ig", steps=4, batch_size=4, precision="bf16")
    compiled = fastattr.attribute(model, x, method="ig", steps=4, batch_size=4, precision="bf16", compile=True)
    assert compiled.dtype == torch.float32 and torch.allclose(compiled, eager, rtol=1e-2, atol=1e-5)


def test_precision_errors():
    model, x = make_small_cnn(), torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"^precision: unknown value 'int8'; choose from \['fp32', 'bf16', 'fp16'\]"):
        fastattr.explain(model, x, precision="int8")
    with pytest.raises(TypeError, match="^precision: expected None or one of"):
        fastattr.attribute(model, x, precision=torch.bfloat16)
    with pytest.raises(ValueError, match="^precision: unknown value"):
        fastattr.Explainer(model, precision="float16")
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match=rf"^precision: 'bf16' autocasts a float32 model.*{dtype}"):
            fastattr.explain(make_small_cnn().to(dtype), x, precision="bf16")
    with pytest.raises(ValueError, match="^precision: 'fp16' autocasts a float32 model.*float64"):
        fastattr.smoothgrad(make_small_cnn().double(), x, precision="fp16")
    # None / "fp32" leave every model as it is
    assert fastattr.attribute(make_small_cnn().double(), x, steps=2, precision="fp32").dtype == torch.float64
    # a parameter-free callable running in the points' dtype (model_dtype None) may be autocast
    assert Engine(torch.nn.Flatten(), precision="bf16").autocast_dtype == torch.bfloat16


def test_cpu_autocast_supports_both_dtypes_here():
    """This torch's CPU autocast takes bfloat16 and float16 (check_precision accepts both)."""
    cpu = torch.device("cpu")
    assert model_io.check_precision("bf16", torch.float32, cpu) == torch.bfloat16
    assert model_io.check_precision("fp16", torch.float32, cpu) == torch.float16


def test_unsupported_autocast_dtype_is_a_value_error(monkeypatch):
    """A torch whose autocast does not take the dtype on the device warns and disables itself;
    check_precision turns that into a named ValueError instead of a silent float32 run."""
    real = torch.autocast

    def unsupported(device_type, dtype=None, **kw):
        warnings.warn(f"In {device_type.upper()} autocast, but the target dtype is not supported. Disabling autocast.")
        return real(device_type, dtype=dtype, enabled=False)

    monkeypatch.setattr(torch, "autocast", unsupported)
    with pytest.raises(ValueError, match="^precision: torch.autocast does not support torch.float16 on cpu"):
        model_io.check_precision("fp16", torch.float32, torch.device("cpu"))


# -- command line ------------------------------------------------------------------------------------

def _fastattr(*args, cwd=None) -> subprocess.CompletedProcess:
    assert FASTATTR, "the fastattr command is not installed next to this Python (pip install -e .)"
    return subprocess.run([FASTATTR, *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three small RGB images."""
    root = tmp_path_factory.mktemp("precision") / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    for j in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / f"img{j}.png")
    return root


def test_cli_explain_precision(folder, tmp_path):
    res = _fastattr("explain", folder / "img0.png", "--precision", "bf16", "--steps", "2", "--size", "64",
                    "--idgi", "--no-progress", "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    m = np.load(tmp_path / "out" / "img0_ig_idgi.npy")
    assert m.shape == (3, 64, 64) and m.dtype == np.float32 and np.isfinite(m).all()
    bad = _fastattr("explain", "--precision", "int8", "--out", tmp_path / "bad")
    assert bad.returncode == 2 and "argument --precision: invalid choice: 'int8'" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_cli_run_records_precision(folder, tmp_path):
    out = tmp_path / "run"
    args = [folder, "--out", out, "--steps", "2", "--size", "32", "--no-progress", "--threads", "1"]
    res = _fastattr("run", *args, "--precision", "bf16")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3 ok, 0 failed" in res.stderr
    assert json.loads((out / "run.json").read_text())["precision"] == "bf16"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = _fastattr("run", *args, "--precision", "fp16")  # resumed with another precision: refused
    assert res.returncode == 2 and "precision: 'bf16' -> 'fp16'" in res.stderr, res.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_run_records_fp32_and_refuses_float64_models_before_writing(folder, tmp_path):
    from fastattr.runner import run

    common = dict(steps=2, size=16, workers=0, threads=1, progress=False)
    run(folder, tmp_path / "a", model=make_small_cnn(), **common)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["precision"] == "fp32"
    run(folder, tmp_path / "a", model=make_small_cnn(), precision="fp32", **common)  # None == "fp32": resumes
    with pytest.raises(UserError, match=r"refusing to mix.*precision: 'fp32' -> 'bf16'"):
        run(folder, tmp_path / "a", model=make_small_cnn(), precision="bf16", **common)
    with pytest.raises(UserError, match="^precision: 'bf16' autocasts a float32 model.*float64"):
        run(folder, tmp_path / "b", model=make_small_cnn().double(), precision="bf16", **common)
    with pytest.raises(UserError, match="^precision: unknown value"):
        run(folder, tmp_path / "b", model=make_small_cnn(), precision="half", **common)
    assert not (tmp_path / "b").exists()
