"""`mmdit-scale export`: export a checkpoint as a diffusers SD3Transformer2DModel directory or one safetensors file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Export a checkpoint as a diffusers SD3Transformer2DModel directory or one safetensors file."
DESCRIPTION = (
    "--format diffusers writes a directory that `SD3Transformer2DModel.from_pretrained(DIR)` loads and that "
    "gives the same outputs as the checkpoint (diffusers takes the timestep as 1000 * t). --format "
    "safetensors writes one file of MM-DiT weights with the model config in its metadata. RUN_OR_CKPT is a "
    "run dir (its `latest` checkpoint), a checkpoints dir or one checkpoint dir. See docs/sampling.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN_OR_CKPT", type=Path, help="run, checkpoints or checkpoint directory")
    parser.add_argument("--format", choices=("diffusers", "safetensors"), default="diffusers",
                        help="diffusers directory or one safetensors file (default: diffusers)")
    parser.add_argument("--out", type=Path, required=True, metavar="PATH", help="directory (diffusers) or file to write")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights")


def run(args: argparse.Namespace) -> int:
    from mmdit_scale.interop.export import export_checkpoint

    try:
        ckpt = export_checkpoint(args.path, args.format, args.out, ema=args.ema)
    except (FileNotFoundError, ValueError) as err:
        print(f"mmdit-scale export: error: {err}", file=sys.stderr)
        return 2
    print(f"exported {ckpt}{' (EMA)' if args.ema else ''} as {args.format} to {args.out}")
    return 0
