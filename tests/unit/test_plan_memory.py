"""plan's memory model: the reference card's ZeRO formulas, and activations against what autograd really saves."""
from __future__ import annotations

import pytest
import torch

from mmdit_scale.model import MMDiT, MMDiTConfig
from mmdit_scale.plan.flops import recompute_flops, training_flops
from mmdit_scale.plan.memory import (
    GIB,
    USABLE_FRACTION,
    activation_bytes,
    activation_elements,
    checkpointing_label,
    deepspeed_buffers,
    fits,
    memory_per_gpu,
    model_states,
    more_checkpointing,
)
from mmdit_scale.plan.tokens import Tokens

PSI = 2_028_328_000


@pytest.mark.parametrize("gpus", (1, 8, 64, 512))
def test_mixed_precision_zero_formulas_of_the_reference_card(gpus: int) -> None:
    expected = {1: 4 * PSI + 12 * PSI / gpus, 2: 2 * PSI + 14 * PSI / gpus, 3: 16 * PSI / gpus}
    for stage, total in expected.items():
        assert sum(model_states(PSI, gpus, stage, "bf16")) == pytest.approx(total, rel=1e-12)
    assert sum(model_states(PSI, gpus, 0, "bf16")) == 16 * PSI


def test_zero_shards_optimizer_then_gradients_then_weights() -> None:
    assert model_states(PSI, 8, 1, "bf16") == (2 * PSI, 2 * PSI, 12 * PSI / 8)
    assert model_states(PSI, 8, 2, "bf16") == (2 * PSI, 2 * PSI / 8, 12 * PSI / 8)
    assert model_states(PSI, 8, 3, "bf16") == (2 * PSI / 8, 2 * PSI / 8, 12 * PSI / 8)
    # fp32 keeps no master copy: 4 + 4 + 8 bytes per parameter.
    assert model_states(PSI, 8, 2, "fp32") == (4 * PSI, 4 * PSI / 8, 8 * PSI / 8)


def test_deepspeed_buffers_are_the_default_buckets_capped_by_the_model() -> None:
    assert deepspeed_buffers(PSI, 10**7, 2, "bf16") == 2 * (5e8 + 5e8)
    assert deepspeed_buffers(10**6, 10**5, 1, "bf16") == 2 * (10**6 + 10**6)
    assert deepspeed_buffers(PSI, 10**7, 3, "bf16") == 2 * (5e8 + 5e7 + 2 * 10**7)
    assert deepspeed_buffers(PSI, 10**7, 0, "bf16") == 0


def _saved_elements(cfg: MMDiTConfig, image_side: int, text: int, checkpoint_every: int, batch: int = 2) -> float:
    """Elements of the distinct tensors autograd keeps for backward (parameters excluded), per sample."""
    torch.manual_seed(0)
    model = MMDiT(cfg)
    model.set_activation_checkpointing(checkpoint_every)
    latent = image_side * cfg.patch_size
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(torch.randn(batch, cfg.in_channels, latent, latent), torch.rand(batch),
                    torch.randn(batch, text, cfg.context_dim), torch.randn(batch, cfg.pooled_dim))
    assert out.requires_grad
    return sum(storages.values()) / batch


CONFIGS = {
    "qk-norm": MMDiTConfig(depth=3, hidden_size=128, num_heads=2, in_channels=16, context_dim=96, pooled_dim=64,
                           qk_norm=True, sample_size=16, pos_embed_max_size=8),
    "no-qk-norm": MMDiTConfig(depth=3, hidden_size=128, num_heads=2, in_channels=16, context_dim=96, pooled_dim=64,
                              sample_size=16, pos_embed_max_size=8),
    "mmdit-x": MMDiTConfig(depth=4, hidden_size=192, num_heads=3, in_channels=16, context_dim=96, pooled_dim=64,
                           qk_norm=True, dual_attention_layers=(0, 2), sample_size=16, pos_embed_max_size=8),
}


@pytest.mark.parametrize("every", (0, 1, 2, 3), ids=("stored", "checkpointed", "every-2nd", "every-3rd"))
@pytest.mark.parametrize("name", CONFIGS)
def test_activation_count_matches_what_autograd_saves(name: str, every: int) -> None:
    """Every policy, with the checkpointed blocks among plain ones: depth 3 checkpoints blocks {0, 2} or
    {0} (the pre-only last block in one), MM-DiT-X depth 4 blocks {0, 2} (both dual) or {0, 3}."""
    cfg, side, text = CONFIGS[name], 8, 16
    measured = _saved_elements(cfg, side, text, every)
    # Per-token norm statistics and per-sample conditioning vectors are left out: < 3% at width 128,
    # far less at ladder widths. (On an H200 in bf16 the count is 0-8% above what the model saves.)
    assert activation_elements(cfg, Tokens(side * side, text), every) == pytest.approx(measured, rel=0.03)


