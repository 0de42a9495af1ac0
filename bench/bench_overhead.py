"""Per-step library overhead of fastattr IG and IDGI-IG on a one-conv model (32x32, 256 steps),
over the model-only floor: in time (interleaved medians) and in a load-insensitive count.

    python bench/bench_overhead.py [--repeats 40] [--steps 256] [--threads 2] [--cpu-time] [--processes K]
    python bench/bench_overhead.py --count [--calls 4]   # needs valgrind (slow: about 5 minutes)
    python bench/bench_overhead.py --calls-profile       # Python calls and torch ops per chunk
    python bench/bench_overhead.py --cold-ops            # small ops warm and right after a chunk
    python bench/bench_overhead.py --phases              # fastattr IG's time inside its walk and outside
    python bench/bench_overhead.py --ops-by-line --steps 64 [--idgi]   # fastattr IG's (IDGI-IG's) torch ops per source line

Time: floor, a hand-written IG loop (the least any library pays: harness.handwritten_ig_fn, checked
to give fastattr's map), IG and IDGI-IG run round-robin in one process (harness.interleaved); the
overhead is (median - floor median) / steps in microseconds per step, as bench/bench_ig.py's tiny
row (which adds captum and PAIR). Under load the medians drift by microseconds per step; --cpu-time
runs one thread and times its CPU time, which other processes disturb less (caches and shared
cores still do). This model is memory-bound, and the same floor took 9-14 ms per call in one
process and another (2026-12-07, quiet machine, where pages land): --processes K runs the timing
in K fresh processes one after the other and reports the median of their overheads (and the
range). Load-insensitive:

Count (--count): each candidate runs in a fresh single-threaded process under
`valgrind --tool=callgrind`, instrumentation switched on (callgrind_control) only for `calls`
attributions after the imports and two warm-up calls; the instructions divided by `calls` are
one call's, and (candidate - floor) / steps the overhead per step. Instruction
counts do not depend on the machine's load (they do not see cache misses either: a permuting
copy costs more time than its instructions suggest).

Cold ops (--cold-ops): the median time of a few small torch ops (a sum, an add, an empty tensor, a
cat) in a tight loop and right after one chunk's forward+backward of the floor, one thread: a
chunk's activations and gradients (several MB) evict what the next op's dispatch needs, so every
op and Python function after (or before) the model's chunks costs far more than its instructions.

Phases (--phases): fastattr IG's wall time split into its walk over the path (walk_path: the
chunks' points, forward+backward and sums) and everything outside it (checks, the engine, the
forward at the input, the map's last steps), interleaved with the floor and the hand-written loop:
where the overhead per call is.

Calls profile (--calls-profile): cProfile's count of Python function calls (and of torch ops
called from Python) in one attribution, after warm-up, and the number of torch ops it dispatches
(forward and backward; `--steps 64` is one chunk): the per-call and per-chunk work, exactly.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import floor_fn, handwritten_ig_fn, interleaved, report, tiny_model  # noqa: E402

import fastattr  # noqa: E402
from fastattr.engine import default_batch_size  # noqa: E402

CANDIDATES = ("floor", "hand-written IG", "fastattr IG", "fastattr IDGI-IG")


def candidates(steps: int) -> dict:
    """The tiny model's floor, a hand-written IG loop (harness.handwritten_ig_fn: the least any
    library does), fastattr IG and IDGI-IG at the engine's chunk size for 32x32 inputs."""
    model = tiny_model()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = image[None]
    batch = default_batch_size(torch.device("cpu"), image.numel())
    return {
        "floor": floor_fn(model, image, steps, batch),
        "hand-written IG": handwritten_ig_fn(model, image, steps, batch, target=3),
        "fastattr IG": lambda: fastattr.attribute(model, x, 3, steps=steps, batch_size=batch),
        "fastattr IDGI-IG": lambda: fastattr.attribute(model, x, 3, steps=steps, idgi=True, batch_size=batch),
    }


def child(name: str, calls: int, steps: int) -> None:
    """Under callgrind: warm up `name` (two calls), say "ready" and wait; run it `calls` times, say
    "done" and wait (the parent reads the instruction counter at both waits)."""
    torch.set_num_threads(1)
    fn = candidates(steps)[name]
    fn(), fn()
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(calls):
        fn()
    print("done", flush=True)
    sys.stdin.readline()


