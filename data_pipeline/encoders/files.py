"""Content hashes of model and tokenizer directories, the identity recorded in provenance."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "spiece.model", "tokenizer.model")


def _hash(paths: list[Path], root: Path) -> Optional[str]:
    if not paths:
        return None
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
