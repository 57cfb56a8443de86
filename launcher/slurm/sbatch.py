"""Talking to SLURM: submit a script with sbatch, ask scontrol (or sacct) about a job."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from launcher.slurm.quoting import SubmitError

_SUBMITTED = re.compile(r"Submitted batch job (\d+)")
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def submit(script: Path, extra: list[str] | None = None) -> tuple[int, str]:
    """Run `sbatch [extra] script`; returns the job id and sbatch's own output line."""
    if shutil.which("sbatch") is None:
        raise SubmitError("sbatch is not on PATH: submit from a SLURM login node "
                          "(or start the local test cluster: sudo cluster/local/up.sh)")
    done = subprocess.run(["sbatch", *(extra or []), str(script)], capture_output=True, text=True)
    match = _SUBMITTED.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SubmitError(f"sbatch failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
    return int(match.group(1)), match.group(0)


@dataclass(frozen=True)
class JobInfo:
    job_id: int
    state: str
    """SLURM's state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... (REQUEUED between runs)."""
    restarts: int | None
    exit_code: str | None
    nodes: str | None
    reason: str | None
    source: str
    """Who answered: scontrol (the controller's memory) or sacct (accounting)."""


def parse_fields(line: str) -> dict[str, str]:
    """`scontrol show job -o` output: Key=Value pairs; values may contain spaces (paths)."""
    matches = list(_FIELD.finditer(line))
    out = {}
    for m, nxt in zip(matches, matches[1:] + [None]):
        end = nxt.start() if nxt is not None else len(line)
        out[m.group(1)] = line[m.end():end].strip()
    return out


def query(job_id: int) -> JobInfo | None:
    """What SLURM knows about a job now, or None when neither scontrol nor sacct knows it
    (finished jobs leave the controller's memory after MinJobAge; sacct needs accounting)."""
    if shutil.which("scontrol"):
        done = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
        if done.returncode == 0 and lines:
            f = parse_fields(lines[0])
            return JobInfo(job_id=job_id, state=f.get("JobState", "UNKNOWN"),
                           restarts=int(f["Restarts"]) if f.get("Restarts", "").isdigit() else None,
                           exit_code=f.get("ExitCode"), nodes=f.get("NodeList") or None,
                           reason=f.get("Reason") if f.get("Reason") not in (None, "None") else None,
                           source="scontrol")
    if shutil.which("sacct"):
        done = subprocess.run(["sacct", "-n", "-P", "-X", "-j", str(job_id), "-o", "State,ExitCode,NodeList"],
                              capture_output=True, text=True)
        rows = [ln.split("|") for ln in done.stdout.splitlines() if ln.count("|") == 2]
        if done.returncode == 0 and rows:
            state, exit_code, nodes = rows[-1]
            return JobInfo(job_id=job_id, state=state.split()[0], restarts=None, exit_code=exit_code,
                           nodes=nodes or None, reason=None, source="sacct")
    return None
