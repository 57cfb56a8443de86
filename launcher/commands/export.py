"""`mmdit-scale export`: export a checkpoint to safetensors / diffusers SD3Transformer2DModel format."""
from __future__ import annotations

import argparse

from launcher.commands._unbuilt import not_implemented

HELP = "Export a checkpoint to safetensors / diffusers SD3Transformer2DModel format."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    return not_implemented("export", "[trainer]")
