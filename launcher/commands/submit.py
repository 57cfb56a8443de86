"""`mmdit-scale submit`: check a recipe, render its sbatch script and submit it (docs/cluster.md).

    mmdit-scale submit RECIPE [key=value ...] --nodes N --gpus-per-node G [--run-dir DIR]
        [--partition P] [--account A] [--qos Q] [--time HH:MM:SS] [--constraint C] [--mem M]
        [--exclusive] [--after JOBID] [--cpu] [--dry-run]

stdout carries SLURM's `Submitted batch job N` and then `job N run dir DIR`, or with --dry-run
exactly the sbatch script; every other message goes to stderr. Exit 0 submitted (or rendered),
2 a bad recipe, flag or value, 1 sbatch refused the job.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "Render and submit a SLURM job for a recipe (--dry-run prints the sbatch script)."
DESCRIPTION = (
    "Check RECIPE with its key=value overrides (schema, batch divisibility, and for GPU jobs the memory "
    "plan), render the sbatch script from cluster/templates/train.sbatch, and submit it: one srun task per "
    "node runs `mmdit-scale train`, which starts the node's G ranks. The job is requeueable: on USR1 "
    "(SLURM sends it --signal-lead seconds before the time limit) the trainer checkpoints and the job "
    "requeues itself and resumes. --dry-run prints exactly the script on stdout and submits nothing."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from launcher.arguments import positive_int
    from launcher.slurm.options import add_resource_arguments
    from launcher.slurm.render import DEFAULT_SIGNAL_LEAD

    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="dotted overrides, e.g. data.train=shards/train train.steps=1000")
    parser.add_argument("--nodes", type=positive_int, required=True, metavar="N", help="number of nodes")
    parser.add_argument("--gpus-per-node", type=positive_int, required=True, metavar="G",
                        help="ranks per node: GPUs (or CPU ranks with --cpu)")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="run directory (default: runs/<recipe name>); one with a checkpoint resumes")
    parser.add_argument("--after", metavar="JOBID",
                        help="start only after job JOBID succeeded (afterok), e.g. a pretrain stage")
    parser.add_argument("--cpu", action="store_true", help="G ranks per node on CPU, no GPUs requested")
    parser.add_argument("--signal-lead", type=int, default=DEFAULT_SIGNAL_LEAD, metavar="SECONDS",
                        help=f"USR1 this long before the time limit (default {DEFAULT_SIGNAL_LEAD})")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script on stdout, submit nothing")
    add_resource_arguments(parser)


def _fail(message: str, code: int = 2) -> int:
    print(f"mmdit-scale submit: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from launcher.slurm import checks, records, sbatch
    from launcher.slurm.options import environment, resources_from, say
    from launcher.slurm.quoting import SubmitError, check_option, check_text
    from launcher.slurm.render import SLURM_DIR, TrainJob, render_train
    from mmdit_scale.config import ConfigError, load_config
    from mmdit_scale.config.recipes import find_recipe
    from mmdit_scale.train.ds_config import grad_accumulation

    try:
        if args.after is not None:
            check_option("--after", args.after)
        if args.signal_lead < 0:
            raise SubmitError(f"--signal-lead must be >= 0, got {args.signal_lead}")
        recipe = find_recipe(check_text("RECIPE", args.recipe)).absolute()
        cfg = load_config(recipe, args.overrides)
        grad_accumulation(cfg, args.nodes * args.gpus_per_node)
        run_dir = (args.run_dir or Path("runs") / recipe.stem).absolute()
        job = TrainJob(recipe=recipe, overrides=tuple(args.overrides), nodes=args.nodes,
                       gpus_per_node=args.gpus_per_node, cpu=args.cpu, run_dir=run_dir, env=environment(),
                       resources=resources_from(args), after=args.after, signal_lead=args.signal_lead)
        script = render_train(job)
        notes = checks.check_data(cfg, job, strict=not args.dry_run)
        if not args.cpu:
            notes.append(checks.check_plan(cfg, args.nodes * args.gpus_per_node))
        notes += checks.check_run_dir(cfg, run_dir)
    except (ConfigError, SubmitError, ValueError) as err:
        return _fail(str(err))
    for note in notes:
        say(note)
    if args.dry_run:
        sys.stdout.write(script)
        return 0

    slurm_dir = run_dir / SLURM_DIR
    slurm_dir.mkdir(parents=True, exist_ok=True)  # the job's --output goes here
    draft = slurm_dir / f".submit-{os.getpid()}.sbatch"
    draft.write_text(script)
    try:
        job_id, submitted = sbatch.submit(draft)
    except SubmitError as err:
        draft.unlink()
        return _fail(str(err), 1)
    draft.rename(slurm_dir / f"{job_id}.sbatch")
    records.record_submission(run_dir, records.new_submission(job_id, args.nodes, args.gpus_per_node, args.cpu,
                                                              args.after))
    print(submitted)
    print(f"job {job_id} run dir {run_dir}", flush=True)
    say(f"log: {slurm_dir / f'{job_id}.out'}; progress: mmdit-scale status {run_dir}")
    return 0
