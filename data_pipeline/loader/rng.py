"""Counter-based random draws: every draw is a pure function of integers that name it.

The loader never carries a sequential RNG. A dropout decision is `uniform(seed, DROPOUT,
source, epoch, shard, index, encoder)`, a shuffle pick is `uniform(seed, SHUFFLE, generation,
stream, n)`, and so on. Resuming at any position therefore replays the same draws without
checkpointing generator state, and per-sample draws do not depend on which rank or worker read
the sample.
"""
from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1

# Domain tags keep the draw families independent of one another.
DROPOUT = 1
CAPTION = 2
SHUFFLE = 3
MIX = 4
SHARD_ORDER = 5


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def hash_ints(*values: int) -> int:
    """64-bit hash of a tuple of non-negative integers (order matters)."""
    h = 0x6A09E667F3BCC909
    for v in values:
        h = _splitmix64(h ^ (v & _MASK))
    return h


def uniform(*values: int) -> float:
    """A float in [0, 1) determined by `values`; 53 random bits, like `random.random()`."""
    return (hash_ints(*values) >> 11) * (1.0 / (1 << 53))


def permutation(n: int, *values: int) -> list[int]:
    """A permutation of range(n) determined by `values` (numpy's PCG64, seeded from their hash)."""
    rng = np.random.Generator(np.random.PCG64(hash_ints(*values)))
    return rng.permutation(n).tolist()
