"""Which inputs become samples: size and aspect filters, and exact-duplicate removal.

Filters judge the image header (probed during planning, before any decoding), so rejected
images never cost a decode. Minimum side and aspect bounds are symmetric under EXIF rotation,
so judging the stored orientation is exact.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Filters:
    min_size: int
    """Shorter side, in pixels, below which an image is skipped (default: half the resolution)."""
    max_aspect: float = 3.0
    """Longer side / shorter side above which an image is skipped (3.0 keeps 1:3 .. 3:1)."""
    dedup: bool = True
    """Skip byte-identical images after the first, globally across the run's workers."""

    @classmethod
    def for_resolution(cls, resolution: int, min_size: Optional[int] = None, max_aspect: float = 3.0,
                       dedup: bool = True) -> "Filters":
        return cls(min_size=resolution // 2 if min_size is None else min_size, max_aspect=max_aspect, dedup=dedup)

    def reject(self, width: int, height: int) -> Optional[str]:
        """The skip reason for an image of this size, or None to keep it."""
        short, long = min(width, height), max(width, height)
        if short < self.min_size:
            return "too_small"
        if long > self.max_aspect * short:
            return "bad_aspect"
        return None


def content_hash(data: bytes) -> str:
    """Identity for exact-duplicate removal: the sha256 of the encoded file bytes."""
    return hashlib.sha256(data).hexdigest()
