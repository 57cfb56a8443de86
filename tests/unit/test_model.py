"""MMDiT behaviour a trainer relies on: config contract, shapes, zero-init, meta init, sizes.

Activation checkpointing: tests/unit/test_activation_checkpointing.py."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from mmdit_scale.model import MMDiT, MMDiTConfig
from mmdit_scale.model.embeddings import sincos_2d_table, timestep_features

TINY = dict(depth=2, hidden_size=64, num_heads=2, in_channels=16, context_dim=32, pooled_dim=24,
            pos_embed_max_size=16, sample_size=16)


def sd3_params(d: int) -> int:
    """Reference card: parameters of the depth-d ladder rung without QK-norm."""
    return 4096 * d * d * (36 * d - 9) + 64 * d * (30 * d + 6526) + 64


def inputs(cfg: MMDiTConfig, batch: int = 2, h: int = 16, w: int = 16, text: int = 7, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, cfg.in_channels, h, w, generator=gen), torch.rand(batch, generator=gen),
            torch.randn(batch, text, cfg.context_dim, generator=gen), torch.randn(batch, cfg.pooled_dim, generator=gen))


def test_from_depth_is_the_sd3_ladder():
    cfg = MMDiTConfig.from_depth(24)
    assert (cfg.hidden_size, cfg.num_heads, cfg.head_dim) == (1536, 24, 64)
    assert (cfg.patch_size, cfg.in_channels, cfg.out_channels) == (2, 16, 16)
    assert (cfg.context_dim, cfg.pooled_dim, cfg.mlp_ratio, cfg.base_size) == (4096, 2048, 4.0, 64)
    assert MMDiTConfig.from_depth(38, qk_norm=True, dual_attention_layers=[0, 3]).dual_attention_layers == (0, 3)


def test_config_loads_through_omegaconf_and_rejects_unknown_keys():
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    schema = OmegaConf.structured(MMDiTConfig)
    cfg = OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.create(
        "depth: 3\nqk_norm: true\ndual_attention_layers: [0, 1]\n")))
    assert cfg == MMDiTConfig(depth=3, qk_norm=True, dual_attention_layers=(0, 1))
    assert cfg.hidden_size == 192 and isinstance(cfg.dual_attention_layers, tuple)
    with pytest.raises(ConfigKeyError, match="hidden_size"):
        OmegaConf.merge(schema, OmegaConf.create({"hiden_size": 64}))


def test_importing_the_config_does_not_import_torch():
    code = "import sys, mmdit_scale.model as m; m.MMDiTConfig(depth=3); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    import mmdit_scale.model as package

    assert package.MMDiT is MMDiT  # resolved lazily through the package's __getattr__
    with pytest.raises(AttributeError):
        package.NotAModel


@pytest.mark.parametrize("overrides, message", [
    (dict(hidden_size=100, num_heads=3), "divisible by num_heads"),
    (dict(hidden_size=6, num_heads=3), "divisible by 4"),
    (dict(depth=2, dual_attention_layers=(2,)), "outside blocks"),
    (dict(dual_attention_layers=(0, 0)), "duplicates"),
    (dict(dual_attention_layers=1), "sequence"),
    (dict(depth=0), "depth must be a positive int"),
    (dict(patch_size=-2), "patch_size"),
    (dict(mlp_ratio=0.0), "mlp_ratio"),
    (dict(sample_size=1), "smaller than patch_size"),
])
def test_bad_configs_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        MMDiTConfig(**overrides)


@pytest.mark.parametrize("h, w", [(16, 16), (8, 24), (32, 32)])
def test_output_has_input_shape_and_is_zero_at_init(h, w):
    model = MMDiT(MMDiTConfig(**TINY))
    out = model(*inputs(model.cfg, h=h, w=w))
    assert out.shape == (2, 16, h, w)
    assert torch.equal(out, torch.zeros_like(out))


def test_zero_init_still_trains_the_output_layer():
    """adaLN-Zero: the output is 0, but the final linear gets a gradient, so training can leave zero."""
    model = MMDiT(MMDiTConfig(**TINY, out_channels=4))
    x, t, ctx, pooled = inputs(model.cfg)
    out = model(x, t, ctx, pooled)
    assert out.shape == (2, 4, 16, 16)
    (out - 1).square().mean().backward()
    assert model.final_layer.linear.bias.grad.abs().min() > 0
    assert model.final_layer.linear.weight.grad.abs().max() > 0


def test_grid_larger_than_the_position_table_or_off_patch_raises():
    model = MMDiT(MMDiTConfig(**TINY))
    with pytest.raises(ValueError, match="pos_embed_max_size"):
        model(*inputs(model.cfg, h=34, w=16))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        model(*inputs(model.cfg, h=15, w=16))


def test_meta_construction_then_init_weights_equals_eager_init():
    cfg = MMDiTConfig(**TINY, qk_norm=True, dual_attention_layers=(0,))
    with torch.device("meta"):
        meta = MMDiT(cfg)
    assert all(p.is_meta for p in meta.parameters())
    meta.to_empty(device="cpu")
    torch.manual_seed(0)
    meta.init_weights()
    eager = MMDiT(cfg)
    torch.manual_seed(0)
    eager.init_weights()
    for (name, a), b in zip(meta.state_dict().items(), eager.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(meta.x_embedder.pos_embed, sincos_2d_table(64, 16, 8))
    assert "x_embedder.pos_embed" not in meta.state_dict()
    assert torch.equal(meta(*inputs(cfg)), torch.zeros(2, 16, 16, 16))
    block = meta.blocks[0]
    assert block.x.adaLN.weight.abs().max() == 0 and block.x.adaLN.weight.shape[0] == 9 * 64
    assert 0.01 < meta.t_embedder.fc1.weight.std() < 0.03  # DiT's std 0.02 for the embedding MLPs
    assert torch.equal(block.x.attn.q_norm.weight, torch.ones(32))


@pytest.mark.parametrize("depth", [15, 18, 21, 24, 30, 38])
def test_parameter_count_matches_the_reference_formula(depth):
    with torch.device("meta"):
        model = MMDiT(MMDiTConfig.from_depth(depth))
    assert sum(p.numel() for p in model.parameters()) == sd3_params(depth)


def test_parameter_count_landmarks():
    assert sd3_params(24) == 2_028_328_000  # SD3-Medium
    with torch.device("meta"):
        d38 = MMDiT(MMDiTConfig.from_depth(38, qk_norm=True))
    n = sum(p.numel() for p in d38.parameters())
    assert n == sd3_params(38) + 38 * 4 * 64  # q/k RMSNorm scales for both streams
    assert round(n / 1e9, 2) == 8.06


def test_timestep_features_are_cos_first_sinusoids():
    feats = timestep_features(torch.tensor([0.0, 500.0]))
    assert feats.shape == (2, 256)
    assert torch.equal(feats[0], torch.cat([torch.ones(128), torch.zeros(128)]))
    k = torch.arange(128, dtype=torch.float64)
    expected = 500.0 * torch.exp(-math.log(1e4) * k / 128)
    torch.testing.assert_close(feats[1, :128].double(), expected.cos(), atol=2e-4, rtol=0)
    torch.testing.assert_close(feats[1, 128:].double(), expected.sin(), atol=2e-4, rtol=0)


def test_position_table_layout_and_centre_crop():
    """Column half first, sin before cos, coordinates scaled by base/max, crop centred on the table."""
    dim, grid, base = 16, 12, 4
    table = sincos_2d_table(dim, grid, base).view(grid, grid, dim)
    omega = 1.0 / 10000 ** (torch.arange(4, dtype=torch.float64) / 4)
    row, col = 5, 7
    col_angles, row_angles = col * base / grid * omega, row * base / grid * omega
    expected = torch.cat([col_angles.sin(), col_angles.cos(), row_angles.sin(), row_angles.cos()]).float()
    torch.testing.assert_close(table[row, col], expected, atol=1e-6, rtol=0)

    model = MMDiT(MMDiTConfig(**{**TINY, "pos_embed_max_size": grid, "sample_size": 2 * base}))
    crop = model.x_embedder.cropped_pos_embed(4, 6).view(4, 6, -1)  # top = 4, left = 3
    assert torch.equal(crop, model.x_embedder.pos_embed.view(grid, grid, -1)[4:8, 3:9])
