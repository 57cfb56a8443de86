"""What every source yields: records that say where an image's bytes and captions live.

Records are cheap to list (no image is read) and picklable, so planning can slice them into
parts and worker processes can read them again by path and offset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Union

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


@dataclass(frozen=True)
class Blob:
    """A byte range of a file: a whole image file, or one member inside a tar."""

    path: str
    offset: int = 0
    size: int = -1
    """-1 reads to the end of the file."""

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            if self.offset:
                f.seek(self.offset)
            data = f.read() if self.size < 0 else f.read(self.size)
        if self.size >= 0 and len(data) != self.size:
            raise OSError(f"{self.path}: expected {self.size} bytes at {self.offset}, got {len(data)}")
        return data


CaptionSource = Union[Blob, str, bytes, None]
MetaSource = Union[Blob, dict, None]


@dataclass(frozen=True)
class Record:
    key: str
    image: Blob
    caption: CaptionSource
    """The original caption: its `.txt` file, or the text itself; None when there is none."""
    meta: MetaSource = None
    """More caption fields: a `.json` sidecar, or a row's fields (the synthetic caption among them)."""


class BadCaption(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _text(value: Union[str, bytes]) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadCaption("caption_not_utf8", str(err)) from None
    try:
        value.encode("utf-8")  # lone surrogates from JSON escapes are not UTF-8
    except UnicodeEncodeError as err:
        raise BadCaption("caption_not_utf8", str(err)) from None
    return value


def read_captions(record: Record, syn_field: str) -> dict[str, str]:
    """{"orig": ..., "syn": ...?}. The original caption is required (from the caption source,
    else the metadata's `caption`); the synthetic one is optional. Raises BadCaption with the
    report's skip reason: caption_missing, caption_empty, caption_not_utf8, bad_json."""
    meta: dict = {}
    if isinstance(record.meta, Blob):
        try:
            raw = record.meta.read()
        except OSError as err:
            raise BadCaption("bad_json", str(err)) from None
        try:
            meta = json.loads(_text(raw))
        except ValueError as err:
            raise BadCaption("bad_json", str(err)) from None
        if not isinstance(meta, dict):
            raise BadCaption("bad_json", "sidecar JSON is not an object")
    elif isinstance(record.meta, dict):
        meta = record.meta
    source = record.caption
    if isinstance(source, Blob):
        try:
            source = source.read()
        except OSError as err:
            raise BadCaption("caption_missing", str(err)) from None
    if source is None:
        source = meta.get("caption")
    if source is None or not isinstance(source, (str, bytes)):
        raise BadCaption("caption_missing")
    orig = _text(source).strip()
    if not orig:
        raise BadCaption("caption_empty")
    captions = {"orig": orig}
    syn = meta.get(syn_field)
    if isinstance(syn, (str, bytes)):
        syn = _text(syn).strip()
        if syn:
            captions["syn"] = syn
    return captions


def image_ext(name: str) -> Optional[str]:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ext if ext in IMAGE_EXTS else None
