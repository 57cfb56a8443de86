"""Where a `data.train` / `data.val` value's datasets and manifests are: the one rule, torch-free.

A value is one dataset or a list of them to mix; each is
- a local directory holding `manifest.json` and the shards it lists;
- a brace pattern of local shards, `/data/ds/shard-{000000..000099}.tar`, or a `file:` path;
- a URL WebDataset's `gopen` opens, e.g. `pipe:aws s3 cp s3://b/ds/shard-{000000..000099}.tar -`;
- a mapping `{path: ..., weight: 2.0, manifest: ...}` (or the config's typed `DataSource`) for a
  mixture weight or an explicit manifest.

A dataset's manifest is the explicit one, else `manifest.json` in its directory, else the first
shard's location with its shard name replaced by `manifest.json`. The loader, the launcher's
input dims, `sample`, `plan`, `scaling-report` and `submit` all find manifests here. Reading a
manifest is torch-free (the launcher does it) for local paths, `pipe:` and http(s) URLs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from braceexpand import braceexpand

from data_pipeline.layout import NULL_TEXT_FILE
from data_pipeline.manifest import MANIFEST_NAME, Manifest, compare_provenance

SHARD_NAME = re.compile(r"[^/\s'\"]+\.tar\b")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:")
ENTRY_KEYS = ("path", "weight", "manifest")
REMOTE_TIMEOUT_S = 120


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a data value, as written."""

    path: str
    weight: float = 1.0
    manifest: Optional[str] = None
    """An explicit manifest path or URL; None: found by the rule above."""

    @property
    def local(self) -> bool:
        return not is_url(self.path)

    @property
    def directory(self) -> Optional[str]:
        """The local shard directory, or None for a pattern or URL."""
        root = local_path(self.path)
        return root if self.local and os.path.isdir(root) else None


def is_url(path: str) -> bool:
    """A remote location (`pipe:`, `https:`, ...); `file:` paths are local."""
    return bool(_SCHEME.match(path)) and not path.startswith("file:")


def local_path(path: str) -> str:
    """`file:///a/b` and `file:/a/b` -> `/a/b`; other paths unchanged."""
    return re.sub(r"^file://?", "/", path) if path.startswith("file:") else path


def absolute(path: str) -> str:
    """A local path, pattern or `file:` path made absolute (from the working directory); URLs as they are."""
    if is_url(path):
        return path
    return "file://" + os.path.abspath(local_path(path)) if path.startswith("file:") else os.path.abspath(path)


def expand_shards(path: str) -> list[str]:
    """Every shard a pattern names: brace ranges and lists expanded, `::` separating patterns."""
    return [url for part in path.split("::") for url in braceexpand(part)]


def dataset_entries(value: Any) -> list[DatasetEntry]:
    """A data value as its datasets; ValueError naming the bad entry."""
    if value is None or (isinstance(value, (str, Sequence, Mapping)) and len(value) == 0):
        raise ValueError("no dataset given (data.train / data.val is empty)")
    entries = []
    for entry in [value] if isinstance(value, (str, Mapping)) else list(value):
        if isinstance(entry, str):
            entries.append(DatasetEntry(entry))
        elif isinstance(entry, Mapping) or all(hasattr(entry, key) for key in ENTRY_KEYS):
            if not isinstance(entry, Mapping):  # a typed config entry (mmdit_scale.config.DataSource)
                entry = {key: getattr(entry, key) for key in ENTRY_KEYS}
            if set(entry) - set(ENTRY_KEYS) or "path" not in entry:
                raise ValueError(f"dataset entry {dict(entry)!r}: expected keys {', '.join(ENTRY_KEYS)}")
            path, weight = str(entry["path"]), entry.get("weight", 1.0)
            try:
                weight = float(weight)
            except (TypeError, ValueError):
                raise ValueError(f"dataset {path!r}: weight {weight!r} is not a number") from None
            manifest = entry.get("manifest")
            entries.append(DatasetEntry(path, weight, str(manifest) if manifest else None))
        else:
            raise ValueError(f"dataset entry {entry!r} is neither a path/URL nor a mapping")
    for entry in entries:
        if not entry.weight > 0:
            raise ValueError(f"dataset {entry.path!r}: weight must be > 0, got {entry.weight}")
    return entries


