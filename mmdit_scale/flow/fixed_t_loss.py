"""The scaling study's validation loss: the training loss at 8 fixed, evenly spaced t with fixed noise.

Fixed t (not sampled) and fixed noise make the number a deterministic function of the weights and the
held-out batch, so runs of different sizes, samplers and seeds are comparable. The 8 values are the
midpoints of 8 equal bins, (i + 1/2) / 8 for i = 0..7 = 1/16, 3/16, ..., 15/16: evenly spaced, and
away from t = 0 and t = 1 where the eps formulations are clamped.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor

from mmdit_scale.flow.formulation import Formulation, ModelFn


def validation_timesteps(n: int = 8) -> tuple[float, ...]:
    """Midpoints of n equal bins of [0, 1]: (i + 1/2) / n."""
    return tuple((i + 0.5) / n for i in range(n))


VALIDATION_TIMESTEPS: tuple[float, ...] = validation_timesteps(8)
"""The SD3 scaling study's 8 values, the default everywhere (`eval.timesteps`)."""


class ValidationLoss(NamedTuple):
    mean: Tensor
    """() mean over the timesteps (and the batch)."""
    per_t: Tensor
    """(n,) batch-mean loss at each timestep."""


def validation_noise(x0: Tensor, seed: int) -> Tensor:
    """Noise of x0's shape from a seeded CPU generator, so the same seed gives the same noise on any device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(device=x0.device, dtype=x0.dtype)


@torch.no_grad()
def validation_loss(
    formulation: Formulation, model_fn: ModelFn, x0: Tensor, noise: Tensor | int,
    timesteps: Sequence[float] = VALIDATION_TIMESTEPS, **model_kwargs: Any
) -> ValidationLoss:
    """Loss of one held-out batch x0 (B, ...) at each of `timesteps` (default: the 8 VALIDATION_TIMESTEPS).

    `noise` is a tensor of x0's shape or an int seed (give each held-out batch its own fixed seed);
    the same noise is used at every t. Each t is one model call on the batch.
    """
    if not isinstance(noise, Tensor):
        noise = validation_noise(x0, noise)
    per_t = torch.stack([
        formulation.training_losses(model_fn, x0, torch.full((x0.shape[0],), t, device=x0.device), noise,
                                    **model_kwargs).loss.mean()
        for t in timesteps
    ])  # (len(timesteps),)
    return ValidationLoss(mean=per_t.mean(), per_t=per_t)
