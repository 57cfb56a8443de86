"""`mmdit-scale demo`: run the main job end to end on the embedded demo data (CPU, minutes)."""
from __future__ import annotations

import argparse

from launcher.commands._unbuilt import not_implemented

HELP = "Run the main job end to end on the embedded demo data (CPU, minutes)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_implemented("demo", "[trainer]")
