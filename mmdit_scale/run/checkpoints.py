"""Checkpoints on disk: `latest`, listing, pruning, and reading weights back (no deepspeed here).

    RUN_DIR/checkpoints/
      latest                       one line: the newest complete checkpoint's name
      step_0000012/
        deepspeed/                 DeepSpeed's sharded model + optimizer + scheduler state
        universal/                 the same, whole per parameter (made on a resume on another world size)
        model.safetensors          consolidated fp32 master weights (MMDiT parameter names)
        ema.safetensors            consolidated fp32 EMA (absent when train.ema_every = 0)
        config.yaml                the resolved run config
        trainer_state.json         step, samples seen, every rank's loader and RNG state (JSON)
        checksums.json             size and sha256 of every file above (run/integrity.py)

A checkpoint is written as `.tmp-step_0000012/` and renamed when complete, and `latest` is
replaced atomically after that, so a kill at any moment leaves `latest` naming a complete
checkpoint. `sample`, `export` and `init_from` read weights through `load_weights` /
`build_model` without DeepSpeed. Importing this module does not import torch.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_pipeline.atomic import write_atomic
from mmdit_scale.config import RunConfig, load_config
from mmdit_scale.run.integrity import verify_file
from mmdit_scale.run.layout import (CHECKPOINTS, CONFIG_FILE, EMA_FILE, LATEST, MODEL_FILE, STATE_FILE, TMP_PREFIX,
                                    checkpoints_root, step_of)

if TYPE_CHECKING:
    import torch

    from mmdit_scale.model import MMDiT


def read_latest(root: Path) -> Path | None:
    """The checkpoint `latest` names, or None for a fresh run."""
    marker = root / LATEST
    if not marker.is_file():
        return None
    name = marker.read_text().strip()
    if step_of(name) is None:
        raise ValueError(f"{marker} holds {name!r}, not a checkpoint name like 'step_0000012'")
    path = root / name
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"{marker} names {name}, which is missing or incomplete")
    return path


def write_latest(root: Path, name: str) -> None:
    write_atomic(root / LATEST, name + "\n")


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    if not root.is_dir():
        return []
    found = [(step_of(p.name), p) for p in root.iterdir() if p.is_dir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def remove_stale(root: Path) -> None:
    """Delete temporary directories left by a kill during a write (they were never `latest`)."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints, never the one `latest` names; returns the deleted."""
    latest = read_latest(root)
    doomed = [p for p in list_checkpoints(root)[:-keep] if p != latest]
    for p in doomed:
        shutil.rmtree(p)
    return doomed


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint directory from a run dir, a checkpoints dir, or a checkpoint dir itself."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for root in (path, path / CHECKPOINTS):
        latest = read_latest(root) if root.is_dir() else None
        if latest is not None:
            return latest
    if (path / CONFIG_FILE).is_file():
        # A run dir with checkpoint.dir set elsewhere.
        root = checkpoints_root(load_config(path / CONFIG_FILE), path)
        latest = read_latest(root)
        if latest is not None:
            return latest
    raise FileNotFoundError(f"{path} is not a checkpoint, nor a run or checkpoints directory with a `latest` checkpoint")


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE_FILE).read_text())


def load_run_config(ckpt: Path) -> RunConfig:
    """The resolved config the checkpoint was written with."""
    return load_config(ckpt / CONFIG_FILE)


def weights_file(ckpt: Path, ema: bool = False) -> Path:
    """The checkpoint's consolidated fp32 weights file (or EMA), verified against its checksums."""
    path = ckpt / (EMA_FILE if ema else MODEL_FILE)
    if not path.is_file():
        what = "an EMA (train.ema_every was 0)" if ema else "consolidated weights"
        raise FileNotFoundError(f"{ckpt} has no {path.name}: the run kept no {what}")
    verify_file(ckpt, path.name)
    return path


def load_weights(ckpt: Path, ema: bool = False) -> dict[str, "torch.Tensor"]:
    """Consolidated fp32 weights (or EMA) of a checkpoint, keyed by MMDiT parameter name."""
    from safetensors.torch import load_file

    return load_file(weights_file(ckpt, ema))


def build_model(path: str | os.PathLike, ema: bool = False, device: str = "cpu") -> "MMDiT":
    """An MMDiT with a checkpoint's weights: `path` is a run, checkpoints or checkpoint dir."""
    import torch

    from mmdit_scale.model import MMDiT

    ckpt = resolve(path)
    cfg = load_run_config(ckpt)
    with torch.device("meta"):
        model = MMDiT(cfg.model)
    model.to_empty(device=device)
    model.x_embedder.reset_pos_embed()  # a buffer, not in the checkpoint
    weights = load_weights(ckpt, ema=ema)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:  # weights of another model size than its config.yaml describes
        detail = " ".join(str(err).split("\n\t")[1:3]) or str(err)
        raise ValueError(f"{ckpt}: the weights do not fit the model its {CONFIG_FILE} describes "
                         f"(depth {cfg.model.depth}, width {cfg.model.hidden_size}): {detail}") from None
    return model.eval()
