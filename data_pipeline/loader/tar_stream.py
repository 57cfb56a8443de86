"""A minimal sequential tar reader that hands member bytes to the caller without copies.

`tarfile` reads in 16 KiB chunks and builds a TarInfo per member; at about 1 MB per sample that
costs more than the bytes themselves (ENVIRONMENT_NOTES, "Loading pre-encoded shards"). This
reader parses the 512-byte headers with `struct`, follows PAX (`x`) and GNU long-name (`L`)
records, and lets the caller `readinto` a buffer or `skip` each member: on a seekable file a skip
is a seek, so bytes the loader does not need are never read.
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, Optional

BLOCK = 512
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")
_SKIP_CHUNK = 1 << 20


class TarError(ValueError):
    """The stream is not a readable tar from this point on (corrupt header or truncated data)."""


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarError(f"bad {what} field {field!r} in tar header") from None


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        length = int(data[pos:space])
        if length <= 0:
            raise TarError("bad PAX record length")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8")
        pos += length
    return records


class TarStream:
    """Iterate the regular-file members of a tar stream: `next_member()` returns (name, size) and
    positions at the member's data, which the caller may consume with `readinto`/`read`/`skip` in
    any mix; whatever it leaves is skipped by the next `next_member()` call."""

    def __init__(self, fileobj: BinaryIO):
        self._f = fileobj
        self._seekable = bool(getattr(fileobj, "seekable", lambda: False)())
        self._readinto = getattr(fileobj, "readinto", None)
        self._left = 0  # unread bytes of the current member's data
        self._pad = 0  # padding after the current member's data
        self._scratch: Optional[bytearray] = None
        self._size: Optional[int] = None  # a seek past the end would hide truncation: check it
        if self._seekable:
            try:
                self._size = os.fstat(fileobj.fileno()).st_size
            except (AttributeError, OSError, ValueError):
                self._seekable = False

    def _read_exact(self, n: int) -> bytes:
        data = self._f.read(n)
        while len(data) < n:
            more = self._f.read(n - len(data))
            if not more:
                raise TarError(f"tar stream truncated: wanted {n} bytes, got {len(data)}")
            data += more
        return data

    def _discard(self, n: int) -> None:
        if n <= 0:
            return
        if self._seekable:
            if self._f.tell() + n > self._size:
                raise TarError(f"tar stream truncated: cannot skip {n} bytes")
            self._f.seek(n, 1)
            return
        if self._scratch is None:
            self._scratch = bytearray(_SKIP_CHUNK)
        view = memoryview(self._scratch)
        while n > 0:
            got = self._fill(view[:min(n, _SKIP_CHUNK)])
            n -= got

    def _fill(self, view: memoryview) -> int:
        """Read into `view` until full; raise TarError on EOF."""
        done, n = 0, len(view)
        while done < n:
            if self._readinto is not None:
                got = self._readinto(view[done:])
            else:
                chunk = self._f.read(n - done)
                got = len(chunk)
                view[done:done + got] = chunk
            if not got:
                raise TarError(f"tar member truncated: {n - done} of {n} bytes missing")
            done += got
        return done

    def next_member(self) -> Optional[tuple[str, int]]:
        """(name, size) of the next regular file, or None at the end of the archive."""
        self._discard(self._left + self._pad)
        self._left = self._pad = 0
        pax: dict[str, str] = {}
        long_name: Optional[str] = None
        while True:
            block = self._f.read(BLOCK)
            while 0 < len(block) < BLOCK:
                more = self._f.read(BLOCK - len(block))
                if not more:
                    break
                block += more
            if not block:
                return None  # end of stream without the zero blocks: tolerated, like tarfile
            if len(block) < BLOCK:
                raise TarError("tar stream truncated inside a header")
            if block.count(0) == BLOCK:
                return None
            fields = _HEADER.unpack(block)
            stored = _octal(fields[6], "checksum")
            actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
            if stored != actual:
                raise TarError(f"tar header checksum mismatch ({stored} != {actual})")
            kind = fields[7]
            size = _octal(fields[4], "size")
            if "size" in pax:
                size = int(pax["size"])
            pad = -size % BLOCK
            if kind in (b"x", b"L", b"g"):
                data = self._read_exact(size)
                self._discard(pad)
                if kind == b"x":
                    pax = _pax_records(data)
                elif kind == b"L":
                    long_name = data.split(b"\0", 1)[0].decode("utf-8")
                continue  # global PAX headers ('g') carry nothing a sample needs
            if kind not in (b"0", b"\0", b"7"):
                self._discard(size + pad)  # directories, links, devices: not sample data
                pax, long_name = {}, None
                continue
            name = pax.get("path") or long_name
            if name is None:
                name = fields[0].split(b"\0", 1)[0].decode("utf-8")
                prefix = fields[15].split(b"\0", 1)[0].decode("utf-8")
                if prefix:
                    name = prefix + "/" + name
            self._left, self._pad = size, pad
            return name, size

    @property
    def seekable(self) -> bool:
        """A regular file: skips are seeks and `tell` gives offsets that `pread` can use."""
        return self._seekable

    def tell(self) -> int:
        """File offset of the next unconsumed byte (seekable streams only)."""
        return self._f.tell()

    @property
    def left(self) -> int:
        """Bytes of the current member not consumed yet."""
        return self._left

    def readinto(self, view: memoryview) -> None:
        """Fill `view` exactly from the current member."""
        if len(view) > self._left:
            raise TarError(f"read of {len(view)} bytes past the end of a member ({self._left} left)")
        self._fill(view)
        self._left -= len(view)

    def read(self, n: int) -> bytes:
        buf = bytearray(n)
        self.readinto(memoryview(buf))
        return bytes(buf)

    def skip(self, n: int) -> None:
        if n > self._left:
            raise TarError(f"skip of {n} bytes past the end of a member ({self._left} left)")
        self._discard(n)
        self._left -= n
