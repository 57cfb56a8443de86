"""The timestep shift follows each batch's own size (SD3 section 5.3.2), in training and validation
alike, from the one rule `flow.shift_for_size`; sampling's is in tests/integration/test_sample_export.py."""
from __future__ import annotations

import math

import pytest
import torch

from mmdit_scale.config import load_config
from mmdit_scale.flow import shift_for_size, shift_timesteps
from mmdit_scale.plan.tokens import SD3_LAYOUT
from mmdit_scale.train.heldout import Validator
from mmdit_scale.train.step import TrainStep

FINETUNE = "recipes/stages/finetune_1024.yaml"


def step_for(cfg) -> TrainStep:
    return TrainStep(engine=None, cfg=cfg, tokens=SD3_LAYOUT, device=torch.device("cpu"), rank=0, grad_accum=1)


def test_the_rule_fixes_the_base_and_scales_by_the_square_root_of_the_area() -> None:
    assert shift_for_size(3.0, (1024, 1024), 1024) == 3.0
    assert shift_for_size(1.0, (512, 512), 256) == 2.0
    assert shift_for_size(3.0, (768, 1344), 1024) == pytest.approx(3.0 * math.sqrt(768 * 1344) / 1024)


def test_training_uses_the_rule_for_every_bucket_of_the_recipe() -> None:
    cfg = load_config(FINETUNE)
    assert cfg.flow.shift == 3.0 and cfg.data.resolution == 1024 and len(cfg.data.buckets) >= 9
    step = step_for(cfg)
    for height, width in cfg.data.buckets:
        latent = (height // 8, width // 8)
        assert step.shift(*latent) == pytest.approx(3.0 * math.sqrt(height * width) / 1024), (height, width)
    assert step.shift(128, 128) == 3.0                              # the square base itself
    assert len({round(step.shift(h // 8, w // 8), 9) for h, w in cfg.data.buckets}) > 1  # they do differ


def test_validation_shifts_its_fixed_t_per_bucket_only_when_asked() -> None:
    cfg = load_config(FINETUNE)
    step = step_for(cfg)
    study = Validator(loader=None, formulation="rf", batches=1, timesteps=8, seed=0, dtype=torch.float32,
                      device=torch.device("cpu"))
    assert study.batch_timesteps(96, 168) == study.timesteps    # eval.shifted=false: the SD3 study's t
    shifted = Validator(loader=None, formulation="rf", batches=1, timesteps=8, seed=0, dtype=torch.float32,
                        device=torch.device("cpu"), shift_for=step.shift)
    for height, width in cfg.data.buckets:
        alpha = step.shift(height // 8, width // 8)
        assert shifted.batch_timesteps(height // 8, width // 8) == tuple(
            shift_timesteps(t, alpha) for t in study.timesteps), (height, width)


def test_a_wrong_resolution_is_refused_with_both_values(tmp_path) -> None:
    from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic
    from mmdit_scale.run.data_dims import fill_from_data

    write_synthetic(tmp_path, SyntheticSpec(shards=1, per_shard=2, latent_sizes=((8, 8),), factor=8))
    cfg = load_config("recipes/tiny.yaml", [f"data.train={tmp_path}"])
    filled, note = fill_from_data(cfg)
    assert filled.data.resolution == 64 and "data.resolution=64 from the manifest" in note
    with pytest.raises(ValueError, match=r"data.resolution=256 disagrees with the training data: the manifest "
                                         r".*says its images are 64 px"):
        fill_from_data(load_config("recipes/tiny.yaml", [f"data.train={tmp_path}", "data.resolution=256"]))
    assert fill_from_data(load_config("recipes/tiny.yaml", [f"data.train={tmp_path}", "data.resolution=64"]))[0] \
        .data.resolution == 64


def test_train_refuses_a_wrong_resolution_before_any_rank_starts(tmp_path, capsys) -> None:
    from data_pipeline.loader.synthetic import SyntheticSpec, write_synthetic
    from launcher import cli
    from mmdit_scale.run.exit_codes import CONFIG_ERROR

    write_synthetic(tmp_path / "shards", SyntheticSpec(shards=1, per_shard=2, latent_sizes=((64, 64),), factor=8))
    code = cli.main(["train", "recipes/tiny.yaml", f"data.train={tmp_path / 'shards'}", "data.resolution=256",
                     "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == CONFIG_ERROR and "data.resolution=256 disagrees" in err and "512 px" in err
    assert not (tmp_path / "run").exists()
