"""`mmdit-scale status`: show job state, restarts, step, last checkpoint, loss and throughput of a run dir."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "Show job state, restarts, step, last checkpoint, loss and throughput of a run dir."
DESCRIPTION = (
    "Show a run dir's SLURM job(s) with their state and restarts (from SLURM while it remembers the job, "
    "else from the job's own RUN_DIR/slurm/events.tsv), and the trainer's progress: step, the checkpoint "
    "`latest` names, the last loss and throughput from metrics.jsonl. Exit 0, or 2 when RUN_DIR is not a run dir."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (train --run-dir / submit --run-dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    from launcher.slurm.records import JOBS_FILE
    from launcher.slurm.render import SLURM_DIR
    from launcher.slurm.run_status import run_status, to_text
    from mmdit_scale.run.layout import CONFIG_FILE, METRICS_FILE

    run_dir = args.run_dir.absolute()
    markers = (run_dir / SLURM_DIR / JOBS_FILE, run_dir / CONFIG_FILE, run_dir / METRICS_FILE)
    if not any(p.exists() for p in markers):
        print(f"mmdit-scale status: {run_dir} is not a run dir (no slurm/{JOBS_FILE}, {CONFIG_FILE} or "
              f"{METRICS_FILE})", file=sys.stderr)
        return 2
    status = run_status(run_dir)
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        sys.stdout.write(to_text(status))
    return 0
