"""The whole plan of one recipe on N GPUs: size, FLOPs, memory by ZeRO stage, batch, time and data.

`make_plan(cfg, Hardware(gpus=64))` computes it; `to_json` and `to_text` present it. The numbers
come from params.py (the meta-device model), flops.py, memory.py and dataset.py. Model input dims
the recipe leaves unset come from data.train's manifest, else SD3's (the plan says which).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from mmdit_scale.config import RunConfig
from mmdit_scale.model.config import checkpointed_blocks
from mmdit_scale.plan.dataset import SampleBytes, sample_bytes
from mmdit_scale.plan.flops import Flops, recompute_flops, run_training_flops
from mmdit_scale.plan.memory import (GIB, USABLE_FRACTION, ZERO_STAGES, Memory, activation_bytes, build_host_bytes,
                                     checkpointing_label, fits, memory_per_gpu, more_checkpointing)
from mmdit_scale.plan.params import ParamCount, count_parameters
from mmdit_scale.plan.suggest import Suggestion, suggestions
from mmdit_scale.plan.peaks import PEAK_TFLOPS, PLAN_GPU
from mmdit_scale.plan.tokens import TokenLayout, Tokens, largest_tokens, square_tokens, token_layout
from mmdit_scale.run.data_dims import fill_from_data

DEFAULT_MFU = 0.4


@dataclass(frozen=True)
class Hardware:
    gpus: int
    gpu_memory_gib: float = 80.0
    mfu: float = DEFAULT_MFU
    """Model FLOPs utilisation: training FLOPs (recomputation not counted) / (GPUs x peak)."""
    peak_tflops: Optional[float] = None
    """Per-GPU peak; None: the PLAN_GPU's peak at the recipe's precision."""

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValueError(f"--gpus must be >= 1, got {self.gpus}")
        if self.gpu_memory_gib <= 0:
            raise ValueError(f"--gpu-memory must be > 0, got {self.gpu_memory_gib}")
        if not 0.0 < self.mfu <= 1.0:
            raise ValueError(f"--mfu must lie in (0, 1], got {self.mfu}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ValueError(f"--peak-tflops must be > 0, got {self.peak_tflops}")


@dataclass(frozen=True)
class Checkpointing:
    """What one activation checkpointing policy costs, at the recipe's micro-batch and largest bucket."""

    every: int
    """The policy: parallel.activation_checkpointing (0 none, 1 every block, k every k-th block)."""
    blocks: int
    """Blocks it checkpoints."""
    activations: float
    """Activation bytes per GPU."""
    recompute_flops: float
    """FLOPs per sample of the forwards it runs again in backward (at data.resolution, as `flops`)."""


@dataclass(frozen=True)
class Plan:
    cfg: RunConfig
    hardware: Hardware
    params: ParamCount
    layout: TokenLayout
    """The data's autoencoder factor and text length (from data.train's manifest, else SD3's)."""
    tokens: Tokens
    """Tokens of a data.resolution square image: what FLOPs and time are quoted for."""
    largest: Tokens
    """Tokens of the largest aspect bucket: what memory is planned for."""
    flops: Flops
    memory: dict[int, Memory]
    """Per ZeRO stage (1-3, and 0 if the recipe uses it), at the recipe's micro-batch and checkpointing."""
    checkpointing: dict[int, Checkpointing]
    """By interval: no checkpointing (0), the recipe's policy, every block (1), in that order."""
    grad_accum: int
    samples_per_step: int
    step_seconds: float
    data: SampleBytes
    suggestions: list[Suggestion]
    input_dims_from: str
    """Where the model input dims came from: the recipe, or which ones the manifest or SD3's defaults filled."""

    @property
    def fits_by_stage(self) -> dict[int, bool]:
        return {stage: fits(m, self.hardware.gpu_memory_gib) for stage, m in self.memory.items()}

    @property
    def fits(self) -> bool:
        return any(self.fits_by_stage.values())

    @property
    def recipe_checkpointing(self) -> Checkpointing:
        return self.checkpointing[self.cfg.parallel.activation_checkpointing]

    @property
    def build_host_bytes(self) -> float:
        """Host memory per rank while the recipe's ZeRO stage builds the model (plan.memory.build_host_bytes)."""
        return build_host_bytes(self.params.total, self.params.largest_layer, self.hardware.gpus,
                                self.cfg.parallel.zero_stage)

    @property
    def peak_tflops(self) -> float:
        return self.hardware.peak_tflops or PEAK_TFLOPS[PLAN_GPU][self.cfg.parallel.precision]

    @property
    def total_days(self) -> float:
        return self.cfg.train.steps * self.step_seconds / 86400.0

    @property
    def total_flops(self) -> float:
        return self.cfg.train.steps * self.samples_per_step * self.flops.training

    @property
    def total_bytes(self) -> float:
        """Pre-encoded bytes read over the run (the dataset's size if it is one epoch)."""
        return self.cfg.train.steps * self.samples_per_step * self.data.total

    @property
    def samples_per_second_per_gpu(self) -> float:
        return self.samples_per_step / self.step_seconds / self.hardware.gpus


