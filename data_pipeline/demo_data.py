"""The embedded demo dataset: one coloured shape in one quadrant of a grey picture, drawn from a seed.

A text-to-image task small enough for a CPU that still tests composition: 5 colours x 3 shapes x 4
quadrants = 60 combinations, of which 12 (`HELD_OUT`) never appear in training. The held-out set
is chosen so that every attribute value, and every PAIR of values (colour+shape, colour+position,
shape+position), still appears in training: a model that gets a held-out prompt right has
composed attributes it only saw apart. Each scene has an original caption ("a red circle in the
top left") and a differently worded synthetic one (JSON field `syn_caption`), the paper's
original/synthetic caption pair. Sizes and positions jitter within the quadrant, so images repeat
only as combinations. Images are PNG: exact palette colours, so `eval.demo_scorer` can be checked
on them.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "white": (245, 245, 245),
}
"""Palette: every two of these and the background are at least 135 apart in RGB."""
BACKGROUND: tuple[int, int, int] = (128, 128, 128)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
"""The four quadrants."""
SYN_POSITIONS: dict[str, str] = {"top left": "upper left", "top right": "upper right",
                                 "bottom left": "lower left", "bottom right": "lower right"}
SYN_FIELD = "syn_caption"
"""JSON sidecar field holding the synthetic caption (prepare's --syn-field default)."""
SET_FILE = "demo_set.json"
"""Written beside the images: the palette, the held-out combinations, the seed (prepare ignores it)."""

DEFAULT_COUNT = 2048
DEFAULT_SIZE = 32
HALF_SIZE = (0.2, 0.24)
"""Half-extent of a shape as a fraction of the image side (6.4 to 7.7 px at 32 px): a shape fills
most of its quadrant, 13-15 px = 3-4 tokens of the demo model's 4x4 px (docs/demo.md, the shape
study: at 10-13 px its shape was barely learned)."""
JITTER = 0.01
"""Largest offset of a shape's centre from its quadrant's centre, as a fraction of the side; with
the largest HALF_SIZE a shape stays inside its quadrant (0.24 + 0.01 = 0.25)."""


@dataclass(frozen=True)
class Combo:
    colour: str
    shape: str
    position: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} in the {self.position}"

    @property
    def syn_caption(self) -> str:
        return f"a grey picture with a {self.colour} {self.shape} at the {SYN_POSITIONS[self.position]}"


def all_combos() -> list[Combo]:
    return [Combo(c, s, q) for c in COLOURS for s in SHAPES for q in POSITIONS]


def _held_out(combo: Combo) -> bool:
    """(c + 2s + 3q) mod 5 == 0: one colour per (shape, position) pair, so 12 of 60. For a fixed
    (colour, shape) it holds for at most one quadrant and for a fixed (colour, position) for at
    most one shape, so every pair of attribute values stays in at least two training combinations."""
    c, s, q = list(COLOURS).index(combo.colour), SHAPES.index(combo.shape), POSITIONS.index(combo.position)
    return (c + 2 * s + 3 * q) % 5 == 0


HELD_OUT: tuple[Combo, ...] = tuple(c for c in all_combos() if _held_out(c))
SEEN: tuple[Combo, ...] = tuple(c for c in all_combos() if not _held_out(c))


@dataclass(frozen=True)
class Scene:
    """One drawable scene: a combination plus where exactly and how large (in pixels)."""

    combo: Combo
    cx: float
    cy: float
    half: float


def quadrant_centre(position: str, side: int) -> tuple[float, float]:
    row, col = position.split()
    return (0.75 if col == "right" else 0.25) * side, (0.75 if row == "bottom" else 0.25) * side


def scene_for(combo: Combo, side: int, rng: random.Random) -> Scene:
    qx, qy = quadrant_centre(combo.position, side)
    return Scene(combo, cx=qx + rng.uniform(-JITTER, JITTER) * side, cy=qy + rng.uniform(-JITTER, JITTER) * side,
                 half=rng.uniform(*HALF_SIZE) * side)


def demo_scenes(count: int, side: int = DEFAULT_SIZE, seed: int = 0,
                combos: tuple[Combo, ...] = SEEN) -> list[Scene]:
    """`count` scenes cycling through a seeded shuffle of `combos` (balanced), each jittered."""
    rng = random.Random(seed)
    scenes: list[Scene] = []
    while len(scenes) < count:
        order = list(combos)
        rng.shuffle(order)
        scenes += [scene_for(c, side, rng) for c in order[:count - len(scenes)]]
    return scenes


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    """Vertices of `shape` filling `box` = (left, top, right, bottom); None for the circle (an ellipse).
    The detector's templates come from here too, so data and scorer agree on what a shape is."""
    x0, y0, x1, y1 = box
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def draw_shape(draw, shape: str, box: tuple[float, float, float, float], fill) -> None:
    polygon = shape_polygon(shape, box)
    if polygon is None:
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon(polygon, fill=fill)


def render(scene: Scene, side: int = DEFAULT_SIZE):
    """The scene as a PIL RGB image (PIL imported here: `make-demo-data --help` stays instant)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), BACKGROUND)
    box = (scene.cx - scene.half, scene.cy - scene.half, scene.cx + scene.half, scene.cy + scene.half)
    draw_shape(ImageDraw.Draw(img), scene.combo.shape, box, COLOURS[scene.combo.colour])
    return img


def demo_corpus() -> list[str]:
    """The demo tokenizers' corpus: every caption the set can produce, held-out ones included (a
    prompt must tokenise like training text), then each of their words alone. The lone words make
    the T5 sentencepiece model keep whole words as pieces (16 tokens at most instead of 41), so
    short text sequences hold every caption."""
    captions = [c.caption for c in all_combos()] + [c.syn_caption for c in all_combos()]
    return captions + sorted({w for c in captions for w in c.split()})


def set_description(count: int, side: int, seed: int) -> dict:
    return {"count": count, "size": side, "seed": seed, "background": list(BACKGROUND),
            "colours": {k: list(v) for k, v in COLOURS.items()}, "shapes": list(SHAPES),
            "positions": list(POSITIONS), "held_out": [asdict(c) for c in HELD_OUT]}


def write_demo_data(output: Path, count: int = DEFAULT_COUNT, side: int = DEFAULT_SIZE, seed: int = 0) -> int:
    """Write `count` training scenes (held-out combinations excluded) as `NNNNNN.png` with `.txt`
    and `.json` sidecars, plus `demo_set.json`; returns the count. Same arguments, same files."""
    output.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(demo_scenes(count, side, seed)):
        stem = output / f"{i:06d}"
        render(scene, side).save(stem.with_suffix(".png"), format="PNG")
        combo = scene.combo
        stem.with_suffix(".txt").write_text(combo.caption + "\n", encoding="utf-8")
        meta = {SYN_FIELD: combo.syn_caption, **asdict(combo)}
        stem.with_suffix(".json").write_text(json.dumps(meta, sort_keys=True) + "\n", encoding="utf-8")
    (output / SET_FILE).write_text(json.dumps(set_description(count, side, seed), indent=1) + "\n")
    return count
