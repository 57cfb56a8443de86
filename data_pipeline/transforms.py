"""Image decoding and geometry: EXIF orientation, any PIL mode to RGB, centre crop or
aspect-ratio bucket, resize. Every function records what it did (original size, crop box) so a
sample can be traced back to its source pixels."""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Truncated files must fail loudly so they are counted, not silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

RESAMPLE = Image.Resampling.LANCZOS
"""Antialiased downsampling; the encoded pixels are what the model learns to generate."""

ALPHA_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited onto white, as most viewers show them."""


class BadImage(Exception):
    """An input image that cannot be used; `reason` is the report's skip category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def probe_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone; raises BadImage('corrupt') when unrecognised."""
    if not data:
        raise BadImage("zero_byte")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage("corrupt", str(err)) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha (RGBA, LA, PA, P with transparency) composited on white,
    16/32-bit integer greys scaled down, CMYK and YCbCr converted by PIL."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greys (PNG, TIFF) span 0..65535; PIL's own I->L conversion clips at 255.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        img = Image.fromarray(np.clip(np.rint(arr * 255.0 / top), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(data: bytes) -> Image.Image:
    """Bytes to an upright RGB image, fully decoded; raises BadImage with the skip reason."""
    if not data:
        raise BadImage("zero_byte")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage("corrupt", str(err)) from None
    except OSError as err:
        raise BadImage("unreadable", str(err)) from None
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except OSError as err:
        # PIL reports a short file as "image file is truncated" / "broken data stream".
        text = str(err).lower()
        reason = "truncated" if ("truncat" in text or "broken data stream" in text) else "corrupt"
        raise BadImage(reason, str(err)) from None
    except (SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImage("corrupt", str(err)) from None


def make_buckets(resolution: int, unit: int, max_aspect: float = 3.0) -> list[tuple[int, int]]:
    """(H, W) buckets with H * W about resolution^2, both sides multiples of `unit` (autoencoder
    factor times patch size), long/short side at most `max_aspect`; sorted by W/H, symmetric.

    The shorter side steps down from S by about S/16 (64 px at 1024, as SDXL-style bucketing
    does): finer steps only split batches into more shapes without changing the crops much."""
    area = resolution * resolution
    step = unit * max(1, round(resolution / 16 / unit))
    out: set[tuple[int, int]] = set()
    short = resolution // unit * unit
    while short >= unit:
        long = max(short, int(round(area / short / unit)) * unit)
        if long > max_aspect * short:
            break
        out.update({(short, long), (long, short)})
        short -= step
    return sorted(out, key=lambda hw: hw[1] / hw[0])


def parse_buckets(text: str) -> list[tuple[int, int]]:
    """`256x256,192x320` (H x W each) -> [(256, 256), (192, 320)]."""
    out = []
    for item in text.split(","):
        try:
            h, w = (int(v) for v in item.lower().strip().split("x"))
        except ValueError:
            raise ValueError(f"bucket {item!r} is not HxW (e.g. 192x320)") from None
        out.append((h, w))
    return out


def choose_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest the image's on a log scale (first on ties)."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda hw: abs(math.log(hw[1] / hw[0]) - aspect))


@dataclass(frozen=True)
class Placed:
    """An image cropped and resized for encoding, with how it was cut from the original."""

    pixels: np.ndarray
    """(H, W, 3) uint8."""
    original_size: tuple[int, int]
    """(h, w) after EXIF orientation."""
    crop_box: tuple[int, int, int, int]
    """(left, top, right, bottom) in original pixels."""

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def crop_resize(img: Image.Image, target: tuple[int, int]) -> Placed:
    """Scale to cover (H, W) and cut the centre. For a square target this is the pretraining
    centre crop to S x S; for a bucket it cuts only the small aspect mismatch."""
    th, tw = target
    w, h = img.size
    scale = max(tw / w, th / h)
    cw, ch = tw / scale, th / scale
    left, top = (w - cw) / 2.0, (h - ch) / 2.0
    box = (left, top, left + cw, top + ch)
    resized = img.resize((tw, th), resample=RESAMPLE, box=box)
    return Placed(pixels=np.array(resized, dtype=np.uint8), original_size=(h, w),
                  crop_box=tuple(int(round(v)) for v in box))


def place(img: Image.Image, resolution: int, buckets: Optional[Sequence[tuple[int, int]]] = None) -> Placed:
    target = choose_bucket(img.size[0], img.size[1], buckets) if buckets else (resolution, resolution)
    return crop_resize(img, target)
