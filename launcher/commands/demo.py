"""`mmdit-scale demo`: run the main job end to end on the embedded demo data (CPU, minutes)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Run the main job end to end on the embedded demo data (CPU, minutes)."
DESCRIPTION = (
    "Make the embedded demo dataset (coloured shapes in quadrants; 12 of 60 combinations held out), "
    "pre-encode it with the demo encoders, train recipes/demo.yaml on 2 CPU ranks with ZeRO-2 through "
    "`mmdit-scale train`, sample a grid for the held-out prompts, score it with the demo scorer, and write "
    "WORKDIR/summary.json (accuracy, chance, val_loss, grid, checkpoint, per-attribute accuracies). "
    "Finished stages are reused when run again in the same workdir. Exit 0 when the job ran and met its "
    "targets (held-out all-correct >= 10x chance, colour and position >= 0.9), 3 when it ran but missed one "
    "(summary.json lists each target, its value and whether it passed), 1 when a stage failed. See docs/demo.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from launcher.arguments import positive_int

    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"), metavar="DIR",
                        help="where data, shards, run and summary go (default: runs/demo)")
    parser.add_argument("--steps", type=positive_int, default=None, metavar="N",
                        help="training steps (default: the recipe's train.steps)")
    parser.add_argument("--images", type=positive_int, default=None, metavar="N",
                        help="training images to make (default: 2048)")
    parser.add_argument("--per-prompt", type=positive_int, default=None, metavar="K",
                        help="samples per held-out prompt (default: 8)")
    parser.add_argument("--sample-steps", type=positive_int, default=None, metavar="N", help="Euler steps (default: 20)")
    parser.add_argument("--cfg", type=float, default=None, metavar="S", help="guidance scale (default: 2; docs/demo.md, the shape study)")
    parser.add_argument("--ema", action="store_true", help="sample with the EMA weights")
    parser.add_argument("--repa", type=float, default=None, metavar="WEIGHT",
                        help="opt-in REPA: store the demo-only vision encoder's features in the shards and train "
                             "with train.repa.weight=WEIGHT (default: off; not a measured win, docs/demo.md)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="extra overrides of recipes/demo.yaml, e.g. optim.lr=5e-4")


def run(args: argparse.Namespace) -> int:
    from launcher.demo_job import EXIT_STAGE_FAILED, EXIT_TARGETS_MISSED, DemoError, DemoOptions, run_demo

    given = {"steps": args.steps, "train_images": args.images, "per_prompt": args.per_prompt,
             "sample_steps": args.sample_steps, "cfg": args.cfg, "repa": args.repa}
    chosen = {k: v for k, v in given.items() if v is not None}
    try:
        summary = run_demo(DemoOptions(workdir=args.workdir, ema=args.ema, overrides=list(args.overrides), **chosen))
    except DemoError as err:
        print(f"mmdit-scale demo: error: {err}", file=sys.stderr)
        return EXIT_STAGE_FAILED
    if not summary["passed"]:
        missed = [t["name"] for t in summary["targets"] if not t["passed"]]
        print(f"mmdit-scale demo: targets not met: {', '.join(missed)} (exit {EXIT_TARGETS_MISSED})", file=sys.stderr)
        return EXIT_TARGETS_MISSED
    return 0
