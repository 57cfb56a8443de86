"""The state of a run dir: its SLURM jobs, and what the trainer wrote (torch-free).

Job state comes from SLURM while it remembers the job (scontrol, then sacct), else from the
job's own events.tsv. Progress comes from the trainer's files: the last records of metrics.jsonl
(step, loss, throughput, their time stamps) and the checkpoint `latest` names (its
trainer_state.json has its step). The step is the later of the two: a run logs every
logging.every steps but may checkpoint between, and a resumed run has logged nothing yet.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from launcher.slurm import records, sbatch


@dataclass(frozen=True)
class JobStatus:
    job_id: int
    state: str
    restarts: int
    nodes: str | None
    last_exit: int | None
    """The trainer's exit code in the newest (re)start that ended, from events.tsv."""
    source: str
    """scontrol, sacct, or run dir (SLURM no longer knows the job)."""


@dataclass
class RunStatus:
    run_dir: str
    jobs: list[JobStatus] = field(default_factory=list)
    step: int | None = None
    total_steps: int | None = None
    checkpoint: str | None = None
    checkpoint_step: int | None = None
    checkpoint_time: float | None = None
    loss: float | None = None
    loss_step: int | None = None
    val_loss: float | None = None
    val_step: int | None = None
    samples_per_s: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None
    seconds_per_step: float | None = None
    """From the newest train records' time stamps (`mmdit_scale.run.eta.seconds_per_step`)."""
    eta_s: float | None = None
    """Steps left x seconds_per_step."""
    last_record_time: float | None = None
    """Wall time of metrics.jsonl's newest record: how old the numbers above are."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _state_from_events(events: list[records.Event]) -> str:
    if not events:
        return "UNKNOWN"
    last = events[-1]
    if last.kind == "requeue":
        return "REQUEUED"
    if last.kind == "exit":
        return "COMPLETED" if last.detail == "0" else f"FAILED (exit {last.detail})"
    return "UNKNOWN (no end recorded)"


def job_status(job_id: int, events: list[records.Event], ask_slurm: bool = True) -> JobStatus:
    own = [e for e in events if e.job_id == job_id]
    exits = [e for e in own if e.kind == "exit"]
    last_exit = int(exits[-1].detail) if exits and exits[-1].detail.lstrip("-").isdigit() else None
    restarts = max((e.restart for e in own), default=0)
    starts = [e for e in own if e.kind == "start"]
    nodes = starts[-1].detail if starts else None
    info = sbatch.query(job_id) if ask_slurm else None
    if info is None:
        return JobStatus(job_id, _state_from_events(own), restarts, nodes, last_exit, "run dir")
    return JobStatus(job_id, info.state, info.restarts if info.restarts is not None else restarts,
                     info.nodes or nodes, last_exit, info.source)


def _checkpoint(run_dir: Path, status: RunStatus) -> None:
    from mmdit_scale.config import ConfigError, load_config
    from mmdit_scale.run import checkpoints, layout

    config = run_dir / layout.CONFIG_FILE
    if not config.is_file():
        return
    try:
        cfg = load_config(config)
        latest = checkpoints.read_latest(layout.checkpoints_root(cfg, run_dir))
    except (ConfigError, ValueError, OSError):
        return
    status.total_steps = cfg.train.steps
    if latest is not None:
        status.checkpoint = latest.name
        try:
            status.checkpoint_step = checkpoints.read_state(latest)["step"]
        except (OSError, ValueError, KeyError):  # unreadable state: its name says the step too
            status.checkpoint_step = layout.step_of(latest.name)
        status.checkpoint_time = (latest / layout.STATE_FILE).stat().st_mtime


def run_status(run_dir: Path, ask_slurm: bool = True) -> RunStatus:
    status = RunStatus(run_dir=str(run_dir))
    events = records.read_events(run_dir)
    ids = [s.job_id for s in records.read_submissions(run_dir)]
    ids += [e.job_id for e in events if e.job_id not in ids]
    status.jobs = [job_status(job_id, events, ask_slurm) for job_id in dict.fromkeys(ids)]
    _checkpoint(run_dir, status)
    _progress(run_dir, status)
    return status


def _progress(run_dir: Path, status: RunStatus) -> None:
    """What metrics.jsonl says: step, losses, throughput, and from its time stamps the ETA."""
    from mmdit_scale.run.eta import eta_seconds, seconds_per_step
    from mmdit_scale.run.metrics_log import last_of_kind, metrics_path, read_records

    logged, _ = read_records(metrics_path(run_dir))
    train, with_loss, val = (last_of_kind(logged, "train"), last_of_kind(logged, "train", "loss"),
                             last_of_kind(logged, "val"))
    if train is not None:
        status.samples_per_s, status.tokens_per_s, status.mfu = (
            train.get("samples_per_s"), train.get("tokens_per_s"), train.get("mfu"))
    if with_loss is not None:
        status.loss, status.loss_step = with_loss["loss"], with_loss["step"]
    if val is not None:
        status.val_loss, status.val_step = val["val_loss"], val["step"]
    logged_step = train["step"] if train is not None else None
    status.step = max((s for s in (logged_step, status.checkpoint_step) if s is not None), default=None)
    times = [r["time"] for r in logged if isinstance(r.get("time"), (int, float))]
    status.last_record_time = times[-1] if times else None
    status.seconds_per_step = seconds_per_step(logged)
    if None not in (status.seconds_per_step, status.step, status.total_steps):
        status.eta_s = eta_seconds(status.step, status.total_steps, status.seconds_per_step)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _eta(s: RunStatus) -> str:
    from mmdit_scale.run.eta import duration_text

    last = f"last record {_when(s.last_record_time)}" if s.last_record_time is not None else "no timed record"
    if s.eta_s is None:
        return f"unknown: needs two train records with time stamps ({last})"
    return f"{duration_text(s.eta_s)} at {s.seconds_per_step:.3g} s/step ({last})"


def to_text(s: RunStatus) -> str:
    lines = [f"run dir     {s.run_dir}"]
    if not s.jobs:
        lines.append("jobs        none recorded (not submitted with `mmdit-scale submit`)")
    for job in s.jobs:
        parts = [job.state, f"restarts {job.restarts}"]
        if job.nodes:
            parts.append(f"nodes {job.nodes}")
        if job.last_exit is not None:
            parts.append(f"last trainer exit {job.last_exit}")
        lines.append(f"job         {job.job_id}: {', '.join(parts)} [{job.source}]")
    total = f" / {s.total_steps}" if s.total_steps is not None else ""
    lines.append(f"step        {s.step if s.step is not None else 'none logged yet'}{total}")
    lines.append("eta         " + _eta(s))
    lines.append("checkpoint  " + (f"{s.checkpoint} (step {s.checkpoint_step}, {_when(s.checkpoint_time)})"
                                   if s.checkpoint else "none yet"))
    loss = f"{s.loss:.5f} at step {s.loss_step}" if s.loss is not None else "none logged yet"
    if s.val_loss is not None:
        loss += f" (val {s.val_loss:.5f} at step {s.val_step})"
    lines.append(f"loss        {loss}")
    if s.samples_per_s is not None:
        mfu = f", MFU {100 * s.mfu:.1f}%" if s.mfu is not None else ""
        lines.append(f"throughput  {s.samples_per_s:.1f} samples/s, {s.tokens_per_s:.0f} tokens/s{mfu}")
    else:
        lines.append("throughput  none logged yet")
    return "\n".join(lines) + "\n"
