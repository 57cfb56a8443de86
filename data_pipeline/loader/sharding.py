"""Which shards each stream reads: a pure function of (seed, epoch, stream layout, progress).

A *stream* is one (rank, worker) pair; there are `world_size * workers` of them, and stream
`rank * workers + worker` deals itself every n-th *unit* of the epoch's shard order. A unit is
a shard, or, when a dataset has fewer shards than there are streams, a slice of one (every
n-th sample), so no stream is left without data. The split is disjoint and covers every sample.

After a resume on another layout, `EpochProgress` lists what the old layout had already
delivered in that epoch: finished shards leave the order, partly read ones keep the indices to
skip. Nothing a finished shard held is read twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from data_pipeline.loader import rng


@dataclass(frozen=True)
class Unit:
    """Samples `index % n_slices == slice` of shard `shard` of dataset `source`."""

    source: int
    shard: int
    slice: int = 0
    n_slices: int = 1

    def wants(self, index: int) -> bool:
        return self.n_slices == 1 or index % self.n_slices == self.slice


@dataclass
class EpochProgress:
    """What one dataset had delivered in one epoch when the layout changed."""

    done: set[int] = field(default_factory=set)
    """Shards whose every sample was delivered."""
    partial: dict[int, set[int]] = field(default_factory=dict)
    """Shard -> sample indices already delivered from it."""

    def to_dict(self) -> dict:
        return {"done": sorted(self.done),
                "partial": {str(k): sorted(v) for k, v in sorted(self.partial.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "EpochProgress":
        return cls(done={int(x) for x in d["done"]},
                   partial={int(k): {int(x) for x in v} for k, v in d["partial"].items()})


def shard_order(source: int, n_shards: int, *, seed: int, epoch: int, shuffle: bool,
                progress: Optional[EpochProgress] = None) -> list[tuple[int, int]]:
    """(source, shard) pairs of one dataset in the order an epoch reads them."""
    order = rng.permutation(n_shards, seed, rng.SHARD_ORDER, source, epoch) if shuffle else range(n_shards)
    done = progress.done if progress is not None else ()
    return [(source, s) for s in order if s not in done]


def make_units(order: list[tuple[int, int]], n_streams: int) -> list[Unit]:
    """Units of an epoch: one per shard, or n slices per shard when shards are fewer than streams."""
    if not order:
        return []
    n_slices = -(-n_streams // len(order)) if len(order) < n_streams else 1
    return [Unit(src, shard, j, n_slices) for src, shard in order for j in range(n_slices)]


def deal(units: list[Unit], stream: int, n_streams: int) -> list[Unit]:
    """The units stream `stream` of `n_streams` reads, in order."""
    return units[stream::n_streams]
