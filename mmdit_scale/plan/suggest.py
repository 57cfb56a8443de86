"""What to change when a recipe does not fit: another ZeRO stage, the least activation checkpointing
that fits, a smaller micro-batch, or more GPUs; each checked with the same memory model as the plan itself."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from mmdit_scale.plan.memory import GIB, ZERO_STAGES, Memory

MemoryAt = Callable[[int, int, int, int], Memory]
"""memory_at(zero_stage, micro_batch, checkpoint_every, gpus) -> Memory per GPU."""
Fits = Callable[[Memory], bool]

MAX_GPUS = 1 << 20


@dataclass(frozen=True)
class Suggestion:
    change: str
    """What to do, in words."""
    overrides: tuple[str, ...]
    """The recipe overrides (`key=value`) or launcher flags (`--gpus N`) that make it."""
    zero_stage: int
    memory_gib: float


def _lowest_fitting_stage(memory_at: MemoryAt, fits: Fits, micro: int, ckpt: int, gpus: int
                          ) -> Optional[tuple[int, Memory]]:
    """The lowest ZeRO stage that fits: lower stages communicate less (ZeRO-3 moves 1.5x the bytes)."""
    for stage in ZERO_STAGES:
        memory = memory_at(stage, micro, ckpt, gpus)
        if fits(memory):
            return stage, memory
    return None


def suggestions(memory_at: MemoryAt, fits: Fits, stage: int, micro: int, ckpt: int, gpus: int,
                global_batch: int, more_checkpointing: Sequence[tuple[int, str]]) -> list[Suggestion]:
    """Single changes to the recipe's (stage, micro, ckpt) on `gpus` that make it fit, cheapest first.

    `more_checkpointing`: (interval, change in words) of the policies that checkpoint more blocks
    than `ckpt`, least recompute first; the first that fits is suggested.
    """
    out: list[Suggestion] = []

    def add(change: str, overrides: list[str], found: tuple[int, Memory]) -> None:
        best_stage, memory = found
        if best_stage != stage:
            overrides = [f"parallel.zero_stage={best_stage}", *overrides]
        out.append(Suggestion(change, tuple(overrides), best_stage, memory.total / GIB))

    found = _lowest_fitting_stage(memory_at, fits, micro, ckpt, gpus)
    if found is not None:
        add(f"ZeRO-{found[0]}", [], found)
        return out
    for every, change in more_checkpointing:
        found = _lowest_fitting_stage(memory_at, fits, micro, every, gpus)
        if found is not None:
            add(change, [f"parallel.activation_checkpointing={every}"], found)
            break
    smaller = _largest_micro_batch(memory_at, fits, micro, ckpt, gpus, global_batch)
    if smaller is not None:
        add(f"micro-batch {smaller[0]} (more gradient accumulation)", [f"train.micro_batch={smaller[0]}"],
            smaller[1])
    more = _fewest_gpus(memory_at, fits, micro, ckpt, gpus)
    if more is not None:
        add(f"{more} GPUs with ZeRO-3", [f"--gpus {more}"], (3, memory_at(3, micro, ckpt, more)))
    return out


def _largest_micro_batch(memory_at: MemoryAt, fits: Fits, micro: int, ckpt: int, gpus: int, global_batch: int
                         ) -> Optional[tuple[int, tuple[int, Memory]]]:
    """The largest smaller micro-batch that fits, preferring one that divides the global batch evenly
    over the GPUs (else the step would not see exactly train.global_batch samples)."""
    fitting = []
    for candidate in range(micro - 1, 0, -1):
        found = _lowest_fitting_stage(memory_at, fits, candidate, ckpt, gpus)
        if found is not None:
            fitting.append((candidate, found))
            if global_batch % (candidate * gpus) == 0:
                return candidate, found
    return fitting[0] if fitting else None


def _fewest_gpus(memory_at: MemoryAt, fits: Fits, micro: int, ckpt: int, gpus: int) -> Optional[int]:
    """Smallest GPU count above `gpus` (whole 8-GPU nodes once past one node) at which ZeRO-3 fits.

    ZeRO-3 memory only falls as GPUs are added, so a bisection finds it; activations do not shrink,
    so there may be none.
    """
    if not fits(memory_at(3, micro, ckpt, MAX_GPUS)):
        return None
    low, high = gpus, MAX_GPUS  # low does not fit, high does
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(memory_at(3, micro, ckpt, mid)) else (mid, high)
    return high if high <= 8 else -(-high // 8) * 8
