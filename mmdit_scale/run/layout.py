"""A run directory's layout: every file name in it, and the resolved config it starts from.

    RUN_DIR/
      config.yaml              the resolved run config (written by the launcher before any rank starts)
      deepspeed_config.json    the DeepSpeed JSON generated from it (rank 0)
      metrics.jsonl            one JSON record per log line (train and val), appended by rank 0
      tensorboard/             the same numbers, the loss per t bin and sample grids, for TensorBoard
      samples/step_N.png/.txt  sample grids during training, and their captions
      image_reference.npz      the image metrics' reference statistics (eval.image_every), made once
      checkpoints/             see `mmdit_scale.run.checkpoints` (or `checkpoint.dir`)
      slurm/                   `mmdit-scale submit`'s records (launcher/slurm/records.py)

A job that wraps runs (the demo) writes its `summary.json` beside them. Torch-free.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from data_pipeline.atomic import write_atomic
from mmdit_scale.config import RunConfig, to_yaml

CONFIG_FILE = "config.yaml"
"""The resolved config: in the run dir, and in every checkpoint."""
DS_CONFIG_FILE = "deepspeed_config.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
SAMPLES_DIR = "samples"
SUMMARY_FILE = "summary.json"
IMAGE_REFERENCE_FILE = "image_reference.npz"
"""The image metrics' reference statistics when eval.metrics.reference is empty (docs/metrics.md)."""

CHECKPOINTS = "checkpoints"
LATEST = "latest"
DS_TAG = "deepspeed"
UNIVERSAL_TAG = "universal"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "trainer_state.json"
CHECKSUMS_FILE = "checksums.json"
"""Size and sha256 of every other file of a checkpoint (`mmdit_scale.run.integrity`), written last."""
TMP_PREFIX = ".tmp-"
"""A checkpoint directory being written: `.tmp-step_0000012/`."""
_NAME = re.compile(r"^step_(\d{7,})$")


def checkpoint_name(step: int) -> str:
    """The name of step `step`'s checkpoint directory (and of its sample grid)."""
    return f"step_{step:07d}"


def step_of(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def checkpoints_root(cfg: RunConfig, run_dir: Path) -> Path:
    """checkpoint.dir when set (relative paths are inside the run dir), else RUN_DIR/checkpoints."""
    return run_dir / (cfg.checkpoint.dir or CHECKPOINTS)


def write_config(cfg: RunConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (a preempted job may die mid-write); it loads back equal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, to_yaml(cfg))
