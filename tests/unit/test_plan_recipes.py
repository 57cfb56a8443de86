"""The stage and study recipes say what the paper did (tests/unit/test_recipes.py checks that every recipe loads)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmdit_scale.config import load_config
from mmdit_scale.flow.shift import shift_for_resolution
from mmdit_scale.plan.report import Hardware, make_plan
from mmdit_scale.plan.tokens import SD3_LAYOUT

REPO = Path(__file__).resolve().parents[2]
STAGES = REPO / "recipes" / "stages"
STUDY = REPO / "recipes" / "studies" / "formulations"
STAGE_NAMES = ("pretrain_256", "finetune_512", "finetune_1024")


def stage(name: str):
    return load_config(STAGES / f"{name}.yaml")


def test_stages_raise_the_resolution_and_shift() -> None:
    cfgs = [stage(n) for n in STAGE_NAMES]
    assert [c.data.resolution for c in cfgs] == [256, 512, 1024]
    assert cfgs[0].flow.shift == 1.0
    assert cfgs[1].flow.shift == shift_for_resolution((512, 512)) == 2.0  # sqrt(pixel ratio)
    assert cfgs[2].flow.shift == 3.0 and shift_for_resolution((1024, 1024)) == 4.0  # the paper's value, not the rule
    assert all(c.model.qk_norm and c.parallel.precision == "bf16" for c in cfgs)
    assert cfgs[0].optim.eps == 1e-8 and cfgs[1].optim.eps == cfgs[2].optim.eps == 1e-15
    assert cfgs[0].data.buckets == ()


def test_each_finetune_starts_from_the_previous_stage_run() -> None:
    for previous, name in zip(STAGE_NAMES, STAGE_NAMES[1:]):
        assert stage(name).train.init_from == f"runs/{previous}"
        assert f"--run-dir runs/{previous}" in (STAGES / f"{previous}.yaml").read_text()
    assert stage("pretrain_256").train.init_from == ""


def test_positions_keep_the_pretraining_spacing_and_extent() -> None:
    # coordinate = token index * base / max: a square image must span the same range at every stage.
    extents = set()
    for name in STAGE_NAMES:
        m = stage(name).model
        grid = stage(name).data.resolution // (SD3_LAYOUT.autoencoder_factor * m.patch_size)
        assert m.pos_embed_max_size == 3 * grid
        extents.add(grid * m.base_size / m.pos_embed_max_size)
    assert extents == {16 / 3}


@pytest.mark.parametrize("name", STAGE_NAMES[1:])
def test_aspect_buckets_are_symmetric_equal_area_and_fit_the_position_table(name: str) -> None:
    cfg = stage(name)
    s, unit = cfg.data.resolution, SD3_LAYOUT.autoencoder_factor * cfg.model.patch_size
    buckets = set(cfg.data.buckets)
    assert (s, s) in buckets and {(w, h) for h, w in buckets} == buckets and len(buckets) >= 9
    for h, w in buckets:
        assert h % unit == 0 and w % unit == 0
        assert h * w == pytest.approx(s * s, rel=0.02)
        assert max(h, w) / min(h, w) <= 3.0
        assert max(h, w) // unit <= cfg.model.pos_embed_max_size


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_micro_batch_fits_its_zero_stage_on_80gb_cards(name: str) -> None:
    cfg = stage(name)
    plan = make_plan(cfg, Hardware(gpus=64))
    assert plan.fits_by_stage[cfg.parallel.zero_stage]
    assert cfg.train.global_batch % (cfg.train.micro_batch * 64) == 0  # whole gradient accumulation


VARIANTS = {
    "rf-lognorm-0.00-1.00": dict(formulation="rf", timestep_sampler="lognorm", lognorm_m=0.0, lognorm_s=1.0),
    "rf-mode-1.29": dict(formulation="rf", timestep_sampler="mode", mode_s=1.29),
    "rf-mode-1.75": dict(formulation="rf", timestep_sampler="mode", mode_s=1.75),
    "rf-cosmap": dict(formulation="rf", timestep_sampler="cosmap"),
    "rf-uniform": dict(formulation="rf", timestep_sampler="uniform"),
    "eps-linear": dict(formulation="eps_linear", timestep_sampler="uniform"),
    "v-cos": dict(formulation="v_cos", timestep_sampler="uniform"),
    "edm": dict(formulation="edm", timestep_sampler="uniform"),
}


def test_the_formulation_study_is_the_eight_variants_on_one_base() -> None:
    assert {p.stem for p in STUDY.glob("*.yaml")} == {"base", *VARIANTS}
    base = load_config(STUDY / "base.yaml")
    assert (base.model.depth, base.data.resolution, base.train.global_batch) == (15, 256, 1024)
    assert (base.optim.lr, base.optim.warmup_steps) == (1e-4, 1000)
    assert (base.train.ema_decay, base.train.ema_every) == (0.99, 100)


@pytest.mark.parametrize("name", VARIANTS)
def test_formulation_variant_changes_only_the_flow(name: str) -> None:
    base, cfg = load_config(STUDY / "base.yaml"), load_config(STUDY / f"{name}.yaml")
    for key, value in VARIANTS[name].items():
        assert getattr(cfg.flow, key) == value
    assert math.isclose(cfg.flow.shift, 1.0)
    assert {k: v for k, v in vars(cfg).items() if k != "flow"} == {k: v for k, v in vars(base).items() if k != "flow"}
