"""The embedded demo image set: coloured shapes on coloured backgrounds, drawn from a seed.

A learnable toy text-to-image task small enough for a CPU: the original caption names the
shape, its colour and the background colour ("a red circle on a blue background"); the
synthetic caption (the `syn_caption` field of `x.json`) adds size and position, as a
captioner would. Images are written as PNG, with every fourth as JPEG so both decoders run.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: dict[str, tuple[float, float]] = {
    "centre": (0.5, 0.5),
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
}
SYN_FIELD = "syn_caption"
"""JSON sidecar field holding the synthetic caption (prepare's --syn-field default)."""

DEFAULT_COUNT = 512
DEFAULT_SIZE = 64


@dataclass(frozen=True)
class DemoItem:
    shape: str
    colour: str
    background: str
    size: str
    position: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"

    @property
    def syn_caption(self) -> str:
        where = "in the centre" if self.position == "centre" else f"in the {self.position}"
        return f"a {self.size} {self.colour} {self.shape} {where} of a plain {self.background} image"


def all_items() -> list[DemoItem]:
    return [DemoItem(shape, colour, background, size, position)
            for shape in SHAPES for colour in sorted(COLOURS) for background in sorted(COLOURS)
            if colour != background for size in SIZES for position in sorted(POSITIONS)]


def demo_items(count: int, seed: int = 0) -> list[DemoItem]:
    """`count` items in a seeded order without repeats (2240 distinct scenes, then it cycles)."""
    items = all_items()
    random.Random(seed).shuffle(items)
    return [items[i % len(items)] for i in range(count)]


def render(item: DemoItem, side: int = DEFAULT_SIZE):
    """The item drawn as a PIL RGB image (PIL imported here: `make-demo-data --help` stays instant)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), COLOURS[item.background])
    draw = ImageDraw.Draw(img)
    cx, cy = (c * side for c in POSITIONS[item.position])
    r = side * (0.22 if item.size == "large" else 0.12)
    fill = COLOURS[item.colour]
    if item.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif item.shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif item.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return img


def demo_corpus() -> list[str]:
    """Every caption the demo set can produce (both variants): the demo tokenizers' corpus."""
    items = all_items()
    return sorted({item.caption for item in items}) + [item.syn_caption for item in items]


def write_demo_data(output: Path, count: int = DEFAULT_COUNT, side: int = DEFAULT_SIZE, seed: int = 0) -> int:
    """Write `count` images with `.txt` and `.json` sidecars into `output`; returns the count.
    Same arguments, same files (PNG/JPEG encoders are deterministic for a given Pillow)."""
    output.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(demo_items(count, seed)):
        stem = output / f"{i:06d}"
        img = render(item, side)
        if i % 4 == 3:
            img.save(stem.with_suffix(".jpg"), format="JPEG", quality=95)
        else:
            img.save(stem.with_suffix(".png"), format="PNG")
        stem.with_suffix(".txt").write_text(item.caption + "\n", encoding="utf-8")
        meta = {SYN_FIELD: item.syn_caption, "shape": item.shape, "colour": item.colour,
                "background": item.background, "size": item.size, "position": item.position}
        stem.with_suffix(".json").write_text(json.dumps(meta, sort_keys=True) + "\n", encoding="utf-8")
    return count
