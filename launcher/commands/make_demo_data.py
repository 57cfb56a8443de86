"""`mmdit-scale make-demo-data`: write the embedded demo image/caption set to a folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Write the embedded demo image/caption set to a folder."
DESCRIPTION = (
    "Write a deterministic folder of coloured shapes on coloured backgrounds: x.png/x.jpg with "
    "x.txt (\"a red circle on a blue background\") and x.json (a longer synthetic caption in "
    "`syn_caption`). Feed it to `mmdit-scale prepare --encoders demo --resolution 32`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from data_pipeline.demo_data import DEFAULT_COUNT, DEFAULT_SIZE

    parser.add_argument("--output", type=Path, required=True, help="folder to write")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"images (default: {DEFAULT_COUNT})")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help=f"image side in pixels (default: {DEFAULT_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="which set to draw (default: 0)")


def run(args: argparse.Namespace) -> int:
    from data_pipeline.demo_data import write_demo_data

    if args.count < 1 or args.size < 8:
        print("mmdit-scale make-demo-data: error: need --count >= 1 and --size >= 8", file=sys.stderr)
        return 2
    n = write_demo_data(args.output, count=args.count, side=args.size, seed=args.seed)
    print(f"wrote {n} demo images with captions to {args.output}")
    return 0
