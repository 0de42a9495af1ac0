"""The repository's kernels/ folder (installed as fastattr.kernels) must not shadow the PyPI package
`kernels`, which transformers 5 imports, when Python starts in the repository root (tests, benches
and notebooks do)."""
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_in_root(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
def test_transformers_imports_in_the_repository_root():
    r = run_in_root("from transformers import BertForSequenceClassification, BertConfig\n"
                    "import kernels, os\nprint(os.path.abspath(kernels.__file__))")
    assert r.returncode == 0, r.stderr
    assert not r.stdout.strip().startswith(os.path.join(REPO, "kernels")), r.stdout


def test_top_level_kernels_is_never_the_repository_folder():
    # without the PyPI package: a missing-module error, as if the folder were not there
    r = run_in_root("import sys\nsys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
                    "try:\n    import kernels\nexcept ModuleNotFoundError as e:\n    print('missing', e.name)\n"
                    "else:\n    print('found', kernels.__file__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["missing", "kernels"], r.stdout


def test_fastattr_kernels_still_imports_in_the_repository_root():
    r = run_in_root("import fastattr.kernels.path_accumulate as m, os\nprint(os.path.abspath(m.__file__))")
    assert r.returncode == 0, r.stderr
    assert os.path.dirname(r.stdout.strip()) == os.path.join(REPO, "kernels")
