"""One trainer per run directory: the launcher holds RUN_DIR/.lock while the run's ranks live.

Two `train` commands on one run dir would both "start fresh", delete each other's checkpoints
(stale temporaries, pruning) and interleave metrics.jsonl. The lock is an advisory `flock` on
RUN_DIR/.lock, which also records who holds it (pid, host, start time) for the refusal message.
The kernel drops a flock when its holder dies however it dies (SIGKILL included), so the lock of
a killed run is free: the next `train` takes it over and says so. The descriptor is inherited
across `exec`, so a launcher that becomes its rank (one SLURM task per rank) keeps holding it.

`flock` is local to one machine on most network filesystems: on a shared run dir it keeps two
trainers of one node apart, and `submit` keeps two jobs of one run dir apart (launcher/slurm/checks.py).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirBusy(RuntimeError):
    """Another live trainer holds the run directory; the message names it."""


def acquire(run_dir: Path) -> tuple[int, str]:
    """Hold `run_dir`'s lock until this process (or what it execs) exits; returns the descriptor and
    a note ('' or which dead holder's lock was taken over). RunDirBusy when a live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe(_read(fd))
        os.close(fd)
        raise RunDirBusy(f"{run_dir} is in use by another trainer ({holder}); wait for it to end, or stop it, "
                         "before training in this run dir again") from None
    previous = _read(fd)
    note = f"took over the lock of a run that ended without releasing it ({_describe(previous)})" if previous else ""
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    os.fsync(fd)
    os.set_inheritable(fd, True)
    return fd, note


def release(fd: int) -> None:
    """Clear the holder record and drop the lock (also what the process's exit does)."""
    os.ftruncate(fd, 0)
    os.close(fd)


def _read(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {since}"
