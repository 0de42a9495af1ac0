"""fastattr/allocator.py: the glibc malloc policy a CPU attribution sets for its process, when it is
left alone, that it takes effect (freed chunk memory stays with the process), and that it never
changes a map."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from fastattr.allocator import tuning_wanted

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process: optionally one CPU attribution (which applies the policy), then a 20 MB
# tensor allocated, touched and freed; reports how much of it the process still holds, whether the
# policy is in effect, and the map's values.
PROBE = r"""
import json, os, sys, torch
from torch import nn
import fastattr
from fastattr import allocator
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)).eval()
x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
m = fastattr.attribute(model, x, method="ig", steps=16, idgi=sys.argv[1] == "idgi")
r0 = rss_mb(); t = torch.ones(5 << 20); r1 = rss_mb(); del t; r2 = rss_mb()
print(json.dumps({"applied": allocator._state["applied"], "allocated_mb": r1 - r0, "kept_mb": r2 - r0,
                  "map": m.flatten().tolist()}))
"""


def probe(env_extra: dict, method: str = "ig") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "FASTATTR_MALLOC_TUNING"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE, method], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("environ, wanted", [
    ({}, GLIBC),
    ({"FASTATTR_MALLOC_TUNING": "0"}, False),
    ({"FASTATTR_MALLOC_TUNING": "off"}, False),
    ({"FASTATTR_MALLOC_TUNING": "1"}, GLIBC),
    ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, False),  # the user's own glibc settings stand
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, False),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, False),
    ({"LD_PRELOAD": "/opt/lib/libtcmalloc_minimal.so"}, False),
])
def test_when_the_policy_is_wanted(environ, wanted):
    assert tuning_wanted(environ) is wanted


@pytest.mark.skipif(not GLIBC, reason="the policy is glibc's mallopt")
def test_an_attribution_keeps_freed_memory_for_the_next_chunk():
    on = probe({})
    assert on["applied"] is True
    assert on["allocated_mb"] > 15
    assert on["kept_mb"] > 15, on  # freed, yet still the process's: the next chunk reuses it
    off = probe({"FASTATTR_MALLOC_TUNING": "0"})
    assert off["applied"] is False
    assert off["kept_mb"] < 8, off  # glibc's default hands the 20 MB block back at once
    user = probe({"MALLOC_TRIM_THRESHOLD_": "131072"})
    assert user["applied"] is False


@pytest.mark.skipif(not GLIBC, reason="the policy is glibc's mallopt")
@pytest.mark.parametrize("method", ["ig", "idgi"])
def test_the_policy_never_changes_a_map(method):
    on, off = probe({}, method), probe({"FASTATTR_MALLOC_TUNING": "0"}, method)
    assert on["applied"] and not off["applied"]
    assert on["map"] == off["map"]  # bitwise
