"""What `submit` checks before a job enters the queue, where a mistake costs hours of waiting.

Errors raise SubmitError; findings that only matter for a real submission (missing data, a
checkpoint to start from that a dependency will write) are errors there and notes in a dry run.
"""
from __future__ import annotations

import os
from pathlib import Path

from launcher.slurm import records, sbatch
from launcher.slurm.quoting import SubmitError
from launcher.slurm.render import TrainJob

GPU_MEMORY_VAR = "MMDIT_GPU_MEMORY_GIB"
"""GPU memory assumed by the plan check (default 80 GiB: an H100)."""
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                 "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING"}


def check_plan(cfg, world_size: int) -> str:
    """The recipe's ZeRO stage must fit the GPUs by `mmdit-scale plan` (imports torch: meta model)."""
    from mmdit_scale.plan.memory import GIB, USABLE_FRACTION
    from mmdit_scale.plan.report import Hardware, make_plan

    memory = float(os.environ.get(GPU_MEMORY_VAR, "80"))
    plan = make_plan(cfg, Hardware(gpus=world_size, gpu_memory_gib=memory))
    stage = cfg.parallel.zero_stage
    need = plan.memory[stage].total / GIB
    if not plan.fits_by_stage[stage]:
        others = [s for s, ok in plan.fits_by_stage.items() if ok]
        hint = f"ZeRO-{others[0]} fits (parallel.zero_stage={others[0]})" if others else "no ZeRO stage fits"
        raise SubmitError(
            f"plan: ZeRO-{stage} needs {need:.1f} GiB per GPU, more than {USABLE_FRACTION:.0%} of {memory:g} GiB "
            f"({GPU_MEMORY_VAR}); {hint}; see `mmdit-scale plan RECIPE --gpus {world_size}`")
    return f"plan: ZeRO-{stage} {cfg.parallel.precision}, {need:.1f} GiB per GPU of {memory:g}"


def check_data(cfg, job: TrainJob, strict: bool) -> list[str]:
    """Shards and init_from must exist when the job starts: now, unless it waits for another job."""
    from mmdit_scale.config import ConfigError
    from mmdit_scale.config.validate import require_train_data

    notes = []
    try:
        require_train_data(cfg)
    except ConfigError as err:
        if strict:
            raise SubmitError(str(err)) from None
        notes.append(f"note: {err}; a real submission needs it")
    for key, value in (("data.train", cfg.data.train), ("data.val", cfg.data.val)):
        missing = _missing_manifest(value) if value else None
        if missing:
            message = f"{key}={value} does not exist (yet): {missing}"
            if strict and not job.after:
                raise SubmitError(message)
            notes.append(f"note: {message}")
    if cfg.train.init_from:
        from mmdit_scale.train.init_from import check_init_source

        try:
            check_init_source(cfg, job.env.workdir)
        except ValueError as err:
            if strict and not job.after:
                raise SubmitError(f"train.init_from: {err}") from None
            notes.append(f"note: train.init_from={cfg.train.init_from} has no checkpoint yet"
                         + (f" (job {job.after} should write it)" if job.after else ""))
    return notes


def _missing_manifest(value) -> str | None:
    """Why the data value's manifests cannot be found here (the loader's rule), or None. Remote
    manifests are read when the job starts, not now: the login node may not reach the store."""
    from data_pipeline.locate import is_url, local_path, locate_manifests

    try:
        found = locate_manifests(value)
    except ValueError as err:
        return str(err)
    absent = [location for _, location in found if not is_url(location) and not Path(local_path(location)).is_file()]
    return f"no manifest {absent[0]}" if absent else None


def check_run_dir(cfg, run_dir: Path) -> list[str]:
    """Two jobs must never write one run dir: refuse while one of its jobs is queued or running."""
    from mmdit_scale.run import checkpoints, layout

    notes = []
    for sub in records.read_submissions(run_dir):
        info = sbatch.query(sub.job_id)
        if info is not None and info.state.split("+")[0] in ACTIVE_STATES:
            raise SubmitError(f"job {sub.job_id} of {run_dir} is {info.state}: scancel it or wait for it "
                              "before submitting this run dir again")
    try:
        latest = checkpoints.read_latest(layout.checkpoints_root(cfg, run_dir))
    except ValueError as err:
        raise SubmitError(str(err)) from None
    if latest is not None:
        notes.append(f"{run_dir} has a checkpoint: the job resumes from {latest.name}")
    return notes
