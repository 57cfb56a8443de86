"""A folder of images with sidecars: `x.jpg` + `x.txt` (original caption) + optional `x.json`
(more caption fields, e.g. the synthetic caption). Subfolders are walked; the key is the
relative path without extension."""
from __future__ import annotations

import os
from pathlib import Path

from data_pipeline.format import sanitize_key
from data_pipeline.sources.base import Blob, Record, image_ext


def list_folder(root: Path) -> list[Record]:
    records = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = set(filenames)
        for name in sorted(filenames):
            if name.startswith(".") or image_ext(name) is None:
                continue
            stem = name.rsplit(".", 1)[0]
            base = Path(dirpath)
            rel = (base / stem).relative_to(root).as_posix()
            txt, meta = stem + ".txt", stem + ".json"
            records.append(Record(
                key=sanitize_key(rel),
                image=Blob(str(base / name)),
                caption=Blob(str(base / txt)) if txt in names else None,
                meta=Blob(str(base / meta)) if meta in names else None,
            ))
    return records
