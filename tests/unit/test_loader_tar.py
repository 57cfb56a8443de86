"""The minimal tar reader against archives written by Python's tarfile in every format."""
import io
import tarfile

import pytest

from data_pipeline.loader.tar_stream import TarError, TarStream

LONG = "deep/" * 30 + "k\u00e9y.tensors.safetensors"  # > 100 bytes and non-ASCII: PAX or GNU long name
FILES = {"a.json": b'{"x": 1}', LONG: bytes(range(256)) * 9, "b.txt": b"", "c.bin": b"z" * 513}


def archive(fmt):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        tar.addfile(_dir("somedir"))  # not a sample member: skipped
        for name, data in FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


class Unseekable(io.RawIOBase):
    """A pipe-like stream: short reads, no seek."""

    def __init__(self, data):
        self.data, self.pos = data, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), 1000, len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def members(stream, partial=False):
    tar, out = TarStream(stream), {}
    while (m := tar.next_member()) is not None:
        name, size = m
        if partial and size > 10:
            tar.skip(3)
            out[name] = tar.read(4)  # the rest is skipped by next_member
        else:
            out[name] = tar.read(size)
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("seekable", [True, False])
def test_reads_every_regular_member(tmp_path, fmt, seekable):
    path = tmp_path / "x.tar"
    path.write_bytes(archive(fmt))
    with open(path, "rb") if seekable else io.BufferedReader(Unseekable(path.read_bytes())) as f:
        assert members(f) == FILES
    with open(path, "rb") if seekable else io.BufferedReader(Unseekable(path.read_bytes())) as f:
        assert members(f, partial=True) == {k: v[3:7] if len(v) > 10 else v for k, v in FILES.items()}


def test_ustar_prefix_names(tmp_path):
    name = "p" * 120 + "/key.json"  # fits USTAR only through the 155-byte prefix field
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert members(io.BytesIO(buf.getvalue())) == {name: b"abc"}


def test_corrupt_header_and_truncation_raise(tmp_path):
    data = bytearray(archive(tarfile.PAX_FORMAT))
    bad = bytearray(data)
    bad[600] ^= 0xFF  # inside the second header: its checksum no longer matches
    with pytest.raises(TarError, match="checksum"):
        members(io.BytesIO(bytes(bad)))
    path = tmp_path / "t.tar"
    path.write_bytes(bytes(data[:2000]))
    for stream in (open(path, "rb"), io.BufferedReader(Unseekable(bytes(data[:2000])))):
        with stream, pytest.raises(TarError, match="truncated"):
            members(stream)
        with open(path, "rb") as f, pytest.raises(TarError, match="truncated"):
            tar = TarStream(f)
            while tar.next_member():
                pass  # skipping past the end of a seekable file is noticed too


def test_reading_past_a_member_is_refused():
    tar = TarStream(io.BytesIO(archive(tarfile.PAX_FORMAT)))
    assert tar.next_member() == ("a.json", 8)
    with pytest.raises(TarError, match="past the end"):
        tar.read(9)
