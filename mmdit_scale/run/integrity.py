"""Checkpoint integrity: every file's size and sha256, recorded when the checkpoint is written and
verified before anything loads it.

DeepSpeed's own shards (`deepspeed/*.pt`) are pickles, and loading a pickle runs whatever code it
holds (so do the `universal/` files a world-size change converts them to: those are rebuilt from
the verified shards before every such resume, never trusted from disk). The trainer therefore loads a checkpoint only
after every file in it matches `checksums.json`, and refuses a checkpoint with a file that is
missing, of another size, of other bytes, or not recorded at all (a file dropped in beside the
others); it then falls back to the newest older checkpoint that passes. Our own files carry no
code: weights and EMA are safetensors, the RNG states plain JSON. What this guarantees and what it
does not is in docs/reliability.md.

Hashing is split over the ranks (each hashes every world-th file) so a large checkpoint costs each
rank only its share. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from data_pipeline.atomic import write_atomic
from mmdit_scale.run.layout import CHECKSUMS_FILE, TMP_PREFIX, UNIVERSAL_TAG

DERIVED = (UNIVERSAL_TAG,)

CHUNK = 1 << 24


class CheckpointCorrupt(ValueError):
    """A checkpoint file is missing, truncated, altered or unrecorded; the message names it."""


def checkpoint_files(ckpt: Path) -> list[str]:
    """Every file of a checkpoint (relative, '/'-separated), except the checksum record and what a
    resume derives from the rest: `universal/` (rebuilt from the verified shards before each use)
    and temporaries."""
    out = []
    for p in ckpt.rglob("*"):
        rel = p.relative_to(ckpt)
        if p.is_file() and p.name != CHECKSUMS_FILE and rel.parts[0] not in DERIVED \
                and not rel.parts[0].startswith(TMP_PREFIX):
            out.append(rel.as_posix())
    return sorted(out)


def file_record(path: Path) -> dict:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def hash_share(ckpt: Path, files: list[str], rank: int = 0, world: int = 1) -> dict[str, dict]:
    """Records of this rank's share of `files`: every world-th one, from the rank-th."""
    return {rel: file_record(ckpt / rel) for rel in files[rank::world]}


def write_checksums(ckpt: Path, records: dict[str, dict]) -> None:
    write_atomic(ckpt / CHECKSUMS_FILE, json.dumps(dict(sorted(records.items())), indent=1) + "\n")


def read_checksums(ckpt: Path) -> dict[str, dict] | None:
    """The record, or None when the checkpoint has none (written before records were kept)."""
    path = ckpt / CHECKSUMS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointCorrupt(f"{path} is unreadable: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointCorrupt(f"{path} is not a mapping of file records")
    return data


def problems(ckpt: Path, rank: int = 0, world: int = 1) -> list[str]:
    """What is wrong with this rank's share of the checkpoint's files; rank 0 also reports a missing
    record and files present but not recorded. Empty: the share is intact."""
    try:
        recorded = read_checksums(ckpt)
    except CheckpointCorrupt as err:
        return [str(err)] if rank == 0 else []
    if recorded is None:
        return [f"{ckpt} has no {CHECKSUMS_FILE}: it was written before checkpoints recorded their files' "
                "hashes, or not completely"] if rank == 0 else []
    found = []
    if rank == 0:
        extra = sorted(set(checkpoint_files(ckpt)) - set(recorded))
        found += [f"{ckpt / rel} is not recorded in {CHECKSUMS_FILE} (added after the checkpoint was written)"
                  for rel in extra]
    for rel in sorted(recorded)[rank::world]:
        found += _file_problems(ckpt, rel, recorded[rel])
    return found


def verify_file(ckpt: Path, rel: str) -> None:
    """Check one file against the record when the checkpoint has one (a safetensors file runs no
    code, so an unrecorded older checkpoint is still read); CheckpointCorrupt naming it otherwise."""
    recorded = read_checksums(ckpt)
    if recorded is None:
        return
    if rel not in recorded:
        raise CheckpointCorrupt(f"{ckpt / rel} is not recorded in {ckpt / CHECKSUMS_FILE}")
    found = _file_problems(ckpt, rel, recorded[rel])
    if found:
        raise CheckpointCorrupt(found[0])


def _file_problems(ckpt: Path, rel: str, record: dict) -> list[str]:
    path = ckpt / rel
    if not path.is_file():
        return [f"{path} is missing"]
    size = path.stat().st_size
    if size != record.get("bytes"):
        return [f"{path} has {size} bytes, {record.get('bytes')} were written (truncated or replaced)"]
    if file_record(path)["sha256"] != record.get("sha256"):
        return [f"{path} has other bytes than were written (sha256 differs)"]
    return []
