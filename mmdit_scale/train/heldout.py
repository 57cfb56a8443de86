"""Validation loss on the held-out shards (`data.val`): the SD3 scaling study's comparable number.

The flow package's `validation_loss` evaluates the training loss at `eval.timesteps` fixed, evenly
spaced t (8 in the SD3 study). The
noise is fixed per sample (seeded by `eval.seed` and the sample's key, drawn on the CPU), so the
number depends only on the weights and the held-out samples, not on the batch layout, the device
or the step. Each rank takes the first `eval.val_batches` batches of its part of data.val.
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Callable

import torch
import torch.distributed as dist

from data_pipeline.loader import ShardLoader
from mmdit_scale.flow import get_formulation, shift_timesteps, validation_loss, validation_timesteps


def sample_noise(keys: list[str], shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """(B, *shape) standard normal noise, one fixed draw per sample key."""
    draws = []
    for key in keys:
        digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        draws.append(torch.randn(shape, generator=g))
    return torch.stack(draws)


class Validator:
    def __init__(self, loader: ShardLoader, formulation: str, batches: int, timesteps: int, seed: int,
                 dtype: torch.dtype, device: torch.device, shift_for: Callable[[int, int], float] | None = None):
        """`shift_for(h, w)`: the training rule's shift for a latent of h x w (`eval.shifted`), or
        None for the study's unshifted t. Losses are reported under the unshifted t either way."""
        self.loader, self.batches, self.seed, self.dtype, self.device = loader, batches, seed, dtype, device
        self.timesteps = validation_timesteps(timesteps)
        self.shift_for = shift_for
        self.formulation = get_formulation(formulation)

    def batch_timesteps(self, height: int, width: int) -> tuple[float, ...]:
        """The validation t of a batch whose latent is height x width."""
        if self.shift_for is None:
            return self.timesteps
        return tuple(shift_timesteps(t, self.shift_for(height, width)) for t in self.timesteps)

    def run(self, model_fn: Callable[..., torch.Tensor]) -> tuple[float, dict[str, float]]:
        """(mean, loss per t) over all ranks; a collective (every rank runs the same number of passes)."""
        batches = list(itertools.islice(iter(self.loader), self.batches))
        count = torch.tensor([len(batches)], device=self.device)
        dist.all_reduce(count, op=dist.ReduceOp.MIN)
        n = int(count.item())
        if n == 0:
            raise ValueError("data.val gives some rank no batch: it needs at least micro_batch samples per rank")
        sums = torch.zeros(len(self.timesteps), dtype=torch.float64, device=self.device)
        samples = torch.zeros((), dtype=torch.float64, device=self.device)
        for batch in batches[:n]:
            x0 = batch["latent"].to(self.device, torch.float32)  # (B, C, h, w)
            noise = sample_noise(batch["keys"], tuple(x0.shape[1:]), self.seed).to(self.device)
            result = validation_loss(self.formulation, model_fn, x0, noise, self.batch_timesteps(*x0.shape[2:]),
                                     context=batch["context"].to(self.device, self.dtype),
                                     pooled=batch["pooled"].to(self.device, self.dtype))
            sums += result.per_t.double() * x0.shape[0]
            samples += x0.shape[0]
        dist.all_reduce(sums)
        dist.all_reduce(samples)
        per_t = (sums / samples).tolist()
        return sum(per_t) / len(per_t), {f"{t:.4f}": v for t, v in zip(self.timesteps, per_t)}
