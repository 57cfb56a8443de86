"""Read the samples of one shard unit, keeping only the bytes the batch will use.

A stored sample holds both caption variants for every text encoder. The caption choice and the
per-encoder dropout are drawn *before* the tensor member is read (they depend only on the
sample's identity), so only the latent and the kept encoders of the chosen variant are ever
copied. From a local file the reader only records where they lie (`ShardFile`: the collator
reads them straight into the batch) and seeks past the member; from a stream (`pipe:`, URLs) it
copies them into one compact buffer and skips the rest. The safetensors container is parsed
directly (8-byte length, JSON header, raw data) so nothing is decoded twice.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Callable, Generator, Iterator, Optional, Union

import torch
from webdataset.gopen import gopen

from data_pipeline.format import (LATENT_KEY, META_EXT, REPA_KEY, SAFETENSORS_METADATA, TENSORS_EXT, decode_meta,
                                  text_key)
from data_pipeline.layout import CAPTION_VARIANTS, CLIP_ENCODERS, TEXT_ENCODERS, TextLayout
from data_pipeline.loader import rng
from data_pipeline.loader.shard_file import DEFERRED_READS, OpenShards, ShardFile
from data_pipeline.loader.sharding import Unit
from data_pipeline.loader.tar_stream import TarError, TarStream

ST_DTYPES: dict[str, torch.dtype] = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}

Ref = tuple[int, int, int, int]
"""(reader, epoch, unit position, sample index): where a sample sits in a stream's input."""


@dataclass(slots=True)  # slots: one object fewer per buffered sample for the cyclic GC to scan
class RawSample:
    """Where the bytes of one sample that a batch needs are, plus its decisions and metadata."""

    ref: Ref
    source: int
    key: str
    data: Union[bytearray, ShardFile]
    """The needed tensors copied into a buffer, or the open shard they still lie in."""
    parts: dict[str, tuple[int, tuple[int, ...]]]
    """Tensor name -> (byte offset in `data`, shape); all in the shard's storage dtype."""
    variant: str
    keep: tuple[bool, ...]
    """Per TEXT_ENCODERS entry: False where the encoder is dropped for this sample."""
    caption: str
    original_size: tuple[int, int]
    crop_box: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        """The latent shape, which is the bucket the sample is batched in."""
        return self.parts[LATENT_KEY][1]


@dataclass(frozen=True)
class SamplePolicy:
    """Load-time augmentation: per-encoder text dropout and the caption variant choice."""

    seed: int
    text_dropout: float
    synthetic_prob: float
    fixed_variant: Optional[str] = None
    """Validation: always this variant (falling back to `orig` where absent), no dropout."""

    def decide(self, source: int, epoch: int, shard: int, index: int,
               variants: tuple[str, ...]) -> tuple[str, tuple[bool, ...]]:
        if self.fixed_variant is not None:
            variant = self.fixed_variant if self.fixed_variant in variants else CAPTION_VARIANTS[0]
            return variant, (True,) * len(TEXT_ENCODERS)
        # Encoder i's draw is uniform(seed, DROPOUT, source, epoch, shard, index, i).
        sample = rng.hash_ints(self.seed, rng.DROPOUT, source, epoch, shard, index)
        keep = tuple(rng.to_unit(rng.hash_ints(i, start=sample)) >= self.text_dropout
                     for i in range(len(TEXT_ENCODERS)))
        syn = rng.uniform(self.seed, rng.CAPTION, source, epoch, shard, index) < self.synthetic_prob
        variant = "syn" if syn and "syn" in variants else CAPTION_VARIANTS[0]
        return variant, keep


@dataclass
class Counters:
    samples_read: int = 0
    """Readable samples taken from shards (into the shuffle buffer or a bucket)."""
    corrupt_samples: int = 0
    corrupt_shards: int = 0
    """Shards that could not be opened or read to their end; their readable samples count."""


class SampleError(ValueError):
    """One sample is malformed; the shard stays readable."""


def _split_name(name: str) -> tuple[str, str]:
    # WebDataset's convention: the key ends at the first '.' of the basename.
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:")


class ShardMismatch(Exception):
    """A local shard differs from its manifest entry (size or sha256)."""


