"""`mmdit-scale train`: train a recipe with DeepSpeed ZeRO (local ranks or under SLURM); resumes automatically."""
from __future__ import annotations

import argparse

from launcher.commands._unbuilt import not_implemented

HELP = "Train a recipe with DeepSpeed ZeRO (local ranks or under SLURM); resumes automatically."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_implemented("train", "[trainer]")
