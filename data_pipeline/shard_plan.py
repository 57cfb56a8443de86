"""Planning: from listed records to the exact content of every shard, before any encoding.

Planning reads each input of this part once (captions, image header, content hash), applies
the filters and removes duplicates in record order, then cuts the survivors into shards. Doing
this in one place before the workers start is what makes deduplication global across workers
and shard contents deterministic, so a rerun can recognise (and skip) a shard it already wrote.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from data_pipeline.filters import Filters, content_hash
from data_pipeline.format import shard_name
from data_pipeline.skipped import SkippedInput, reasons
from data_pipeline.sources import BadCaption, Blob, Record, read_captions
from data_pipeline.transforms import BadImage, probe_size


@dataclass(frozen=True)
class PlannedItem:
    key: str
    image: Blob
    captions: dict
    sha256: str


@dataclass
class ShardPlan:
    index: int
    name: str
    items: list[PlannedItem]

    def fingerprint(self, settings: str) -> str:
        """Identity of what this shard will hold: run settings plus every item's key, content
        hash and captions. A rerun reuses a finished shard only when this matches."""
        h = hashlib.sha256(settings.encode())
        for item in self.items:
            h.update(json.dumps([item.key, item.sha256, item.captions], sort_keys=True).encode())
        return h.hexdigest()


@dataclass
class Plan:
    shards: list[ShardPlan]
    inputs: int
    """Records in this part, before any filtering."""
    skipped_inputs: list[SkippedInput] = field(default_factory=list)
    """Inputs skipped while planning, in input order."""

    @property
    def skipped(self) -> Counter:
        """Inputs skipped while planning, by reason."""
        return reasons(self.skipped_inputs)


def part_range(n: int, part: int, parts: int) -> range:
    """Contiguous slice `part` of `parts` over n records: neighbours in a tar stay together."""
    return range(n * part // parts, n * (part + 1) // parts)


def _inspect(record: Record, filters: Filters, syn_field: str) -> tuple[Optional[str], Optional[PlannedItem]]:
    try:
        captions = read_captions(record, syn_field)
    except BadCaption as err:
        return err.reason, None
    try:
        data = record.image.read()
    except OSError:
        return "unreadable", None
    try:
        width, height = probe_size(data)
    except BadImage as err:
        return err.reason, None
    reason = filters.reject(width, height)
    if reason:
        return reason, None
    return None, PlannedItem(key=record.key, image=record.image, captions=captions, sha256=content_hash(data))


def make_plan(records: list[Record], *, part: int, parts: int, filters: Filters, syn_field: str,
              samples_per_shard: int, threads: int = 8) -> Plan:
    mine = [records[i] for i in part_range(len(records), part, parts)]
    plan = Plan(shards=[], inputs=len(mine))
    # Threads, not processes: this is file reading and hashing, which release the GIL.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        inspected = list(pool.map(lambda r: _inspect(r, filters, syn_field), mine))
    kept: list[PlannedItem] = []
    seen_keys: set[str] = set()
    seen_hashes: set[str] = set()
    for record, (reason, item) in zip(mine, inspected):
        if item is not None and item.key in seen_keys:
            reason = "duplicate_key"
        elif item is not None and filters.dedup and item.sha256 in seen_hashes:
            reason = "duplicate"
        if reason:
            plan.skipped_inputs.append(SkippedInput(key=record.key, path=record.image.path, reason=reason))
            continue
        seen_keys.add(item.key)
        seen_hashes.add(item.sha256)
        kept.append(item)
    named_part = part if parts > 1 else None
    for index, start in enumerate(range(0, len(kept), samples_per_shard)):
        plan.shards.append(ShardPlan(index=index, name=shard_name(index, named_part),
                                     items=kept[start:start + samples_per_shard]))
    return plan
