"""`mmdit-scale make-demo-data`: write the embedded demo dataset (coloured shapes in quadrants) to a folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Write the embedded demo dataset (coloured shapes in quadrants, two captions each) to a folder."
DESCRIPTION = (
    "Write a deterministic folder of training scenes: one shape (circle, square, triangle) of one of 5 "
    "colours in one quadrant of a grey picture, as NNNNNN.png with NNNNNN.txt (\"a red circle in the top "
    "left\") and NNNNNN.json (a differently worded synthetic caption in `syn_caption`). 12 of the 60 "
    "colour/shape/quadrant combinations are held out of the folder and listed in demo_set.json; "
    "`mmdit-scale demo` prompts with them. Feed the folder to `mmdit-scale prepare --encoders demo "
    "--resolution 32`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from data_pipeline.demo_data import DEFAULT_COUNT, DEFAULT_SIZE
    from launcher.arguments import positive_int

    parser.add_argument("--out", "--output", dest="out", type=Path, required=True, metavar="DIR",
                        help="folder to write")
    parser.add_argument("--n", "--count", dest="n", type=positive_int, default=DEFAULT_COUNT, metavar="N",
                        help=f"images (default: {DEFAULT_COUNT})")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="PX",
                        help=f"image side in pixels (default: {DEFAULT_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="which scenes to draw (default: 0)")


def run(args: argparse.Namespace) -> int:
    from data_pipeline.demo_data import write_demo_data

    if args.size < 16:
        print(f"mmdit-scale make-demo-data: error: need --size >= 16, got {args.size}", file=sys.stderr)
        return 2
    n = write_demo_data(args.out, count=args.n, side=args.size, seed=args.seed)
    print(f"wrote {n} demo scenes with captions to {args.out}")
    return 0
