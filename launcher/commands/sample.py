"""`mmdit-scale sample`: generate images from a run or checkpoint with the Euler ODE sampler and CFG."""
from __future__ import annotations

import argparse

from launcher.commands._unbuilt import not_implemented

HELP = "Generate images from a run or checkpoint with the Euler ODE sampler and CFG."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_implemented("sample", "[trainer]")
