"""Selective activation checkpointing (`parallel.activation_checkpointing`: 0 none, 1 every block, k every
k-th block): the loss and gradients of the plain run, exactly the blocks the policy names, the recompute
FLOPs plan charges for it, and the config key's values."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import mmdit_scale.model.mmdit as mmdit_module
from mmdit_scale.config import ConfigError, load_config, to_yaml
from mmdit_scale.interop.parity import randomise_parameters
from mmdit_scale.model import MMDiT, MMDiTConfig
from mmdit_scale.plan.flops import recompute_flops
from mmdit_scale.plan.tokens import Tokens

# Depth 5 with an MM-DiT-X block (2) and QK-norm: every 2nd block takes in the dual block and the
# pre-only last block (4), every 3rd block neither.
CFG = MMDiTConfig(depth=5, hidden_size=64, num_heads=2, in_channels=16, context_dim=32, pooled_dim=24,
                  qk_norm=True, dual_attention_layers=(2,), pos_embed_max_size=16, sample_size=16)
BATCH, HEIGHT, WIDTH, TEXT = 2, 8, 12, 7
TOKENS = Tokens(image=(HEIGHT // CFG.patch_size) * (WIDTH // CFG.patch_size), text=TEXT)
POLICIES = [(0, []), (1, [0, 1, 2, 3, 4]), (2, [0, 2, 4]), (3, [0, 3])]


def _model_and_inputs() -> tuple[MMDiT, tuple[torch.Tensor, ...]]:
    model = MMDiT(CFG)
    randomise_parameters(model)  # adaLN-Zero init would leave most gradients exactly 0
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.randn(BATCH, CFG.in_channels, HEIGHT, WIDTH, generator=gen), torch.rand(BATCH, generator=gen),
              torch.randn(BATCH, TEXT, CFG.context_dim, generator=gen),
              torch.randn(BATCH, CFG.pooled_dim, generator=gen))
    return model, inputs


def _loss_and_grads(model: MMDiT, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(*inputs).square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("every, blocks", POLICIES, ids=("none", "full", "every-2nd", "every-3rd"))
def test_checkpointing_recomputes_the_named_blocks_and_keeps_every_gradient(monkeypatch, every: int,
                                                                            blocks: list[int]) -> None:
    model, inputs = _model_and_inputs()
    plain_loss, plain_grads = _loss_and_grads(model, inputs)
    checkpointed: list[int] = []

    def counting_checkpoint(function, *args, **kwargs):
        checkpointed.append(list(model.blocks).index(function))
        return torch.utils.checkpoint.checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(mmdit_module, "checkpoint", counting_checkpoint)
    model.set_activation_checkpointing(every)
    loss, grads = _loss_and_grads(model, inputs)
    assert checkpointed == blocks
    # Bit-identical in fp32 on CPU, not merely within roundoff: the recomputation runs the same
    # kernels on the same inputs.
    assert plain_loss > 0 and torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, plain_grads[name]), name
    checkpointed.clear()
    with torch.no_grad():  # sampling: no backward, so nothing is checkpointed
        model(*inputs)
    assert checkpointed == []


@pytest.mark.parametrize("every", (1, 2, 3))
def test_recompute_flops_are_the_extra_flops_torch_counts(every: int) -> None:
    model, inputs = _model_and_inputs()

    def training_step_flops() -> int:
        # On CPU only the math backend decomposes attention into matmuls that the counter sees.
        with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
            model(*inputs).square().mean().backward()
        return counter.get_total_flops()

    plain = training_step_flops()
    model.set_activation_checkpointing(every)
    extra = training_step_flops() - plain
    assert extra > 0
    assert recompute_flops(CFG, TOKENS, every) == extra / BATCH


@pytest.mark.parametrize("every", (-1, True, 1.0))
def test_model_refuses_what_is_not_an_interval(every: object) -> None:
    model = MMDiT(CFG)
    with pytest.raises(ValueError, match=r"int >= 0 \(0: no block, 1: every block"):
        model.set_activation_checkpointing(every)  # type: ignore[arg-type]


@pytest.mark.parametrize("value, every", [("0", 0), ("1", 1), ("3", 3), ("false", 0), ("true", 1)])
def test_config_takes_an_interval_and_reads_the_earlier_booleans(value: str, every: int) -> None:
    """`false`/`true` are what run dirs written before intervals hold; they must resume as 0/1."""
    cfg = load_config("recipes/ladder/d24.yaml", [f"parallel.activation_checkpointing={value}"])
    assert type(cfg.parallel.activation_checkpointing) is int and cfg.parallel.activation_checkpointing == every
    assert f"  activation_checkpointing: {every}\n" in to_yaml(cfg)  # saved configs hold the int


def test_config_refuses_a_negative_interval_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"parallel.activation_checkpointing must be >= 0 .*got -2; 0 turns it off"):
        load_config("recipes/ladder/d24.yaml", ["parallel.activation_checkpointing=-2"])
    with pytest.raises(ConfigError, match=r"'parallel.activation_checkpointing'.*expected bool or int, got str"):
        load_config("recipes/ladder/d24.yaml", ["parallel.activation_checkpointing=every"])
