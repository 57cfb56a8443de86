"""`mmdit-scale submit`: render and submit a SLURM job for a recipe (--dry-run prints the sbatch script)."""
from __future__ import annotations

import argparse

from launcher.commands._unbuilt import not_implemented

HELP = "Render and submit a SLURM job for a recipe (--dry-run prints the sbatch script)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_implemented("submit", "[cluster]")
