"""Image folders and prompt files as `mmdit-scale eval-images` reads them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: str | Path) -> list[Path]:
    """The folder's images (not recursive), sorted by name: the order prompts are matched in."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_images(files: list[Path]) -> np.ndarray:
    """(N, H, W, 3) uint8; every image must have the first one's size (the feature models resize
    inside, but one array keeps batching simple and a mixed folder is usually a mistake)."""
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images of several sizes in {files[0].parent}: {sorted(shapes)[:3]}")
    return np.stack(arrays)


def read_prompts(path: str | Path, count: int) -> list[str]:
    """One prompt per line, line i for the i-th image by name; `count` lines are required."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != count:
        raise ValueError(f"{path} has {len(lines)} prompts for {count} images: one line per image, in name order")
    return lines
