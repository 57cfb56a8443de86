"""Shard writer: a WebDataset tar that is either complete under its final name or absent.

Members get fixed metadata (mtime 0, uid/gid 0, no user names, mode 0644) so the same samples
always give the same bytes; the tar is written under a temporary name, fsynced, and renamed.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from data_pipeline.atomic import commit, remove_stale_temps, temp_name
from data_pipeline.format import META_EXT, TENSORS_EXT


@dataclass(frozen=True)
class WrittenShard:
    samples: int
    bytes: int
    sha256: str


class ShardWriter:
    """`with ShardWriter(path) as w: w.write(key, encode_sample(...))`; renamed into place on a
    clean exit, deleted on an exception."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = temp_name(self.path)
        self.samples = 0

    def __enter__(self) -> "ShardWriter":
        remove_stale_temps(self.path)  # left by a killed earlier run
        self._file = self.tmp.open("wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        return self

    def write(self, key: str, members: dict[str, bytes]) -> None:
        # Metadata first: small, and lets a streaming reader see the key before the tensors.
        for ext in (META_EXT, TENSORS_EXT):
            data = members[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self.samples += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        self.result = WrittenShard(samples=self.samples, bytes=self.tmp.stat().st_size,
                                   sha256=file_sha256(self.tmp))

    def commit(self) -> WrittenShard:
        """Rename into place (after the caller recorded the shard's stats)."""
        commit(self.tmp, self.path)
        return self.result


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()
