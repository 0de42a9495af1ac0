"""One writer per output folder: an exclusive lock on FOLDER/.fastattr-lock, taken before anything
in the folder is touched (the start-up cleanup deletes temporary files, which would be another
live run's half-written shards) and released when the run ends or its process dies (the kernel
drops the locks of dead processes, so a killed run leaves no stale lock). While held, the file
names the holder (pid, host, command) for the refusal message; on release it is emptied again, so
a finished folder's bytes do not depend on which process wrote it.

Why a POSIX record lock (fcntl.lockf) and not flock: forked children (the DataLoader's decoding
workers) do not inherit it, so the lock ends exactly with the run's own process; and NFS clients
share it. Its catch - closing any descriptor of the file in the holding process drops it - does
not arise, nothing else opens the lock file. Locks of one process do not exclude each other: two
runs in threads of one process are not detected. On file systems without locks the run goes
ahead unlocked."""
from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from fastattr.errors import UserError

LOCK_NAME = ".fastattr-lock"


class FolderBusy(UserError):
    """The folder is being written by another live run."""


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "--out") -> Iterator[Path]:
    """Hold the folder's lock for the duration of the block; FolderBusy (naming the holder) if
    another process holds it. The folder must exist. Yields the lock file's path."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no advisory locks
        yield folder / LOCK_NAME
        return
    from fastattr.runner.shards import write_error

    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        locked = True
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "pid unknown"
                raise FolderBusy(f"{what}: {folder} is in use by another fastattr run ({holder}); wait for "
                                 f"it to finish or use another folder (lock file: {path})") from None
            locked = False  # no lock support on this file system (ENOLCK, EOPNOTSUPP, ...)
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:300]}\n".encode(), 0)
        try:
            yield path
        finally:
            if locked:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
