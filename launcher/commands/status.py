"""`mmdit-scale status`: show job state, restarts, step, last checkpoint, loss and throughput of a run dir."""
from __future__ import annotations

import argparse

from launcher.commands._unbuilt import not_implemented

HELP = "Show job state, restarts, step, last checkpoint, loss and throughput of a run dir."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_implemented("status", "[cluster]")
