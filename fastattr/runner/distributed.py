"""Process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR/PORT): gloo on CPU, NCCL on GPU; a single process needs no group at all."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Ranks meet at a barrier only after all their shards are done, which on a large dataset takes
# far longer than torch's 30-minute default; a crashed rank makes torchrun stop the others, so a
# long timeout does not turn failures into hangs.
BARRIER_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Dist:
    """Where this process sits: global rank/world, rank/world on its node, its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    device: torch.device = torch.device("cpu")

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.world > 1:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_device(device: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or None (cuda:LOCAL_RANK when a GPU is present, else CPU) -> a
    device that exists here; anything else is a UserError saying what is available."""
    from fastattr.errors import UserError

    if device is None:
        return torch.device("cuda", local_rank % torch.cuda.device_count()) if torch.cuda.is_available() \
            else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"device: unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise UserError(f"device: {dev.type!r} is not supported; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise UserError(f"device: {device!r} asked for, but CUDA is not available ({why}); use --device cpu")
    n = torch.cuda.device_count()
    if dev.index is None:
        return torch.device("cuda", local_rank % n)
    if dev.index >= n:
        raise UserError(f"device: {device!r} asked for, but only {n} GPU(s) are visible (cuda:0..cuda:{n - 1})")
    return dev


def setup(device: str | None = None) -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1. device: see check_device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    dev = check_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
    return Dist(rank, world, local_rank, local_world, dev)


def teardown(d: Dist) -> None:
    """Leave the process group (no-op in a single process)."""
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def default_threads(d: Dist) -> int:
    """Intra-op threads per rank: the node's cores shared among its ranks (oversubscribing the
    cores makes every rank slower than one rank alone)."""
    return max(1, cpu_count() // max(1, d.local_world))
