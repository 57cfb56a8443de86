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
import os
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


def _fail(message: str) -> int:
    print(f"mmdit-scale train: {message}", file=sys.stderr)
    return 2


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return keys


def run(args: argparse.Namespace) -> int:
    # Torch-free imports only: the ranks pay for torch, the launcher does not.
    from launcher.local_launch import launch, local_layout, slurm_layout
    from mmdit_scale.config import ConfigError, load_config, save_config, to_dict
    from mmdit_scale.run import checkpoints
    from mmdit_scale.run.data_dims import fill_input_dims
    from mmdit_scale.train.init_from import check_init_source
    from mmdit_scale.train.ds_config import grad_accumulation

    try:
        cfg = load_config(args.recipe, args.overrides)
        layout = slurm_layout(dict(os.environ), args.nproc) or local_layout(dict(os.environ), args.nproc)
        grad_accumulation(cfg, layout.world_size)
    except (ConfigError, ValueError) as err:
        return _fail(str(err))
    if not cfg.data.train:
        return _fail("data.train is empty: set it to a directory of shards written by `mmdit-scale prepare` "
                     "(e.g. data.train=shards/train)")
    try:
        cfg, filled = fill_input_dims(cfg)
    except ValueError as err:
        return _fail(str(err))
    if filled:
        print(f"mmdit-scale train: {filled}", flush=True)
    run_dir = (args.run_dir or Path("runs") / Path(args.recipe).stem).resolve()
    config_path = run_dir / checkpoints.CONFIG_FILE
    try:
        latest = checkpoints.read_latest(checkpoints.checkpoints_root(cfg, run_dir))
        if latest is None:  # a resumed run has its own weights and ignores init_from
            check_init_source(cfg)
    except ValueError as err:
        return _fail(str(err))
    if layout.writes_config:
        if latest is not None and config_path.is_file():
            changed = _changed_keys(to_dict(load_config(config_path)), to_dict(cfg))
            if changed:
                print("mmdit-scale train: config differs from the run's previous one:\n  " + "\n  ".join(changed),
                      file=sys.stderr)
        save_config(cfg, config_path)
    where = f"resuming from {latest.name}" if latest is not None else "starting fresh"
    print(f"mmdit-scale train: {run_dir} ({where}), {layout.world_size} rank(s), "
          f"ZeRO-{cfg.parallel.zero_stage} {cfg.parallel.precision}", flush=True)
    return launch(layout, run_dir)
