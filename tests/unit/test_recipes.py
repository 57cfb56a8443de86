"""Every shipped recipe loads and validates; the ladder rungs have the SD3 widths."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmdit_scale.config import ConfigError, load_config
from mmdit_scale.run.layout import write_config
from mmdit_scale.config.recipes import RECIPES_DIR, find_recipe, packaged_recipes

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
    write_config(cfg, tmp_path / "config.yaml")
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
    assert cfg.data.resolution is None                        # from the shards' manifest, like the dims
    assert m.pos_embed_max_size >= m.sample_size // m.patch_size
    assert cfg.train.micro_batch <= cfg.train.global_batch <= 16
    assert cfg.data.train == "" and cfg.data.val == ""


# --- finding recipes by name (mmdit_scale.config.recipes) ----------------------------------------
def test_recipes_ship_as_package_data_through_a_symlink_to_the_yaml_only_folder() -> None:
    link = REPO / "mmdit_scale" / "recipes"
    assert link.is_symlink() and link.resolve() == (REPO / "recipes").resolve()
    assert RECIPES_DIR.resolve() == (REPO / "recipes").resolve()
    assert {p.suffix for p in (REPO / "recipes").rglob("*") if p.is_file()} == {".yaml"}
    assert packaged_recipes() == sorted(rel(p)[len("recipes/"):-len(".yaml")] for p in RECIPES)


@pytest.mark.parametrize("name, file", [
    ("recipes/tiny.yaml", "tiny.yaml"), ("tiny.yaml", "tiny.yaml"), ("tiny", "tiny.yaml"),
    ("./recipes/tiny.yaml", "tiny.yaml"), (Path("tiny"), "tiny.yaml"),
    ("ladder/d24", "ladder/d24.yaml"), ("recipes/ladder/d24.yaml", "ladder/d24.yaml"),
    ("stages/finetune_512", "stages/finetune_512.yaml"),
    ("studies/formulations/rf-mode-1.29", "studies/formulations/rf-mode-1.29.yaml"),
    ("/no/such/checkout/recipes/demo.yaml", "demo.yaml"),
])
def test_find_recipe_looks_names_up_in_the_packaged_recipes(name, file: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)                     # outside the repo: no recipes/ here
    assert find_recipe(name) == RECIPES_DIR / file


def test_an_existing_path_wins_over_a_packaged_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text("model: {depth: 3}\n")
    assert find_recipe("tiny.yaml") == Path("tiny.yaml")
    assert load_config("tiny.yaml").model.depth == 3
    assert load_config("tiny").model.depth == 2     # no file 'tiny': the packaged one
    assert load_config("ladder/d24").model.depth == 24   # its `base:` chain resolves inside the package


@pytest.mark.parametrize("name, nearest", [
    ("tinny", "did you mean tiny?"), ("recipes/tinny.yaml", "did you mean tiny?"),
    ("ladder/d25", "ladder/d24"), ("d24", "did you mean ladder/d24"),
    ("stages/finetune_256", "stages/finetune_512"),
])
def test_unknown_recipe_names_what_was_tried_and_the_nearest(name: str, nearest: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        find_recipe(name)
    assert str(err.value).startswith(f"recipe {name} not found; nor is ")
    assert str(RECIPES_DIR) in str(err.value) and nearest in str(err.value)


def test_unknown_recipe_with_nothing_close_is_a_plain_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("nope.yaml", "/abs/nope.yaml", "../tiny.yaml"):
        with pytest.raises(ConfigError, match=f"^recipe {re.escape(name)} not found"):
            find_recipe(name)
