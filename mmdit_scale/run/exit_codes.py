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
IO_ERROR = 74
"""Writing a checkpoint failed (the disk is full, or another I/O error); the message says where.
The partial checkpoint is removed and `latest` still names the last complete one (EX_IOERR)."""
NONFINITE = 65
"""`train.nan_tolerance` optimizer steps in a row had a non-finite loss or gradient; the run
stopped without writing a checkpoint, so `latest` still names the last good one (EX_DATAERR)."""
PREEMPTED = 75
"""SIGUSR1 or SIGTERM: every rank finished its step, a checkpoint was written, run again to
resume (EX_TEMPFAIL: 'try again later')."""

NAMES = {FINISHED: "finished", FAILED: "failed", CONFIG_ERROR: "config error", NONFINITE: "non-finite loss",
         IO_ERROR: "checkpoint write failed", PREEMPTED: "preempted"}

_SEVERITY = (FAILED, IO_ERROR, CONFIG_ERROR, NONFINITE, PREEMPTED, FINISHED)

AGREED = (FINISHED, PREEMPTED, CONFIG_ERROR, NONFINITE)
"""Ends every rank reaches together (collective decisions). Any other end is one rank's: the rest
may wait for it in a collective, so the launcher must stop them."""


def combine(codes: list[int], expected: int | None = None) -> int:
    """One exit code for several ranks: the most severe wins (a failure beats a preemption). With
    fewer than `expected` codes (ranks stopped before they could report), a rank's own error that
    was reported explains the end; otherwise it is a failure."""
    if not codes:
        return FAILED
    if expected is not None and len(codes) < expected:
        own = [c for c in codes if c not in AGREED and c in _SEVERITY]
        return min(own, key=_SEVERITY.index) if own else FAILED
    known = [c for c in codes if c in _SEVERITY]
    if len(known) < len(codes):
        return FAILED
    return min(known, key=_SEVERITY.index)
