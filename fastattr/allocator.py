"""glibc malloc policy for attribution on the CPU: keep freed memory for the next chunk.

An attribution repeats the same forward+backward on chunks of the same shape. PyTorch's CPU
allocator is plain malloc, and glibc hands large freed blocks back to the kernel (trimming the
heap top, unmapping blocks above its mmap threshold), so every chunk faults its activation and
gradient pages in again and the kernel zeroes them: on this 2-core EPYC a tiny one-conv model's
floor (bench/bench_overhead.py) took 14-23 ms per call with glibc's defaults (3-6 k page faults per
call) and 9.5-12.5 ms with the policy below (none), and fastattr IG on EfficientNet-Lite0 at
224 px, 32 steps, 1.16-1.24 s against 0.94-1.10 s (peak RSS +60-80 MB), measured 2026-12-07.

The first engine session on a CPU (Engine.session) sets, once per process, through mallopt:
M_MMAP_THRESHOLD 32 MB (glibc's own upper bound for its sliding threshold: blocks below it come
from the heap), M_TRIM_THRESHOLD 256 MB (free memory at the heap top kept up to that much) and
M_TOP_PAD 64 MB. The process then keeps up to about 320 MB of freed memory for reuse instead of
returning it at once. Not applied when FASTATTR_MALLOC_TUNING=0, when the user set any of glibc's
MALLOC_*_ variables (their choice stands), when another allocator is preloaded (jemalloc,
tcmalloc, mimalloc), or off glibc.
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
POLICY = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 256 << 20, M_TOP_PAD: 64 << 20}
USER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_state: dict = {"applied": None}  # None: not decided yet; True / False once decided


def tuning_wanted(environ=os.environ) -> bool:
    """Whether this process should get the policy (see the module docstring)."""
    if environ.get("FASTATTR_MALLOC_TUNING", "1").strip() in ("0", "false", "no", "off"):
        return False
    if any(name in environ for name in USER_VARIABLES):
        return False
    if any(a in environ.get("LD_PRELOAD", "") for a in OTHER_ALLOCATORS):
        return False
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def tune_for_chunks() -> bool:
    """Apply the policy once per process (a no-op after the first call); True if it is in effect."""
    if _state["applied"] is None:
        _state["applied"] = False
        if tuning_wanted():
            try:
                libc = ctypes.CDLL("libc.so.6")
                # mallopt returns 1 on success
                _state["applied"] = all(libc.mallopt(k, v) == 1 for k, v in POLICY.items())
            except (OSError, AttributeError):
                pass
    return _state["applied"]
