"""argparse types shared by the subcommands (torch-free, like the rest of the launcher)."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts (nodes, GPUs, ranks, steps, images): an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
