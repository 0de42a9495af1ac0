"""Worker processes that end with their parent, SIGKILL included: every pool fastattr starts (the
SIC/AIC image side, the runner's and eval's decoding workers) runs `die_with_parent` first.

Why: a forked pool worker waits on a pipe whose write end it inherited itself, so it never sees
EOF when the parent dies; after `kill -9` of `fastattr eval` its two SIC/AIC workers (about
300 MB each) were seen waiting on a futex 30 minutes later. Two mechanisms, because neither
covers everything alone: Linux's PR_SET_PDEATHSIG asks the kernel to SIGKILL the worker the
moment its parent goes (no polling, works while the worker is busy in C code), and a daemon
thread polls the parent pid every 0.5 s, so the worker also ends on systems without prctl."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 0.5


def _set_pdeathsig() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux); False elsewhere.
    The signal is tied to the parent thread that forked this process: fastattr's pools are created
    and shut down by one caller frame (a `with` block), so that thread outlives every worker."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux / no prctl symbol
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)  # reparented: the parent is gone


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when process `parent` (the pool's creator) dies."""
    _set_pdeathsig()
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="fastattr-parent-watch", daemon=True).start()


def _dataloader_worker_init(parent: int, worker_id: int) -> None:
    die_with_parent(parent)


def dataloader_worker_init() -> functools.partial:
    """A DataLoader worker_init_fn that ends each worker with this (the calling) process. The pid
    is taken here, in the parent: read in the worker (os.getppid()), it is already init's when the
    parent was killed between the fork and the init, and that worker then lived on (seen in CI)."""
    return functools.partial(_dataloader_worker_init, os.getpid())


@contextlib.contextmanager
def process_pool(workers: int):
    """A ProcessPoolExecutor of `workers` forked processes that end with this process. fork: the
    children run numpy/scipy/PIL only (never torch) and start in milliseconds, with no
    `if __name__ == "__main__"` requirement on the caller's script (spawn would need one)."""
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as ex:
        yield ex
