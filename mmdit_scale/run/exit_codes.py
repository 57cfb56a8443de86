"""Process exit codes of a training run, shared by the ranks and the launcher (torch-free).

`mmdit-scale train` exits with one of these; a SLURM script requeues the job on PREEMPTED.
"""
from __future__ import annotations

FINISHED = 0
"""All `train.steps` are done and the final checkpoint is written."""
FAILED = 1
"""An error (exception, crashed or killed rank); the newest complete checkpoint is untouched."""
CONFIG_ERROR = 2
"""The recipe or an override does not fit the schema, or the run cannot start with it."""
NONFINITE = 65
"""`train.nan_tolerance` optimizer steps in a row had a non-finite loss or gradient; the run
stopped without writing a checkpoint, so `latest` still names the last good one (EX_DATAERR)."""
PREEMPTED = 75
"""SIGUSR1 or SIGTERM: every rank finished its step, a checkpoint was written, run again to
resume (EX_TEMPFAIL: 'try again later')."""

NAMES = {FINISHED: "finished", FAILED: "failed", CONFIG_ERROR: "config error", NONFINITE: "non-finite loss",
         PREEMPTED: "preempted"}

_SEVERITY = (FAILED, CONFIG_ERROR, NONFINITE, PREEMPTED, FINISHED)


def combine(codes: list[int]) -> int:
    """One exit code for several ranks: the most severe wins (a failure beats a preemption)."""
    if not codes:
        return FAILED
    known = [c for c in codes if c in _SEVERITY]
    if len(known) < len(codes):
        return FAILED
    return min(known, key=_SEVERITY.index)
