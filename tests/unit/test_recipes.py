"""Every shipped recipe loads and validates; the ladder rungs have the SD3 widths."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmdit_scale.config import load_config, save_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
LADDER = sorted((REPO / "recipes" / "ladder").glob("d*.yaml"))


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_the_foundation_recipes_are_shipped() -> None:
    assert {"recipes/tiny.yaml", *(f"recipes/ladder/d{d}.yaml" for d in (15, 18, 21, 24, 30, 38))} \
        <= {rel(p) for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=rel)
def test_recipe_loads_validates_and_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("path", RECIPES, ids=rel)
def test_recipe_header_says_what_it_is_and_how_to_run_it(path: Path) -> None:
    lines = path.read_text().splitlines()
    header = "\n".join(line for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])
    assert header.startswith("# "), "a recipe starts with a comment saying what it is for"
    assert re.search(r"^#\s+mmdit-scale \S+ recipes/\S+\.yaml", header, re.M), "and the command that runs it"


@pytest.mark.parametrize("path", LADDER, ids=rel)
def test_ladder_rung_has_sd3_width_and_recipe(path: Path) -> None:
    depth = int(path.stem[1:])
    cfg = load_config(path)
    m = cfg.model
    assert (m.depth, m.hidden_size, m.num_heads) == (depth, 64 * depth, depth)
    assert (m.patch_size, m.in_channels, m.context_dim, m.pooled_dim) == (2, 16, 4096, 2048)
    assert m.qk_norm and m.sample_size == 32 and cfg.data.resolution == 256
    assert (cfg.optim.lr, cfg.optim.warmup_steps) == (1e-4, 1000)
    assert (cfg.train.global_batch, cfg.train.steps) == (4096, 500_000)
    assert cfg.parallel.precision == "bf16"
    assert (cfg.flow.formulation, cfg.flow.timestep_sampler) == ("rf", "lognorm")
    assert cfg.data.train == "" and cfg.data.val == ""
    assert f"recipes/ladder/d{depth}.yaml" in path.read_text()


def test_ladder_is_the_paper_depths() -> None:
    assert [int(p.stem[1:]) for p in LADDER] == [15, 18, 21, 24, 30, 38]


def test_tiny_is_a_small_fp32_cpu_run() -> None:
    cfg = load_config(REPO / "recipes" / "tiny.yaml")
    m = cfg.model
    assert (m.depth, m.hidden_size, m.num_heads) == (2, 64, 2)
    assert m.missing_input_dims() == ("in_channels", "context_dim", "pooled_dim")  # from the shards' manifest
    assert cfg.parallel.precision == "fp32"
    assert cfg.data.resolution == 8 * m.sample_size          # latents of the 8x autoencoder
    assert m.pos_embed_max_size >= m.sample_size // m.patch_size
    assert cfg.train.micro_batch <= cfg.train.global_batch <= 16
    assert cfg.data.train == "" and cfg.data.val == ""
