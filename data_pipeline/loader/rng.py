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


_START = 0x6A09E667F3BCC909


def hash_ints(*values: int, start: int = _START) -> int:
    """64-bit hash of a tuple of non-negative integers (order matters): a splitmix64 step per value.

    `hash_ints(*b, start=hash_ints(*a)) == hash_ints(*a, *b)`, so draws that share a prefix
    (a sample's per-encoder dropout) hash the prefix once. The steps are inlined: the loader
    makes several draws per sample and a call per step was a tenth of its time."""
    h = start
    for v in values:
        x = ((h ^ (v & _MASK)) + 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        h = x ^ (x >> 31)
    return h


def to_unit(h: int) -> float:
    """A float in [0, 1) from a 64-bit hash; 53 random bits, like `random.random()`."""
    return (h >> 11) * (1.0 / (1 << 53))


def uniform(*values: int) -> float:
    """A float in [0, 1) determined by `values`."""
    return to_unit(hash_ints(*values))


def permutation(n: int, *values: int) -> list[int]:
    """A permutation of range(n) determined by `values` (numpy's PCG64, seeded from their hash)."""
    rng = np.random.Generator(np.random.PCG64(hash_ints(*values)))
    return rng.permutation(n).tolist()
