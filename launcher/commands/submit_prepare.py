"""`mmdit-scale submit-prepare`: encode a dataset on many machines, as a SLURM job array.

    mmdit-scale submit-prepare SRC DIR --parts N [--gpus-per-node G] [sbatch options] [--dry-run]
        [--prepare-flags FLAG ...]     (last: e.g. --prepare-flags --encoders enc.yaml --resolution 256)

Array task I runs `mmdit-scale prepare --input SRC --output DIR --part I/N`; a merge job that
waits for every task (afterok) runs `prepare --output DIR --merge-only`, with the array's --time
or else render.MERGE_DEFAULT_TIME. stdout carries SLURM's two `Submitted batch job N` lines and a
summary, or with --dry-run the two scripts (array, then merge); other messages go to stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Prepare shards on many machines: a SLURM job array of `prepare --part I/N`, then a merge job."
DESCRIPTION = (
    "Submit `mmdit-scale prepare` as a SLURM job array of N parts (each encodes its slice of SRC into DIR "
    "under its own shard names) and a merge job that joins the part manifests into DIR/manifest.json once "
    "every part succeeded. Everything after --prepare-flags goes to every `prepare` (see `mmdit-scale prepare "
    "--help`). "
    "Logs: DIR/slurm/. Exit 0 submitted, 2 bad arguments, 1 sbatch refused a job."
)
_OWN_FLAGS = ("--input", "--output", "--part", "--no-merge", "--merge-only")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from launcher.arguments import positive_int
    from launcher.slurm.options import add_resource_arguments
    from launcher.slurm.render import MERGE_DEFAULT_TIME

    parser.allow_abbrev = False  # `--part` after --prepare-flags must not read as an abbreviation of --parts
    parser.add_argument("source", type=Path, metavar="SRC", help="prepare's --input: images, tars or a table")
    parser.add_argument("output", type=Path, metavar="DIR", help="prepare's --output: shards and manifest.json")
    parser.add_argument("--parts", type=positive_int, required=True, metavar="N", help="array tasks (slices of SRC)")
    parser.add_argument("--gpus-per-node", type=int, default=0, metavar="G",
                        help="GPUs per task (prepare starts one encoder worker per GPU; default 0: CPU)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the array script and the merge script on stdout, submit nothing")
    add_resource_arguments(parser)
    parser.epilog = (f"The merge job gets the array's --time, or {MERGE_DEFAULT_TIME} without one: joining "
                     "the part manifests takes seconds, and a short limit lets SLURM start it in a backfill gap.")
    parser.add_argument("--prepare-flags", nargs=argparse.REMAINDER, default=[], metavar="FLAG",
                        help="last: the rest of the line goes to every `mmdit-scale prepare` "
                             "(e.g. --encoders enc.yaml --resolution 256)")


def _fail(message: str, code: int = 2) -> int:
    print(f"mmdit-scale submit-prepare: {message}", file=sys.stderr)
    return code


def _check_prepare_flags(job) -> None:
    """Parse the flags as `prepare` will, so a typo fails here rather than in N queued tasks."""
    from launcher.commands import prepare
    from launcher.slurm.quoting import SubmitError

    clash = [a for a in job.prepare_args if a.split("=")[0] in _OWN_FLAGS]
    if clash:
        raise SubmitError(f"{clash[0]} is set by submit-prepare itself")
    parser = argparse.ArgumentParser(prog="mmdit-scale prepare", exit_on_error=False)
    prepare.add_arguments(parser)
    try:
        _, unknown = parser.parse_known_args(["--input", str(job.source), "--output", str(job.output),
                                              "--part", f"0/{job.parts}", *job.prepare_args])
    except argparse.ArgumentError as err:
        raise SubmitError(f"prepare flags: {err}") from None
    if unknown:
        raise SubmitError(f"prepare flags: unrecognized arguments: {' '.join(unknown)}")


def run(args: argparse.Namespace) -> int:
    from launcher.slurm import sbatch
    from launcher.slurm.options import environment, resources_from, say
    from launcher.slurm.quoting import SubmitError
    from launcher.slurm.render import PrepareJob, render_prepare_array, render_prepare_merge

    try:
        if args.gpus_per_node < 0:
            raise SubmitError(f"--gpus-per-node must be >= 0, got {args.gpus_per_node}")
        job = PrepareJob(source=args.source.absolute(), output=args.output.absolute(), parts=args.parts,
                         prepare_args=tuple(args.prepare_flags), gpus_per_node=args.gpus_per_node,
                         env=environment(), resources=resources_from(args))
        _check_prepare_flags(job)
        if not job.source.exists():
            raise SubmitError(f"SRC {job.source} does not exist")
        array_script, merge_script = render_prepare_array(job), render_prepare_merge(job)
    except SubmitError as err:
        return _fail(str(err))
    if args.dry_run:
        say("two scripts follow: the job array, then the merge job (sbatch --dependency=afterok:ARRAY_JOB)")
        sys.stdout.write(array_script + merge_script)
        return 0

    job.log_dir.mkdir(parents=True, exist_ok=True)
    submitted = []
    for name, script, extra in (("prepare", array_script, []), ("merge", merge_script, None)):
        path = job.log_dir / f"{name}.sbatch"
        path.write_text(script)
        try:
            job_id, line = sbatch.submit(path, extra if extra is not None
                                         else [f"--dependency=afterok:{submitted[0]}", "--kill-on-invalid-dep=yes"])
        except SubmitError as err:
            return _fail(str(err) + (f" (array job {submitted[0]} is queued: scancel it)" if submitted else ""), 1)
        path.rename(job.log_dir / f"{name}-{job_id}.sbatch")
        submitted.append(job_id)
        print(line, flush=True)
    print(f"array job {submitted[0]} ({job.parts} parts), merge job {submitted[1]}, output {job.output}")
    say(f"logs: {job.log_dir}")
    return 0
