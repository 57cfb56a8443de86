"""Loader state: what `state_dict()` holds, and how a resume onto another layout is planned.

Exact resume (same world size, workers, batch size, buffer, seed and datasets): each stream
restores its own state and the batches that follow are bit-identical to an uninterrupted run.

Resume on another layout (a preempted job back on a different allocation): pass the states of
ALL old ranks. `plan_reshard` works out, per dataset and epoch, which shards were entirely
delivered (they leave the epoch) and which sample indices of partly read shards were delivered
(they are skipped). Samples that sat in shuffle buffers or unfinished buckets were never
delivered, so they are read again. The new layout then deals the remaining work afresh.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass

from data_pipeline.loader.sharding import EpochProgress, deal, make_units, shard_order
from data_pipeline.loader.stream import Source

STATE_VERSION = 1
EXACT_KEYS = ("fingerprint", "seed", "world_size", "streams_per_rank", "batch_size", "shuffle_buffer")
"""State fields that must all match for an exact (bit-identical) resume."""


def fingerprint(sources: list[Source], names: list[list[str]]) -> str:
    """Identity of the data and its mixing weights; independent of where the shards are mounted."""
    blob = json.dumps([[n, s.samples, s.weight] for n, s in zip(names, sources)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_to_list(plan: dict[tuple[int, int], EpochProgress]) -> list[dict]:
    return [{"source": s, "epoch": e, **p.to_dict()} for (s, e), p in sorted(plan.items())]


def plan_from_list(items: list[dict]) -> dict[tuple[int, int], EpochProgress]:
    return {(int(d["source"]), int(d["epoch"])): EpochProgress.from_dict(d) for d in items}


@dataclass
class Reshard:
    plan: dict[tuple[int, int], EpochProgress]
    start_epochs: list[int]
    generation: int


def plan_reshard(states: list[dict], sources: list[Source]) -> Reshard:
    """Progress of all streams of an old layout -> the plan a new layout continues from."""
    ranks = sorted(int(s["rank"]) for s in states)
    world = int(states[0]["world_size"])
    if ranks != list(range(world)):
        raise ValueError(f"resuming on another layout needs the loader states of all {world} old ranks; "
                         f"got ranks {ranks}")
    per_rank = int(states[0]["streams_per_rank"])
    n_old = world * per_rank
    seed = int(states[0]["seed"])
    old_plan: dict[tuple[int, int], EpochProgress] = {}
    for s in states:
        old_plan.update(plan_from_list(s["plan"]))
    streams = []  # (global stream id, stream state)
    for s in states:
        for w, st in enumerate(s["streams"]):
            streams.append((int(s["rank"]) * per_rank + w, st))

    plan: dict[tuple[int, int], EpochProgress] = {}
    start_epochs = []
    for src, source in enumerate(sources):
        in_flight: dict[tuple[int, int, int], set[int]] = defaultdict(set)  # (epoch, stream, pos) -> indices
        lo = hi = None
        for g, st in streams:
            refs = list(st["buffer"]) + [r for _, group in st["pending"] for r in group]
            for r, epoch, pos, index in refs:
                if r == src:
                    in_flight[(epoch, g, pos)].add(index)
            epochs = [st["cursors"][src][0]] + [e for (e, gg, _) in in_flight if gg == g]
            lo = min(epochs) if lo is None else min(lo, *epochs)
            hi = st["cursors"][src][0] if hi is None else max(hi, st["cursors"][src][0])
        start_epochs.append(lo)
        for epoch in range(lo, hi + 1):
            old = old_plan.get((src, epoch))
            done = set(old.done) if old else set()
            delivered: dict[int, set[int]] = defaultdict(set)
            if old:
                for shard, idx in old.partial.items():
                    delivered[shard] |= idx
            units_all = make_units(shard_order(src, len(source.urls), seed=seed, epoch=epoch, shuffle=True,
                                               progress=old), n_old)
            for g, st in streams:
                c_epoch, c_pos, c_index = st["cursors"][src]
                for pos, unit in enumerate(deal(units_all, g, n_old)):
                    if epoch < c_epoch or (epoch == c_epoch and pos < c_pos):
                        upto = None
                    elif epoch == c_epoch and pos == c_pos:
                        upto = c_index
                    else:
                        break
                    held = in_flight.get((epoch, g, pos), set())
                    if upto is None and unit.n_slices == 1 and not held:
                        done.add(unit.shard)
                        continue
                    n = source.samples[unit.shard] if upto is None else min(upto, source.samples[unit.shard])
                    delivered[unit.shard] |= {i for i in range(n) if unit.wants(i) and i not in held}
            partial = {}
            for shard, idx in delivered.items():
                if shard in done:
                    continue
                if len(idx) >= source.samples[shard]:
                    done.add(shard)
                elif idx:
                    partial[shard] = idx
            if done or partial:
                plan[(src, epoch)] = EpochProgress(done=done, partial=partial)
    generation = max(int(s.get("generation", 0)) for s in states) + 1
    return Reshard(plan=plan, start_epochs=start_epochs, generation=generation)