def test_each_more_checkpointed_block_saves_memory_and_costs_its_forward() -> None:
    cfg, tokens = MMDiTConfig.from_depth(24, qk_norm=True), Tokens(256, 154)
    kept = [activation_bytes(cfg, tokens, 32, "bf16", every) for every in (0, 4, 3, 2, 1)]  # 0, 6, 8, 12, 24 blocks
    assert kept == sorted(kept, reverse=True) and len(set(kept)) == 5
    # Blocks 0, 2, ..., 22 are alike (the pre-only last block is not among them): half the full policy's
    # saving and 12 blocks' forwards, and the full policy recomputes every block's forward.
    block_forward = recompute_flops(cfg, tokens, 24)  # block 0 only
    assert recompute_flops(cfg, tokens, 2) == pytest.approx(12 * block_forward, rel=1e-12)
    assert kept[0] - kept[3] == pytest.approx((kept[0] - kept[4]) * 12 / 24, rel=0.02)
    outside = training_flops(cfg, tokens).forward - recompute_flops(cfg, tokens, 1)
    assert 0 < outside < 0.02 * training_flops(cfg, tokens).forward  # only embedders and the final layer are left


@pytest.mark.parametrize("depth, every, intervals", [
    (6, 0, [6, 5, 4, 3, 2, 1]),  # blocks {0}, {0,5}, {0,4}, {0,3}, {0,2,4}, all
    (6, 3, [2, 1]),  # {0,3} -> {0,2,4}, all
    (24, 5, [4, 3, 2, 1]),  # 5 blocks -> 6, 8, 12, 24
    (6, 1, []),
])
def test_stronger_policies_come_fewest_blocks_first(depth: int, every: int, intervals: list[int]) -> None:
    assert more_checkpointing(depth, every) == intervals


def test_policies_are_named_as_plan_prints_them() -> None:
    assert [checkpointing_label(k) for k in (0, 1, 2, 3, 4, 11, 21, 22)] == [
        "off", "every block", "every 2nd block", "every 3rd block", "every 4th block", "every 11th block",
        "every 21st block", "every 22nd block"]


def test_checkpointing_keeps_block_inputs_and_one_block_working_set() -> None:
    cfg = MMDiTConfig.from_depth(24, qk_norm=True)
    tokens = Tokens(256, 154)
    stored = activation_bytes(cfg, tokens, 32, "bf16", checkpoint_every=0)
    kept = activation_bytes(cfg, tokens, 32, "bf16", checkpoint_every=1)
    assert 8 < stored / kept < 16
    assert activation_bytes(cfg, tokens, 16, "bf16", 0) == stored / 2
    assert activation_bytes(cfg, tokens, 32, "fp32", 0) == 2 * stored


def test_memory_total_and_fit_threshold() -> None:
    cfg = MMDiTConfig.from_depth(24, qk_norm=True)
    m = memory_per_gpu(PSI, 10**7, cfg, Tokens(256, 154), 32, 64, 2, "bf16", 0)
    assert m.total == m.weights + m.gradients + m.optimizer + m.activations + m.buffers
    assert m.gib()["total"] == pytest.approx(m.total / GIB)
    assert fits(m, m.total / GIB / USABLE_FRACTION + 1e-9)
    assert not fits(m, m.total / GIB / USABLE_FRACTION * 0.999)


def test_the_sharded_ema_is_on_the_bill_of_every_stage():
    """ShardedEMA keeps 4 bytes per parameter in fp32, split over the ranks whatever the ZeRO stage."""
    from mmdit_scale.config import load_config
    from mmdit_scale.plan.report import Hardware, make_plan

    with_ema = make_plan(load_config("recipes/ladder/d24.yaml"), Hardware(gpus=8))
    without = make_plan(load_config("recipes/ladder/d24.yaml", ["train.ema_every=0"]), Hardware(gpus=8))
    assert with_ema.cfg.train.ema_every > 0
    for stage, memory in with_ema.memory.items():
        assert memory.ema == 4 * with_ema.params.total / 8 and without.memory[stage].ema == 0
        assert memory.total - without.memory[stage].total == pytest.approx(memory.ema)
        assert memory.gib()["ema"] == pytest.approx(memory.ema / 2**30)


def test_build_host_memory_is_a_shard_under_zero3_and_the_whole_fp32_model_otherwise():
    from mmdit_scale.plan.memory import build_host_bytes

    params, largest = 8_000_000, 100_000
    assert build_host_bytes(params, largest, ranks=8, stage=2) == 4 * params
    assert build_host_bytes(params, largest, ranks=8, stage=3) == 4 * (params / 8 + largest)
    assert build_host_bytes(params, largest, ranks=1, stage=3) > build_host_bytes(params, largest, ranks=1, stage=2)
