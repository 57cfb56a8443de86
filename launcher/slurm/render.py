"""Batch scripts from the templates in cluster/templates/, with every value quoted.

A template is a bash script with `{{NAME}}` placeholders. Each placeholder is replaced by an
already quoted value (`quoting.shell`) or, for `{{DIRECTIVES}}`, by the `#SBATCH` block; a
placeholder without a value, or a value without a placeholder, is an error, so templates and
code cannot drift apart silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from launcher.rendezvous import PORT_BASE, PORT_COUNT
from launcher.slurm.quoting import SubmitError, directive, filename_pattern, job_name, shell, shell_words

TEMPLATES = Path(__file__).parent / "cluster" / "templates"
"""The sbatch templates, installed as package data (in the repo, launcher/slurm/cluster -> ../../cluster)."""
SLURM_DIR = "slurm"
"""Inside a run dir (or prepare's output): job logs, submitted scripts, jobs.jsonl, events.tsv."""
DEFAULT_SIGNAL_LEAD = 300
"""Seconds before the time limit at which SLURM sends USR1: room to finish a step and checkpoint."""
MERGE_DEFAULT_TIME = "00:30:00"
"""The merge job's time limit when the array has no --time. Joining part manifests takes seconds;
without a limit SLURM gives the partition's default, often days, which the scheduler must hold
free for it, so the job waits longer to start (a short job fits in backfill gaps)."""

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def fill(template: str, values: dict[str, str]) -> str:
    used = set(_PLACEHOLDER.findall(template))
    if used != set(values):
        raise SubmitError(f"template placeholders {sorted(used)} do not match the values {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def directives(options: list[tuple[str, str | None]]) -> str:
    """`#SBATCH` lines; a None value is a bare flag such as --exclusive."""
    return "\n".join(f"#SBATCH {flag}" if value is None else f"#SBATCH {flag}={directive(value)}"
                     for flag, value in options)


@dataclass(frozen=True)
class Resources:
    """The user's sbatch options common to every job (validated by quoting.check_option)."""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    constraint: str | None = None
    mem: str | None = None
    exclusive: bool = False

    def options(self) -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = [
            (f"--{name}", getattr(self, name)) for name in ("partition", "account", "qos", "time", "constraint", "mem")
            if getattr(self, name) is not None]
        return out + ([("--exclusive", None)] if self.exclusive else [])


@dataclass(frozen=True)
class Environment:
    """Where the job runs from: the submit directory, this Python, the site settings file."""
    workdir: Path
    python: str
    site_env: Path


@dataclass(frozen=True)
class TrainJob:
    recipe: Path
    overrides: tuple[str, ...]
    nodes: int
    gpus_per_node: int
    """Ranks per node: GPUs, or CPU ranks with `cpu`."""
    cpu: bool
    run_dir: Path
    env: Environment
    resources: Resources = field(default_factory=Resources)
    after: str | None = None
    """Job id(s) this job waits for (afterok)."""
    signal_lead: int = DEFAULT_SIGNAL_LEAD

    def train_command(self) -> list[str]:
        return [self.env.python, "-m", "launcher.cli", "train", str(self.recipe), *self.overrides,
                "--nproc", str(self.gpus_per_node), "--run-dir", str(self.run_dir)]


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def train_options(job: TrainJob) -> list[tuple[str, str | None]]:
    ranks = (("--cpus-per-task", str(job.gpus_per_node)) if job.cpu
             else ("--gpus-per-node", str(job.gpus_per_node)))
    options: list[tuple[str, str | None]] = [
        ("--job-name", job_name(f"mmdit-{job.run_dir.name}")),
        ("--nodes", str(job.nodes)),
        ("--ntasks-per-node", "1"),
        ranks,
        *job.resources.options(),
    ]
    if job.after:
        options.append(("--dependency", f"afterok:{job.after}"))
    return options + [
        ("--requeue", None),
        ("--signal", f"B:USR1@{job.signal_lead}"),
        ("--open-mode", "append"),
        ("--output", filename_pattern(str(job.run_dir / SLURM_DIR)) + "/%j.out"),
    ]


def render_train(job: TrainJob) -> str:
    return fill(_template("train.sbatch"), {
        "DIRECTIVES": directives(train_options(job)),
        "RUN_DIR": shell(str(job.run_dir)),
        "SITE_ENV": shell(str(job.env.site_env)),
        "ACCELERATOR": shell("cpu" if job.cpu else "gpu"),
        "PORT_BASE": shell(str(PORT_BASE)),
        "PORT_COUNT": shell(str(PORT_COUNT)),
        "TRAIN_COMMAND": shell_words(job.train_command()),
        "WORKDIR": shell(str(job.env.workdir)),
    })


@dataclass(frozen=True)
class PrepareJob:
    source: Path
    output: Path
    parts: int
    prepare_args: tuple[str, ...]
    """Further `mmdit-scale prepare` flags (--encoders, --resolution, ...)."""
    gpus_per_node: int
    env: Environment
    resources: Resources = field(default_factory=Resources)

    @property
    def log_dir(self) -> Path:
        return self.output / SLURM_DIR


def render_prepare_array(job: PrepareJob) -> str:
    ranks = ("--gpus-per-node", str(job.gpus_per_node)) if job.gpus_per_node else ("--cpus-per-task", "1")
    options = [("--job-name", job_name(f"prepare-{job.output.name}")), ("--array", f"0-{job.parts - 1}"),
               ("--nodes", "1"), ("--ntasks", "1"), ranks, *job.resources.options(),
               ("--output", filename_pattern(str(job.log_dir)) + "/prepare-%A_%a.out")]
    command = [job.env.python, "-m", "launcher.cli", "prepare", "--input", str(job.source), "--output",
               str(job.output), "--no-merge", "--no-progress", *job.prepare_args]
    return fill(_template("prepare.sbatch"), {
        "DIRECTIVES": directives(options), "PARTS": shell(str(job.parts)),
        "PREPARE_COMMAND": shell_words(command), "SITE_ENV": shell(str(job.env.site_env)),
        "WORKDIR": shell(str(job.env.workdir))})


def render_prepare_merge(job: PrepareJob) -> str:
    """The merge job (one CPU, the array's partition, account, qos and --time, else
    MERGE_DEFAULT_TIME); `submit-prepare` adds --dependency=afterok:ARRAY_JOB on sbatch's command
    line, once the array's id is known."""
    where = Resources(partition=job.resources.partition, account=job.resources.account, qos=job.resources.qos,
                      time=job.resources.time or MERGE_DEFAULT_TIME)
    options = [("--job-name", job_name(f"merge-{job.output.name}")), ("--nodes", "1"), ("--ntasks", "1"),
               ("--cpus-per-task", "1"), *where.options(),
               ("--output", filename_pattern(str(job.log_dir)) + "/merge-%j.out")]
    command = [job.env.python, "-m", "launcher.cli", "prepare", "--output", str(job.output), "--merge-only"]
    return fill(_template("merge.sbatch"), {
        "DIRECTIVES": directives(options), "MERGE_COMMAND": shell_words(command),
        "SITE_ENV": shell(str(job.env.site_env)), "WORKDIR": shell(str(job.env.workdir))})
