"""The MM-DiT wrapped in a DeepSpeed engine, and the full fp32 weights read back from it.

Every rank builds the same model from `train.seed` (so weights do not depend on the ZeRO stage or
the world size). Under ZeRO 0-2 each rank holds the whole model anyway; under ZeRO-3 the model is
built already sharded (train/zero_init.py), with the same weights. The weights that EMA, checkpoints and export see are
the fp32 master weights (`full_fp32_params`), not the bf16 compute copies.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import deepspeed
import torch
from deepspeed.utils import safe_get_full_fp32_param

from data_pipeline.atomic import write_atomic
from mmdit_scale.config.schema import RunConfig
from mmdit_scale.model.mmdit import Gathered, MMDiT, whole
from mmdit_scale.run.layout import DS_CONFIG_FILE
from mmdit_scale.train.ds_config import build_ds_config
from mmdit_scale.train.schedule import make_scheduler
from mmdit_scale.train.zero_init import build_sharded


def build_engine(cfg: RunConfig, world_size: int, run_dir: Path | None = None,
                 prepare: Callable[[MMDiT, Gathered], None] | None = None,
                 load_universal: bool = False, sharded_build: bool | None = None) -> deepspeed.DeepSpeedEngine:
    """DeepSpeed engine over a freshly initialised MMDiT; rank 0 saves the DeepSpeed JSON in run_dir.

    `prepare(model, gathered)` runs on the initialised model before training (e.g. `train.init_from`);
    it writes parameters inside `gathered(params)`, which makes them whole if they are sharded.
    `sharded_build`: build under zero.Init; by default exactly under ZeRO-3. False builds the whole
    model first, as before (the reference the sharded build is tested and measured against).
    """
    ds_config = build_ds_config(cfg, world_size, load_universal)
    if run_dir is not None and torch.distributed.get_rank() == 0:
        write_atomic(run_dir / DS_CONFIG_FILE, json.dumps(ds_config, indent=2) + "\n")
    # Same seed on every rank: identical initial weights whatever the stage and world size.
    torch.manual_seed(cfg.train.seed)
    sharded = cfg.parallel.zero_stage == 3 if sharded_build is None else sharded_build
    if sharded:
        model = build_sharded(cfg, ds_config, prepare)
    else:
        model = MMDiT(cfg.model)
        if prepare is not None:
            prepare(model, whole)
    model.set_activation_checkpointing(cfg.parallel.activation_checkpointing)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=model.parameters(),
        config=ds_config,
        lr_scheduler=lambda optimizer: make_scheduler(optimizer, cfg.optim, cfg.train.steps),
    )
    if cfg.train.compile:
        engine.compile()
    return engine


def full_fp32_params(engine: deepspeed.DeepSpeedEngine) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full fp32 master weight) for every parameter, in module order.

    A collective under ZeRO 1-3 (each call gathers one parameter's shards): every rank must
    iterate to the end, in the same order. Under ZeRO-0 fp32 the module weights are the master.
    """
    for name, param in engine.module.named_parameters():
        full = safe_get_full_fp32_param(param)
        if full is None:
            full = param.detach()
        yield name, full.float()


def param_shapes(engine: deepspeed.DeepSpeedEngine) -> dict[str, torch.Size]:
    """Full shape of every parameter (ZeRO-3 leaves only a shard in `param.shape`)."""
    return {name: getattr(p, "ds_shape", p.shape) for name, p in engine.module.named_parameters()}


def compute_dtype(cfg: RunConfig) -> torch.dtype:
    return torch.bfloat16 if cfg.parallel.precision == "bf16" else torch.float32
