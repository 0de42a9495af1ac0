"""`fastattr eval` run as a user types it (subprocess), every promised file opened."""
import csv
import os
import subprocess
import sys

import pytest
from PIL import Image

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _fastattr(*args, cwd):
    """The `fastattr` console script of this environment (python -m fastattr where it is missing)."""
    exe = os.path.join(os.path.dirname(sys.executable), "fastattr")
    cmd = [exe, *args] if os.path.exists(exe) else [sys.executable, "-m", "fastattr", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def _check_outputs(out, methods_rows: int, columns: list[str]):
    for png in ("curves.png", "maps.png"):
        with Image.open(out / png) as im:
            im.load()
            assert im.size[0] > 100 and im.size[1] > 100
    rows = list(csv.DictReader(open(out / "table.csv", newline="", encoding="utf-8")))
    assert len(rows) == methods_rows
    for c in columns:
        assert c in rows[0] and rows[0][c] != ""
    md = (out / "table.md").read_text(encoding="utf-8")
    assert md.count("\n| ") >= methods_rows + 1


@pytest.mark.slow
def test_eval_insertion_command_writes_every_file(tmp_path):
    # issue 16 item 1: this exact command died at its last step (viz._save called without max_bytes)
    res = _fastattr("eval", "--methods", "vanilla", "--metrics", "insertion", "--max-images", "1",
                    "--steps", "2", "--out", "e", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # the progress bar (on by default; stderr, so stdout stays clean): images done of the total
    assert "fastattr eval" in res.stderr and "1/1 [" in res.stderr and "img" in res.stderr, res.stderr[-3000:]
    assert "1/1 [" not in res.stdout
    out = tmp_path / "e"
    _check_outputs(out, 1, ["insertion"])
    assert "| vanilla |" in (out / "table.md").read_text(encoding="utf-8")
