"""img2dataset-style WebDataset tars: members `KEY.jpg|png|webp...`, `KEY.txt`, `KEY.json`.

Listing reads only tar headers; each record points at its members by byte offset, so workers
read a sample's bytes with one seek instead of re-walking the tar.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

from data_pipeline.format import sanitize_key
from data_pipeline.sources.base import Blob, Record, image_ext


def _split(name: str) -> tuple[str, str]:
    """WebDataset's rule: the key runs to the first '.' of the basename."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:])


def list_tar(path: Path) -> list[Record]:
    groups: dict[str, dict[str, Blob]] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split(member.name)
            groups.setdefault(key, {})[ext.lower()] = Blob(str(path), member.offset_data, member.size)
    records = []
    for key, members in groups.items():
        images = [ext for ext in members if image_ext("x." + ext)]
        if not images:
            continue
        records.append(Record(
            key=sanitize_key(f"{path.stem}/{key}"),
            image=members[images[0]],
            caption=members.get("txt"),
            meta=members.get("json"),
        ))
    return records


def list_tars(root: Path) -> list[Record]:
    tars = sorted(root.rglob("*.tar")) if root.is_dir() else [root]
    return [r for t in tars for r in list_tar(t)]
