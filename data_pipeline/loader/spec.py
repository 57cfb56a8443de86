"""Parse `data.train` / `data.val` into datasets: shard URLs, per-shard sample counts, manifest.

What a value may be, and where each dataset's manifest is, is `data_pipeline.locate`'s rule. Every
dataset needs its manifest: it carries the provenance the loader checks and the sample count of
every shard, which a resume on another layout uses to know when a shard is finished.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from data_pipeline.locate import (SHARD_NAME, DatasetEntry, expand_shards, local_path, locate_manifests,
                                  read_manifest)
from data_pipeline.manifest import Manifest


@dataclass
class DatasetSpec:
    """One dataset of `data.train`: the shards to read and how much of the mix it gets."""

    name: str
    """The entry as written, for messages."""
    urls: list[str]
    shard_names: list[str]
    samples: list[int]
    """Sample count of each shard, from the manifest."""
    checks: list[tuple[int, str]]
    """(bytes, sha256) of each shard, from the manifest."""
    weight: float
    manifest: Manifest

    @property
    def total_samples(self) -> int:
        return sum(self.samples)


def _dataset(entry: DatasetEntry, location: str) -> DatasetSpec:
    path, man = entry.path, read_manifest(location)
    if entry.directory is not None:
        urls = [os.path.join(entry.directory, s.name) for s in man.shards]
        missing = [s.name for s in man.shards if not os.path.isfile(os.path.join(entry.directory, s.name))]
        if missing:
            raise ValueError(f"dataset {path!r}: manifest lists {len(missing)} shard(s) that are "
                             f"missing, first {missing[0]!r}")
        infos = man.shards
    else:
        urls = expand_shards(path)
        by_name = {s.name: s for s in man.shards}
        infos = []
        for url in urls:
            names = [m.group(0) for m in SHARD_NAME.finditer(url)]
            info = next((by_name[n] for n in reversed(names) if n in by_name), None)
            if info is None:
                raise ValueError(f"dataset {path!r}: shard {url!r} is not listed in its manifest {location!r}")
            infos.append(info)
        if entry.local:
            missing = [u for u in urls if not os.path.isfile(local_path(u))]
            if missing:
                raise ValueError(f"dataset {path!r}: {len(missing)} shard(s) missing, first {missing[0]!r}")
    if not infos:
        raise ValueError(f"dataset {path!r} has no shards")
    return DatasetSpec(name=path, urls=urls, shard_names=[s.name for s in infos],
                       samples=[int(s.samples) for s in infos], checks=[(int(s.bytes), s.sha256) for s in infos],
                       weight=entry.weight, manifest=man)


def parse_datasets(value: Any) -> list[DatasetSpec]:
    """`data.train` (or `data.val`) -> datasets; raises ValueError naming the bad entry."""
    return [_dataset(entry, location) for entry, location in locate_manifests(value)]
