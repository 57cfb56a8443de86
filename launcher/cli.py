"""The `mmdit-scale` command line.

Every subcommand lives in its own module under `launcher/commands/` and exposes
`HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. Command modules
import nothing heavy (torch, deepspeed, diffusers) at module level, so building
this parser, and therefore `mmdit-scale --help`, stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Order is the order shown in --help: the user's path from zero to a trained model.
COMMANDS: tuple[str, ...] = (
    "demo",
    "make-demo-data",
    "prepare",
    "train",
    "sample",
    "eval-images",
    "export",
    "config",
    "plan",
    "submit",
    "submit-prepare",
    "status",
    "scaling-report",
)

DESCRIPTION = (
    "mmdit-scale: pretrain Stable-Diffusion-3-style rectified-flow MM-DiT models, "
    "from pre-encoded WebDataset shards to SLURM clusters."
)


def _module(name: str):
    return importlib.import_module("launcher.commands." + name.replace("-", "_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmdit-scale", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _module(name)
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
