"""REPA (`train.repa`) end to end: the real launcher on 1 CPU rank, the tiny recipe, real shards that
hold REPA features. The loss falls, a resumed run ends bit-exactly where an uninterrupted one does,
weight 0 is today's training bit for bit, and the checkpoint's weights hold no projector."""
from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from mmdit_scale.config import load_config
from mmdit_scale.model import MMDiT
from tests.integration.test_train import _write_shards, finish, log_of, records, start, val_losses

pytestmark = pytest.mark.slow

WIDTH = 8
"""The REPA features' width; their 8x8 grid is twice the tiny model's 4x4 token grid: the trainer resizes it."""


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("repa-shards")
    _write_shards(root / "train", shards=2, per_shard=32, seed=0, repa_width=WIDTH)
    _write_shards(root / "val", shards=1, per_shard=16, seed=7, repa_width=WIDTH)
    return root / "train", root / "val"


REPA = "train.repa={weight: 0.5, block: 0}"
FINAL = "checkpoints/step_0000008/model.safetensors"


def test_repa_training_lowers_both_losses_resumes_exactly_and_saves_no_projector(shards, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert finish(start(straight, shards, REPA, "train.steps=8", "checkpoint.every=8", "eval.every=8",
                        nproc=1), straight) == 0, log_of(straight)
    losses = val_losses(straight)
    assert losses[8] < 0.95 * losses[0], losses
    repa = [r["repa_loss"] for r in records(straight, "train")]
    assert len(repa) == 4 and repa[-1] < repa[0], repa
    for steps in (4, 8):
        assert finish(start(resumed, shards, REPA, f"train.steps={steps}", "checkpoint.every=4", "eval.every=8",
                            nproc=1), resumed) == 0, log_of(resumed)
    assert (straight / FINAL).read_bytes() == (resumed / FINAL).read_bytes()
    cfg = load_config(straight / "config.yaml")
    mmdit_keys = set(MMDiT(cfg.model).state_dict()) - {"x_embedder.pos_embed"}
    for name in ("model.safetensors", "ema.safetensors"):
        assert set(load_file(straight / "checkpoints/step_0000008" / name)) == mmdit_keys, name


def test_weight_0_is_todays_training_bit_for_bit(shards, tmp_path):
    plain, zero = tmp_path / "plain", tmp_path / "zero"
    for run_dir, extra in ((plain, ()), (zero, ("train.repa={weight: 0.0, block: 1}",))):
        assert finish(start(run_dir, shards, *extra, "train.steps=4", "checkpoint.every=4", "eval.every=4",
                            nproc=1), run_dir) == 0, log_of(run_dir)
    final = "checkpoints/step_0000004/model.safetensors"
    assert (plain / final).read_bytes() == (zero / final).read_bytes()
    assert "repa_loss" not in records(zero, "train")[0]
