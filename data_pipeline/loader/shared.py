"""Batch slots in shared memory that a DataLoader worker fills and the main process lends out.

Sending a fresh tensor from a worker costs a new shared-memory segment per batch (about 23 ms
per 32 MB, ENVIRONMENT_NOTES), which caps a rank at about 1,000 samples/s whatever the worker
count. Instead the main process makes a few slots per worker once; the worker collates into a
free slot and sends only its index, and the main process marks the slot free again once the
consumer holds no reference to its tensors. With no free slot the worker falls back to a
private tensor (the slow path), so a consumer that keeps batches never blocks the workers.
"""
from __future__ import annotations

import math
import sys
from typing import Optional

import torch

from data_pipeline.loader.pool import storage_users


class SharedRing:
    def __init__(self, slots: int, batch: int, seq: int, width: int, pooled_dim: int, latent_numel: int,
                 dtype: torch.dtype, repa: Optional[tuple[int, int]] = None):
        self.batch = batch
        self.latent_numel = latent_numel
        # Zero-filled once: the context padding is only ever written with zeros afterwards.
        self.latent = [torch.zeros(batch * latent_numel, dtype=dtype).share_memory_() for _ in range(slots)]
        self.context = [torch.zeros((batch, seq, width), dtype=dtype).share_memory_() for _ in range(slots)]
        self.pooled = [torch.zeros((batch, pooled_dim), dtype=dtype).share_memory_() for _ in range(slots)]
        self.repa = [] if repa is None else [torch.zeros((batch, *repa), dtype=dtype).share_memory_()
                                             for _ in range(slots)]
        self.busy = torch.zeros(slots, dtype=torch.int32).share_memory_()

    def views(self, slot: int, n: int, latent_shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """(latent (n, C, h, w), context (n, S, W), pooled (n, P), REPA features (n, N, De) or None) of a slot."""
        latent = self.latent[slot][:n * math.prod(latent_shape)].view((n,) + tuple(latent_shape))
        repa = self.repa[slot] if self.repa else None
        if n == self.batch:
            return latent, self.context[slot], self.pooled[slot], repa
        return latent, self.context[slot][:n], self.pooled[slot][:n], None if repa is None else repa[:n]

    def take(self, n: int, latent_shape: tuple[int, ...]) -> Optional[tuple[int, tuple[torch.Tensor, ...]]]:
        """Worker side: claim a free slot for a batch of n samples, or None."""
        if n > self.batch or math.prod(latent_shape) > self.latent_numel:
            return None
        busy = self.busy.numpy()
        for slot in range(len(busy)):
            if busy[slot] == 0:
                busy[slot] = 1
                return slot, self.views(slot, n, latent_shape)
        return None

    def in_use(self, slot: int) -> bool:
        """Main side: does anything outside the ring still hold this slot's tensors?"""
        for tensors in (self.latent, self.context, self.pooled, *([self.repa] if self.repa else [])):
            # References: the ring's list and getrefcount's argument.
            if sys.getrefcount(tensors[slot]) > 2 or storage_users(tensors[slot]) > 1:
                return True
        return False

    def release(self, slot: int) -> None:
        self.busy[slot] = 0
