"""plan's parameter and FLOP counts: the reference card's numbers, and torch's own FLOP counter."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from data_pipeline.layout import TEXT_TOKENS
from mmdit_scale.model import MMDiT, MMDiTConfig
from mmdit_scale.model.embeddings import TIME_FREQ_DIM
from mmdit_scale.plan import flops as plan_flops
from mmdit_scale.plan.flops import headline_flops, training_flops
from mmdit_scale.plan.params import count_parameters, sd3_closed_form
from mmdit_scale.plan.tokens import SD3_LAYOUT, Tokens

LADDER = (15, 18, 21, 24, 30, 38)


def test_plan_constants_match_the_model_and_the_shard_format() -> None:
    assert SD3_LAYOUT.text == 2 * TEXT_TOKENS == 154 and SD3_LAYOUT.autoencoder_factor == 8
    assert plan_flops.TIME_FREQ_DIM == TIME_FREQ_DIM


def test_d24_without_qk_norm_is_sd3_medium_exactly() -> None:
    count = count_parameters(MMDiTConfig.from_depth(24, qk_norm=False))
    assert count.total == 2_028_328_000
    assert count.largest_layer == 6 * 1536 * 1536 + 6 * 1536  # an adaLN Linear(D, 6D)


def test_d38_with_qk_norm_is_the_papers_8b() -> None:
    total = count_parameters(MMDiTConfig.from_depth(38, qk_norm=True)).total
    assert round(total / 1e9, 2) == 8.06
    # QK-norm adds two 64-wide scales per stream per block (the pre-only text stream included).
    assert total - sd3_closed_form(38) == 38 * 2 * 2 * 64


@pytest.mark.parametrize("depth", (15, 21, 30))
def test_meta_model_count_matches_the_card_formula(depth: int) -> None:
    assert count_parameters(MMDiTConfig.from_depth(depth)).total == sd3_closed_form(depth)


SMALL = {
    "plain": MMDiTConfig(depth=2, hidden_size=64, num_heads=2, in_channels=16, context_dim=48, pooled_dim=32,
                         sample_size=8, pos_embed_max_size=8),
    "qk-norm+mmdit-x": MMDiTConfig(depth=3, hidden_size=128, num_heads=2, in_channels=16, context_dim=96, pooled_dim=32,
                                   qk_norm=True, dual_attention_layers=(0, 2), sample_size=12, pos_embed_max_size=12),
}


@pytest.mark.parametrize("name", SMALL)
def test_training_flops_match_torch_flop_counter(name: str) -> None:
    cfg = SMALL[name]
    torch.manual_seed(0)
    model = MMDiT(cfg)
    batch, latent, text = 2, 2 * cfg.sample_size, 10
    x = torch.randn(batch, cfg.in_channels, latent, latent)
    t, pooled = torch.rand(batch), torch.randn(batch, cfg.pooled_dim)
    context = torch.randn(batch, text, cfg.context_dim)
    # On CPU only the math backend decomposes attention into matmuls that the counter sees.
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        model(x, t, context, pooled).square().mean().backward()
    expected = training_flops(cfg, Tokens(image=(latent // cfg.patch_size) ** 2, text=text))
    assert expected.training == pytest.approx(counter.get_total_flops() / batch, rel=0.02)


@pytest.mark.parametrize("depth", LADDER)
@pytest.mark.parametrize("image_tokens", (256, 4096))
def test_headline_formula_is_within_a_few_percent_at_ladder_sizes(depth: int, image_tokens: int) -> None:
    f = training_flops(MMDiTConfig.from_depth(depth, qk_norm=True), Tokens(image_tokens, 154))
    assert f.headline == headline_flops(depth, 64 * depth, image_tokens + 154)
    assert f.training == pytest.approx(f.headline, rel=0.02)
    assert f.training < f.headline  # the pre-only last text stream outweighs embedders and adaLN


def test_reference_card_examples() -> None:
    def tflops(depth: int, image_tokens: int) -> float:
        return training_flops(MMDiTConfig.from_depth(depth), Tokens(image_tokens, 154)).training / 1e12

    # The card rounds to two digits: "about 0.44, 1.75, 6.8 and 89 TFLOP/sample".
    assert tflops(15, 256) == pytest.approx(0.44, rel=0.02)
    assert tflops(24, 256) == pytest.approx(1.75, rel=0.02)
    assert tflops(38, 256) == pytest.approx(6.8, rel=0.01)
    assert tflops(38, 4096) == pytest.approx(89, rel=0.01)
    attention = training_flops(MMDiTConfig.from_depth(38), Tokens(4096, 154)).attention_fraction
    assert attention == pytest.approx(0.23, abs=0.005)
