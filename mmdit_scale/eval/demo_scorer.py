"""A deterministic detector for demo scenes, and GenEval-style accuracy of images against prompts.

Detection on an RGB image (H, W, 3) uint8:
1. foreground = pixels farther than FOREGROUND_DISTANCE from the grey background in RGB;
2. the object = the largest 8-connected foreground component (specks and halos lose to it);
   smaller than MIN_AREA of the image: nothing detected, every attribute counts as wrong;
3. colour = the palette colour most of the object's pixels are nearest to;
4. position = the quadrant holding the object's centroid;
5. shape = the template (circle, square, triangle, drawn exactly as the dataset draws them, into
   the object's bounding box) with the highest IoU with the object's mask.
Step 5 is what keeps generated squares, which come out with rounded corners, squares: a square
with corners rounded to radius rho (of half-side r) keeps IoU 1 - 0.21 (rho/r)^2 with the square
template but only pi / (4 - 0.86 (rho/r)^2) with the inscribed circle, so it stays a square until
its corners are rounded by more than about 70% of the half-side.

Accuracy is per attribute and all-correct (all three right), GenEval's "object + colour +
position" in miniature. Chance is the all-correct accuracy of an image whose scene is drawn
uniformly at random from the 60 combinations, independently of its prompt: `chance_levels` draws
one scene of every combination, runs the detector on each, and averages correctness over every
(prompt, scene) pair. With a perfect detector that is 1/5 * 1/3 * 1/4 = 1/60.
"""
from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from data_pipeline.demo_data import (BACKGROUND, COLOURS, POSITIONS, SHAPES, Combo, all_combos, render, scene_for,
                                    shape_polygon)

ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "position")
FOREGROUND_DISTANCE = 60.0
"""RGB distance from the background beyond which a pixel belongs to an object (palette >= 135 away)."""
MIN_AREA = 0.01
"""Smallest object, as a fraction of the image: the dataset's smallest shape (a triangle) covers about 8%."""


@dataclass(frozen=True)
class Detection:
    colour: Optional[str]
    shape: Optional[str]
    position: Optional[str]
    area: int
    """Pixels of the detected object (0: nothing found)."""

    def matches(self, combo: Combo) -> dict[str, bool]:
        return {a: getattr(self, a) == getattr(combo, a) for a in ATTRIBUTES}


NOTHING = Detection(colour=None, shape=None, position=None, area=0)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest 8-connected True region (ties: the first in raster order)."""
    height, width = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        current += 1
        labels[y0, x0] = current
        queue, size = deque([(y0, x0)]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = current
                        queue.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else np.zeros_like(mask)


def _template(shape: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("1", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(img)
    polygon = shape_polygon(shape, box)
    if polygon is None:
        draw.ellipse(box, fill=1)
    else:
        draw.polygon(polygon, fill=1)
    return np.array(img, dtype=bool)


def _shape_of(obj: np.ndarray) -> str:
    ys, xs = np.nonzero(obj)
    box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    ious = {}
    for shape in SHAPES:
        tmpl = _template(shape, box, obj.shape)
        ious[shape] = (tmpl & obj).sum() / max(1, (tmpl | obj).sum())
    return max(SHAPES, key=lambda s: ious[s])  # ties: SHAPES order


def detect(image: np.ndarray) -> Detection:
    """The scene's object in an RGB uint8 image (H, W, 3); NOTHING when no object is large enough."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    pixels = image.astype(np.float32)
    foreground = np.linalg.norm(pixels - np.array(BACKGROUND, np.float32), axis=-1) > FOREGROUND_DISTANCE
    obj = _largest_component(foreground)
    area = int(obj.sum())
    if area < MIN_AREA * obj.size:
        return NOTHING
    palette = np.array(list(COLOURS.values()), np.float32)  # (K, 3)
    nearest = np.linalg.norm(pixels[obj][:, None, :] - palette[None], axis=-1).argmin(axis=1)  # (area,)
    names = list(COLOURS)
    colour = names[Counter(nearest.tolist()).most_common(1)[0][0]]
    ys, xs = np.nonzero(obj)
    height, width = obj.shape
    row = "bottom" if ys.mean() + 0.5 >= height / 2 else "top"
    col = "right" if xs.mean() + 0.5 >= width / 2 else "left"
    return Detection(colour=colour, shape=_shape_of(obj), position=f"{row} {col}", area=area)


@dataclass
class Accuracy:
    """GenEval-style accuracy of `n` images against their prompts."""

    n: int
    colour: float
    shape: float
    position: float
    all: float
    """Fraction of images with every attribute right."""
    confusion: dict[str, dict] = field(default_factory=dict)
    """Per attribute: `labels` (the values, then "none" for no object found) and `counts`, a matrix
    whose row is the value asked for and column the value detected: where the model goes wrong."""

    def as_dict(self) -> dict:
        return {"n": self.n, "colour": self.colour, "shape": self.shape, "position": self.position,
                "all": self.all, "confusion": self.confusion}


LABELS = {"colour": tuple(COLOURS), "shape": tuple(SHAPES), "position": POSITIONS}
NONE = "none"


def confusion(detections: Sequence[Detection], prompts: Sequence[Combo]) -> dict[str, dict]:
    """Asked x detected counts per attribute (see `Accuracy.confusion`)."""
    out = {}
    for attribute, values in LABELS.items():
        labels = (*values, NONE)
        counts = [[0] * len(labels) for _ in values]
        for detected, prompt in zip(detections, prompts):
            found = getattr(detected, attribute)
            counts[values.index(getattr(prompt, attribute))][labels.index(found if found in values else NONE)] += 1
        out[attribute] = {"labels": list(labels), "counts": counts}
    return out


def accuracy(detections: Sequence[Detection], prompts: Sequence[Combo]) -> Accuracy:
    if len(detections) != len(prompts) or not prompts:
        raise ValueError(f"need one detection per prompt, got {len(detections)} and {len(prompts)}")
    hits = [d.matches(p) for d, p in zip(detections, prompts)]
    mean = {a: sum(h[a] for h in hits) / len(hits) for a in ATTRIBUTES}
    return Accuracy(n=len(hits), **mean, all=sum(all(h.values()) for h in hits) / len(hits),
                    confusion=confusion(detections, prompts))


def score_images(images: Iterable[np.ndarray], prompts: Sequence[Combo]) -> Accuracy:
    return accuracy([detect(img) for img in images], prompts)


def combo_of_caption(caption: str) -> Combo:
    """The combination an original demo caption names ("a red circle in the top left")."""
    known = {c.caption: c for c in all_combos()}
    try:
        return known[caption.strip()]
    except KeyError:
        raise ValueError(f"{caption!r} is not a demo caption like {all_combos()[0].caption!r}") from None


def chance_levels(side: int, seed: int = 0) -> dict[str, float]:
    """Expected accuracy (per attribute and all-correct) of a scene drawn uniformly at random from all
    combinations, independently of the prompt, as this detector scores it (see module docstring)."""
    rng = random.Random(seed)
    combos = all_combos()
    found = [detect(np.asarray(render(scene_for(c, side, rng), side))) for c in combos]
    pairs = [d.matches(p) for p in combos for d in found]
    out = {a: sum(m[a] for m in pairs) / len(pairs) for a in ATTRIBUTES}
    out["all"] = sum(all(m.values()) for m in pairs) / len(pairs)
    return out

