"""The MM-DiT wrapped in a DeepSpeed engine, and the full fp32 weights read back from it.

Every rank builds the same model from `train.seed` (so weights do not depend on the ZeRO stage or
the world size). Under ZeRO 0-2 each rank holds the whole model anyway; under ZeRO-3 the model is
built already sharded (train/zero_init.py), with the same weights. The weights that EMA, checkpoints
and export see are the fp32 master weights (`full_fp32_params`), not the bf16 compute copies. With
REPA on (`train.repa`) DeepSpeed trains a `RepaTrainee`, the MMDiT plus the projector; the weights
those see are the MMDiT's alone, so checkpoint weights, EMA, export and sampling do not change.
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
from mmdit_scale.model.repa import RepaTrainee
from mmdit_scale.run.layout import DS_CONFIG_FILE
from mmdit_scale.train.ds_config import build_ds_config
from mmdit_scale.train.schedule import make_scheduler
from mmdit_scale.train.zero_init import build_sharded, cast_params, mapped_allocations


def build_engine(cfg: RunConfig, world_size: int, run_dir: Path | None = None,
                 prepare: Callable[[MMDiT, Gathered], None] | None = None,
                 load_universal: bool = False, repa_dim: int | None = None,
                 sharded_build: bool | None = None) -> deepspeed.DeepSpeedEngine:
    """DeepSpeed engine over a freshly initialised MMDiT; rank 0 saves the DeepSpeed JSON in run_dir.

    `prepare(model, gathered)` runs on the initialised model before training (e.g. `train.init_from`);
    it writes parameters inside `gathered(params)`, which makes them whole if they are sharded.
    `repa_dim`: the width of the data's REPA features, needed when train.repa is on (the projector's output).
    `sharded_build`: build under zero.Init; by default exactly under ZeRO-3. False builds the whole
    model first, as before (the reference the sharded build is tested and measured against).
    """
    ds_config = build_ds_config(cfg, world_size, load_universal)
    if run_dir is not None and torch.distributed.get_rank() == 0:
        write_atomic(run_dir / DS_CONFIG_FILE, json.dumps(ds_config, indent=2) + "\n")
    with mapped_allocations():  # the build's freed buffers go back to the system (train/zero_init.py)
        sharded = cfg.parallel.zero_stage == 3 if sharded_build is None else sharded_build
        trained = _build_module(cfg, ds_config, prepare, repa_dim, sharded)
        engine, *_ = deepspeed.initialize(
            model=trained,
            model_parameters=trained.parameters(),
            config=ds_config,
            lr_scheduler=lambda optimizer: make_scheduler(optimizer, cfg.optim, cfg.train.steps),
        )
    if cfg.train.compile:
        engine.compile()
    return engine


def _build_module(cfg: RunConfig, ds_config: dict, prepare: Callable[[MMDiT, Gathered], None] | None,
                  repa_dim: int | None, sharded: bool) -> torch.nn.Module:
    """The module DeepSpeed trains: the seeded MMDiT (in REPA's `RepaTrainee` with REPA on)."""
    # Same seed on every rank: identical initial weights whatever the stage and world size.
    torch.manual_seed(cfg.train.seed)
    if sharded:
        model = build_sharded(cfg, ds_config, prepare)
    else:
        model = MMDiT(cfg.model)
        if prepare is not None:
            prepare(model, whole)
    model.set_activation_checkpointing(cfg.parallel.activation_checkpointing)
    trained: torch.nn.Module = model
    if cfg.train.repa.enabled:
        if repa_dim is None:
            raise ValueError("train.repa.weight > 0 needs the width of the data's REPA features")
        # After the MMDiT is built: its initial weights are the same with REPA on or off.
        trained = RepaTrainee(model, cfg.train.repa.block_of(cfg.model.depth), repa_dim)
    if sharded:
        cast_params(trained, compute_dtype(cfg))
    return trained


def trained_model(engine: deepspeed.DeepSpeedEngine) -> MMDiT:
    """The MMDiT the engine trains (inside REPA's `RepaTrainee` when REPA is on)."""
    module = engine.module
    return module.mmdit if isinstance(module, RepaTrainee) else module


def full_fp32_params(engine: deepspeed.DeepSpeedEngine) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full fp32 master weight) for every MMDiT parameter, in module order (REPA's projector,
    training-only, is not among them: it is in the DeepSpeed checkpoint only).

    A collective under ZeRO 1-3 (each call gathers one parameter's shards): every rank must
    iterate to the end, in the same order. Under ZeRO-0 fp32 the module weights are the master.
    """
    for name, param in trained_model(engine).named_parameters():
        full = safe_get_full_fp32_param(param)
        if full is None:
            full = param.detach()
        yield name, full.float()


def param_shapes(engine: deepspeed.DeepSpeedEngine) -> dict[str, torch.Size]:
    """Full shape of every MMDiT parameter (ZeRO-3 leaves only a shard in `param.shape`)."""
    return {name: getattr(p, "ds_shape", p.shape) for name, p in trained_model(engine).named_parameters()}


def compute_dtype(cfg: RunConfig) -> torch.dtype:
    return torch.bfloat16 if cfg.parallel.precision == "bf16" else torch.float32