class ShardReader:
    """Turns a unit of a shard into RawSamples, counting (and warning about) what it skips."""

    def __init__(self, layout: TextLayout, dtype: torch.dtype, channels: int, policy: SamplePolicy,
                 verify: str = "sha256", repa: Optional[tuple[int, int]] = None):
        """`repa`: (tokens, width) of the REPA features to read as well; None: skip them."""
        self.policy, self.verify, self.repa = policy, verify, repa
        self._verified: set[tuple[str, int, int]] = set()
        self.dtype_name = ST_NAMES[dtype]
        self.channels = channels
        self.itemsize = dtype.itemsize
        self.widths = {e: getattr(layout, e) for e in TEXT_ENCODERS if getattr(layout, e)}
        self.pooled = {e: getattr(layout, e + "_pooled") for e in CLIP_ENCODERS if getattr(layout, e + "_pooled")}
        self.tokens = layout.tokens
        self._format = SAFETENSORS_METADATA["format"]
        self._headers: dict[bytes, tuple[dict, tuple[str, ...], dict]] = {}
        self.files = OpenShards()
        self._spare: list[bytearray] = []
        self._capacity = 0

    def _buffer(self, n: int) -> bytearray:
        """A buffer of at least n bytes: a recycled one when it fits (no allocation, no page
        faults), else a new one sized for the largest sample so far."""
        self._capacity = max(self._capacity, n)
        while self._spare:
            buf = self._spare.pop()
            if len(buf) >= n:
                return buf
        return bytearray(self._capacity)

    def recycle(self, samples: list[RawSample], keep: int) -> None:
        """Take back the buffers of collated samples (samples read from a ShardFile have none)."""
        for s in samples:
            if len(self._spare) >= keep:
                return
            if isinstance(s.data, bytearray):
                self._spare.append(s.data)

    def read(self, url: str, unit: Unit, reader: int, epoch: int, pos: int, start: int,
             want: Callable[[int], bool], counters: Counters,
             expected: Optional[tuple[int, str]] = None) -> Iterator[tuple[int, RawSample]]:
        """(index, sample) for every readable sample of `unit` with index >= start and want(index);
        `expected`: the shard's (bytes, sha256) in its manifest, checked on first open."""
        try:
            stream = gopen(url)
        except Exception as err:  # noqa: BLE001 -- any opener failure makes the shard unreadable
            self._bad_shard(url, err, counters)
            return
        finished = False
        try:
            mismatch = self._check(stream, expected)
            if mismatch:
                self._bad_shard(url, ShardMismatch(mismatch), counters)
                finished = True
                return
            tar = TarStream(stream)
            file = self.files.adopt(stream, url) if tar.seekable and DEFERRED_READS else None
            finished = yield from self._samples(tar, file, url, unit, reader, epoch, pos, start, want, counters)
        finally:
            try:
                stream.close()
            except Exception as err:  # noqa: BLE001 -- e.g. a pipe: command's non-zero exit
                if finished:  # after an early stop or a counted error, the exit status is noise
                    self._bad_shard(url, err, counters)

    def _samples(self, tar: TarStream, file: Optional[ShardFile], url: str, unit: Unit, reader: int, epoch: int,
                 pos: int, start: int, want: Callable[[int], bool],
                 counters: Counters) -> Generator[tuple[int, RawSample], None, bool]:
        """The samples of one opened shard; returns False if the shard broke off (counted)."""
        index, key = -1, None
        sample: Optional[dict] = None
        while True:
            try:
                member = tar.next_member()
            except (TarError, OSError) as err:  # OSError: a pipe: command that failed
                self._bad_shard(url, err, counters)
                return False
            name_key, ext = _split_name(member[0]) if member else (None, "")
            if member is None or name_key != key:
                if sample is not None:
                    done = self._finish(sample, url, counters)
                    if done is not None:
                        yield index, done
                if member is None:
                    return True
                key, index = name_key, index + 1
                wanted = index >= start and unit.wants(index) and want(index)
                sample = {"key": key, "ref": (reader, epoch, pos, index), "unit": unit,
                          "epoch": epoch, "index": index} if wanted else None
            if sample is None or sample.get("error"):
                continue
            try:
                if ext == META_EXT:
                    sample["meta"] = tar.read(member[1])
                elif ext == TENSORS_EXT:
                    self._read_tensors(tar, file, sample)
            except SampleError as err:
                sample["error"] = str(err)
            except (TarError, OSError) as err:
                self._bad_shard(url, err, counters)
                return False

    def _check(self, stream: BinaryIO, expected: Optional[tuple[int, str]]) -> Optional[str]:
        """What differs between a local shard and its manifest entry (once per file and process:
        path, size and mtime identify what was checked), or None."""
        path = getattr(stream, "name", None)
        if expected is None or self.verify == "none" or not isinstance(path, str):
            return None
        try:
            st = os.fstat(stream.fileno())
        except (OSError, AttributeError, ValueError):
            return None  # not a file: a pipe or a socket, read once as it arrives
        ident = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        if ident in self._verified:
            return None
        size, sha256 = expected
        if st.st_size != size:
            return f"it has {st.st_size} bytes, its manifest says {size} (truncated or replaced)"
        if self.verify == "sha256":
            digest, fd, at = hashlib.sha256(), stream.fileno(), 0
            while chunk := os.pread(fd, 1 << 24, at):
                digest.update(chunk)
                at += len(chunk)
            if digest.hexdigest() != sha256:
                return "its sha256 differs from its manifest's (the bytes changed after prepare wrote it)"
        self._verified.add(ident)
        return None

    def _bad_shard(self, url: str, err: Exception, counters: Counters) -> None:
        counters.corrupt_shards += 1
        warnings.warn(f"skipping the rest of shard {url}: {type(err).__name__}: {err}", RuntimeWarning, 2)

    def _read_tensors(self, tar: TarStream, file: Optional[ShardFile], sample: dict) -> None:
        if tar.left < 8:
            raise SampleError("tensor member shorter than a safetensors header")
        (n,) = struct.unpack("<Q", tar.read(8))
        if n > tar.left:
            raise SampleError(f"safetensors header length {n} exceeds the member")
        # Samples of the same shapes have byte-identical headers: parse and check each once.
        raw = tar.read(n)
        parsed = self._headers.get(raw)
        if parsed is None:
            parsed = self._parse_header(raw)
            if len(self._headers) >= 64:
                self._headers.clear()
            self._headers[raw] = parsed
        header, variants, layouts = parsed
        unit = sample["unit"]
        variant, keep = self.policy.decide(unit.source, sample["epoch"], unit.shard, sample["index"], variants)
        keep = tuple(k and enc in self.widths for k, enc in zip(keep, TEXT_ENCODERS))  # absent: never "kept"
        entries = layouts.get((variant, keep))
        if entries is None:
            entries = layouts[(variant, keep)] = self._entries(header, variant, keep)
        cursor, size = 0, tar.left
        for begin, end, name, _ in entries:
            if begin < cursor or end > size:
                raise SampleError(f"{name} data offsets {begin}..{end} are out of bounds")
            cursor = end
        if file is not None:  # the collator reads them; next_member() seeks past (truncation raises there)
            base = tar.tell()
            parts = {name: (base + begin, shape) for begin, _, name, shape in entries}
            sample.update(data=file, parts=parts, variant=variant, keep=keep)
            return
        buf = self._buffer(sum(e[1] - e[0] for e in entries))
        view = memoryview(buf)
        parts, at, cursor = {}, 0, 0
        for begin, end, name, shape in entries:
            tar.skip(begin - cursor)
            tar.readinto(view[at:at + end - begin])
            parts[name] = (at, shape)
            at, cursor = at + end - begin, end
        sample.update(data=buf, parts=parts, variant=variant, keep=keep)

    def _parse_header(self, raw: bytes) -> tuple[dict, tuple[str, ...], dict]:
        """(tensor entries, caption variants present, cache of `_entries` per choice)."""
        try:
            header = json.loads(raw)
        except ValueError as err:
            raise SampleError(f"bad safetensors header: {err}") from None
        meta = header.pop("__metadata__", None) or {}
        if meta.get("format") != self._format:
            raise SampleError(f"tensor blob format {meta.get('format')!r}, this loader reads {self._format!r}")
        variants = tuple(v for v in CAPTION_VARIANTS if any(k.startswith(v + ".") for k in header))
        return header, variants, {}

    def _entries(self, header: dict, variant: str, keep: tuple[bool, ...]) -> list[tuple[int, int, str, tuple]]:
        """(begin, end, name, shape) of the tensors a sample with these choices needs, in file order."""
        needed = {LATENT_KEY: None}
        for i, enc in enumerate(TEXT_ENCODERS):
            if keep[i] and enc in self.widths:
                needed[text_key(variant, enc)] = (self.tokens, self.widths[enc])
                if enc in self.pooled:
                    needed[text_key(variant, enc, pooled=True)] = (self.pooled[enc],)
        if self.repa is not None:
            needed[REPA_KEY] = self.repa
        missing = [k for k in needed if k not in header]
        if missing:
            raise SampleError(f"lacks tensors {missing}")
        entries = []
        for name, expected in needed.items():
            info = header[name]
            shape = tuple(int(x) for x in info["shape"])
            if info["dtype"] != self.dtype_name:
                raise SampleError(f"{name} is {info['dtype']}, the manifest says {self.dtype_name} "
                                  "(provenance.tensor_dtype)")
            if expected is None:
                if len(shape) != 3 or shape[0] != self.channels:
                    raise SampleError(f"latent shape {shape}, expected ({self.channels}, h, w) "
                                      "(provenance.latent.channels)")
            elif shape != expected:
                encoder = "repa" if name == REPA_KEY else name.split(".")[1]
                raise SampleError(f"{name} shape {shape}, expected {expected} "
                                  f"(provenance.encoders.{encoder}: tokens and dims)")
            begin, end = (int(x) for x in info["data_offsets"])
            if end - begin != math.prod(shape) * self.itemsize:
                raise SampleError(f"{name} data offsets {begin}..{end} do not hold shape {shape}")
            entries.append((begin, end, name, shape))
        entries.sort()
        return entries

    def _finish(self, sample: dict, url: str, counters: Counters) -> Optional[RawSample]:
        error = sample.get("error")
        if error is None and "data" not in sample:
            error = f"no {TENSORS_EXT} member"
        if error is None and "meta" not in sample:
            error = f"no {META_EXT} member"
        if error is None:
            try:
                meta = decode_meta(sample["meta"])
                out = RawSample(ref=sample["ref"], source=sample["unit"].source, key=sample["key"],
                                data=sample["data"], parts=sample["parts"], variant=sample["variant"],
                                keep=sample["keep"], caption=meta.captions[sample["variant"]],
                                original_size=meta.original_size, crop_box=meta.crop_box)
                counters.samples_read += 1
                return out
            except (ValueError, KeyError) as err:  # KeyError: no caption for the chosen variant
                error = f"bad metadata: {type(err).__name__}: {err}"
        counters.corrupt_samples += 1
        warnings.warn(f"skipping sample {sample['key']!r} of {url}: {error}", RuntimeWarning, 3)
        return None


