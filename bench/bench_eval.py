"""Wall time of a full `fastattr eval` of the bundled evaluation set (every method variant, every
metric, 16 steps: the README's table), started fresh in a new output folder, as a user runs it;
then the same command again (resume: only the tables are rewritten).

    python bench/bench_eval.py [--steps 16] [--max-images N] [--methods ...] [--metrics ...] [--keep DIR]

The previous implementation took 55 min for this on the 2-core machine (README, before issue 15).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--metrics", nargs="+", default=None)
    ap.add_argument("--keep", default=None, help="output folder to keep (default: a temporary one)")
    args = ap.parse_args()
    out = args.keep or os.path.join(tempfile.mkdtemp(prefix="bench_eval_"), "out")
    if args.keep and os.path.exists(out):
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "fastattr", "eval", "--steps", str(args.steps), "--out", out, "--no-progress"]
    if args.max_images:
        cmd += ["--max-images", str(args.max_images)]
    if args.methods:
        cmd += ["--methods", *args.methods]
    if args.metrics:
        cmd += ["--metrics", *args.metrics]
    print("$", " ".join(cmd[2:]).replace(sys.executable, "python"), flush=True)
    for label in ("fresh", "same command again (resume: nothing to compute)"):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t0
        if res.returncode != 0:
            sys.exit(res.stderr[-3000:])
        print(f"{label}: {dt:.0f} s ({dt / 60:.1f} min); {res.stderr.strip().splitlines()[-1]}", flush=True)
    print(f"table: {os.path.join(out, 'table.md')}")


if __name__ == "__main__":
    main()
