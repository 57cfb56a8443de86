"""`mmdit-scale train`: train a recipe with DeepSpeed ZeRO (local ranks or under SLURM); resumes automatically.

    mmdit-scale train RECIPE [key=value ...] [--nproc N] [--run-dir DIR]

The config is resolved and checked here, before any rank starts; model input dims the recipe
leaves unset are read from the manifest of data.train. The launcher then writes the config to
RUN_DIR/config.yaml, which the ranks read. A run dir with a `latest` checkpoint resumes from it.
Exit codes: 0 finished, 1 failed, 2 bad config or data, 65 too many non-finite steps in a row,
75 preempted (SIGUSR1/SIGTERM; run the same command again to resume).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Train a recipe with DeepSpeed ZeRO (local ranks or under SLURM); resumes automatically."
DESCRIPTION = (
    "Resolve RECIPE with the key=value overrides, check it, and train it on N local ranks "
    "(one per GPU by default, 1 on CPU), or on the ranks of the surrounding SLURM job step. "
    "Checkpoints go to RUN_DIR/checkpoints; running the same command again resumes from the newest. "
    "Exit codes: 0 finished, 1 failed, 2 bad config or data, 65 non-finite loss, 75 preempted "
    "(SIGUSR1/SIGTERM: checkpointed, run again to resume)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from launcher.arguments import positive_int

    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML, e.g. recipes/tiny.yaml")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="dotted overrides applied last, e.g. data.train=SHARDS train.steps=100")
    parser.add_argument("--nproc", type=positive_int, default=None, metavar="N",
                        help="ranks on this node (default: GPUs visible, 1 on CPU; under SLURM: its tasks or GPUs)")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="run directory (default: runs/<recipe name>); an existing one resumes")


def run(args: argparse.Namespace) -> int:
    # Torch-free imports only: the ranks pay for torch, the launcher does not.
    from launcher.training import PREFIX, start_training
    from mmdit_scale.config import ConfigError, load_config
    from mmdit_scale.run.exit_codes import CONFIG_ERROR

    try:
        cfg = load_config(args.recipe, args.overrides)
    except ConfigError as err:
        print(f"{PREFIX}: {err}", file=sys.stderr)
        return CONFIG_ERROR
    return start_training(cfg, args.run_dir or Path("runs") / Path(args.recipe).stem, args.nproc)
