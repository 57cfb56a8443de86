"""TREAD token routing (`train.routing`): tokens skip a span of blocks in training and rejoin;
inference and ratio 0 are today's model; `plan` counts the saved FLOPs; the draws are seeded."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mmdit_scale.config import load_config
from mmdit_scale.model import MMDiT
from mmdit_scale.model.config import Routing
from mmdit_scale.plan.flops import training_flops
from mmdit_scale.plan.tokens import SD3_LAYOUT, square_tokens
from mmdit_scale.train.step import TrainStep
from tests.unit import tiny_mmdit
from tests.unit.tiny_mmdit import inputs

CFG = replace(tiny_mmdit.CFG, dual_attention_layers=(1,))
ROUTING = Routing(ratio=0.5, start_block=1, end_block=2)


def randomised(seed: int = 1) -> MMDiT:
    return tiny_mmdit.randomised(CFG, seed)


def test_keeping_every_token_is_the_unrouted_model_bit_for_bit() -> None:
    model, (x, t, ctx, pooled) = randomised(), inputs()
    every = torch.arange(16).expand(3, 16)
    assert torch.equal(model(x, t, ctx, pooled, keep=every, routing=ROUTING), model(x, t, ctx, pooled))


def learning(model: MMDiT, **routed) -> set[str]:
    """Names of the parameters that get a nonzero gradient from one loss."""
    model.zero_grad(set_to_none=True)
    model(*inputs(), **routed).square().mean().backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_routed_tokens_skip_the_span_and_every_block_gets_gradient() -> None:
    model, (x, t, ctx, pooled) = randomised(), inputs()
    keep = torch.stack([torch.randperm(16, generator=torch.Generator().manual_seed(i))[:8].sort().values
                        for i in range(3)])
    with torch.no_grad():
        assert not torch.equal(model(x, t, ctx, pooled, keep=keep, routing=ROUTING), model(x, t, ctx, pooled))
    routed = learning(model, keep=keep, routing=ROUTING)
    # The same parameters learn as without routing (the last block's text queries never do: it is
    # pre-only), the routed blocks included.
    assert routed == learning(model)
    assert all(any(name.startswith(f"blocks.{i}.x.") for name in routed) for i in range(CFG.depth))


def test_the_draws_come_from_the_steps_seeded_generator_and_ratio_0_draws_nothing() -> None:
    cfg = load_config("recipes/tiny.yaml", ["model.in_channels=4", "model.context_dim=32", "model.pooled_dim=16",
                                            "data.resolution=64", "train.routing={ratio: 0.5, start_block: 0, "
                                            "end_block: 1}"])
    step = TrainStep(engine=None, cfg=cfg, tokens=SD3_LAYOUT, device=torch.device("cpu"), rank=0, grad_accum=1)
    a, b = step.route(2, 8, 8, step._generator(5, 0)), step.route(2, 8, 8, step._generator(5, 0))
    assert torch.equal(a, b) and a.shape == (2, 8) and not torch.equal(a, step.route(2, 8, 8, step._generator(6, 0)))
    assert all(torch.equal(row, row.sort().values) and len(set(row.tolist())) == 8 for row in a)
    off = TrainStep(engine=None, cfg=load_config("recipes/tiny.yaml", ["model.in_channels=4", "model.context_dim=32",
                                                                       "model.pooled_dim=16", "data.resolution=64"]),
                    tokens=SD3_LAYOUT, device=torch.device("cpu"), rank=0, grad_accum=1)
    assert off.route(2, 8, 8, off._generator(5, 0)) is None


def test_plan_counts_the_routed_blocks_flops() -> None:
    """d24 at 256 px, half the 256 image tokens routed around blocks 2..21: the issue's estimate
    1 - 128 * 20 / (410 * 24) = 0.74 of the baseline; the exact count is close to it."""
    cfg = load_config("recipes/ladder/d24.yaml")
    tokens = square_tokens(cfg, SD3_LAYOUT)
    base = training_flops(cfg.model, tokens).training
    routed = training_flops(cfg.model, tokens, Routing(ratio=0.5, start_block=2, end_block=21)).training
    assert routed / base == pytest.approx(1 - 128 * 20 / (410 * 24), abs=0.03)
    assert training_flops(cfg.model, tokens, Routing()).training == base


def test_the_routing_span_must_lie_in_the_model() -> None:
    from mmdit_scale.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.routing.end_block=2 is past the model's last block \(1"):
        load_config("recipes/tiny.yaml", ["train.routing={ratio: 0.5, start_block: 0, end_block: 2}"])
    with pytest.raises(ConfigError, match=r"routing ratio must lie in \[0, 1\)"):
        load_config("recipes/tiny.yaml", ["train.routing.ratio=1.0"])
