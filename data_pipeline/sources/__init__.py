"""Input sources for `prepare`: a folder with sidecars, img2dataset tars, a JSONL/parquet table."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from data_pipeline.sources.base import IMAGE_EXTS, BadCaption, Blob, Record, read_captions
from data_pipeline.sources.folder import list_folder
from data_pipeline.sources.table import SourceError, list_table
from data_pipeline.sources.tars import list_tars

SOURCE_KINDS = ("auto", "folder", "tars", "jsonl", "parquet")


def detect_source(path: Path) -> str:
    """folder / tars / jsonl / parquet from what `path` is; SourceError when it is none of them."""
    if path.is_file():
        if path.suffix in (".jsonl", ".parquet"):
            return path.suffix[1:]
        if path.suffix == ".tar":
            return "tars"
        raise SourceError(f"{path}: a file input must be .jsonl, .parquet or .tar")
    if not path.is_dir():
        raise SourceError(f"input {path} does not exist")
    top = [p for p in path.iterdir() if not p.name.startswith(".")]
    if any(p.suffix == ".tar" for p in top) and not any(p.suffix.lstrip(".").lower() in IMAGE_EXTS for p in top):
        return "tars"
    return "folder"


def list_records(path: Path, kind: str = "auto", syn_field: str = "syn_caption",
                 image_column: Optional[str] = None, caption_column: Optional[str] = None) -> list[Record]:
    """Every input record in a deterministic order (sorted files, table rows in order)."""
    kind = detect_source(path) if kind == "auto" else kind
    if kind == "folder":
        return list_folder(path)
    if kind == "tars":
        return list_tars(path)
    if kind in ("jsonl", "parquet"):
        return list_table(path, syn_field, image_column, caption_column)
    raise SourceError(f"unknown source kind {kind!r}; expected one of {SOURCE_KINDS}")


__all__ = ["BadCaption", "Blob", "Record", "SourceError", "SOURCE_KINDS", "detect_source", "list_records",
           "read_captions"]
