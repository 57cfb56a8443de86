"""Start a training run from a resolved config: the one path from the command line to the ranks.

`mmdit-scale train` and the demo both call `start_training`: it checks what can be checked before
any rank starts (world layout and batch split, model input dims from the data's manifest, the
checkpoint to resume or the `init_from` source), writes RUN_DIR/config.yaml, and launches this
node's ranks. Torch-free, like the rest of the launcher: the ranks pay for torch.
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from mmdit_scale.config import RunConfig

PREFIX = "mmdit-scale train"


def _fail(message: str) -> int:
    from mmdit_scale.run.exit_codes import CONFIG_ERROR

    print(f"{PREFIX}: {message}", file=sys.stderr)
    return CONFIG_ERROR


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return keys


def start_training(cfg: RunConfig, run_dir: Path, nproc: int | None = None) -> int:
    """Train `cfg` in `run_dir` (resuming from its `latest` checkpoint) on this node's ranks:
    `nproc` of them, default one per GPU (1 on CPU), or the surrounding SLURM job step's.
    Returns the run's exit code (`mmdit_scale.run.exit_codes`); a config that cannot start is
    refused with CONFIG_ERROR before any rank starts."""
    from launcher.local_launch import local_layout, slurm_layout
    from mmdit_scale.config import ConfigError
    from mmdit_scale.config.validate import require_train_data
    from mmdit_scale.eval.image_metrics.extractors import MissingWeights, resolve_config_paths
    from mmdit_scale.run import lock as run_lock
    from mmdit_scale.run.data_dims import absolute_data, check_sources, fill_from_data
    from mmdit_scale.train.ds_config import grad_accumulation

    try:
        world = slurm_layout(dict(os.environ), nproc) or local_layout(dict(os.environ), nproc)
        grad_accumulation(cfg, world.world_size)
        require_train_data(cfg)
        cfg, filled = fill_from_data(absolute_data(cfg))
        check_sources(cfg)
        cfg = resolve_config_paths(cfg)
    except (ConfigError, ValueError, MissingWeights) as err:
        return _fail(str(err))
    if filled:
        print(f"{PREFIX}: {filled}", flush=True)
    run_dir = run_dir.resolve()
    lock = None
    if world.writes_config:  # node 0's launcher holds the run dir for the run's whole life
        try:
            lock, note = run_lock.acquire(run_dir)
        except run_lock.RunDirBusy as err:
            return _fail(str(err))
        if note:
            print(f"{PREFIX}: {note}", flush=True)
    try:
        return _start_locked(cfg, run_dir, world)
    finally:
        if lock is not None:
            run_lock.release(lock)


def _start_locked(cfg: RunConfig, run_dir: Path, world) -> int:
    from launcher.local_launch import launch
    from mmdit_scale.config import load_config, to_dict
    from mmdit_scale.run import checkpoints, layout
    from mmdit_scale.train.init_from import resolved_init

    config_path = run_dir / layout.CONFIG_FILE
    init_line = ""
    try:
        latest = checkpoints.read_latest(layout.checkpoints_root(cfg, run_dir))
        if latest is None:  # a resumed run has its own weights and ignores init_from
            cfg, init_line = resolved_init(cfg)
        else:
            saved = checkpoints.load_run_config(latest)
            # What the run started from stays on record: a resume ignores init_from.
            cfg = replace(cfg, train=replace(cfg.train, init_from=saved.train.init_from,
                                             init_from_ema=saved.train.init_from_ema,
                                             init_from_step=saved.train.init_from_step))
            changed = _changed_keys(to_dict(saved)["model"], to_dict(cfg)["model"], "model.")
            if changed:
                raise ValueError(f"the model differs from the one {latest} was trained with, so it cannot resume "
                                 f"({'; '.join(changed)}); use another --run-dir, or train.init_from to start a "
                                 f"new run from these weights. {config_path} is left as it was")
    except ValueError as err:
        return _fail(str(err))
    if world.writes_config:
        if latest is not None and config_path.is_file():
            changed = _changed_keys(to_dict(load_config(config_path)), to_dict(cfg))
            if changed:
                print(f"{PREFIX}: config differs from the run's previous one:\n  " + "\n  ".join(changed),
                      file=sys.stderr)
        layout.write_config(cfg, config_path)
    where = f"resuming from {latest.name}" if latest is not None else "starting fresh"
    print(f"{PREFIX}: {run_dir} ({where}{', ' + init_line if init_line else ''}), {world.world_size} rank(s), "
          f"ZeRO-{cfg.parallel.zero_stage} {cfg.parallel.precision}", flush=True)
    return launch(world, run_dir)
