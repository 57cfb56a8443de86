"""SIGUSR1 / SIGTERM: finish the current step on every rank, checkpoint, exit with PREEMPTED (75).

The handler only sets a flag; after each optimizer step the ranks all-reduce it (MAX), so one
signalled rank is enough and all ranks stop after the same step. SLURM's `--signal=B:USR1@N` or
a scheduler's SIGTERM reach the launcher (which forwards them to the ranks) or the ranks directly.
"""
from __future__ import annotations

import os
import signal

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preemption:
    def __init__(self, device: torch.device):
        self.requested = 0
        self.device = device
        for sig in SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        if not self.requested:
            rank = dist.get_rank() if dist.is_initialized() else "?"
            # os.write: a handler may interrupt a write to the same buffered stream (not reentrant).
            os.write(2, f"[rank {rank}] {signal.Signals(signum).name}: checkpointing after this step, "
                        "then exiting\n".encode())
        self.requested = signum

    def agreed(self) -> bool:
        """Whether any rank was signalled; a collective, called once per step by every rank."""
        flag = torch.tensor([1.0 if self.requested else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