def probe_shard(url: str, layout: TextLayout, dtype: torch.dtype, channels: int,
                repa: Optional[tuple[int, int]] = None) -> Optional[str]:
    """What the first sample of a local shard holds that its manifest does not say (latent
    channels, text widths and tokens, dtype), or None. One header is read: a manifest that
    describes other data than its shards is refused once, instead of every sample being skipped."""
    if _SCHEME.match(url) and not url.startswith("file:"):
        return None  # streamed shards are checked sample by sample as they arrive
    reader = ShardReader(layout, dtype, channels, policy=None, verify="none", repa=repa)
    try:
        with open(re.sub(r"^file://?", "/", url), "rb") as f:
            tar = TarStream(f)
            while (member := tar.next_member()) is not None:
                if _split_name(member[0])[1] != TENSORS_EXT:
                    continue
                (n,) = struct.unpack("<Q", tar.read(8))
                header, variants, _ = reader._parse_header(tar.read(n))
                reader._entries(header, variants[0] if variants else CAPTION_VARIANTS[0],
                                tuple(enc in reader.widths for enc in TEXT_ENCODERS))
                return None
    except SampleError as err:
        return str(err)
    except (OSError, TarError, struct.error):
        return None  # an unreadable shard is the reader's to skip, and named there
    return None