def callgrind_instructions(name: str, calls: int, steps: int) -> float:
    """Instructions of one call of `name`: a single-threaded child under callgrind with
    instrumentation off during imports and warm-up (so they run several times faster), switched
    on (callgrind_control) for `calls` calls, then dumped."""
    import glob
    import tempfile

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/cg.out",
             sys.executable, os.path.abspath(__file__), "--child", name, "--calls", str(calls), "--steps",
             str(steps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env=env)
        try:
            for expect, action in (("ready", ["-i", "on"]), ("done", ["-d"])):
                line = proc.stdout.readline().strip()
                if line != expect:
                    raise RuntimeError(f"callgrind child said {line!r}, expected {expect!r}")
                subprocess.run(["callgrind_control", *action, str(proc.pid)], check=True, capture_output=True)
                proc.stdin.write("\n")
                proc.stdin.flush()
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        # the dump taken at "done" holds exactly the instrumented calls (the other file: the exit)
        for path in glob.glob(f"{tmp}/cg.out*"):
            with open(path) as f:
                lines = f.read().splitlines()
            if "desc: Trigger: dump" in lines:
                totals = [int(line.split()[1]) for line in lines if line.startswith("summary:")]
                break
        else:
            raise RuntimeError("callgrind wrote no dump")
    return totals[0] / calls


def count(calls: int, steps: int) -> None:
    per_call = {}
    for name in CANDIDATES:
        per_call[name] = callgrind_instructions(name, calls, steps)
        print(f"{name}: {per_call[name] / 1e6:.2f} M instructions per call", flush=True)
    floor = per_call["floor"]
    print("\ninstructions per step over the floor: " + ", ".join(
        f"{k}: {(v - floor) / steps / 1e3:.1f} k" for k, v in per_call.items() if k != "floor")
        + f" (floor: {floor / steps / 1e3:.1f} k per step)")


def calls_profile(steps: int) -> None:
    import cProfile
    import pstats

    torch.set_num_threads(1)
    for name, fn in candidates(steps).items():
        fn(), fn()
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        st = pstats.Stats(prof)
        torch_ops = sum(c[1] for f, c in st.stats.items() if f[0] == "~" and
                        ("torch" in f[2] or "Tensor" in f[2] or "fastattr" in f[2]))
        print(f"{name}: {st.total_calls} Python-visible calls per attribution, {torch_ops} of them torch "
              f"built-ins/methods, {len(dispatched_ops(fn))} dispatched torch ops")


