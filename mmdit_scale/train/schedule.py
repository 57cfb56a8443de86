"""Learning-rate schedule: linear warm-up, then constant, cosine or linear decay to `optim.min_lr`.

`lr_factor(k)` multiplies `optim.lr` for the k-th applied update (k = 0, 1, ...):
- warm-up, k < W (W = optim.warmup_steps): (k + 1) / W, so the first update already moves and
  update W - 1 runs at the full rate;
- then, with p = (k - W) / max(1, train.steps - W) clipped to [0, 1] and r = min_lr / lr:
  constant 1; cosine r + (1 - r)(1 + cos(pi p)) / 2; linear r + (1 - r)(1 - p).
DeepSpeed advances the schedule only on applied updates: a step skipped by the non-finite guard
does not consume it.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from mmdit_scale.config.schema import OptimConfig

if TYPE_CHECKING:
    import torch


def lr_factor(k: int, optim: OptimConfig, total_steps: int) -> float:
    """Multiplier of optim.lr for the k-th applied update (0-based)."""
    warmup = optim.warmup_steps
    if k < warmup:
        return (k + 1) / warmup
    if optim.schedule == "constant":
        return 1.0
    progress = min(1.0, max(0.0, (k - warmup) / max(1, total_steps - warmup)))
    floor = optim.min_lr / optim.lr
    if optim.schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + (1.0 - floor) * (1.0 - progress)


def make_scheduler(optimizer: "torch.optim.Optimizer", optim: OptimConfig,
                   total_steps: int) -> "torch.optim.lr_scheduler.LambdaLR":
    """A LambdaLR over `lr_factor`; DeepSpeed steps it after each applied update and checkpoints it."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lambda k: lr_factor(k, optim, total_steps))
