"""The sbatch options every submitting command shares, and where a job runs from."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from launcher.slurm.quoting import check_option
from launcher.slurm.render import TEMPLATES, Environment, Resources

SITE_ENV_VAR = "MMDIT_SITE_ENV"
DEFAULT_SITE_ENV = TEMPLATES.parent / "site.env"


def add_resource_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sbatch options")
    group.add_argument("--partition", metavar="P", help="partition(s) to run in")
    group.add_argument("--account", metavar="A", help="account to charge")
    group.add_argument("--qos", metavar="Q", help="quality of service")
    group.add_argument("--time", metavar="HH:MM:SS", help="time limit per (re)start (D-HH:MM:SS also accepted)")
    group.add_argument("--constraint", metavar="C", help="node features, e.g. 'a100&ib'")
    group.add_argument("--mem", metavar="M", help="memory per node, e.g. 500G (0: all of it)")
    group.add_argument("--exclusive", action="store_true", help="whole nodes, shared with no other job")


def resources_from(args: argparse.Namespace) -> Resources:
    """Validated sbatch options (SubmitError on a value SLURM would not accept)."""
    values = {name: getattr(args, name) for name in ("partition", "account", "qos", "time", "constraint", "mem")}
    for name, value in values.items():
        if value is not None:
            check_option(f"--{name}", value)
    return Resources(**values, exclusive=args.exclusive)


def environment() -> Environment:
    """The job runs in the submit directory, with this Python, sourcing the site settings file."""
    site = os.environ.get(SITE_ENV_VAR)
    return Environment(workdir=Path.cwd(), python=str(Path(sys.executable).absolute()),
                       site_env=Path(site).absolute() if site else DEFAULT_SITE_ENV)


def say(message: str) -> None:
    """Messages go to stderr: stdout carries only what a script may read (the sbatch script, job ids)."""
    print(message, file=sys.stderr, flush=True)