def dispatched_ops(fn, by_line: bool = False) -> list[tuple[str, str]]:
    """(where, op) for every aten/fastattr op one call of fn dispatches (forward and backward), in
    order; by_line: `where` is the innermost fastattr source line on the stack (ops autograd runs
    are listed under the line that started the backward), else "-"."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    rows: list[tuple[str, str]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            where = "-"
            if by_line:
                ours = [f for f in traceback.extract_stack() if f"{os.sep}fastattr{os.sep}" in f.filename]
                if ours:
                    f = ours[-1]
                    where = f"{f.filename.rsplit(os.sep + 'fastattr' + os.sep, 1)[-1]}:{f.lineno}  {f.line.strip()[:60]}"
            rows.append((where, str(func).replace("aten.", "")))
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return rows


def ops_by_line(steps: int, name: str = "fastattr IG") -> None:
    torch.set_num_threads(1)
    fn = candidates(steps)[name]
    fn(), fn()
    rows = dispatched_ops(fn, by_line=True)
    lines: dict[str, list[str]] = {}  # source line -> its ops, lines in the order first met
    for where, op in rows:
        lines.setdefault(where, []).append(op)
    print(f"{name}, {steps} steps: {len(rows)} dispatched ops")
    for where, ops in lines.items():
        print(f"{len(ops):4d}  {where:80s} {', '.join(ops)[:100]}")


def cold_ops(repeats: int) -> None:
    from fastattr.allocator import tune_for_chunks

    torch.set_num_threads(1)
    tune_for_chunks()  # as in an attribution
    model = tiny_model()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    chunk = floor_fn(model, image, 64, 64)  # one chunk of 64 points
    x, small = image[None], torch.rand(2)
    ops = {"x.sum()": lambda: x.sum(), "small + 1": lambda: small + 1, "torch.empty(3)": lambda: torch.empty(3),
           "torch.cat([x, x])": lambda: torch.cat([x, x]), "bool(torch.isfinite(x).all())": lambda: bool(torch.isfinite(x).all())}

    def median_us(op, after_chunk: bool) -> float:
        times = []
        for _ in range(repeats):
            if after_chunk:
                chunk()
            t0 = time.perf_counter()
            op()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    print("| op (1 thread) | warm, us | right after a chunk, us |\n|---|---|---|")
    for name, op in ops.items():
        print(f"| `{name}` | {median_us(op, False):.1f} | {median_us(op, True):.1f} |")


def timing(repeats: int, steps: int, threads: int, cpu: bool, quiet: bool = False) -> dict[str, float]:
    """-> per-step overhead over the floor (us) per candidate, printed unless quiet."""
    torch.set_num_threads(1 if cpu else threads)
    cands = candidates(steps)
    ours, hand = cands["fastattr IG"](), cands["hand-written IG"]()
    gap = float((ours[0] - hand).abs().max() / hand.abs().max())
    if gap > 1e-4:  # the lower bound must compute the same map, or it bounds nothing
        raise RuntimeError(f"hand-written IG differs from fastattr IG by {gap:.2e} of its max")
    t = interleaved(cands, repeats=repeats, warmup=2, clock=time.thread_time if cpu else time.perf_counter,
                    shuffle=True)
    how = "1 thread, CPU time of the thread" if cpu else f"{threads} threads, wall time"
    med = {k: statistics.median(v) for k, v in t.items()}
    over = {k: (v - med["floor"]) / steps * 1e6 for k, v in med.items() if k != "floor"}
    if not quiet:
        print(report(t, title=f"tiny model 32x32, {steps} steps, {how}, {repeats} rounds"))
        print("\nper-step overhead over the floor (us/step): " + ", ".join(f"{k}: {v:.2f}" for k, v in over.items()))
    return dict(over, floor_ms=med["floor"] * 1e3)


def phases(repeats: int, steps: int, threads: int) -> None:
    import fastattr.methods.integrated_gradients as ig

    torch.set_num_threads(threads)
    cands = candidates(steps)
    walk_s: list[float] = []
    inner = ig.walk_path

    def timed_walk(*a, **k):
        t0 = time.perf_counter()
        inner(*a, **k)
        walk_s.append(time.perf_counter() - t0)

    ig.walk_path = timed_walk
    try:
        t = interleaved({k: cands[k] for k in ("floor", "hand-written IG", "fastattr IG")}, repeats=repeats, warmup=2,
                        shuffle=True)
    finally:
        ig.walk_path = inner
    med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
    walk = statistics.median(walk_s[-repeats:]) * 1e3
    print(f"ms per call, {threads} threads, {steps} steps, medians of {repeats} rounds: floor {med['floor']:.3f}, "
          f"hand-written IG {med['hand-written IG']:.3f}, fastattr IG {med['fastattr IG']:.3f} of which its walk "
          f"{walk:.3f}\nfastattr IG: walk - floor {walk - med['floor']:+.3f} ms, outside the walk "
          f"{med['fastattr IG'] - walk:.3f} ms; hand-written IG - floor {med['hand-written IG'] - med['floor']:+.3f} ms")


def across_processes(processes: int, args) -> None:
    """The timing in `processes` fresh processes, one after the other: median and range."""
    import json

    runs = []
    for p in range(processes):
        cmd = [sys.executable, os.path.abspath(__file__), "--repeats", str(args.repeats), "--steps", str(args.steps),
               "--threads", str(args.threads), "--json"] + (["--cpu-time"] if args.cpu_time else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"process {p + 1}/{processes}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
    print(f"\nper-step overhead over the floor (us/step), median of {processes} processes [min-max]: " + ", ".join(
        f"{k}: {statistics.median(r[k] for r in runs):.2f} [{min(r[k] for r in runs):.2f}-{max(r[k] for r in runs):.2f}]"
        for k in runs[0] if k != "floor_ms")
        + f"; floor {statistics.median(r['floor_ms'] for r in runs):.2f} ms per call")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread, timed by its CPU time (time.thread_time): less sensitive to other load")
    ap.add_argument("--count", action="store_true", help="callgrind instruction counts (valgrind)")
    ap.add_argument("--calls", type=int, default=4, help="--count: attributions counted per process")
    ap.add_argument("--calls-profile", action="store_true", help="cProfile call counts per attribution")
    ap.add_argument("--cold-ops", action="store_true", help="small ops warm and right after a chunk (1 thread)")
    ap.add_argument("--ops-by-line", action="store_true", help="fastattr IG's dispatched ops per source line")
    ap.add_argument("--idgi", action="store_true", help="--ops-by-line: of fastattr IDGI-IG")
    ap.add_argument("--phases", action="store_true", help="fastattr IG's time in its walk and outside it")
    ap.add_argument("--processes", type=int, default=1, help="run the timing in K fresh processes: median, range")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.json:
        import json

        print(json.dumps(timing(args.repeats, args.steps, args.threads, args.cpu_time, quiet=True)))
    elif args.processes > 1:
        across_processes(args.processes, args)
    elif args.child:
        child(args.child, args.calls, args.steps)
    elif args.count:
        count(args.calls, args.steps)
    elif args.calls_profile:
        calls_profile(args.steps)
    elif args.ops_by_line:
        ops_by_line(args.steps, "fastattr IDGI-IG" if args.idgi else "fastattr IG")
    elif args.phases:
        phases(max(args.repeats, 60), args.steps, args.threads)
    elif args.cold_ops:
        cold_ops(max(args.repeats, 100))
    else:
        timing(args.repeats, args.steps, args.threads, args.cpu_time)


if __name__ == "__main__":
    main()
