"""fastattr imports and gives the same maps without Triton and without the C++ extension (each
blocked in a fresh subprocess by a sys.meta_path finder that raises ImportError)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastattr
from fastattr.ops._library import HAS_C

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

# Runs in the subprocess after the blocker is installed: IG and IDGI-IG maps of a small CNN.
_RUN = textwrap.dedent(r"""
    import sys, json, warnings
    import torch
    sys.path.insert(0, TESTS_DIR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastattr
        import fastattr.ops._library as lib
    from conftest import make_small_cnn
    torch.set_num_threads(2)
    model = make_small_cnn(seed=0)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    maps = {
        "ig": fastattr.attribute(model, x, torch.tensor([1, 4]), steps=8),
        "idgi": fastattr.attribute(model, x, torch.tensor([1, 4]), steps=8, idgi=True, batch_size=3),
    }
    torch.save(maps, OUT)
    runtime = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    print("RESULT" + json.dumps({
        "has_c": lib.HAS_C, "has_triton": lib.HAS_TRITON,
        "triton_loaded": "triton" in sys.modules, "c_loaded": "fastattr._C" in sys.modules,
        "runtime_warnings": runtime,
    }))
""")

_BLOCKER = textwrap.dedent(r"""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == BLOCKED or name.startswith(BLOCKED + "."):
                raise ImportError(f"{name} blocked by the test")
            return None

    sys.meta_path.insert(0, Block())
""")


def run_blocked(blocked: str, tmp_path) -> tuple[dict, dict]:
    """Run _RUN in a fresh interpreter with `blocked` unimportable; (info, maps)."""
    out = tmp_path / f"maps_{blocked}.pt"
    code = (f"BLOCKED = {blocked!r}\nTESTS_DIR = {TESTS_DIR!r}\nOUT = {str(out)!r}\n"
            + _BLOCKER + _RUN)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):]), torch.load(out)


def normal_maps():
    """The same maps computed in this process (extension and Triton as installed)."""
    from conftest import make_small_cnn

    model = make_small_cnn(seed=0)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return {
        "ig": fastattr.attribute(model, x, torch.tensor([1, 4]), steps=8),
        "idgi": fastattr.attribute(model, x, torch.tensor([1, 4]), steps=8, idgi=True, batch_size=3),
    }


def test_works_without_triton(tmp_path):
    info, maps = run_blocked("triton", tmp_path)
    assert not info["has_triton"] and not info["triton_loaded"]
    assert info["runtime_warnings"] == [] or not HAS_C  # no Triton is not worth a warning
    want = normal_maps()
    for name in want:
        assert maps[name].abs().sum() > 0
        torch.testing.assert_close(maps[name], want[name], rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not HAS_C, reason="fastattr._C not built here: nothing to compare the reference ops with")
def test_works_without_extension_with_one_warning(tmp_path):
    info, maps = run_blocked("fastattr._C", tmp_path)
    assert not info["has_c"] and not info["c_loaded"]
    about_c = [w for w in info["runtime_warnings"] if "fastattr._C" in w]
    assert len(info["runtime_warnings"]) == 1 and len(about_c) == 1, info["runtime_warnings"]
    want = normal_maps()
    for name in want:  # the pure-torch reference ops give the C++ op's maps
        assert maps[name].abs().sum() > 0
        torch.testing.assert_close(maps[name], want[name], rtol=1e-6, atol=1e-6)
