"""Parse `data.train` / `data.val` into datasets: shard URLs, per-shard sample counts, manifest.

Accepted forms (one dataset, or a list of them to mix):
- a local directory holding `manifest.json` and the shards it lists;
- a brace pattern of local paths, `/data/ds/shard-{000000..000099}.tar`; the manifest is the
  `manifest.json` beside the first shard;
- any URL WebDataset's `gopen` opens, e.g. `pipe:aws s3 cp s3://b/ds/shard-{000000..000099}.tar -`
  or `https://host/ds/shard-{000000..000009}.tar`; the manifest URL is the first shard URL with
  its shard name replaced by `manifest.json`, unless given;
- a mapping `{path: ..., weight: 2.0, manifest: ...}` for a weight or an explicit manifest.

Every dataset needs its manifest: it carries the provenance the loader checks and the sample
count of every shard, which a resume on another layout uses to know when a shard is finished.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from webdataset.gopen import gopen
from webdataset.shardlists import expand_urls

from data_pipeline.manifest import MANIFEST_NAME, Manifest, compare_provenance

_SHARD_NAME = re.compile(r"[^/\s'\"]+\.tar\b")


@dataclass
class DatasetSpec:
    """One dataset of `data.train`: the shards to read and how much of the mix it gets."""

    name: str
    """The entry as written, for messages."""
    urls: list[str]
    shard_names: list[str]
    samples: list[int]
    """Sample count of each shard, from the manifest."""
    weight: float
    manifest: Manifest

    @property
    def total_samples(self) -> int:
        return sum(self.samples)


def _is_url(path: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", path)) and not path.startswith("file:")


def _local(path: str) -> str:
    return re.sub(r"^file://?", "/", path) if path.startswith("file:") else path


def _load_manifest(url: str) -> Manifest:
    try:
        if _is_url(url):
            with gopen(url) as stream:
                return Manifest.from_dict(json.loads(stream.read()))
        return Manifest.load(_local(url))
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"cannot read the manifest {url!r}: {err}") from err


def _dataset(path: str, weight: Any = 1.0, manifest: Optional[str] = None) -> DatasetSpec:
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"dataset {path!r}: weight {weight!r} is not a number") from None
    if not weight > 0:
        raise ValueError(f"dataset {path!r}: weight must be > 0, got {weight}")
    local_dir = not _is_url(path) and os.path.isdir(_local(path))
    if local_dir:
        root = _local(path)
        man = _load_manifest(manifest or os.path.join(root, MANIFEST_NAME))
        urls = [os.path.join(root, s.name) for s in man.shards]
        missing = [s.name for s in man.shards if not os.path.isfile(os.path.join(root, s.name))]
        if missing:
            raise ValueError(f"dataset {path!r}: manifest lists {len(missing)} shard(s) that are "
                             f"missing, first {missing[0]!r}")
        infos = man.shards
    else:
        if not _is_url(path) and not _SHARD_NAME.search(path):
            raise ValueError(f"dataset {path!r}: no such directory, and not a shard pattern or URL")
        urls = expand_urls(path)
        if manifest is None:
            first = urls[0]
            hits = list(_SHARD_NAME.finditer(first))
            if not hits:
                raise ValueError(f"dataset {path!r}: no shard name (*.tar) in {first!r} to find the "
                                 "manifest by; give it as {path: ..., manifest: URL}")
            last = hits[-1]
            manifest = first[:last.start()] + MANIFEST_NAME + first[last.end():]
        man = _load_manifest(manifest)
        by_name = {s.name: s for s in man.shards}
        infos = []
        for url in urls:
            names = [m.group(0) for m in _SHARD_NAME.finditer(url)]
            info = next((by_name[n] for n in reversed(names) if n in by_name), None)
            if info is None:
                raise ValueError(f"dataset {path!r}: shard {url!r} is not listed in its manifest {manifest!r}")
            infos.append(info)
        if not _is_url(path):
            missing = [u for u in urls if not os.path.isfile(_local(u))]
            if missing:
                raise ValueError(f"dataset {path!r}: {len(missing)} shard(s) missing, first {missing[0]!r}")
    if not infos:
        raise ValueError(f"dataset {path!r} has no shards")
    return DatasetSpec(name=path, urls=urls, shard_names=[s.name for s in infos],
                       samples=[int(s.samples) for s in infos], weight=weight, manifest=man)


def parse_datasets(value: Any) -> list[DatasetSpec]:
    """`data.train` (or `data.val`) -> datasets; raises ValueError naming the bad entry."""
    if value is None or (isinstance(value, (str, Sequence, Mapping)) and len(value) == 0):
        raise ValueError("no dataset given (data.train / data.val is empty)")
    entries = [value] if isinstance(value, (str, Mapping)) else list(value)
    specs = []
    for entry in entries:
        if isinstance(entry, str):
            specs.append(_dataset(entry))
        elif isinstance(entry, Mapping):
            unknown = set(entry) - {"path", "weight", "manifest"}
            if unknown or "path" not in entry:
                raise ValueError(f"dataset entry {dict(entry)!r}: expected keys path, weight, manifest")
            specs.append(_dataset(str(entry["path"]), entry.get("weight", 1.0), entry.get("manifest")))
        else:
            raise ValueError(f"dataset entry {entry!r} is neither a path/URL nor a mapping")
    return specs


PROVENANCE_SHAPE_FIELDS = ("resolution", "buckets")
"""Provenance fields that may differ between mixed datasets: batches are grouped by shape."""


def check_same_provenance(specs: list[DatasetSpec], reference: Optional[Manifest] = None,
                          reference_name: str = "the training data") -> None:
    """Refuse datasets whose encoders, latent normalisation or storage differ; name the difference."""
    base_name, base = (reference_name, reference) if reference is not None else (specs[0].name, specs[0].manifest)
    for spec in specs:
        if spec.manifest is base:
            continue
        diff = compare_provenance(base.provenance, spec.manifest.provenance, ignore=PROVENANCE_SHAPE_FIELDS)
        if diff:
            raise ValueError(f"dataset {spec.name!r} has a different provenance from {base_name!r}: "
                             + "; ".join(diff))
