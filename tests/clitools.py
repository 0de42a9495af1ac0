"""Helpers of the command-line tests: the installed `fastattr` command in a subprocess, the
one-line error check, and a small model + image folder saved as a user would."""
import os
import shutil
import subprocess
import sys

import numpy as np
import torch
from conftest import make_small_cnn
from PIL import Image

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FASTATTR = shutil.which("fastattr", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
# the fastest eval that still scores something: one metric, no intervals, no worker processes
FAST_EVAL = ["--metrics", "insertion", "--bootstrap", "0", "--workers", "0", "--metric-workers", "0",
             "--threads", "1", "--no-progress"]


def run_fastattr(*args, cwd=None, timeout=600, **popen) -> subprocess.CompletedProcess:
    """Run the installed `fastattr` command (as the README shows it)."""
    assert FASTATTR, "the fastattr command is not installed next to this Python (pip install -e .)"
    return subprocess.run([FASTATTR, *map(str, args)], env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **popen)


def one_line_error(err: str, command: str) -> str:
    """The single stderr line of a refused command ('fastattr CMD: error: ...'), no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastattr {command}: error: ") and "Traceback" not in err, err
    return lines[0]


def save_export(model, path, size: int) -> None:
    """The README's torch.export recipe at `size` px (dynamic batch, fixed height and width)."""
    program = torch.export.export(model.eval(), (torch.rand(2, 3, size, size),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)


def make_images(folder, shapes, seed: int = 0) -> list[str]:
    """PNG files of random pixels, one per (name, (h, w)) of shapes; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, shape in shapes:
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(folder / name)
    return [name for name, _ in shapes]


def user_folder(root, seed: int = 1, classes: int = 5, size: int = 32):
    """root/model.pt2 (a small CNN with `classes` outputs exported at `size` px), root/model_ts.pt
    (the same as TorchScript) and root/data/ (5 flat images of odd sizes)."""
    model = make_small_cnn(seed=seed, num_classes=classes)
    root.mkdir(parents=True, exist_ok=True)
    save_export(model, root / "model.pt2", size)
    torch.jit.save(torch.jit.script(model), root / "model_ts.pt")
    make_images(root / "data", [("a.png", (40, 30)), ("b.png", (36, 36)), ("c.png", (30, 44)),
                                ("d.png", (32, 32)), ("e.png", (50, 40))], seed=seed)
    return root
