"""Content hashes of model and tokenizer directories, the identity recorded in provenance.

Hashing an 8B text encoder's weights reads gigabytes, and `sample` checks them on every call, so
a directory's hash is cached on disk (MMDIT_CACHE_DIR, default ~/.cache/mmdit-scale), keyed by
the directory's absolute path and the name, size and mtime of each file hashed: a file that is
replaced or touched is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from data_pipeline.atomic import write_atomic

CACHE_DIR_ENV = "MMDIT_CACHE_DIR"
CACHE_FILE = "sha256.json"
CACHE_ENTRIES = 1000
"""Newest directory hashes kept (each entry is about 150 bytes)."""

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "spiece.model", "tokenizer.model")


def cache_path() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "mmdit-scale") / CACHE_FILE


def _hash(paths: list[Path], root: Path) -> Optional[str]:
    """The directory hash of `paths` (from the cache when no file changed since it was computed)."""
    if not paths:
        return None
    stats = [(str(p.relative_to(root)), st.st_size, st.st_mtime_ns) for p in sorted(paths) for st in [p.stat()]]
    key = hashlib.sha256(json.dumps([str(root.resolve()), stats]).encode()).hexdigest()
    cache = _read_cache()
    if key in cache:
        return cache[key]
    cache[key] = digest = _content_hash(paths, root)
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_path(), json.dumps(dict(list(cache.items())[-CACHE_ENTRIES:])))
    except OSError:
        pass  # a read-only home: hash again next time
    return digest


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _content_hash(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        # The relative name goes in too: the same bytes under another role are another model.
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def weights_sha256(model_dir: str) -> Optional[str]:
    """sha256 over every weight file under `model_dir`; None when it holds none."""
    root = Path(model_dir)
    return _hash([p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES], root)


def tokenizer_sha256(tokenizer_dir: str) -> Optional[str]:
    """sha256 over the vocabulary files (not the config JSONs, which carry volatile fields)."""
    root = Path(tokenizer_dir)
    return _hash([p for p in root.iterdir() if p.is_file() and p.name in TOKENIZER_FILES], root)