def manifest_location(entry: DatasetEntry) -> str:
    """The manifest path or URL of one dataset; ValueError when the rule finds none."""
    if entry.manifest is not None:
        return entry.manifest
    if entry.directory is not None:
        return os.path.join(entry.directory, MANIFEST_NAME)
    if entry.local and not SHARD_NAME.search(entry.path):
        raise ValueError(f"dataset {entry.path!r}: no such directory, and not a shard pattern or URL")
    first = local_path(expand_shards(entry.path)[0]) if entry.local else expand_shards(entry.path)[0]
    hits = list(SHARD_NAME.finditer(first))
    if not hits:
        raise ValueError(f"dataset {entry.path!r}: no shard name (*.tar) in {first!r} to find the manifest by; "
                         "give it as {path: ..., manifest: URL}")
    return first[:hits[-1].start()] + MANIFEST_NAME + first[hits[-1].end():]


def locate_manifests(value: Any) -> list[tuple[DatasetEntry, str]]:
    """Each dataset of a data value with its manifest's location."""
    return [(entry, manifest_location(entry)) for entry in dataset_entries(value)]


def read_manifest(location: str) -> Manifest:
    """A manifest from a local path or a URL; ValueError naming it when it cannot be read."""
    try:
        if is_url(location):
            return Manifest.from_dict(json.loads(_read_remote(location)))
        return Manifest.load(local_path(location))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"cannot read the manifest {location}: {type(err).__name__}: {err}") from err


def _read_remote(url: str) -> bytes:
    """A small remote file's bytes. `pipe:` and http(s) are read here, torch-free, as WebDataset
    reads them (a shell command's stdout; a GET); other schemes go through WebDataset's `gopen`."""
    if url.startswith("pipe:"):
        done = subprocess.run(url[len("pipe:"):], shell=True, capture_output=True, timeout=REMOTE_TIMEOUT_S)
        if done.returncode != 0:
            raise OSError(f"the command exited {done.returncode}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout
    if url.startswith(("http:", "https:")):
        with urllib.request.urlopen(url, timeout=REMOTE_TIMEOUT_S) as response:
            return response.read()
    from webdataset.gopen import gopen  # imports torch

    with gopen(url) as stream:
        return stream.read()


def null_text_location(value: Any) -> str:
    """The NULL_TEXT_FILE of a data value's first dataset: beside its manifest, which must be local."""
    location = locate_manifests(value)[0][1]
    if is_url(location):
        raise ValueError(f"the encoded empty string ({NULL_TEXT_FILE}) is read from beside a local manifest; "
                         f"{location} is remote")
    return os.path.join(os.path.dirname(local_path(location)), NULL_TEXT_FILE)


def first_manifest(value: Any) -> tuple[str, Manifest]:
    """The location and content of the first dataset's manifest: what a run's model and token
    layout follow (the loader refuses datasets whose provenance differs from it)."""
    location = locate_manifests(value)[0][1]
    return location, read_manifest(location)


PROVENANCE_SHAPE_FIELDS = ("resolution", "buckets")
"""Provenance fields that may differ between mixed datasets: batches are grouped by shape."""


def read_manifests(value: Any) -> list[tuple[str, Manifest]]:
    """(dataset as written, its manifest) for every dataset of a data value."""
    return [(entry.path, read_manifest(location)) for entry, location in locate_manifests(value)]


def check_same_provenance(named: Sequence[tuple[str, Manifest]], reference: Optional[tuple[str, Manifest]] = None
                          ) -> None:
    """Refuse datasets whose encoders, their dims, the latent normalisation or the storage differ
    from the reference (default: the first dataset); the message names the dataset and the difference."""
    base_name, base = reference if reference is not None else named[0]
    for name, manifest in named:
        if manifest is base:
            continue
        diff = compare_provenance(base.provenance, manifest.provenance, ignore=PROVENANCE_SHAPE_FIELDS)
        if diff:
            raise ValueError(f"dataset {name!r} has a different provenance from {base_name!r}: " + "; ".join(diff))