def make_plan(cfg: RunConfig, hardware: Hardware, params: Optional[ParamCount] = None) -> Plan:
    cfg, filled = fill_from_data(cfg, sd3_fallback=True)
    params = params or count_parameters(cfg.model)
    layout = token_layout(cfg)
    tokens, largest = square_tokens(cfg, layout), largest_tokens(cfg, layout)
    flops = run_training_flops(cfg, tokens)
    precision, micro = cfg.parallel.precision, cfg.train.micro_batch

    def memory_at(stage: int, micro_batch: int, ckpt: int, gpus: int) -> Memory:
        return memory_per_gpu(params.total, params.largest_layer, cfg.model, largest, micro_batch, gpus,
                              stage, precision, ckpt, ema=cfg.train.ema_every > 0)

    def policy(every: int) -> Checkpointing:
        return Checkpointing(every, len(checkpointed_blocks(cfg.model.depth, every)),
                             activation_bytes(cfg.model, largest, micro, precision, every),
                             recompute_flops(cfg.model, tokens, every))

    ckpt = cfg.parallel.activation_checkpointing
    # ZeRO-1/2/3 always; stage 0 (plain data parallel) too when the recipe asks for it.
    stages = sorted({*ZERO_STAGES, cfg.parallel.zero_stage})
    memory = {stage: memory_at(stage, micro, ckpt, hardware.gpus) for stage in stages}
    checkpointing = {every: policy(every) for every in (0, ckpt, 1)}
    grad_accum = max(1, math.ceil(cfg.train.global_batch / (micro * hardware.gpus)))
    samples_per_step = grad_accum * micro * hardware.gpus
    peak = hardware.peak_tflops or PEAK_TFLOPS[PLAN_GPU][precision]
    step_seconds = samples_per_step * flops.training / (hardware.gpus * peak * 1e12 * hardware.mfu)
    stronger = [(p.every, f"activation checkpointing {checkpointing_label(p.every)} ({p.blocks} of {cfg.model.depth} "
                          f"blocks, {100 * p.recompute_flops / flops.training:.0f}% more compute)")
                for p in map(policy, more_checkpointing(cfg.model.depth, ckpt))]
    advice = [] if fits(memory[cfg.parallel.zero_stage], hardware.gpu_memory_gib) else suggestions(
        memory_at, lambda m: fits(m, hardware.gpu_memory_gib), cfg.parallel.zero_stage, micro, ckpt, hardware.gpus,
        cfg.train.global_batch, stronger)
    return Plan(cfg=cfg, hardware=hardware, params=params, layout=layout, tokens=tokens, largest=largest, flops=flops,
                memory=memory, checkpointing=checkpointing, grad_accum=grad_accum, samples_per_step=samples_per_step,
                step_seconds=step_seconds, data=sample_bytes(cfg, layout), suggestions=advice,
                input_dims_from=filled or "set in the recipe")


def _zero(stage: int) -> str:
    return f"zero{stage}"


def to_json(plan: Plan) -> dict[str, Any]:
    """The plan as one JSON-able object (the `--json` output); memory in GiB."""
    cfg, hw = plan.cfg, plan.hardware
    return {
        "model": {"depth": cfg.model.depth, "hidden_size": cfg.model.hidden_size, "num_heads": cfg.model.num_heads,
                  "qk_norm": cfg.model.qk_norm},
        "input_dims": {"in_channels": cfg.model.in_channels, "context_dim": cfg.model.context_dim,
                       "pooled_dim": cfg.model.pooled_dim, "from": plan.input_dims_from},
        "params": plan.params.total,
        "tokens": {"image": plan.tokens.image, "text": plan.tokens.text, "largest_image": plan.largest.image,
                   "autoencoder_factor": plan.layout.autoencoder_factor, "from": plan.layout.source},
        "flops_per_sample": plan.flops.training,
        "flops_per_sample_forward": plan.flops.forward,
        "flops_per_sample_headline": plan.flops.headline,
        "attention_fraction": plan.flops.attention_fraction,
        "gpus": hw.gpus,
        "gpu_memory_gb": hw.gpu_memory_gib,
        "usable_fraction": USABLE_FRACTION,
        "precision": cfg.parallel.precision,
        "zero_stage": cfg.parallel.zero_stage,
        "activation_checkpointing": cfg.parallel.activation_checkpointing,
        "checkpointed_blocks": plan.recipe_checkpointing.blocks,
        "recompute_flops_per_sample": plan.recipe_checkpointing.recompute_flops,
        "memory_per_gpu_gb": {_zero(s): m.total / GIB for s, m in plan.memory.items()},
        "memory_breakdown_gb": {_zero(s): m.gib() for s, m in plan.memory.items()},
        "activations_gb": {"stored": plan.checkpointing[0].activations / GIB,
                           "checkpointed": plan.checkpointing[1].activations / GIB,
                           "recipe": plan.recipe_checkpointing.activations / GIB},
        "build_host_memory_per_rank_gb": plan.build_host_bytes / GIB,
        "fits_by_stage": {_zero(s): ok for s, ok in plan.fits_by_stage.items()},
        "fits": plan.fits,
        "suggestions": [{"change": s.change, "overrides": list(s.overrides), "zero_stage": s.zero_stage,
                         "memory_per_gpu_gb": s.memory_gib} for s in plan.suggestions],
        "global_batch": cfg.train.global_batch,
        "micro_batch": cfg.train.micro_batch,
        "grad_accum": plan.grad_accum,
        "samples_per_step": plan.samples_per_step,
        "mfu": hw.mfu,
        "peak_tflops": plan.peak_tflops,
        "step_seconds": plan.step_seconds,
        "steps": cfg.train.steps,
        "total_days": plan.total_days,
        "total_flops": plan.total_flops,
        "bytes_per_sample": plan.data.total,
        "total_bytes": plan.total_bytes,
        "read_bytes_per_second_per_gpu": plan.samples_per_second_per_gpu * plan.data.total,
    }
