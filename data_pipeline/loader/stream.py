"""One stream of batches: its datasets' units, a weighted mix, a shuffle buffer, bucket batching.

Everything a stream does is a pure function of its `StreamSpec` and its position, so its state
is small: per dataset a cursor (epoch, unit, next sample index), the counts of samples mixed in
and shuffled out, and *references* to the samples held in the shuffle buffer and in unfinished
buckets. Restoring re-reads exactly those samples (their dropout and caption draws are functions
of their identity, so they come back identical) and carries on from the cursors.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

from data_pipeline.layout import TextLayout
from data_pipeline.loader import rng
from data_pipeline.loader.collate import Collator
from data_pipeline.loader.config import LoaderConfig
from data_pipeline.loader.sample_reader import ST_DTYPES, Counters, RawSample, SamplePolicy, ShardReader
from data_pipeline.loader.sharding import EpochProgress, Unit, deal, make_units, shard_order


@dataclass
class Source:
    """What a stream needs of one dataset (picklable, no manifest)."""

    urls: list[str]
    samples: list[int]
    weight: float
    checks: list[tuple[int, str]]
    """(bytes, sha256) of each shard, as its manifest records them."""


@dataclass
class StreamSpec:
    sources: list[Source]
    cfg: LoaderConfig
    layout: TextLayout
    dtype: str
    """safetensors dtype name of the stored tensors (BF16 / F16)."""
    channels: int
    stream: int
    n_streams: int
    validation: bool = False
    generation: int = 0
    """Bumped by every resume onto another layout, so its shuffle draws are fresh."""
    plan: dict[tuple[int, int], EpochProgress] = field(default_factory=dict)
    """(dataset, epoch) -> what an earlier layout already delivered in that epoch."""
    start_epochs: Optional[list[int]] = None
    repa: Optional[tuple[int, int]] = None
    """(tokens, width) of the REPA features to read; None: skipped."""


@dataclass
class StreamState:
    cursors: list[list[int]]
    """Per reader: [epoch, unit position, next sample index]."""
    n_in: int = 0
    n_out: int = 0
    batches: int = 0
    buffer: list[list[int]] = field(default_factory=list)
    pending: list[list] = field(default_factory=list)
    """[[latent shape], [refs]] per unfinished bucket, in creation order."""
    counters: dict[str, int] = field(default_factory=lambda: asdict(Counters()))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StreamState":
        return cls(**d)

    @classmethod
    def initial(cls, spec: StreamSpec) -> "StreamState":
        n = 1 if spec.validation else len(spec.sources)
        epochs = spec.start_epochs or [0] * n
        return cls(cursors=[[epochs[r], 0, 0] for r in range(n)])


def _always(_: int) -> bool:
    return True


class Stream:
    def __init__(self, spec: StreamSpec, state: Optional[StreamState] = None):
        self.spec = spec
        cfg = spec.cfg
        dtype = ST_DTYPES[spec.dtype]
        policy = SamplePolicy(seed=cfg.seed, text_dropout=cfg.text_dropout,
                              synthetic_prob=cfg.synthetic_caption_prob,
                              fixed_variant=cfg.val_caption if spec.validation else None)
        self.reader = ShardReader(spec.layout, dtype, spec.channels, policy, cfg.verify, repa=spec.repa)
        # Batches alive at once: the consumer's, the queued ones, the one being built.
        self.collate = Collator(spec.layout, dtype, pool_size=cfg.prefetch + 3, null_text=cfg.null_text,
                                repa=spec.repa)
        self.state = state if state is not None else StreamState.initial(spec)
        self._units_cache: dict[tuple[int, int], list[Unit]] = {}
        total = sum(s.weight for s in spec.sources)
        acc, self._cum = 0.0, []
        for s in spec.sources:
            acc += s.weight / total
            self._cum.append(acc)

    def units(self, reader: int, epoch: int) -> list[Unit]:
        key = (reader, epoch)
        if key not in self._units_cache:
            spec = self.spec
            if spec.validation:
                order = [p for i, s in enumerate(spec.sources)
                         for p in shard_order(i, len(s.urls), seed=spec.cfg.seed, epoch=0, shuffle=False)]
            else:
                order = shard_order(reader, len(spec.sources[reader].urls), seed=spec.cfg.seed, epoch=epoch,
                                    shuffle=True, progress=spec.plan.get((reader, epoch)))
            if len(self._units_cache) > 4:
                self._units_cache.clear()
            self._units_cache[key] = deal(make_units(order, spec.n_streams), spec.stream, spec.n_streams)
        return self._units_cache[key]

    def _want(self, unit: Unit, epoch: int):
        progress = self.spec.plan.get((unit.source, epoch))
        skip = progress.partial.get(unit.shard) if progress is not None else None
        return (lambda i: i not in skip) if skip else _always

    def _read(self, reader: int, counters: Counters) -> Iterator[RawSample]:
        epoch, pos, start = self.state.cursors[reader]
        barren = 0
        while True:
            units = self.units(reader, epoch)
            produced = False
            while pos < len(units):
                unit = units[pos]
                source = self.spec.sources[unit.source]
                for index, sample in self.reader.read(source.urls[unit.shard], unit, reader, epoch, pos, start,
                                                      self._want(unit, epoch), counters, source.checks[unit.shard]):
                    self.state.cursors[reader] = [epoch, pos, index + 1]
                    produced = True
                    yield sample
                pos, start = pos + 1, 0
                self.state.cursors[reader] = [epoch, pos, 0]
            if self.spec.validation:
                return
            if units:
                barren = 0 if produced else barren + 1
                if barren >= 2:
                    raise RuntimeError(f"stream {self.spec.stream}: dataset {reader} yielded no readable sample "
                                       f"in two epochs; every shard it was dealt is corrupt")
            epoch, pos, start = epoch + 1, 0, 0
            self.state.cursors[reader] = [epoch, 0, 0]

    def _restore(self, refs: list[tuple[int, ...]]) -> dict[tuple[int, ...], RawSample]:
        groups: dict[tuple[int, int, int], set[int]] = defaultdict(set)
        for r, epoch, pos, index in refs:
            groups[(r, epoch, pos)].add(index)
        found: dict[tuple[int, ...], RawSample] = {}
        for (r, epoch, pos), wanted in sorted(groups.items()):
            unit = self.units(r, epoch)[pos]
            source = self.spec.sources[unit.source]
            for index, sample in self.reader.read(source.urls[unit.shard], unit, r, epoch, pos, 0, wanted.__contains__,
                                                  Counters(), source.checks[unit.shard]):
                found[sample.ref] = sample
                wanted.discard(index)
                if not wanted:
                    break  # the rest of the shard holds nothing buffered
        lost = [ref for ref in refs if tuple(ref) not in found]
        if lost:
            raise RuntimeError(f"cannot restore {len(lost)} buffered sample(s), first {lost[0]}: "
                               "the shards changed since the state was saved")
        return found

    def _snapshot(self, buffer: list[RawSample], pending: dict[tuple, list[RawSample]],
                  counters: Counters) -> dict:
        st = self.state
        st.buffer = [list(s.ref) for s in buffer]
        st.pending = [[list(shape), [list(s.ref) for s in group]] for shape, group in pending.items() if group]
        st.counters = asdict(counters)
        return {"cursors": [list(c) for c in st.cursors], "n_in": st.n_in, "n_out": st.n_out,
                "batches": st.batches, "buffer": st.buffer, "pending": st.pending, "counters": st.counters}

    def __iter__(self) -> Iterator[tuple[dict, dict]]:
        """(batch, state after this batch) pairs; infinite in training, one pass in validation."""
        spec, st = self.spec, self.state
        counters = Counters(**st.counters)
        held = self._restore([tuple(r) for r in st.buffer] + [tuple(r) for _, g in st.pending for r in g])
        buffer = [held[tuple(r)] for r in st.buffer]
        pending: dict[tuple, list[RawSample]] = {tuple(shape): [held[tuple(r)] for r in g] for shape, g in st.pending}
        size, batch = spec.cfg.shuffle_buffer, spec.cfg.batch_size
        readers = [self._read(r, counters) for r in range(len(st.cursors))]

        def emit(group: list[RawSample]) -> tuple[dict, dict]:
            st.batches += 1
            out = self.collate(group), self._snapshot(buffer, pending, counters)
            self.reader.recycle(group, keep=2 * batch)
            return out

        if spec.validation:
            for sample in readers[0]:
                group = pending.setdefault(sample.shape, [])
                group.append(sample)
                if len(group) == batch:
                    pending[sample.shape] = []
                    yield emit(group)
            for shape in sorted(pending):
                group = pending.pop(shape)
                if group:
                    yield emit(group)
            return
        while True:
            r = 0 if len(readers) == 1 else bisect.bisect_right(
                self._cum, rng.uniform(spec.cfg.seed, rng.MIX, spec.generation, spec.stream, st.n_in))
            sample = next(readers[min(r, len(readers) - 1)])
            st.n_in += 1
            if size > 1:
                if len(buffer) < size:
                    buffer.append(sample)
                    continue
                j = int(rng.uniform(spec.cfg.seed, rng.SHUFFLE, spec.generation, spec.stream, st.n_out) * size)
                st.n_out += 1
                sample, buffer[j] = buffer[j], sample
            group = pending.setdefault(sample.shape, [])
            group.append(sample)
            if len(group) == batch:
                pending[sample.shape] = []
                yield emit(group)
