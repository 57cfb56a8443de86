"""Process plumbing shared by the launcher and the ranks (torch-free).

Ranks must never outlive the launcher. torch.distributed's elastic agent starts each rank in a
new session, so killing the launcher's process group does not reach them; instead every process
asks the kernel for SIGKILL when its parent dies (Linux `PR_SET_PDEATHSIG`): launcher dies ->
agent dies -> ranks die.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

from data_pipeline.atomic import write_atomic
from mmdit_scale.run.exit_codes import FAILED

_PR_SET_PDEATHSIG = 1

STATUS_DIR_ENV = "MMDIT_STATUS_DIR"
"""Set by the launcher: a node-local directory where each rank leaves `rank_<N>` holding its exit code."""


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Get `sig` when the parent process exits; exit at once if it already has."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent == 1 or os.getppid() != parent:
        os._exit(1)  # the parent died before the request took effect


def report_exit(rank: int, code: int) -> int:
    """The process exit status for `code`: under our launcher the code goes to the status dir and
    the rank exits 0 unless it failed (so torch's agent does not report a preemption as a crash;
    the launcher itself stops the other ranks when one reports an error of its own)."""
    status_dir = os.environ.get(STATUS_DIR_ENV)
    if not status_dir:
        return code
    write_atomic(os.path.join(status_dir, f"rank_{rank}"), f"{code}\n")
    return FAILED if code == FAILED else 0


def read_exit_codes(status_dir: str) -> dict[int, int]:
    """rank -> exit code left by the ranks of this node."""
    codes = {}
    for name in os.listdir(status_dir):
        if name.startswith("rank_"):  # not `.rank_N.tmp-PID`, a report being written
            with open(os.path.join(status_dir, name)) as f:
                codes[int(name[5:])] = int(f.read().strip())
    return codes
