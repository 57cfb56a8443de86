"""Checkpoint files: `latest` is only ever a complete checkpoint, keep-N pruning, resolving paths,
and the consolidated weights loading back into an MMDiT (sample/export/init_from read them so)."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmdit_scale.config import load_config
from mmdit_scale.run.layout import write_config
from mmdit_scale.model import MMDiT
from mmdit_scale.run import checkpoints, layout
from mmdit_scale.train.init_from import load_initial_weights


def fake_checkpoint(root: Path, step: int) -> Path:
    """A checkpoint dir as the trainer leaves it after the rename (contents beside the point here)."""
    path = root / layout.checkpoint_name(step)
    path.mkdir(parents=True)
    (path / layout.STATE_FILE).write_text(json.dumps({"step": step}))
    return path


def test_names():
    assert layout.checkpoint_name(12) == "step_0000012"
    assert layout.step_of("step_0000012") == 12 and layout.step_of(".tmp-step_0000012") is None


def test_latest_round_trip_and_fresh_run(tmp_path):
    assert checkpoints.read_latest(tmp_path) is None
    ckpt = fake_checkpoint(tmp_path, 3)
    checkpoints.write_latest(tmp_path, ckpt.name)
    assert checkpoints.read_latest(tmp_path) == ckpt
    assert (tmp_path / "latest").read_text() == "step_0000003\n"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_write_killed_before_the_rename_leaves_latest_on_the_previous_checkpoint(tmp_path):
    """The state a kill in the middle of `checkpoint.save` leaves: a partial temporary dir."""
    fake_checkpoint(tmp_path, 2)
    checkpoints.write_latest(tmp_path, "step_0000002")
    partial = tmp_path / ".tmp-step_0000003"
    (partial / "deepspeed").mkdir(parents=True)
    (partial / layout.MODEL_FILE).write_bytes(b"half")
    (tmp_path / "latest.tmp").write_text("step_00")  # even a torn write of `latest` itself
    assert checkpoints.read_latest(tmp_path).name == "step_0000002"
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["step_0000002"]
    checkpoints.remove_stale(tmp_path)
    assert not partial.exists() and (tmp_path / "step_0000002").exists()


def test_latest_naming_a_missing_or_bad_checkpoint_is_an_error(tmp_path):
    (tmp_path / "latest").write_text("step_0000009\n")
    with pytest.raises(ValueError, match="missing or incomplete"):
        checkpoints.read_latest(tmp_path)
    (tmp_path / "latest").write_text("../elsewhere\n")
    with pytest.raises(ValueError, match="not a checkpoint name"):
        checkpoints.read_latest(tmp_path)


def test_prune_keeps_the_newest_and_never_latest(tmp_path):
    for step in (1, 2, 3, 4, 5):
        fake_checkpoint(tmp_path, step)
    checkpoints.write_latest(tmp_path, "step_0000002")  # e.g. newer ones written by a run that then diverged
    deleted = checkpoints.prune(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == ["step_0000001", "step_0000003"]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["step_0000002", "step_0000004", "step_0000005"]


def test_resolve_run_dir_checkpoints_dir_and_checkpoint(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    ckpt = fake_checkpoint(root, 7)
    checkpoints.write_latest(root, ckpt.name)
    assert checkpoints.resolve(tmp_path / "run") == ckpt
    assert checkpoints.resolve(root) == ckpt
    assert checkpoints.resolve(ckpt) == ckpt
    with pytest.raises(FileNotFoundError):
        checkpoints.resolve(tmp_path)


TINY_INPUTS = ("model.in_channels=16", "model.context_dim=64", "model.pooled_dim=64")
"""recipes/tiny.yaml leaves its input dims to the shard manifest; these tests have no shards."""


def tiny_config(tmp_path: Path, *overrides: str):
    return load_config("recipes/tiny.yaml", [f"data.train={tmp_path}", *TINY_INPUTS, *overrides])


def write_weights(tmp_path: Path, model: MMDiT, cfg) -> Path:
    ckpt = fake_checkpoint(tmp_path / "checkpoints", 5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt / layout.MODEL_FILE)
    write_config(cfg, ckpt / layout.CONFIG_FILE)
    checkpoints.write_latest(tmp_path / "checkpoints", ckpt.name)
    return ckpt


def inputs(cfg):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 16, 8, 8, generator=g), torch.rand(2, generator=g),
            torch.randn(2, 10, cfg.model.context_dim, generator=g), torch.randn(2, cfg.model.pooled_dim, generator=g))


def trained_like(cfg) -> MMDiT:
    """A model whose zero-initialised layers are not zero, so outputs test every weight."""
    torch.manual_seed(0)
    model = MMDiT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_build_model_gives_the_saved_model(tmp_path):
    cfg = tiny_config(tmp_path)
    model = trained_like(cfg)
    write_weights(tmp_path, model, cfg)
    loaded = checkpoints.build_model(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(*inputs(cfg)), model(*inputs(cfg)))


def test_init_from_a_checkpoint_without_qk_norm_starts_the_new_scales_at_one(tmp_path):
    old_cfg = tiny_config(tmp_path, "model.qk_norm=false")
    old = trained_like(old_cfg)
    write_weights(tmp_path, old, old_cfg)
    new = MMDiT(tiny_config(tmp_path, "model.qk_norm=true").model)
    with torch.no_grad():
        for name, p in new.named_parameters():
            if "norm" in name:
                p.fill_(3.0)
    lines = load_initial_weights(new, str(tmp_path))
    assert any("no QK-norm weights" in line and "start at one" in line for line in lines)
    norms = {k: v for k, v in new.state_dict().items() if k.endswith(("q_norm.weight", "k_norm.weight"))}
    assert norms and all(torch.equal(v, torch.ones_like(v)) for v in norms.values())
    assert all(torch.equal(new.state_dict()[k], v) for k, v in old.state_dict().items())


def test_init_from_refuses_weights_of_another_shape(tmp_path):
    cfg = tiny_config(tmp_path)
    write_weights(tmp_path, trained_like(cfg), cfg)
    other = MMDiT(tiny_config(tmp_path, "model.hidden_size=128", "model.num_heads=2").model)
    with pytest.raises(ValueError, match="shapes differ"):
        load_initial_weights(other, str(tmp_path))
