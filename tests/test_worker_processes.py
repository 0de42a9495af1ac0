"""Issue 22 item 8: every process fastattr starts ends with its parent, kill -9 included. `fastattr
eval` with the SIC/AIC worker pool and `fastattr run` with decoding workers are SIGKILLed while
their workers are alive; a few seconds later no process of theirs is left (the eval's two pool
workers used to wait on a futex forever, about 300 MB each). Each command runs in a session of
its own, so its processes are found by session id without a race."""
import os
import signal
import subprocess
import sys
import time

import pytest
from clitools import ENV, FASTATTR, make_images, save_export
from conftest import make_small_cnn

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _session(sid: int) -> list[int]:
    """Live (non-zombie) processes of session sid."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state != "Z":
            found.append(int(name))
    return found


def _kill_with_workers_alive(argv: list[str], workers: int, timeout: float = 240) -> list[int]:
    """Start the command in a new session, SIGKILL its main process (only that one) once it has at
    least `workers` child processes; -> the session's processes still alive 3 s later."""
    proc = subprocess.Popen(argv, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while len([p for p in _session(proc.pid) if p != proc.pid]) < workers:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 3
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return _session(proc.pid)
    finally:
        try:  # never leave an orphan behind, whatever the outcome
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stderr.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    save_export(make_small_cnn(seed=1), root / "model.pt2", 96)
    make_images(root / "data", [(f"im{i}.png", (100 + i, 96)) for i in range(8)])
    return root


def test_sigkill_of_eval_leaves_no_pool_worker(folder, tmp_path):
    left = _kill_with_workers_alive(
        [FASTATTR, "eval", str(folder / "data"), "--model", str(folder / "model.pt2"), "--size", "96",
         "--methods", "vanilla", "--metrics", "pic_pair", "--metric-workers", "2", "--workers", "0",
         "--images-per-call", "8", "--min-pred", "0", "--bootstrap", "0", "--no-progress", "--out",
         str(tmp_path / "e")], workers=2)
    assert left == [], f"processes of the killed eval still alive: {left}"


def test_sigkill_of_run_leaves_no_decoding_worker(folder, tmp_path):
    left = _kill_with_workers_alive(
        [FASTATTR, "run", str(folder / "data"), "--model", str(folder / "model.pt2"), "--size", "96",
         "--steps", "200", "--workers", "2", "--images-per-call", "1", "--no-progress", "--out",
         str(tmp_path / "r")], workers=2)
    assert left == [], f"processes of the killed run still alive: {left}"


def test_pool_workers_end_with_a_parent_killed_in_the_middle_of_their_work(tmp_path):
    """The pool of fastattr.workers directly: a parent that dies (SIGKILL) while its two workers
    sleep inside a task takes them with it (PR_SET_PDEATHSIG; the watchdog thread otherwise)."""
    code = ("import time\n"
            "from fastattr.workers import process_pool\n"
            "with process_pool(2) as ex:\n"
            "    futures = [ex.submit(time.sleep, 600) for _ in range(2)]\n"
            "    print('working', flush=True)\n"
            "    time.sleep(600)\n")
    left = _kill_with_workers_alive([sys.executable, "-c", code], workers=2, timeout=120)
    assert left == [], f"pool workers of the killed parent still alive: {left}"


def test_loader_worker_whose_parent_died_before_its_init_ends(tmp_path):
    """The race behind a CI failure: the run was killed between a decoding worker's fork and its
    worker_init_fn. The init must know its parent from before the fork, not from os.getppid()
    (by then init's pid), or that worker lives on. Here: the parent makes the init, forks, and
    exits at once; the child runs the init half a second later and must end right there."""
    marker = tmp_path / "survived"
    code = ("import os, time\n"
            "from fastattr.workers import dataloader_worker_init\n"
            "init = dataloader_worker_init()\n"
            "if os.fork() == 0:\n"
            "    time.sleep(0.5)\n"
            "    init(0)\n"
            "    time.sleep(0.5)\n"
            f"    open({str(marker)!r}, 'w').close()\n"
            "    os._exit(0)\n"
            "os._exit(0)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, start_new_session=True)
    proc.wait()
    try:
        deadline = time.monotonic() + 10
        while _session(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _session(proc.pid) == [], "the worker outlived its parent"
        assert not marker.exists()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
