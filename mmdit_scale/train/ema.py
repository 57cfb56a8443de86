"""EMA of the fp32 master weights, sharded across ranks so it costs 4 bytes/param / world.

Every `train.ema_every` optimizer steps: ema <- decay * ema + (1 - decay) * weights (SD3: 0.99
every 100 batches). Each rank keeps the same 1/world slice of every flattened parameter. The full
weights come from `engine.full_fp32_params`, which gathers ZeRO-3 shards (and ZeRO-1/2 master
partitions), so the EMA is of the real fp32 weights under every stage. Checkpoints hold the
consolidated EMA (`ema.safetensors`); any world size reloads it by slicing.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.distributed as dist


def _span(numel: int, rank: int, world: int) -> tuple[int, int, int]:
    """(start, stop, chunk) of this rank's slice of a flattened tensor of `numel` elements."""
    chunk = -(-numel // world)
    start = min(numel, rank * chunk)
    return start, min(numel, start + chunk), chunk


class ShardedEMA:
    def __init__(self, decay: float, every: int, rank: int, world: int, shapes: Mapping[str, torch.Size]):
        """`shapes`: the full shape of every parameter, by name (`engine.param_shapes`)."""
        self.decay, self.every, self.rank, self.world = decay, every, rank, world
        self.shapes = dict(shapes)
        self.shards: dict[str, torch.Tensor] = {}

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def due(self, step: int) -> bool:
        """Whether the optimizer step just finished (1-based count) is an EMA step."""
        return self.enabled and step % self.every == 0

    def _slice(self, full: torch.Tensor) -> torch.Tensor:
        start, stop, _ = _span(full.numel(), self.rank, self.world)
        return full.reshape(-1)[start:stop]

    def reset(self, params: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Start the EMA at the given full weights (the initial weights of a fresh run)."""
        for name, full in params:
            self.shards[name] = self._slice(full).to(torch.float32, copy=True)

    @torch.no_grad()
    def update(self, params: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, full in params:
            self.shards[name].mul_(self.decay).add_(self._slice(full), alpha=1.0 - self.decay)

    def load(self, full_state: Mapping[str, torch.Tensor], device: torch.device) -> None:
        """Take this rank's slices of a consolidated EMA (e.g. read from ema.safetensors)."""
        missing = set(self.shapes) - set(full_state)
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:5]}")
        for name, shape in self.shapes.items():
            full = full_state[name]
            if full.shape != shape:
                raise ValueError(f"EMA tensor {name} has shape {tuple(full.shape)}, the model {tuple(shape)}")
            self.shards[name] = self._slice(full.to(device, torch.float32)).clone()

    def consolidated(self) -> dict[str, torch.Tensor] | None:
        """Full EMA tensors on CPU at rank 0 (None elsewhere); a collective, one gather per tensor."""
        out: dict[str, torch.Tensor] | None = {} if self.rank == 0 else None
        for name, shape in self.shapes.items():
            numel = shape.numel()
            _, _, chunk = _span(numel, self.rank, self.world)
            mine = self.shards[name]
            padded = torch.zeros(chunk, dtype=mine.dtype, device=mine.device)
            padded[:mine.numel()] = mine
            parts = [torch.empty_like(padded) for _ in range(self.world)] if self.rank == 0 else None
            dist.gather(padded, parts, dst=0)
            if out is not None:
                out[name] = torch.cat(parts)[:numel].reshape(shape).cpu()
        return out
