"""What a run dir remembers about its SLURM jobs, for `mmdit-scale status`.

    RUN_DIR/slurm/
      jobs.jsonl      one line per `mmdit-scale submit`: job id, time, nodes, ranks per node, after
      JOBID.sbatch    the script that was submitted
      JOBID.out       the job's output, all its restarts appended
      events.tsv      written by the job itself: time, job id, restart count, kind, detail, where
                      kind is start (detail: node list), signal (USR1/TERM), exit (code), requeue

The controller forgets a finished job after a few minutes and many sites keep no accounting, so
the job's own records are what `status` falls back on.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from launcher.slurm.render import SLURM_DIR

JOBS_FILE = "jobs.jsonl"
EVENTS_FILE = "events.tsv"


@dataclass(frozen=True)
class Submission:
    job_id: int
    submitted: float
    nodes: int
    ranks_per_node: int
    cpu: bool
    after: str | None


@dataclass(frozen=True)
class Event:
    time: float
    job_id: int
    restart: int
    kind: str
    detail: str


def record_submission(run_dir: Path, sub: Submission) -> None:
    with open(run_dir / SLURM_DIR / JOBS_FILE, "a") as f:
        f.write(json.dumps(asdict(sub)) + "\n")


def new_submission(job_id: int, nodes: int, ranks_per_node: int, cpu: bool, after: str | None) -> Submission:
    return Submission(job_id=job_id, submitted=time.time(), nodes=nodes, ranks_per_node=ranks_per_node, cpu=cpu,
                      after=after)


def read_submissions(run_dir: Path) -> list[Submission]:
    path = run_dir / SLURM_DIR / JOBS_FILE
    if not path.is_file():
        return []
    return [Submission(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def read_events(run_dir: Path) -> list[Event]:
    """The job events in file order; a line cut short by a kill is skipped."""
    path = run_dir / SLURM_DIR / EVENTS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) != 5 or not cells[1].isdigit() or not cells[2].isdigit():
            continue
        try:
            events.append(Event(time=float(cells[0]), job_id=int(cells[1]), restart=int(cells[2]), kind=cells[3],
                                detail=cells[4]))
        except ValueError:
            continue
    return events
