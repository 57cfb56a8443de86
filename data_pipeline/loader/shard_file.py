"""Local shards whose tensor bytes buffered samples copy straight into the batch.

Reading a sample's tensors when it is scanned means copying them twice: into a sample buffer
that waits in the shuffle buffer, and later into the batch. For a shard that is a regular file
the scan instead records where each needed tensor lies, and the collator reads it with `preadv`
directly into its place in the batch (one copy, like a plain read of the tar). Samples waiting
in the shuffle buffer then cost no memory for their tensors.

The scan has already checked that every recorded range lies inside the file (a seek past the
end raises `TarError` like a short read would), so a short read here means the file shrank
after it was scanned: that is an error, not a corrupt sample. So is a shard that was replaced.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import BinaryIO, Optional

import numpy as np

DEFERRED_READS = hasattr(os, "preadv")
"""Where `preadv` is missing, samples are read eagerly into their own buffers."""


class OpenShards:
    """Descriptors of the shards a stream's buffered samples read from, the most recently used
    `limit` kept open. A part-filled bucket of a rare size can hold samples of many shards for a
    long time, so one descriptor per shard with held samples would be unbounded; a shard that
    dropped out is reopened by path, and refused if it is no longer the same file."""

    def __init__(self, limit: int = 16):
        self.limit = limit
        self._fds: OrderedDict[tuple[int, int], int] = OrderedDict()

    def adopt(self, fileobj: BinaryIO, url: str) -> Optional["ShardFile"]:
        """A ShardFile for the shard `fileobj` scans, or None (read eagerly) where it has no path
        to reopen it by."""
        path = getattr(fileobj, "name", None)
        if not isinstance(path, str):
            return None
        try:
            st = os.fstat(fileobj.fileno())
            shard = ShardFile(os.path.abspath(path), url, (st.st_dev, st.st_ino), self)
            if shard.ident not in self._fds:
                self._keep(shard.ident, os.dup(fileobj.fileno()))  # pread never moves the scan's position
        except OSError:
            return None
        return shard

    def fd(self, shard: "ShardFile") -> int:
        fd = self._fds.get(shard.ident)
        if fd is not None:
            self._fds.move_to_end(shard.ident)
            return fd
        try:
            fd = os.open(shard.path, os.O_RDONLY)
        except OSError as err:
            raise RuntimeError(f"shard {shard.url} cannot be reopened for buffered samples read from it: "
                               f"{err}; shards must not change while a run reads them") from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != shard.ident:
            os.close(fd)
            raise RuntimeError(f"shard {shard.url} was replaced while samples read from it were still "
                               "buffered; shards must not change while a run reads them")
        self._keep(shard.ident, fd)
        return fd

    def _keep(self, ident: tuple[int, int], fd: int) -> None:
        self._fds[ident] = fd
        while len(self._fds) > self.limit:
            os.close(self._fds.popitem(last=False)[1])

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __del__(self) -> None:
        self.close()


class ShardFile:
    """Where the tensors of samples scanned from one local shard still lie."""

    __slots__ = ("path", "url", "ident", "files")

    def __init__(self, path: str, url: str, ident: tuple[int, int], files: OpenShards):
        self.path, self.url, self.ident, self.files = path, url, ident, files

    def read_into(self, dest: np.ndarray, offset: int) -> None:
        """Fill the C-contiguous array `dest` with the file's bytes from `offset`."""
        view = memoryview(dest).cast("B")
        fd = self.files.fd(self)
        done, n = 0, len(view)
        while done < n:
            got = os.preadv(fd, [view[done:]], offset + done)
            if not got:
                raise RuntimeError(f"shard {self.url} shrank while samples read from it were still "
                                   f"buffered ({n - done} of {n} bytes missing at offset {offset + done}); "
                                   "shards must not change while a run reads them")
            done += got
