"""The demo scorer: exact on real dataset images, robust to what generated images look like, and
it gives no credit to wrong images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from data_pipeline.demo_data import BACKGROUND, COLOURS, POSITIONS, SHAPES, Combo, all_combos, demo_scenes, render
from mmdit_scale.eval.demo_scorer import (NOTHING, accuracy, chance_levels, combo_of_caption, detect,
                                          score_images)

ALL = tuple(all_combos())


def _scenes(side: int, count: int = 120, seed: int = 3):
    scenes = demo_scenes(count, side, seed=seed, combos=ALL)
    return [np.asarray(render(s, side)) for s in scenes], [s.combo for s in scenes]


@pytest.mark.parametrize("side", [32, 64])
def test_real_dataset_images_score_100_percent(side):
    images, prompts = _scenes(side)
    acc = score_images(images, prompts)
    scores = acc.as_dict()
    assert scores.pop("confusion") == acc.confusion
    assert scores == {"n": 120, "colour": 1.0, "shape": 1.0, "position": 1.0, "all": 1.0}
    shapes = acc.confusion["shape"]["counts"]                       # all on the diagonal
    assert all(row[i] == sum(row) == 40 for i, row in enumerate(shapes))


def _next(values, value):
    return values[(values.index(value) + 1) % len(values)]


def test_wrong_prompts_get_no_credit_for_the_wrong_attribute():
    images, prompts = _scenes(32, count=60)
    wrong_colour = [Combo(_next(list(COLOURS), c.colour), c.shape, c.position) for c in prompts]
    acc = score_images(images, wrong_colour)
    assert (acc.colour, acc.shape, acc.position, acc.all) == (0.0, 1.0, 1.0, 0.0)
    wrong_all = [Combo(_next(list(COLOURS), c.colour), _next(SHAPES, c.shape), _next(POSITIONS, c.position))
                 for c in prompts]
    scores = score_images(images, wrong_all).as_dict()
    scores.pop("confusion")
    assert scores == {"n": 60, "colour": 0.0, "shape": 0.0, "position": 0.0, "all": 0.0}


def test_blank_and_noise_images_score_zero():
    blank = np.full((32, 32, 3), BACKGROUND, np.uint8)
    assert detect(blank) == NOTHING
    rng = np.random.default_rng(0)
    noisy = np.clip(blank + rng.normal(0, 12, blank.shape), 0, 255).astype(np.uint8)  # background noise only
    assert detect(noisy) == NOTHING
    acc = accuracy([detect(blank), detect(noisy)], [ALL[0], ALL[1]])
    assert (acc.colour, acc.shape, acc.position, acc.all) == (0.0, 0.0, 0.0, 0.0)


def test_rounded_squares_stay_squares_and_blur_is_tolerated():
    squares = demo_scenes(24, 32, seed=5, combos=tuple(c for c in ALL if c.shape == "square"))
    for rounding in (0.3, 0.6):
        for s in squares:
            img = Image.new("RGB", (32, 32), BACKGROUND)
            box = (s.cx - s.half, s.cy - s.half, s.cx + s.half, s.cy + s.half)
            ImageDraw.Draw(img).rounded_rectangle(box, radius=rounding * s.half, fill=COLOURS[s.combo.colour])
            assert detect(np.asarray(img)).shape == "square", (rounding, s)
    scenes = demo_scenes(120, 32, seed=4, combos=ALL)
    blurred = [np.asarray(render(s, 32).filter(ImageFilter.GaussianBlur(0.8))) for s in scenes]
    acc = score_images(blurred, [s.combo for s in scenes])
    assert acc.colour == acc.position == 1.0 and acc.shape >= 0.95


def test_specks_and_off_palette_colours():
    scene = demo_scenes(1, 32, seed=0, combos=(Combo("blue", "triangle", "bottom right"),))[0]
    pixels = np.asarray(render(scene, 32)).copy()
    pixels[2, 2] = pixels[3, 30] = COLOURS["red"]  # stray pixels elsewhere lose to the object
    is_blue = (pixels == np.array(COLOURS["blue"])).all(-1, keepdims=True)
    shaded = np.where(is_blue, np.array([60, 90, 200]), pixels).astype(np.uint8)
    for img in (pixels, shaded):  # a darker, off-palette blue is still blue
        d = detect(img)
        assert (d.colour, d.shape, d.position) == ("blue", "triangle", "bottom right")


def test_chance_is_one_in_sixty():
    chance = chance_levels(32)
    assert chance == pytest.approx({"colour": 1 / 5, "shape": 1 / 3, "position": 1 / 4, "all": 1 / 60})


def test_captions_map_back_to_combinations():
    for c in ALL:
        assert combo_of_caption(c.caption) == c
    with pytest.raises(ValueError, match="not a demo caption"):
        combo_of_caption("a purple circle in the middle")


def test_confusion_matrices_count_asked_against_detected_values():
    from mmdit_scale.eval.demo_scorer import NONE, NOTHING, Detection, accuracy

    asked = [Combo("red", "circle", "top left"), Combo("red", "square", "top left"), Combo("blue", "circle",
                                                                                          "bottom right")]
    found = [Detection(colour="red", shape="circle", position="top left", area=10),
             Detection(colour="red", shape="circle", position="top right", area=10), NOTHING]
    result = accuracy(found, asked)
    shape = result.confusion["shape"]
    assert shape["labels"][-1] == NONE
    row = shape["counts"][shape["labels"].index("square")]
    assert row[shape["labels"].index("circle")] == 1 and sum(row) == 1     # a square asked, a circle drawn
    colour = result.confusion["colour"]
    assert colour["counts"][colour["labels"].index("blue")][-1] == 1        # nothing found counts as none
    assert sum(map(sum, result.confusion["position"]["counts"])) == 3
    assert result.as_dict()["confusion"] == result.confusion
