"""A JSONL or parquet manifest: one row per image with its path, caption and optional
synthetic caption and key. Image paths are relative to the manifest file's folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from data_pipeline.format import sanitize_key
from data_pipeline.sources.base import Blob, Record

IMAGE_COLUMNS = ("image", "image_path", "path", "file")
CAPTION_COLUMNS = ("caption", "text")


class SourceError(ValueError):
    """The input cannot be listed at all (a fatal error, unlike one bad record)."""


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    rows = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise SourceError(f"{path}:{n}: not a JSON object: {err}") from None
            if not isinstance(row, dict):
                raise SourceError(f"{path}:{n}: not a JSON object")
            rows.append(row)
    return rows


def _pick(columns: set, wanted: Optional[str], candidates: tuple[str, ...], what: str, path: Path) -> str:
    if wanted:
        if wanted not in columns:
            raise SourceError(f"{path}: no {what} column {wanted!r}; columns: {sorted(columns)}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise SourceError(f"{path}: no {what} column (looked for {candidates}); columns: {sorted(columns)}")


def list_table(path: Path, syn_field: str, image_column: Optional[str] = None,
               caption_column: Optional[str] = None, key_column: str = "key") -> list[Record]:
    rows = _rows(path)
    if not rows:
        return []
    columns = set().union(*(r.keys() for r in rows))
    image_col = _pick(columns, image_column, IMAGE_COLUMNS, "image", path)
    caption_col = _pick(columns, caption_column, CAPTION_COLUMNS, "caption", path)
    width = max(6, len(str(len(rows))))
    records = []
    for i, row in enumerate(rows):
        image = row.get(image_col)
        if not isinstance(image, str) or not image:
            image = ""  # read as unreadable: counted, not fatal
        raw_key = row.get(key_column)
        try:
            key = sanitize_key(str(raw_key)) if raw_key not in (None, "") else None
        except ValueError:  # nothing usable in it
            key = None
        key = key or f"{i:0{width}d}"
        records.append(Record(
            key=key,
            image=Blob(str(path.parent / image)),
            caption=row.get(caption_col),
            meta={syn_field: row[syn_field]} if row.get(syn_field) is not None else None,
        ))
    return records
