"""The embedded demo dataset: held-out combinations, files, captions, determinism."""
from __future__ import annotations

import json
from collections import Counter
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from data_pipeline.demo_data import (BACKGROUND, COLOURS, HELD_OUT, POSITIONS, SEEN, SET_FILE, SHAPES, SYN_FIELD,
                                     all_combos, demo_corpus, demo_scenes)
from data_pipeline.sources import list_records, read_captions
from launcher.cli import main

ATTRS = ("colour", "shape", "position")


def test_held_out_combinations_keep_every_pair_of_values_in_training():
    assert len(all_combos()) == 5 * 3 * 4 == 60
    assert len(HELD_OUT) == 12 and len(SEEN) == 48 and not set(HELD_OUT) & set(SEEN)
    for a, b in combinations(ATTRS, 2):
        pairs = Counter((getattr(c, a), getattr(c, b)) for c in SEEN)
        values = {(getattr(c, a), getattr(c, b)) for c in all_combos()}
        assert set(pairs) == values and min(pairs.values()) >= 2, (a, b)
    # Each held-out prompt is spread: no attribute value is held out more than 4 times.
    for attr in ATTRS:
        assert max(Counter(getattr(c, attr) for c in HELD_OUT).values()) <= 4


def test_captions_name_the_attributes_in_two_wordings():
    corpus = demo_corpus()
    captions = [c for c in corpus if " " in c]
    assert len(set(captions)) == 120  # 60 combinations x 2 wordings, held-out ones included
    for c in all_combos():
        assert c.caption == f"a {c.colour} {c.shape} in the {c.position}"
        assert c.syn_caption != c.caption
        assert c.colour in c.syn_caption and c.shape in c.syn_caption
        assert c.position not in c.syn_caption  # "upper left", not "top left"


def test_scenes_are_balanced_over_the_training_combinations():
    scenes = demo_scenes(96, 32, seed=0)
    assert Counter(s.combo for s in scenes) == Counter({c: 2 for c in SEEN})
    assert len({(s.cx, s.cy, s.half) for s in scenes}) == 96  # jittered: no two alike


def test_shapes_fill_most_of_their_quadrant_and_stay_inside_it():
    from data_pipeline.demo_data import quadrant_centre

    for side in (32, 64):
        for s in demo_scenes(500, side, seed=1, combos=tuple(all_combos())):
            qx, qy = quadrant_centre(s.combo.position, side)
            # 13-15 px of a 16 px quadrant at 32 px: 3-4 of the demo model's 4 px tokens (docs/demo.md).
            assert 0.4 * side <= 2 * s.half <= 0.48 * side
            assert abs(s.cx - qx) + s.half <= side / 4 + 1e-9 and abs(s.cy - qy) + s.half <= side / 4 + 1e-9


def test_make_demo_data_writes_png_captions_and_set_file(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["make-demo-data", "--out", str(out), "--n", "20", "--size", "32"]) == 0
    assert "wrote 20 demo scenes" in capsys.readouterr().out
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:06d}" for i in range(20)]
    held = {(c.colour, c.shape, c.position) for c in HELD_OUT}
    for png in pngs:
        meta = json.loads(png.with_suffix(".json").read_text())
        caption = png.with_suffix(".txt").read_text().strip()
        assert caption == f"a {meta['colour']} {meta['shape']} in the {meta['position']}"
        assert (meta["colour"], meta["shape"], meta["position"]) not in held
        pixels = np.asarray(Image.open(png))
        assert pixels.shape == (32, 32, 3)
        colours = {tuple(p) for p in pixels.reshape(-1, 3)}
        assert colours == {BACKGROUND, COLOURS[meta["colour"]]}  # exact palette, no anti-aliasing
    described = json.loads((out / SET_FILE).read_text())
    assert described["held_out"] == [{"colour": c.colour, "shape": c.shape, "position": c.position}
                                     for c in HELD_OUT]
    assert (described["shapes"], described["positions"]) == (list(SHAPES), list(POSITIONS))
    # prepare's folder source sees 20 samples with both captions (the set file is not a sample).
    records = list_records(out, "auto", SYN_FIELD, None, None)
    assert len(records) == 20
    assert set(read_captions(records[0], SYN_FIELD)) == {"orig", "syn"}


def test_same_arguments_same_bytes_and_size_option(tmp_path):
    for name in ("a", "b"):
        assert main(["make-demo-data", "--output", str(tmp_path / name), "--count", "6", "--size", "64"]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert len(files) == 6 * 3 + 1
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert Image.open(tmp_path / "a" / "000000.png").size == (64, 64)
    assert main(["make-demo-data", "--out", str(tmp_path / "c"), "--seed", "1", "--n", "6"]) == 0
    assert (tmp_path / "c" / "000000.png").read_bytes() != (tmp_path / "a" / "000000.png").read_bytes()
    with pytest.raises(SystemExit) as bad_count:  # argparse refuses it, as it does any bad argument
        main(["make-demo-data", "--out", str(tmp_path / "d"), "--n", "0"])
    assert bad_count.value.code == 2 and not (tmp_path / "d").exists()
    assert main(["make-demo-data", "--out", str(tmp_path / "e"), "--size", "8"]) == 2


def test_demo_clip_tokenizer_spells_every_corpus_word_as_one_token():
    # BPE ranks merges globally: a word's merge chain can be pre-empted by another word's merge
    # ("triangle" once came out as 7 pieces), which made shape captions longer than the others.
    from data_pipeline.demo_data import demo_corpus
    from data_pipeline.encoders.demo import clip_tokenizer

    corpus = demo_corpus()
    tokenizer = clip_tokenizer(corpus)
    words = sorted({w for line in corpus for w in line.split()})
    assert {w: tokenizer.tokenize(w) for w in words if len(tokenizer.tokenize(w)) != 1} == {}
